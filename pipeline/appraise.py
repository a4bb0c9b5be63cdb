"""The whole method on one photo: preprocess → invert → adapt → heatmaps and scores.

The same function serves the CLI, the service's workers and the evaluation tools.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from pipeline.compare.scoring import score_all_variants
from pipeline.models.bundle import ModelBundle, ModelIdentity
from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.engine import EXACT, PerformanceSettings
from pipeline.normalize.inversion import InversionSettings, WStats, compute_w_stats
from pipeline.normalize.schedules import FastSchedule, NormalizationMode, invert_in_mode
from pipeline.preprocess.steps import PreprocessResult, PreprocessSettings, preprocess
from pipeline.progress import Progress
from pipeline.vocabulary import PRIMARY_VARIANT, ErosionOrder, ScoreVariant, VariantScore, find_score


@dataclass(frozen=True)
class AppraisalSettings:
    """Everything that shapes a result besides the photo and the models.

    ``preprocess.output_size`` is replaced by the generator's resolution.
    ``lpips_heatmaps``: also compute the LPIPS variants (slow on CPU at 1024²).
    ``mode``: PAPER (method.md 2a as published) or FAST (:mod:`pipeline.normalize.schedules`,
    within ``inversion.steps``). ``performance``: how the optimisation loops' arithmetic runs
    (:mod:`pipeline.normalize.engine`; the default is the exact float32 path).
    ``repeats``: K >= 1 normalisations of the one preprocessed photo with the seeds
    :func:`repeat_seeds` (``inversion.seed``, ``+ 1``, …); K = 1 is the paper's single run.
    """

    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    inversion: InversionSettings = field(default_factory=InversionSettings)
    adaptation: AdaptationSettings = field(default_factory=AdaptationSettings)
    erosion_orders: tuple[ErosionOrder, ...] = (ErosionOrder.DIFF_THEN_ERODE,)
    lpips_heatmaps: bool = True
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    mode: NormalizationMode = NormalizationMode.PAPER
    performance: PerformanceSettings = EXACT
    repeats: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {self.repeats!r}")
        if not isinstance(self.mode, NormalizationMode):
            try:
                object.__setattr__(self, "mode", NormalizationMode(self.mode))
            except ValueError:
                raise ValueError(f"mode must be one of {[m.value for m in NormalizationMode]}, "
                                 f"got {self.mode!r}") from None
        if not isinstance(self.performance, PerformanceSettings):
            raise TypeError(f"performance must be PerformanceSettings, got {type(self.performance).__name__}")
        if PRIMARY_VARIANT.erosion_order not in self.erosion_orders:
            raise ValueError(f"erosion_orders must include {PRIMARY_VARIANT.erosion_order.value!r}, the primary "
                             f"score's order; got {[getattr(o, 'value', o) for o in self.erosion_orders]}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON record of the settings, stored with every appraisal.

        ``mode``, ``performance`` and ``repeats`` appear only when they differ from the
        defaults, so records (and cache keys) of default settings are unchanged.
        """
        record = self._base_dict()
        if self.repeats != 1:
            record["repeats"] = self.repeats
        if self.mode is not NormalizationMode.PAPER:
            record["mode"] = self.mode.value
            record["fast_schedule"] = FastSchedule().to_dict()
        if self.performance != EXACT:
            record["performance"] = self.performance.to_dict()
        return record

    def _base_dict(self) -> dict[str, Any]:
        inv, ada = self.inversion, self.adaptation
        return {
            "inversion": {k: getattr(inv, k) for k in inv.__dataclass_fields__},
            "adaptation": {k: getattr(ada, k) for k in ada.__dataclass_fields__},
            "erosion_orders": [o.value for o in self.erosion_orders],
            "lpips_heatmaps": self.lpips_heatmaps,
            "pose_limits": {"max_yaw": self.preprocess.pose_limits.max_yaw, "max_pitch": self.preprocess.pose_limits.max_pitch},
            "detector": self.preprocess.detection.detector.value,
            "device": self.device, "dtype": str(self.dtype).replace("torch.", ""),
        }


