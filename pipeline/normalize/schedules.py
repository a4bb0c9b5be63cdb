"""The normalisation modes: which inversion schedule runs, and how to check the fast one.

A mode means one thing: the schedule of Algorithm 1's steps. It does not choose the
arithmetic (that is :class:`~pipeline.normalize.engine.PerformanceSettings`, the same in
both modes, exact float32 by default), and it does not touch model adaptation. Both modes
run the one optimisation loop, :func:`pipeline.normalize.inversion.invert`.

PAPER runs Algorithm 1 as published (method.md 2a: 2000 steps at full resolution).
FAST inverts mostly at a lower resolution and then refines briefly at full size:

1. ``coarse_steps`` (a fraction of the configured steps) against the 'skip' image at
   block ``coarse_resolution`` (a quarter of the generator's side, at most 256 — the
   LPIPS size, so nothing is downsampled — and at least 32), with the target
   area-downsampled to it; only the noise maps up to that block are optimised.
2. ``refine_steps`` at full resolution from there, every noise map optimised, with its
   own (smaller) learning-rate ramp and no latent jitter.

Model adaptation (method.md 2b, :func:`pipeline.normalize.adaptation.adapt`) is the same
in both modes: its 50 steps are a clinical parameter. FAST changes the scores;
:func:`score_agreement` measures by how much (benchmarks/normalize_gpu.py reports it
against PAPER; the goal is r >= 0.98).

Shapes: targets [N, 3, S, S] in [-1, 1]; one
:class:`~pipeline.normalize.inversion.InversionResult` per photo, images at full size.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import scipy.stats
import torch

from pipeline.normalize.engine import EXACT, PerformanceSettings
from pipeline.normalize.inversion import (
    InversionResult,
    InversionSettings,
    InversionStart,
    WStats,
    compute_w_stats,
    invert,
)
from pipeline.normalize.perceptual import LpipsModel
from pipeline.progress import Progress


class NormalizationMode(str, enum.Enum):
    """Which inversion schedule an appraisal uses."""

    PAPER = "paper"  # method.md 2a as published
    FAST = "fast"  # FastSchedule


@dataclass(frozen=True)
class FastSchedule:
    """The fast mode's inversion schedule, independent of the generator's size (see the module text)."""

    coarse_divisor: int = 4
    coarse_max_resolution: int = 256
    coarse_min_resolution: int = 32
    coarse_fraction: float = 0.3
    refine_fraction: float = 0.05
    refine_lr: float = 0.05
    refine_noise_factor: float = 0.0

    def __post_init__(self) -> None:
        for name in ("coarse_divisor", "coarse_max_resolution", "coarse_min_resolution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FastSchedule.{name} must be an int >= 1, got {value!r}")
        if self.coarse_min_resolution > self.coarse_max_resolution:
            raise ValueError(f"FastSchedule.coarse_min_resolution ({self.coarse_min_resolution}) exceeds "
                             f"coarse_max_resolution ({self.coarse_max_resolution})")
        for name in ("coarse_fraction", "refine_fraction", "refine_lr", "refine_noise_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"FastSchedule.{name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.coarse_fraction <= 1 or not 0 < self.refine_fraction <= 1:
            raise ValueError("FastSchedule.coarse_fraction and refine_fraction must be in (0, 1], got "
                             f"{self.coarse_fraction} and {self.refine_fraction}")
        if self.refine_lr <= 0:
            raise ValueError(f"FastSchedule.refine_lr must be > 0, got {self.refine_lr}")

    def coarse_resolution(self, img_resolution: int) -> int:
        """The block to invert at first: img_resolution / divisor, clipped to [min, max] and to img_resolution."""
        side = max(self.coarse_min_resolution, min(self.coarse_max_resolution, img_resolution // self.coarse_divisor))
        side = 1 << (max(side, 4).bit_length() - 1)  # a block resolution: a power of 2
        return min(side, img_resolution)

    def coarse_steps(self, steps: int) -> int:
        return max(1, round(steps * self.coarse_fraction))

    def refine_steps(self, steps: int) -> int:
        return max(1, round(steps * self.refine_fraction))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreAgreement:
    """How well candidate scores reproduce reference scores over the same targets.

    ``pearson_r`` is NaN when either side has no spread.
    """

    count: int
    pearson_r: float
    max_abs_difference: float
    mean_abs_difference: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_agreement(reference: Sequence[float], candidate: Sequence[float]) -> ScoreAgreement:
    """Pearson r, max and mean |difference| between paired scores (same targets, same order)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two equally long 1-D score lists with >= 2 entries, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores must be finite")
    constant = bool(np.all(a == a[0]) or np.all(b == b[0]))
    r = float("nan") if constant else float(scipy.stats.pearsonr(a, b).statistic)
    difference = np.abs(a - b)
    return ScoreAgreement(count=int(a.size), pearson_r=r, max_abs_difference=float(difference.max()),
                          mean_abs_difference=float(difference.mean()))


