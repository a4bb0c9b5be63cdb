"""Latent inversion: method.md 2a, the paper's Algorithm 1, for a batch of photos.

This follows the schedule and defaults of the public StyleGAN2-ADA projector:
one w (broadcast to every synthesis layer) and every per-layer noise map are
optimised with Adam against an LPIPS image loss plus a noise regulariser, with
a ramped learning rate and a decaying jitter on w. The generator is never
modified: the synthesis network is deep-copied and frozen, and gradients reach
only w and the noise maps.

:func:`invert` is the one optimisation loop. A single photo is a batch of one; in a
batch every photo keeps its own w, noise maps and RNG, and the objective is the sum
of the photos' losses, so gradients and Adam's element-wise updates stay per photo
(a batch equals separate runs up to the rounding of batched kernels). ``performance``
(:class:`~pipeline.normalize.engine.PerformanceSettings`) chooses how the arithmetic
runs; its defaults are the reference projector's arithmetic in float32 (one photo gives
bit for bit the reference loop's losses, latents and image on the CPU). Whatever the
settings, the returned image is the reference-form synthesis of the final latents
without autocast. The latent jitter is drawn up front in the reference's order, and the
per-step losses stay on the device until the end (unless a progress callback reads them).

``max_resolution`` R optimises against the 'skip' image at block R (the target
area-downsampled to R) with only the noise maps up to R; ``start`` continues from
earlier latents. Together they make the fast mode's coarse-to-fine schedule
(:mod:`pipeline.normalize.schedules`).

Shapes: targets [N, 3, S, S] in [-1, 1] (S = G.img_resolution); per photo an
:class:`InversionResult` with w [1, num_ws, w_dim], noise maps [1, 1, H, W] keyed as
G.synthesis.noise_shapes, image [1, 3, R, R] (R = ``max_resolution`` or S).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.models.stylegan2.networks import SynthesisImpl, SynthesisNetwork
from pipeline.normalize import engine
from pipeline.normalize.engine import EXACT, PerformanceSettings
from pipeline.normalize.perceptual import (
    LPIPS_MAX_SIDE,
    LpipsModel,
    LpipsTargetFeatures,
    area_downsample,
    lpips_distance,
    lpips_distance_to_features,
    lpips_target_features,
)
from pipeline.progress import Progress

#: Noise maps are regularised at every scale down to this side (method.md 2a).
NOISE_REG_MIN_SIDE = 8


@dataclass(frozen=True)
class InversionSettings:
    """Algorithm 1's parameters; defaults are the reference projector's, with the paper's 2000 steps.

    ``w_stats_seed`` (123) is the reference projector's seed for the w statistics;
    ``seed`` (303, the reference command line's default) seeds the noise
    initialisation and the latent jitter of every photo when no generators are given.
    """

    steps: int = 2000
    w_avg_samples: int = 10_000
    initial_lr: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    w_stats_seed: int = 123
    seed: int = 303
    lpips_max_side: int = LPIPS_MAX_SIDE

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"InversionSettings.{field.name} must be an int, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"InversionSettings.{field.name} must be a finite number, got {value!r}")
        _require(self.steps >= 1, "steps", self.steps, ">= 1")
        _require(self.w_avg_samples >= 2, "w_avg_samples", self.w_avg_samples, ">= 2")
        _require(self.initial_lr > 0, "initial_lr", self.initial_lr, "> 0")
        _require(self.initial_noise_factor >= 0, "initial_noise_factor", self.initial_noise_factor, ">= 0")
        for name in ("lr_rampdown_length", "lr_rampup_length", "noise_ramp_length"):
            value = getattr(self, name)
            _require(0 < value <= 1, name, value, "in (0, 1]")
        _require(self.regularize_noise_weight >= 0, "regularize_noise_weight", self.regularize_noise_weight, ">= 0")
        _require(self.w_stats_seed >= 0, "w_stats_seed", self.w_stats_seed, ">= 0")
        _require(self.seed >= 0, "seed", self.seed, ">= 0")
        _require(self.lpips_max_side >= 16, "lpips_max_side", self.lpips_max_side, ">= 16")


@dataclass(frozen=True)
class WStats:
    """Centre and spread of W: ``w_avg`` [1, 1, w_dim] (float32, CPU) and scalar ``w_std``.

    ``w_std`` is sqrt(mean over samples of |w - w_avg|^2), as in the reference projector.
    """

    w_avg: torch.Tensor
    w_std: float
    samples: int
    seed: int


@dataclass(frozen=True)
class InversionStepLoss:
    """Loss at one step, before its update: total = lpips + regularize_noise_weight * noise_reg."""

    total: float
    lpips: float
    noise_reg: float


@dataclass(frozen=True)
class InversionResult:
    """One photo's output of :func:`invert` (tensors detached, on the inversion's device and dtype).

    Attributes:
        w: [1, num_ws, w_dim], the optimised w broadcast to every layer.
        noise: name -> [1, 1, H, W], every layer's noise map (the optimised ones have zero
            mean and unit variance; with ``max_resolution`` the maps above it are as drawn).
        image: [1, 3, R, R], synthesis of ``w`` with ``noise`` (R = ``max_resolution`` or full size).
        losses: one record per step.
        steps: number of steps run.
    """

    w: torch.Tensor
    noise: dict[str, torch.Tensor]
    image: torch.Tensor
    losses: tuple[InversionStepLoss, ...]
    steps: int


@dataclass(frozen=True)
class InversionStart:
    """Latents to start from: w [N, 1, w_dim] and noise maps {name: [N, 1, H, W]} for every layer."""

    w: torch.Tensor
    noise: dict[str, torch.Tensor]

    @classmethod
    def from_results(cls, results: Sequence[InversionResult]) -> InversionStart:
        """Stack earlier results (their first w row and all noise maps)."""
        if not results:
            raise ValueError("InversionStart.from_results needs at least one result")
        w = torch.cat([r.w[:, :1] for r in results])
        names = list(results[0].noise)
        return cls(w=w, noise={name: torch.cat([r.noise[name] for r in results]) for name in names})


def learning_rate(step: int, steps: int, settings: InversionSettings) -> float:
    """Learning rate at ``step`` (0-based) of ``steps``: cosine ramp-down, linear ramp-up."""
    t = step / steps
    ramp = min(1.0, (1.0 - t) / settings.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
    ramp = ramp * min(1.0, t / settings.lr_rampup_length)
    return settings.initial_lr * ramp


def latent_jitter_scale(step: int, steps: int, settings: InversionSettings, w_std: float) -> float:
    """Standard deviation of the Gaussian jitter added to w at ``step`` (0-based)."""
    t = step / steps
    return w_std * settings.initial_noise_factor * max(0.0, 1.0 - t / settings.noise_ramp_length) ** 2


def noise_regularization(noise: Mapping[str, torch.Tensor], *, group_by_size: bool = False) -> torch.Tensor:
    """Per photo, the sum over maps and scales of squared lag-1 autocorrelations along W and H -> [N].

    Each map [N, 1, H, W] contributes mean(n * roll(n, 1, W))^2 + mean(n * roll(n, 1, H))^2
    per photo, then is 2x2 average-pooled and contributes again, until its side is <= 8.
    Terms are added map by map, scale by scale, as the reference projector does;
    ``group_by_size`` handles all maps (and pooled maps) of one size together instead
    (fewer, larger kernels; the same sum in another order; maps must be square, sides powers of 2).
    """
    if not noise:
        raise ValueError("noise_regularization needs at least one noise map")
    batch = None
    for name, values in noise.items():
        if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[1] != 1:
            raise ValueError(f"noise map {name!r} must be [N, 1, H, W], got {getattr(values, 'shape', values)}")
        if batch is not None and values.shape[0] != batch:
            raise ValueError(f"noise maps must share the batch size, {name!r} has {values.shape[0]}, others {batch}")
        batch = int(values.shape[0])
    if group_by_size:
        return _noise_regularization_by_size(noise, batch)
    first = next(iter(noise.values()))
    total = torch.zeros(batch, device=first.device, dtype=first.dtype)
    for values in noise.values():
        level = values
        while True:
            term = (level * torch.roll(level, shifts=1, dims=3)).mean(dim=(1, 2, 3)) ** 2
            term = term + (level * torch.roll(level, shifts=1, dims=2)).mean(dim=(1, 2, 3)) ** 2
            total = total + term
            if level.shape[2] <= NOISE_REG_MIN_SIDE:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return total


def _noise_regularization_by_size(noise: Mapping[str, torch.Tensor], batch: int) -> torch.Tensor:
    by_side: dict[int, list[torch.Tensor]] = {}
    for name, values in noise.items():
        side = int(values.shape[2])
        if values.shape[3] != side or side & (side - 1):
            raise ValueError(f"noise map {name!r} must be square with a power-of-2 side to group by size, "
                             f"got {tuple(values.shape)}")
        by_side.setdefault(side, []).append(values)
    first = next(iter(noise.values()))
    total = torch.zeros(batch, device=first.device, dtype=first.dtype)
    carried: torch.Tensor | None = None
    side = max(by_side)
    while side >= 1 and (carried is not None or any(s <= side for s in by_side)):
        rows = ([carried] if carried is not None else []) + by_side.get(side, [])
        carried = None
        if rows:
            level = torch.cat(rows, dim=1) if len(rows) > 1 else rows[0]
            across = (level * torch.roll(level, shifts=1, dims=3)).mean(dim=(2, 3)).square()
            down = (level * torch.roll(level, shifts=1, dims=2)).mean(dim=(2, 3)).square()
            total = total + (across + down).sum(dim=1)
            if side > NOISE_REG_MIN_SIDE:
                carried = F.avg_pool2d(level, kernel_size=2)
        side //= 2
    return total


def renormalize_noise_(noise: Mapping[str, torch.Tensor]) -> None:
    """In place, without gradient tracking: every map [N, 1, H, W] to zero mean and unit
    (population) variance per photo."""
    with torch.no_grad():
        for values in noise.values():
            values -= values.mean(dim=(1, 2, 3), keepdim=True)
            values *= values.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


def compute_w_stats(
    G: torch.nn.Module,
    samples: int,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
) -> WStats:
    """w_avg and w_std from ``samples`` z ~ N(0, I) through ``G.mapping`` (psi = 1).

    z is drawn with ``numpy.random.RandomState(seed)`` as the reference projector
    does, so the same pickle and seed give its numbers; the stream is stable
    across numpy versions. Cache the result per generator.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an int >= 2, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    mapping = G.mapping
    if not _same_device(next(mapping.parameters()).device, device):
        mapping = copy.deepcopy(mapping).to(device)
    rng = np.random.RandomState(seed)
    first_ws = []
    with torch.no_grad():
        for start in range(0, samples, batch_size):
            count = min(batch_size, samples - start)
            z = torch.from_numpy(rng.randn(count, G.z_dim)).to(device=device, dtype=torch.float32)
            ws = mapping(z, psi=1.0, cutoff=None)
            first_ws.append(ws[:, 0, :].to(device="cpu", dtype=torch.float64))
    w = torch.cat(first_ws)
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = float(((w - w_avg).square().sum() / samples).sqrt())
    return WStats(w_avg=w_avg[None].to(torch.float32), w_std=w_std, samples=samples, seed=seed)


