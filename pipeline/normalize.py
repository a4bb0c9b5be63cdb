"""The method after preprocessing, for images that are already aligned.

:func:`pipeline.appraise.appraise` starts from a photo; generated faces (the
simulation study) are aligned by construction and come with their own masks.
:func:`normalize_aligned` is everything ``appraise`` does after preprocessing
(``appraise`` calls it): inversion (method.md 2a), adaptation (2b), and every Table 1 score
and heatmap, with and without adaptation. It uses the same settings, seeds and
helpers, so an aligned image gives the same scores here as inside ``appraise``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.adaptation import adapt
from pipeline.appraise import AppraisalScore, AppraisalSettings, WStatsCache, image_to_tensor, tensor_to_image
from pipeline.bundle import ModelBundle
from pipeline.fast_mode import invert_in_mode
from pipeline.progress import Progress
from pipeline.scoring import score_all_variants


@dataclass(frozen=True)
class NormalizationResult:
    """Output of :func:`normalize_aligned`.

    ``inverted`` (without adaptation) and ``normalized`` (with adaptation) are
    [S, S, 3] uint8 RGB; ``heatmaps`` maps ``"with_adaptation/<key>"`` and
    ``"without_adaptation/<key>"`` to float64 [S, S] maps; ``timings`` in seconds.
    """

    inverted: np.ndarray
    normalized: np.ndarray
    scores: tuple[AppraisalScore, ...]
    heatmaps: dict[str, np.ndarray]
    timings: dict[str, float]
    inversion_losses: tuple[float, ...]
    adaptation_losses: tuple[float, ...]

    def score(self, method: str, processing: str, region: str, adaptation: bool, erosion_order: str | None = None) -> float:
        """One variant's score; ``erosion_order`` is needed only to pick between orders."""
        for item in self.scores:
            data = item.to_dict()
            if (data["method"], data["processing"], data["region"], item.adaptation) == (method, processing, region, adaptation):
                if erosion_order is None or data["erosion_order"] in (None, erosion_order):
                    return float(data["score"])
        raise KeyError(f"no score for {method}/{processing}/{region} adaptation={adaptation} erosion_order={erosion_order}")


def normalize_aligned(
    aligned_rgb: np.ndarray,
    masks: Mapping[str, np.ndarray],
    bundle: ModelBundle,
    settings: AppraisalSettings = AppraisalSettings(),
    progress: Callable[[Progress], None] | None = None,
    *,
    w_stats_cache: WStatsCache | None = None,
) -> NormalizationResult:
    """Invert, adapt and score an aligned face.

    aligned_rgb: [R, R, 3] uint8 RGB at the generator's resolution R.
    masks: region name → bool [R, R] (e.g. :func:`pipeline.masks.region_masks`).
    ``settings.preprocess`` is not used.
    """
    resolution = int(bundle.generator.img_resolution)
    if not isinstance(aligned_rgb, np.ndarray) or aligned_rgb.dtype != np.uint8:
        raise TypeError(f"aligned_rgb must be a uint8 numpy array, got {getattr(aligned_rgb, 'dtype', type(aligned_rgb).__name__)}")
    if aligned_rgb.shape != (resolution, resolution, 3):
        raise ValueError(f"aligned_rgb must be [{resolution}, {resolution}, 3] for this generator, got {aligned_rgb.shape}")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    device = settings.device
    target = image_to_tensor(aligned_rgb, device, settings.dtype)
    w_stats = (w_stats_cache or WStatsCache()).get(bundle, settings.inversion, device)
    timings["w_stats"] = time.perf_counter() - started

    mark = time.perf_counter()
    rng = torch.Generator(device="cpu").manual_seed(settings.inversion.seed)
    inversion = invert_in_mode(settings.mode, bundle.generator, target, bundle.lpips, settings.inversion,
                               w_stats=w_stats, generator=rng, device=device, dtype=settings.dtype,
                               performance=settings.performance, progress=progress)
    timings["inversion"] = time.perf_counter() - mark

    mark = time.perf_counter()
    adaptation = adapt(bundle.generator, target, inversion.w, inversion.noise, bundle.lpips, settings.adaptation,
                       device=device, dtype=settings.dtype, progress=progress, performance=settings.performance)
    timings["adaptation"] = time.perf_counter() - mark

    inverted = tensor_to_image(inversion.image)
    normalized = tensor_to_image(adaptation.image)
    mark = time.perf_counter()
    lpips_model = bundle.lpips_spatial if settings.lpips_heatmaps else None
    scores: list[AppraisalScore] = []
    heatmaps: dict[str, np.ndarray] = {}
    for label, counterpart, adapted in (("without_adaptation", inverted, False), ("with_adaptation", normalized, True)):
        variants, maps = score_all_variants(aligned_rgb, counterpart, masks, lpips_model=lpips_model,
                                            erosion_orders=settings.erosion_orders, device=device)
        scores.extend(AppraisalScore(v, adapted) for v in variants)
        heatmaps.update({f"{label}/{key}": value for key, value in maps.items()})
    timings["scoring"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    return NormalizationResult(
        inverted=inverted, normalized=normalized, scores=tuple(scores), heatmaps=heatmaps,
        timings={k: round(v, 3) for k, v in timings.items()},
        inversion_losses=tuple(step.total for step in inversion.losses),
        adaptation_losses=tuple(step.total for step in adaptation.losses) + (adaptation.final_loss.total,),
    )