def repeat_seeds(seed: int, repeats: int) -> tuple[int, ...]:
    """The inversion seeds of K repeats: ``seed, seed + 1, …, seed + K − 1``.

    Repeat 0 uses the single run's seed, so K = 1 is exactly the paper's run, and every
    repeat is reproducible from the recorded base seed.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    return tuple(seed + index for index in range(repeats))


@dataclass(frozen=True)
class RepeatedScores:
    """The scores of each of K > 1 normalisations of one photo (``AppraisalSettings.repeats``).

    ``seeds[i]`` seeded repeat i (:func:`repeat_seeds`); ``runs[i]`` holds its scores, the
    same variants in the same order in every repeat. A result's own ``scores`` are the
    means over the repeats; :meth:`sd` is their spread.
    """

    seeds: tuple[int, ...]
    runs: tuple[tuple[VariantScore, ...], ...]

    def __post_init__(self) -> None:
        if len(self.runs) < 2 or len(self.seeds) != len(self.runs):
            raise ValueError(f"repeated scores need K >= 2 runs and one seed each, got {len(self.runs)} runs "
                             f"and {len(self.seeds)} seeds")
        variants = [item.variant for item in self.runs[0]]
        if any([item.variant for item in run] != variants for run in self.runs[1:]):
            raise ValueError("every repeat must score the same variants in the same order")

    @property
    def count(self) -> int:
        """K, the number of repeats."""
        return len(self.runs)

    def values(self, variant: ScoreVariant) -> tuple[float, ...]:
        """The variant's score in each repeat, in repeat order; KeyError when it was not computed."""
        return tuple(_score(run, variant) for run in self.runs)

    def sd(self, variant: ScoreVariant) -> float:
        """Sample standard deviation of the variant's K scores (K − 1 denominator)."""
        return float(np.std(np.asarray(self.values(variant), dtype=np.float64), ddof=1))

    @property
    def primary_scores(self) -> tuple[float, ...]:
        """The primary variant's score in each repeat."""
        return self.values(PRIMARY_VARIANT)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: K, the seeds, every repeat's scores and each variant's SD."""
        return {"count": self.count, "seeds": list(self.seeds),
                "per_repeat": [[item.to_dict() for item in run] for run in self.runs],
                "sd": [{**item.variant.to_dict(), "sd": self.sd(item.variant)} for item in self.runs[0]]}


@dataclass(frozen=True)
class AppraisalResult:
    """The typed result of :func:`appraise`.

    Images are ``[S, S, 3]`` uint8 RGB in the aligned frame: ``aligned`` (the photo),
    ``inverted`` (normalised without adaptation), ``normalized`` (with adaptation).
    ``heatmaps`` maps ``"with_adaptation/<key>"`` and ``"without_adaptation/<key>"``
    to ``[S, S]`` float maps. ``timings`` are seconds per stage.

    With ``settings.repeats`` K > 1, ``scores`` are each variant's mean over the K repeats,
    ``heatmaps`` the mean maps, ``repeats`` every repeat's scores; the images and losses are
    those of repeat 0 (a mean of images is no face). K = 1: ``repeats`` is None.
    """

    preprocessing: PreprocessResult
    inverted: np.ndarray
    normalized: np.ndarray
    scores: tuple[VariantScore, ...]
    heatmaps: dict[str, np.ndarray]
    model: ModelIdentity
    settings: AppraisalSettings
    timings: dict[str, float]
    inversion_losses: tuple[float, ...]
    adaptation_losses: tuple[float, ...]
    repeats: RepeatedScores | None = None

    @property
    def aligned(self) -> np.ndarray:
        return self.preprocessing.aligned

    @property
    def primary_score(self) -> float:
        """The score of :data:`pipeline.vocabulary.PRIMARY_VARIANT`."""
        return self.score(PRIMARY_VARIANT)

    @property
    def primary_heatmap(self) -> np.ndarray:
        """The heatmap behind :attr:`primary_score`, ``[S, S]``."""
        return self.heatmaps[adapted_heatmap_key(PRIMARY_VARIANT.adaptation, PRIMARY_VARIANT.heatmap_key)]

    def score(self, variant: ScoreVariant) -> float:
        """One variant's score; KeyError when the settings did not compute it."""
        return _score(self.scores, variant)


def adapted_heatmap_key(adaptation: bool, heatmap_key: str) -> str:
    """Key of a heatmap in a result's ``heatmaps``: "with_adaptation/pse/ycbcr+erosion/diff_then_erode"."""
    return f"{'with' if adaptation else 'without'}_adaptation/{heatmap_key}"


def _score(scores: tuple[VariantScore, ...], variant: ScoreVariant) -> float:
    found = find_score(scores, variant)
    if found is None:
        raise KeyError(f"no score for {variant.key}")
    return found


