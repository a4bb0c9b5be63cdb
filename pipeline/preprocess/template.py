"""A fixed template of FFHQ-aligned landmarks, for images that are already aligned.

Generated faces (the simulation study, :mod:`service.research.simulate`) are aligned by
construction, but dlib may find no face in them (always so for the random-weight
demo generator, whose images are not faces). Their landmarks and region masks
then come from this template.

How the numbers were derived (re-derived by ``tests/test_simulate.py`` with
:func:`derive_template`): every real photo available to the project,
``/work/shared/faces/*.jpg`` (biden, obama, two_people: the best-scoring face),
``skimage.data.astronaut()`` and matplotlib's ``sample_data/grace_hopper.jpg``,
went through :func:`pipeline.preprocess.steps.preprocess` (HOG detector, default
settings, output size 256); each photo's aligned landmarks were converted to unit
coordinates of the aligned square, ``(p + 0.5) / size`` (the square's outer edges
are at −0.5 and size − 0.5 in pixel-centre coordinates, so unit coordinates do
not depend on the size), averaged over the 5 photos and rounded to 4 decimals.
The per-landmark spread across those photos is up to 0.034 (mean 0.013) of the
square's side. Five adult faces are a small sample; the template is a plausible
face layout for placing masks and defects, not a population mean.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Mean aligned landmarks [68, 2] (x, y) in unit coordinates of the aligned square, iBUG 300-W order.
TEMPLATE_LANDMARKS_UNIT = np.array([
    # jaw 0-16
    (0.1986, 0.5158),
    (0.2083, 0.5907),
    (0.2189, 0.6636),
    (0.2359, 0.7362),
    (0.2636, 0.8028),
    (0.3090, 0.8584),
    (0.3688, 0.8985),
    (0.4337, 0.9301),
    (0.5082, 0.9367),
    (0.5798, 0.9243),
    (0.6382, 0.8880),
    (0.6877, 0.8371),
    (0.7223, 0.7786),
    (0.7439, 0.7128),
    (0.7552, 0.6451),
    (0.7616, 0.5777),
    (0.7645, 0.5107),
    # brows 17-26
    (0.2648, 0.4481),
    (0.2979, 0.4056),
    (0.3479, 0.3874),
    (0.4031, 0.3876),
    (0.4540, 0.4042),
    (0.5530, 0.4047),
    (0.6013, 0.3900),
    (0.6521, 0.3901),
    (0.6999, 0.4077),
    (0.7265, 0.4501),
    # nose 27-35
    (0.5081, 0.4590),
    (0.5092, 0.5065),
    (0.5129, 0.5529),
    (0.5165, 0.6002),
    (0.4453, 0.6361),
    (0.4775, 0.6446),
    (0.5115, 0.6519),
    (0.5433, 0.6442),
    (0.5715, 0.6362),
    # eyes 36-47
    (0.3274, 0.4782),
    (0.3571, 0.4580),
    (0.3923, 0.4571),
    (0.4238, 0.4793),
    (0.3918, 0.4827),
    (0.3568, 0.4847),
    (0.5761, 0.4816),
    (0.6079, 0.4586),
    (0.6420, 0.4598),
    (0.6703, 0.4815),
    (0.6422, 0.4870),
    (0.6092, 0.4859),
    # mouth 48-67
    (0.3797, 0.7299),
    (0.4285, 0.7112),
    (0.4764, 0.7028),
    (0.5105, 0.7101),
    (0.5432, 0.7031),
    (0.5847, 0.7109),
    (0.6247, 0.7284),
    (0.5841, 0.7614),
    (0.5430, 0.7743),
    (0.5079, 0.7792),
    (0.4725, 0.7753),
    (0.4263, 0.7617),
    (0.3965, 0.7308),
    (0.4760, 0.7234),
    (0.5094, 0.7279),
    (0.5432, 0.7232),
    (0.6095, 0.7294),
    (0.5423, 0.7447),
    (0.5088, 0.7487),
    (0.4739, 0.7456),
], dtype=np.float64)
TEMPLATE_LANDMARKS_UNIT.setflags(write=False)

#: Output size used when the template was derived (unit coordinates do not depend on it).
DERIVATION_SIZE = 256


def template_landmarks(size: int) -> np.ndarray:
    """The template in pixel-centre coordinates of a ``size`` × ``size`` aligned image: [68, 2] float64."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    return TEMPLATE_LANDMARKS_UNIT * float(size) - 0.5


def unit_landmarks(aligned_landmarks: np.ndarray, size: int) -> np.ndarray:
    """Aligned-frame landmarks [68, 2] in pixels of a ``size`` square → unit coordinates."""
    points = np.asarray(aligned_landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"aligned_landmarks must be [68, 2], got {points.shape}")
    return (points + 0.5) / float(size)


def derive_template(photos: Iterable[np.ndarray], face_models, size: int = DERIVATION_SIZE) -> np.ndarray:
    """Mean unit-coordinate aligned landmarks [68, 2] of ``photos`` ([H, W, 3] uint8 RGB each).

    Runs :func:`pipeline.preprocess.steps.preprocess` (default settings at ``size``) on every
    photo; raises the pipeline's typed errors if one is refused.
    """
    from pipeline.preprocess.steps import PreprocessSettings, preprocess

    settings = PreprocessSettings(output_size=size)
    units = [unit_landmarks(preprocess(photo, face_models, settings).landmarks_aligned, size) for photo in photos]
    if not units:
        raise ValueError("derive_template needs at least one photo")
    return np.mean(np.stack(units), axis=0)