def inversion_objective(
    synthesis: SynthesisNetwork,
    lpips_model: LpipsModel,
    target: LpipsTargetFeatures | torch.Tensor,
    ws: torch.Tensor,
    noise: dict[str, torch.Tensor],
    max_resolution: int,
    lpips_max_side: int,
    impl: SynthesisImpl,
    group_noise_maps: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LPIPS [N] of the synthesis of ``ws`` against the target (cached features or images) and
    the noise regulariser [N] of the optimised maps (module level so ``torch.compile`` can reuse it)."""
    image = synthesis(ws, noise=noise, max_resolution=max_resolution, impl=impl)
    if impl.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    if isinstance(target, LpipsTargetFeatures):
        distance = lpips_distance_to_features(lpips_model, image, target)
    else:
        distance = lpips_distance(lpips_model, image, target, max_side=lpips_max_side)
    return distance, noise_regularization(noise, group_by_size=group_noise_maps)


def invert(
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
    max_resolution: int | None = None,
    start: InversionStart | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[InversionResult, ...]:
    """Project targets [N, 3, S, S] in [-1, 1] into G's W space and noise maps; one result per photo.

    Args:
        G: the generator (unchanged by this call).
        targets: the aligned faces; a single photo is [1, 3, S, S].
        lpips_model: frozen LPIPS on ``device`` (the image loss).
        settings: Algorithm 1's parameters.
        w_stats: precomputed :func:`compute_w_stats` for G; computed when None.
        generators: one RNG per photo, for its noise initialisation (when ``start`` is
            None) and its latent jitter; default: each a CPU generator seeded with ``settings.seed``.
        device, dtype: where and in what precision to optimise.
        performance: how the arithmetic runs (default: the exact float32 path; see
            :mod:`pipeline.normalize.engine`).
        max_resolution: optimise the image at this block (None: full size).
        start: latents to continue from; None: w_avg and N(0, 1) noise maps.
        progress: called after every step with stage "inversion" and the mean loss over
            the photos (reading the loss synchronises with the device each step).

    Bitwise reproducible on CPU for the same inputs, seeds, settings and thread count.
    """
    device = torch.device(device)
    engine.check_settings(performance, dtype)
    count = check_targets(targets, G)
    check_lpips_device(lpips_model, device)
    if w_stats is None:
        w_stats = compute_w_stats(G, settings.w_avg_samples, settings.w_stats_seed, device=device)
    if tuple(w_stats.w_avg.shape) != (1, 1, G.w_dim):
        raise ValueError(f"w_stats.w_avg must be [1, 1, {G.w_dim}], got {tuple(w_stats.w_avg.shape)}")
    if generators is None:
        generators = [torch.Generator().manual_seed(settings.seed) for _ in range(count)]
    if len(generators) != count or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(f"generators must be {count} torch.Generator objects, one per photo")

    synthesis = copy.deepcopy(G.synthesis).to(device=device, dtype=dtype).eval().requires_grad_(False)
    resolution = synthesis.block_resolutions_up_to(max_resolution)[-1]
    impl = performance.synthesis_impl(count)
    shapes = synthesis.noise_shapes
    active = [name for name, (height, _) in shapes.items() if height <= resolution]

    def standard_normal(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
        values = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        return values.to(device=device, dtype=dtype)

    if start is None:
        w_opt = w_stats.w_avg.to(device=device, dtype=dtype).repeat(count, 1, 1)
        drawn = [{name: standard_normal(g, (1, 1, h, w)) for name, (h, w) in shapes.items()} for g in generators]
        noise = {name: torch.cat([maps[name] for maps in drawn]) for name in shapes}
    else:
        w_opt, noise = _checked_start(start, G, count, device, dtype)
    w_opt = w_opt.detach().clone().requires_grad_(True)
    noise = {name: values.detach().clone().requires_grad_(name in active) for name, values in noise.items()}
    optimised = {name: noise[name] for name in active}
    # The reference draws one jitter vector per step after the noise maps: same order here.
    jitter = torch.stack([
        torch.cat([standard_normal(g, (1, 1, G.w_dim)) for g in generators]) for _ in range(settings.steps)
    ])
    jitter_scales = [latent_jitter_scale(step, settings.steps, settings, w_stats.w_std)
                     for step in range(settings.steps)]

    lpips_side = min(resolution, settings.lpips_max_side)
    target_images = engine.memory_format(
        area_downsample(targets.detach().to(device=device, dtype=dtype), lpips_side), performance)
    objective = engine.maybe_compile(inversion_objective, performance)
    optimizer = engine.adam([w_opt, *optimised.values()], settings.initial_lr, performance, device)
    scaler = engine.grad_scaler(performance, device)
    history: list[torch.Tensor] = []
    with engine.numerics(performance, device):
        target: LpipsTargetFeatures | torch.Tensor = target_images
        if performance.cache_target_features:
            target = lpips_target_features(lpips_model, target_images, max_side=lpips_side)
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, settings.steps, settings)
            engine.mark_step(performance)
            ws = (w_opt + jitter[step] * jitter_scales[step]).repeat(1, G.num_ws, 1)
            with engine.autocast(performance, device):
                distance, reg = objective(synthesis, lpips_model, target, ws, optimised, resolution, lpips_side,
                                          impl, performance.group_noise_maps)
            distance, reg = distance.to(w_opt.dtype), reg.to(w_opt.dtype)
            totals = distance + settings.regularize_noise_weight * reg
            optimizer.zero_grad(set_to_none=True)
            engine.backward_and_step(totals.sum(), optimizer, scaler)
            renormalize_noise_(optimised)
            history.append(torch.stack([totals, distance, reg]).detach())
            if progress is not None:
                progress(Progress(stage="inversion", step=step + 1, total=settings.steps,
                                  loss=float(totals.detach().mean())))
        with torch.no_grad():
            w_final = w_opt.detach().repeat(1, G.num_ws, 1)
            noise_final = {name: values.detach() for name, values in noise.items()}
            images = synthesis(w_final, noise=noise_final, max_resolution=resolution)
    records = torch.stack(history).cpu().tolist()  # [steps, 3, N]
    return tuple(
        InversionResult(
            w=w_final[i : i + 1].clone(),
            noise={name: values[i : i + 1].clone() for name, values in noise_final.items()},
            image=images[i : i + 1].clone(),
            losses=tuple(InversionStepLoss(total=r[0][i], lpips=r[1][i], noise_reg=r[2][i]) for r in records),
            steps=settings.steps,
        )
        for i in range(count)
    )


def invert_many(
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
    max_resolution: int | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[InversionResult, ...]:
    """:func:`invert` over targets [M, 3, S, S] in chunks of ``performance.batch_size``; one result per photo.

    ``progress`` counts the steps of each chunk anew.
    """
    count = check_targets(targets, G)
    if generators is not None and len(generators) != count:
        raise ValueError(f"generators must be {count} torch.Generator objects, one per photo")
    if w_stats is None:
        w_stats = compute_w_stats(G, settings.w_avg_samples, settings.w_stats_seed, device=device)
    results: list[InversionResult] = []
    for first in range(0, count, performance.batch_size):
        last = min(first + performance.batch_size, count)
        results.extend(invert(G, targets[first:last], lpips_model, settings, w_stats=w_stats,
                              generators=None if generators is None else list(generators[first:last]),
                              device=device, dtype=dtype, performance=performance, max_resolution=max_resolution,
                              progress=progress))
    return tuple(results)


def check_targets(targets: torch.Tensor, G: torch.nn.Module) -> int:
    """Validate target images [N, 3, R, R] in [-1, 1] (N >= 1, R = G.img_resolution); return N."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    resolution = int(G.img_resolution)
    if targets.ndim != 4 or targets.shape[0] < 1 or tuple(targets.shape[1:]) != (3, resolution, resolution):
        raise ValueError(f"targets must be [N, 3, {resolution}, {resolution}] with N >= 1, "
                         f"got {tuple(targets.shape)}")
    if not targets.is_floating_point():
        raise TypeError(f"targets must be floating point in [-1, 1], got {targets.dtype}")
    if not bool(torch.isfinite(targets).all()):
        raise ValueError("targets contain NaN or infinite values")
    low, high = float(targets.min()), float(targets.max())
    if low < -1.001 or high > 1.001:
        raise ValueError(f"targets must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}]")
    return int(targets.shape[0])


def check_lpips_device(lpips_model: LpipsModel, device: torch.device) -> None:
    """The LPIPS model must already live on ``device`` (it is not moved, to leave it unchanged)."""
    if not isinstance(lpips_model, LpipsModel):
        raise TypeError(f"lpips_model must be an LpipsModel, got {type(lpips_model).__name__}")
    model_device = next(lpips_model.parameters()).device
    if not _same_device(model_device, device):
        raise ValueError(f"lpips_model is on {model_device}, but the optimisation runs on {device}")


def _checked_start(start: InversionStart, G: torch.nn.Module, count: int, device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if not isinstance(start, InversionStart):
        raise TypeError(f"start must be an InversionStart, got {type(start).__name__}")
    if tuple(start.w.shape) != (count, 1, G.w_dim):
        raise ValueError(f"start.w must be [{count}, 1, {G.w_dim}], got {tuple(start.w.shape)}")
    shapes = G.synthesis.noise_shapes
    if set(start.noise) != set(shapes):
        raise ValueError(f"start.noise must have maps {sorted(shapes)}, got {sorted(start.noise)}")
    for name, (height, width) in shapes.items():
        if tuple(start.noise[name].shape) != (count, 1, height, width):
            raise ValueError(f"start.noise[{name!r}] must be [{count}, 1, {height}, {width}], "
                             f"got {tuple(start.noise[name].shape)}")
    w = start.w.detach().to(device=device, dtype=dtype)
    return w, {name: start.noise[name].detach().to(device=device, dtype=dtype) for name in shapes}


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _require(condition: bool, name: str, value: object, rule: str) -> None:
    if not condition:
        raise ValueError(f"InversionSettings.{name} must be {rule}, got {value!r}")
