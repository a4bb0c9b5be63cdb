"""Algorithm 1 (method.md 2a) for several photos at once, with the optimisations of
:class:`~pipeline.normalize.engine.PerformanceSettings`.

Every photo keeps its own w, noise maps and RNG; the objective is the sum of the
photos' losses, and Adam works element by element, so a batch of N equals N
separate :func:`pipeline.normalize.inversion.invert` runs with the same generators (to
rounding: batched kernels sum in another order). Differences from the reference
loop are all exact rewrites unless the settings ask for lower precision:

* the target's LPIPS features are computed once (``cache_target_features``);
* the latent jitter of every step is drawn up front in the reference's order;
* per-step losses stay on the device and are read once at the end (no
  synchronisation per step unless a progress callback asks for the loss);
* the noise regulariser runs level by level over all maps of a size at once.

``max_resolution`` R optimises against the 'skip' image at block R (the target
area-downsampled to R) with only the noise maps up to R; ``start`` continues from
earlier latents. Together they make the fast mode's coarse-to-fine schedule
(:mod:`pipeline.normalize.schedules`).

Shapes: targets [N, 3, S, S] in [-1, 1] (S = G.img_resolution); per photo the
results of :func:`pipeline.normalize.inversion.invert` (w [1, num_ws, w_dim], noise maps
[1, 1, H, W] for every layer, image [1, 3, R, R]).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.models.stylegan2.fast_synthesis import FastSynthesis
from pipeline.normalize import engine as perf
from pipeline.normalize.engine import PerformanceSettings
from pipeline.normalize.inversion import (
    NOISE_REG_MIN_SIDE,
    InversionResult,
    InversionSettings,
    InversionStepLoss,
    WStats,
    check_lpips_device,
    check_target,
    compute_w_stats,
    latent_jitter_scale,
    learning_rate,
)
from pipeline.normalize.perceptual import (
    LpipsModel,
    LpipsTargetFeatures,
    area_downsample,
    lpips_distance,
    lpips_distance_to_features,
    lpips_target_features,
)
from pipeline.progress import Progress


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


def noise_regularization_per_sample(noise: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """:func:`pipeline.normalize.inversion.noise_regularization` for maps [N, 1, S, S] -> [N], one value per photo.

    All maps of one size (and the pooled maps from the size above) are handled together.
    """
    if not noise:
        raise ValueError("noise_regularization_per_sample needs at least one noise map")
    by_side: dict[int, list[torch.Tensor]] = {}
    batch = None
    for name, values in noise.items():
        if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[1] != 1:
            raise ValueError(f"noise map {name!r} must be [N, 1, S, S], got {getattr(values, 'shape', values)}")
        side = int(values.shape[2])
        if values.shape[3] != side or side & (side - 1):
            raise ValueError(f"noise map {name!r} must be square with a power-of-2 side, got {tuple(values.shape)}")
        if batch is not None and values.shape[0] != batch:
            raise ValueError(f"noise maps must share the batch size, {name!r} has {values.shape[0]}, others {batch}")
        batch = int(values.shape[0])
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


def renormalize_noise_per_sample_(noise: Mapping[str, torch.Tensor]) -> None:
    """In place, without gradient tracking: every map [N, 1, H, W] to zero mean, unit variance per photo."""
    with torch.no_grad():
        for values in noise.values():
            values -= values.mean(dim=(1, 2, 3), keepdim=True)
            values *= values.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


def inversion_objective(
    synthesis: FastSynthesis,
    lpips_model: LpipsModel,
    target: LpipsTargetFeatures | torch.Tensor,
    ws: torch.Tensor,
    noise: dict[str, torch.Tensor],
    max_resolution: int | None,
    lpips_max_side: int,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LPIPS [N] of the synthesis of ``ws`` against the target (cached features or images) and
    the noise regulariser [N] of the optimised maps (module level so ``torch.compile`` can reuse it)."""
    image = synthesis(ws, noise, max_resolution)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    if isinstance(target, LpipsTargetFeatures):
        distance = lpips_distance_to_features(lpips_model, image, target)
    else:
        distance = lpips_distance(lpips_model, image, target, max_side=lpips_max_side)
    return distance, noise_regularization_per_sample(noise)