def invert_fast(
    G: torch.nn.Module,
    targets: torch.Tensor,
    lpips_model: LpipsModel,
    settings: InversionSettings,
    schedule: FastSchedule = FastSchedule(),
    *,
    w_stats: WStats | None = None,
    generators: Sequence[torch.Generator] | None = None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    performance: PerformanceSettings = EXACT,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[InversionResult, ...]:
    """The FAST inversion of targets [N, 3, S, S] in [-1, 1]; one result per photo.

    ``settings`` gives the step budget (``steps``), the learning-rate and jitter ramps,
    seeds and LPIPS size; ``schedule`` splits it (see the module text) into two runs of
    :func:`~pipeline.normalize.inversion.invert` that share each photo's RNG. Results hold
    both stages' losses in order; images are at full size.
    """
    if not isinstance(schedule, FastSchedule):
        raise TypeError(f"schedule must be a FastSchedule, got {type(schedule).__name__}")
    if w_stats is None:
        w_stats = compute_w_stats(G, settings.w_avg_samples, settings.w_stats_seed, device=device)
    count = int(targets.shape[0]) if isinstance(targets, torch.Tensor) and targets.ndim == 4 else 0
    if generators is None:
        generators = [torch.Generator().manual_seed(settings.seed) for _ in range(count)]
    resolution = int(G.img_resolution)
    coarse = schedule.coarse_resolution(resolution)
    coarse_settings = replace(settings, steps=schedule.coarse_steps(settings.steps))
    refine_settings = replace(settings, steps=schedule.refine_steps(settings.steps), initial_lr=schedule.refine_lr,
                              initial_noise_factor=schedule.refine_noise_factor)
    total = coarse_settings.steps + refine_settings.steps

    def report(offset: int) -> Callable[[Progress], None] | None:
        if progress is None:
            return None
        return lambda p: progress(Progress(stage="inversion", step=offset + p.step, total=total, loss=p.loss))

    common = dict(w_stats=w_stats, generators=generators, device=device, dtype=dtype, performance=performance)
    first = invert(G, targets, lpips_model, coarse_settings, max_resolution=coarse if coarse < resolution else None,
                   progress=report(0), **common)
    second = invert(G, targets, lpips_model, refine_settings, start=InversionStart.from_results(first),
                    progress=report(coarse_settings.steps), **common)
    return tuple(replace(fine, losses=rough.losses + fine.losses, steps=total) for rough, fine in zip(first, second))


def invert_in_mode(
    mode: NormalizationMode,
    G: torch.nn.Module,
    targets: torch.Tensor,
    lpips_model: LpipsModel,
    settings: InversionSettings,
    *,
    w_stats: WStats | None = None,
    generators: Sequence[torch.Generator] | None = None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    performance: PerformanceSettings = EXACT,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[InversionResult, ...]:
    """Targets [N, 3, S, S]: :func:`pipeline.normalize.inversion.invert` for PAPER, :func:`invert_fast` for FAST."""
    mode = NormalizationMode(mode)
    if mode is NormalizationMode.PAPER:
        return invert(G, targets, lpips_model, settings, w_stats=w_stats, generators=generators, device=device,
                      dtype=dtype, performance=performance, progress=progress)
    return invert_fast(G, targets, lpips_model, settings, FastSchedule(), w_stats=w_stats, generators=generators,
                       device=device, dtype=dtype, performance=performance, progress=progress)
