"""Latent inversion: method.md 2a, the paper's Algorithm 1.

This follows the schedule and defaults of the public StyleGAN2-ADA projector:
one w (broadcast to every synthesis layer) and every per-layer noise map are
optimised with Adam against an LPIPS image loss plus a noise regulariser, with
a ramped learning rate and a decaying jitter on w. The generator is never
modified: the synthesis network is deep-copied and frozen, and gradients reach
only w and the noise maps.

Shapes: target and images [1, 3, R, R] in [-1, 1] (R = G.img_resolution);
w [1, num_ws, w_dim]; noise maps [1, 1, H, W] keyed as G.synthesis.noise_shapes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.normalize.perceptual import LPIPS_MAX_SIDE, LpipsModel, lpips_distance
from pipeline.progress import Progress

if TYPE_CHECKING:
    from pipeline.normalize.engine import PerformanceSettings

#: Noise maps are regularised at every scale down to this side (method.md 2a).
NOISE_REG_MIN_SIDE = 8


@dataclass(frozen=True)
class InversionSettings:
    """Algorithm 1's parameters; defaults are the reference projector's, with the paper's 2000 steps.

    ``w_stats_seed`` (123) is the reference projector's seed for the w statistics;
    ``seed`` (303, the reference command line's default) seeds the noise
    initialisation and the latent jitter when no ``torch.Generator`` is given.
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
    """Output of :func:`invert` (tensors detached, on the inversion's device and dtype).

    Attributes:
        w: [1, num_ws, w_dim], the optimised w broadcast to every layer.
        noise: name -> [1, 1, H, W] optimised noise maps (zero mean, unit variance).
        image: [1, 3, R, R], synthesis of ``w`` with ``noise``.
        losses: one record per step.
        steps: number of steps run.
    """

    w: torch.Tensor
    noise: dict[str, torch.Tensor]
    image: torch.Tensor
    losses: tuple[InversionStepLoss, ...]
    steps: int


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


def noise_regularization(noise: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over maps and scales of squared lag-1 autocorrelations along W and H.

    Each map [1, 1, H, W] contributes mean(n * roll(n, 1, W))^2 + mean(n * roll(n, 1, H))^2,
    then is 2x2 average-pooled and contributes again, until its side is <= 8.
    """
    if not noise:
        raise ValueError("noise_regularization needs at least one noise map")
    for name, values in noise.items():
        _check_noise_map(name, values)
    first = next(iter(noise.values()))
    total = torch.zeros((), device=first.device, dtype=first.dtype)
    for values in noise.values():
        level = values
        while True:
            term = (level * torch.roll(level, shifts=1, dims=3)).mean() ** 2
            term = term + (level * torch.roll(level, shifts=1, dims=2)).mean() ** 2
            total = total + term
            if level.shape[2] <= NOISE_REG_MIN_SIDE:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return total


def renormalize_noise_(noise: Mapping[str, torch.Tensor]) -> None:
    """In place, without gradient tracking: every map to zero mean and unit (population) variance."""
    with torch.no_grad():
        for values in noise.values():
            values -= values.mean()
            values *= values.square().mean().rsqrt()


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


def invert(
    G: torch.nn.Module,
    target: torch.Tensor,
    lpips_model: LpipsModel,
    settings: InversionSettings,
    *,
    w_stats: WStats | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[Progress], None] | None = None,
    performance: PerformanceSettings | None = None,
) -> InversionResult:
    """Project ``target`` [1, 3, R, R] in [-1, 1] into G's W space and noise maps.

    Args:
        G: the generator (unchanged by this call).
        target: the aligned face.
        lpips_model: frozen LPIPS on ``device`` (the image loss).
        settings: Algorithm 1's parameters.
        w_stats: precomputed :func:`compute_w_stats` for G; computed when None.
        generator: RNG for the noise initialisation and the latent jitter;
            a CPU generator seeded with ``settings.seed`` when None.
        device, dtype: where and in what precision to optimise.
        progress: called after every step with stage "inversion".
        performance: None runs this reference loop; settings run the optimised engine
            (:func:`pipeline.normalize.batch_inversion.invert_batch`, same result to rounding or
            to the precision the settings choose).

    Bitwise reproducible on CPU for the same inputs, seed and thread count.
    """
    if performance is not None:
        from pipeline.normalize.batch_inversion import invert_batch

        return invert_batch(G, target, lpips_model, settings, w_stats=w_stats,
                            generators=None if generator is None else [generator], device=device, dtype=dtype,
                            performance=performance, progress=progress)[0]
    device = torch.device(device)
    check_target(target, G)
    check_lpips_device(lpips_model, device)
    if w_stats is None:
        w_stats = compute_w_stats(G, settings.w_avg_samples, settings.w_stats_seed, device=device)
    if tuple(w_stats.w_avg.shape) != (1, 1, G.w_dim):
        raise ValueError(f"w_stats.w_avg must be [1, 1, {G.w_dim}], got {tuple(w_stats.w_avg.shape)}")
    if generator is None:
        generator = torch.Generator().manual_seed(settings.seed)

    synthesis = copy.deepcopy(G.synthesis).to(device=device, dtype=dtype).eval().requires_grad_(False)
    target = target.detach().to(device=device, dtype=dtype)

    def standard_normal(shape: tuple[int, ...]) -> torch.Tensor:
        values = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        return values.to(device=device, dtype=dtype)

    w_opt = w_stats.w_avg.to(device=device, dtype=dtype).clone().requires_grad_(True)
    noise = {
        name: standard_normal((1, 1, height, width)).requires_grad_(True)
        for name, (height, width) in synthesis.noise_shapes.items()
    }
    optimizer = torch.optim.Adam([w_opt, *noise.values()], lr=settings.initial_lr, betas=(0.9, 0.999))

    losses: list[InversionStepLoss] = []
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings.steps, settings)
        jitter_scale = latent_jitter_scale(step, settings.steps, settings, w_stats.w_std)
        jitter = standard_normal(tuple(w_opt.shape)) * jitter_scale
        ws = (w_opt + jitter).repeat(1, G.num_ws, 1)
        synth = synthesis(ws, noise=noise)
        distance = lpips_distance(lpips_model, synth, target, max_side=settings.lpips_max_side)[0]
        reg = noise_regularization(noise)
        loss = distance + settings.regularize_noise_weight * reg

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        renormalize_noise_(noise)

        record = InversionStepLoss(
            total=float(loss.detach()), lpips=float(distance.detach()), noise_reg=float(reg.detach())
        )
        losses.append(record)
        if progress is not None:
            progress(Progress(stage="inversion", step=step + 1, total=settings.steps, loss=record.total))

    with torch.no_grad():
        w_final = w_opt.detach().repeat(1, G.num_ws, 1)
        noise_final = {name: values.detach().clone() for name, values in noise.items()}
        image = synthesis(w_final, noise=noise_final)
    return InversionResult(w=w_final, noise=noise_final, image=image, losses=tuple(losses), steps=settings.steps)


def check_target(target: torch.Tensor, G: torch.nn.Module) -> int:
    """Validate a target image [1, 3, R, R] in [-1, 1] for G; return R."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    resolution = int(G.img_resolution)
    if tuple(target.shape) != (1, 3, resolution, resolution):
        raise ValueError(f"target must be [1, 3, {resolution}, {resolution}], got {tuple(target.shape)}")
    if not target.is_floating_point():
        raise TypeError(f"target must be floating point in [-1, 1], got {target.dtype}")
    if not bool(torch.isfinite(target).all()):
        raise ValueError("target contains NaN or infinite values")
    low, high = float(target.min()), float(target.max())
    if low < -1.001 or high > 1.001:
        raise ValueError(f"target must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}]")
    return resolution


def check_lpips_device(lpips_model: LpipsModel, device: torch.device) -> None:
    """The LPIPS model must already live on ``device`` (it is not moved, to leave it unchanged)."""
    if not isinstance(lpips_model, LpipsModel):
        raise TypeError(f"lpips_model must be an LpipsModel, got {type(lpips_model).__name__}")
    model_device = next(lpips_model.parameters()).device
    if not _same_device(model_device, device):
        raise ValueError(f"lpips_model is on {model_device}, but the optimisation runs on {device}")


def _check_noise_map(name: str, values: torch.Tensor) -> None:
    if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[:2] != (1, 1):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"noise map {name!r} must be [1, 1, H, W], got {shape}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _require(condition: bool, name: str, value: object, rule: str) -> None:
    if not condition:
        raise ValueError(f"InversionSettings.{name} must be {rule}, got {value!r}")
