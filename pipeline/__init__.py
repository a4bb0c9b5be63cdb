"""The method of Hayajneh et al. as pure image science: arrays and tensors in, arrays and tensors out.

One sub-package per step of the paper: :mod:`pipeline.preprocess` (section 1: photo, face,
landmarks, pose, FFHQ alignment, regions), :mod:`pipeline.normalize` (section 2: inversion =
Algorithm 1, adaptation = Algorithm 2, LPIPS, schedules, the optimisation engine),
:mod:`pipeline.compare` (sections 3-5: YCbCr, erosion, heatmaps, scores, pictures),
:mod:`pipeline.evaluation` (section 6: the simulation study's defect), :mod:`pipeline.models`
(StyleGAN2 and model bundles). :mod:`pipeline.appraise` runs them in order on one photo;
:mod:`pipeline.vocabulary` names the score variants without importing torch.
No DICOM, no SQL."""