def image_to_tensor(image: np.ndarray, device: str | torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[S, S, 3]`` uint8 → ``[1, 3, S, S]`` in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return (tensor.to(device=device, dtype=dtype) / 127.5 - 1.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """``[1, 3, S, S]`` on the generator's scale (≈[-1, 1]) → ``[S, S, 3]`` uint8, as the reference saves images."""
    if tensor.ndim != 4 or tensor.shape[0] != 1 or tensor.shape[1] != 3:
        raise ValueError(f"expected [1, 3, S, S], got {tuple(tensor.shape)}")
    pixels = (tensor.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return pixels[0].permute(1, 2, 0).cpu().numpy()


class WStatsCache:
    """w statistics per bundle identity (10 000 mapping passes; computed once per process)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int, str], WStats] = {}

    def get(self, bundle: ModelBundle, settings: InversionSettings, device: str) -> WStats:
        key = (bundle.identity.identity, settings.w_avg_samples, settings.w_stats_seed, device)
        if key not in self._cache:
            self._cache[key] = compute_w_stats(bundle.generator, settings.w_avg_samples, settings.w_stats_seed, device=device)
        return self._cache[key]


@dataclass(frozen=True)
class NormalizationResult:
    """Output of :func:`normalize_aligned`.

    ``inverted`` (without adaptation) and ``normalized`` (with adaptation) are
    [S, S, 3] uint8 RGB; ``heatmaps`` maps ``"with_adaptation/<key>"`` and
    ``"without_adaptation/<key>"`` to float64 [S, S] maps; ``timings`` in seconds.
    K > 1 repeats: means and repeat 0's images, as in :class:`AppraisalResult`.
    """

    inverted: np.ndarray
    normalized: np.ndarray
    scores: tuple[VariantScore, ...]
    heatmaps: dict[str, np.ndarray]
    timings: dict[str, float]
    inversion_losses: tuple[float, ...]
    adaptation_losses: tuple[float, ...]
    repeats: RepeatedScores | None = None

    def score(self, variant: ScoreVariant) -> float:
        """One variant's score; KeyError when the settings did not compute it."""
        return _score(self.scores, variant)


def _normalize_once(aligned_rgb: np.ndarray, target: torch.Tensor, masks: Mapping[str, np.ndarray],
                    bundle: ModelBundle, settings: AppraisalSettings, seed: int, w_stats: WStats,
                    progress: Callable[[Progress], None] | None) -> NormalizationResult:
    """One inversion (noise and jitter from ``seed``), adaptation and scoring; timings without w_stats/total."""
    timings: dict[str, float] = {}
    device = settings.device
    mark = time.perf_counter()
    rng = torch.Generator(device="cpu").manual_seed(seed)
    (inversion,) = invert_in_mode(settings.mode, bundle.generator, target, bundle.lpips, settings.inversion,
                                  w_stats=w_stats, generators=[rng], device=device, dtype=settings.dtype,
                                  performance=settings.performance, progress=progress)
    timings["inversion"] = time.perf_counter() - mark

    mark = time.perf_counter()
    (adaptation,) = adapt(bundle.generator, target, inversion.w, inversion.noise, bundle.lpips, settings.adaptation,
                          device=device, dtype=settings.dtype, progress=progress, performance=settings.performance)
    timings["adaptation"] = time.perf_counter() - mark

    inverted = tensor_to_image(inversion.image)
    normalized = tensor_to_image(adaptation.image)
    mark = time.perf_counter()
    lpips_model = bundle.lpips_spatial if settings.lpips_heatmaps else None
    scores: list[VariantScore] = []
    heatmaps: dict[str, np.ndarray] = {}
    for counterpart, adapted in ((inverted, False), (normalized, True)):
        variants, maps = score_all_variants(aligned_rgb, counterpart, masks, adaptation=adapted,
                                            lpips_model=lpips_model, erosion_orders=settings.erosion_orders,
                                            device=device)
        scores.extend(variants)
        heatmaps.update({adapted_heatmap_key(adapted, key): value for key, value in maps.items()})
    timings["scoring"] = time.perf_counter() - mark
    return NormalizationResult(
        inverted=inverted, normalized=normalized, scores=tuple(scores), heatmaps=heatmaps, timings=timings,
        inversion_losses=tuple(step.total for step in inversion.losses),
        adaptation_losses=tuple(step.total for step in adaptation.losses) + (adaptation.final_loss.total,),
    )


def normalize_aligned(
    aligned_rgb: np.ndarray,
    masks: Mapping[str, np.ndarray],
    bundle: ModelBundle,
    settings: AppraisalSettings = AppraisalSettings(),
    progress: Callable[[Progress], None] | None = None,
    *,
    w_stats_cache: WStatsCache | None = None,
) -> NormalizationResult:
    """Invert, adapt and score an aligned face, ``settings.repeats`` times (seeds: :func:`repeat_seeds`).

    aligned_rgb: [R, R, 3] uint8 RGB at the generator's resolution R.
    masks: region name → bool [R, R] (e.g. :func:`pipeline.preprocess.masks.region_masks`).
    ``settings.preprocess`` is not used. K > 1: each variant's score is the mean over the
    repeats and each heatmap the mean map; ``repeats`` keeps every repeat's scores.
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

    seeds = repeat_seeds(settings.inversion.seed, settings.repeats)
    first: NormalizationResult | None = None
    runs: list[tuple[VariantScore, ...]] = []
    heat_sums: dict[str, np.ndarray] = {}
    for seed in seeds:
        run = _normalize_once(aligned_rgb, target, masks, bundle, settings, seed, w_stats, progress)
        runs.append(run.scores)
        for stage, seconds in run.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        if first is None:
            first = run
        else:  # running sums keep one extra set of maps in memory, whatever K is
            for key, value in run.heatmaps.items():
                if key not in heat_sums:
                    heat_sums[key] = first.heatmaps[key].astype(np.float64)  # a copy
                heat_sums[key] += value
    timings["total"] = time.perf_counter() - started
    scores, heatmaps, repeats = first.scores, first.heatmaps, None
    if len(seeds) > 1:
        repeats = RepeatedScores(seeds, tuple(runs))
        scores = tuple(VariantScore(item.variant, float(np.mean(repeats.values(item.variant)))) for item in first.scores)
        heatmaps = {key: value / len(seeds) for key, value in heat_sums.items()}
    return NormalizationResult(
        inverted=first.inverted, normalized=first.normalized, scores=scores, heatmaps=heatmaps,
        timings={k: round(v, 3) for k, v in timings.items()},
        inversion_losses=first.inversion_losses, adaptation_losses=first.adaptation_losses, repeats=repeats,
    )


def appraise(
    photo_rgb: np.ndarray,
    bundle: ModelBundle,
    settings: AppraisalSettings = AppraisalSettings(),
    progress: Callable[[Progress], None] | None = None,
    *,
    w_stats_cache: WStatsCache | None = None,
) -> AppraisalResult:
    """Appraise one photo (``[H, W, 3]`` uint8 RGB) with the given models.

    Raises the typed errors of :mod:`pipeline.errors` for photos the method cannot
    apply to (no face, not frontal, too small, unreadable landmarks).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    generator = bundle.generator
    pre_settings = replace(settings.preprocess, output_size=int(generator.img_resolution))
    pre = preprocess(photo_rgb, bundle.face_models, pre_settings)
    timings["preprocess"] = time.perf_counter() - started

    # pipeline.appraise builds on this module's types, so it is imported here.
    from pipeline.appraise import normalize_aligned

    normal = normalize_aligned(pre.aligned, pre.masks, bundle, settings, progress, w_stats_cache=w_stats_cache)
    timings.update({key: value for key, value in normal.timings.items() if key != "total"})
    timings["total"] = time.perf_counter() - started
    return AppraisalResult(
        preprocessing=pre, inverted=normal.inverted, normalized=normal.normalized, scores=normal.scores,
        heatmaps=normal.heatmaps, model=bundle.identity, settings=settings,
        timings={k: round(v, 3) for k, v in timings.items()},
        inversion_losses=normal.inversion_losses, adaptation_losses=normal.adaptation_losses, repeats=normal.repeats,
    )


def scores_record(result: AppraisalResult) -> dict[str, Any]:
    """The JSON record written as scores.json and stored with the appraisal.

    With K > 1 repeats, "scores" are the means and "repeats" (absent for K = 1) holds
    every repeat's scores and each variant's SD (:meth:`RepeatedScores.to_dict`).
    """
    record = {
        "primary": {**PRIMARY_VARIANT.to_dict(), "score": result.primary_score},
        "scores": [item.to_dict() for item in result.scores],
        "model": result.model.to_dict(),
        "non_clinical": result.model.non_clinical,
        "label": result.model.label,
        "settings": result.settings.to_dict(),
        "timings_s": result.timings,
        "pose": result.preprocessing.pose.to_dict(),
        "faces_found": result.preprocessing.faces_found,
        "detector_score": result.preprocessing.detector_score,
        "final_losses": {"inversion": result.inversion_losses[-1] if result.inversion_losses else None,
                         "adaptation": result.adaptation_losses[-1] if result.adaptation_losses else None},
    }
    if result.repeats is not None:
        record["repeats"] = result.repeats.to_dict()
    return record