def invert_batch(
    G: torch.nn.Module,
    targets: torch.Tensor,
    lpips_model: LpipsModel,
    settings: InversionSettings,
    *,
    w_stats: WStats | None = None,
    generators: Sequence[torch.Generator] | None = None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    performance: PerformanceSettings | None = None,
    max_resolution: int | None = None,
    start: InversionStart | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[InversionResult, ...]:
    """Invert N photos together; see the module text.

    Args:
        targets: [N, 3, S, S] in [-1, 1].
        generators: one RNG per photo (noise initialisation when ``start`` is None,
            then the jitter); default: each a CPU generator seeded with ``settings.seed``,
            as :func:`pipeline.normalize.inversion.invert` does.
        performance: the optimisations (default ``PerformanceSettings()``: exact ones only).
        max_resolution: optimise the image at this block (None: full size).
        start: latents to continue from; None: w_avg and N(0, 1) noise maps.
        progress: called after every step with stage "inversion" and the mean loss
            over the photos (reading the loss synchronises with the device each step).

    Returns one :class:`InversionResult` per photo; its image (at ``max_resolution``)
    is the plain float32 synthesis of the final latents.
    """
    device = torch.device(device)
    performance = performance or PerformanceSettings()
    perf.check_precision(performance, dtype)
    count = _check_targets(targets, G)
    check_lpips_device(lpips_model, device)
    if w_stats is None:
        w_stats = compute_w_stats(G, settings.w_avg_samples, settings.w_stats_seed, device=device)
    if tuple(w_stats.w_avg.shape) != (1, 1, G.w_dim):
        raise ValueError(f"w_stats.w_avg must be [1, 1, {G.w_dim}], got {tuple(w_stats.w_avg.shape)}")
    if generators is None:
        generators = [torch.Generator().manual_seed(settings.seed) for _ in range(count)]
    if len(generators) != count or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(f"generators must be {count} torch.Generator objects, one per photo")

    reference = copy.deepcopy(G.synthesis).to(device=device, dtype=dtype).eval().requires_grad_(False)
    resolution = reference.block_resolutions_up_to(max_resolution)[-1]
    synthesis = perf.fast_synthesis(reference, performance)
    shapes = reference.noise_shapes
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
    jitter_scales = [latent_jitter_scale(step, settings.steps, settings, w_stats.w_std) for step in range(settings.steps)]

    lpips_side = min(resolution, settings.lpips_max_side)
    target_images = perf.memory_format(area_downsample(targets.detach().to(device=device, dtype=dtype), lpips_side),
                                       performance)
    objective = perf.maybe_compile(inversion_objective, performance)
    optimizer = perf.adam([w_opt, *optimised.values()], settings.initial_lr, performance, device)
    scaler = perf.grad_scaler(performance, device)
    history: list[torch.Tensor] = []
    with perf.numerics(performance):
        target: LpipsTargetFeatures | torch.Tensor = target_images
        if performance.cache_target_features:
            target = lpips_target_features(lpips_model, target_images, max_side=lpips_side)
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, settings.steps, settings)
            perf.mark_step(performance)
            ws = (w_opt + jitter[step] * jitter_scales[step]).repeat(1, G.num_ws, 1)
            with perf.autocast(performance, device):
                distance, reg = objective(synthesis, lpips_model, target, ws, optimised, resolution,
                                          lpips_side, performance.channels_last)
            totals = distance.float() + settings.regularize_noise_weight * reg.float()
            optimizer.zero_grad(set_to_none=True)
            _backward_and_step(totals.sum(), optimizer, scaler)
            renormalize_noise_per_sample_(optimised)
            history.append(torch.stack([totals, distance.float(), reg.float()]).detach())
            if progress is not None:
                progress(Progress(stage="inversion", step=step + 1, total=settings.steps,
                                  loss=float(totals.detach().mean())))
        with torch.no_grad():
            w_final = w_opt.detach().repeat(1, G.num_ws, 1)
            noise_final = {name: values.detach() for name, values in noise.items()}
            images = reference(w_final, noise=noise_final, max_resolution=resolution)
    records = torch.stack(history).cpu().tolist() if history else []  # [steps, 3, N]
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
    performance: PerformanceSettings,
    generators: Sequence[torch.Generator] | None = None,
    **kwargs,
) -> tuple[InversionResult, ...]:
    """:func:`invert_batch` over ``targets`` [M, 3, S, S] in chunks of ``performance.batch_size``."""
    count = _check_targets(targets, G)
    if generators is not None and len(generators) != count:
        raise ValueError(f"generators must be {count} torch.Generator objects, one per photo")
    results: list[InversionResult] = []
    for first in range(0, count, performance.batch_size):
        last = min(first + performance.batch_size, count)
        chunk_generators = None if generators is None else list(generators[first:last])
        results.extend(invert_batch(G, targets[first:last], lpips_model, settings, performance=performance,
                                    generators=chunk_generators, **kwargs))
    return tuple(results)


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _check_targets(targets: torch.Tensor, G: torch.nn.Module) -> int:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.ndim != 4 or targets.shape[0] < 1:
        raise ValueError(f"targets must be [N, 3, S, S] with N >= 1, got {tuple(targets.shape)}")
    for index in range(targets.shape[0]):
        check_target(targets[index : index + 1], G)
    return int(targets.shape[0])


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
