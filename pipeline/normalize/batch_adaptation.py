"""Algorithm 2 (method.md 2b) with the optimisations of :class:`~pipeline.normalize.engine.PerformanceSettings`.

Each photo tunes its own copy of the synthesis weights, so photos run one after the
other through one working copy (reset from G before each photo: no per-photo deep
copy, and compiled code is reused). Per step the same loss as
:func:`pipeline.normalize.adaptation.adapt` (LPIPS + L2 towards the target) drives Adam; the
target's LPIPS features are computed once, losses stay on the device until the end,
and the synthesis runs through :class:`~pipeline.models.stylegan2.fast_synthesis.FastSynthesis`.
The returned image and final loss are evaluated with the plain float32 synthesis.

Shapes: targets [N, 3, S, S] in [-1, 1]; ws [N, num_ws, w_dim]; noise maps
{name: [N, 1, H, W]}; per photo an :class:`~pipeline.normalize.adaptation.AdaptationResult`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch

from pipeline.models.stylegan2.fast_synthesis import FastSynthesis
from pipeline.normalize import engine as perf
from pipeline.normalize.adaptation import AdaptationResult, AdaptationSettings, AdaptationStepLoss, _check_latents
from pipeline.normalize.engine import PerformanceSettings
from pipeline.normalize.inversion import check_lpips_device, check_target
from pipeline.normalize.perceptual import (
    LpipsModel,
    LpipsTargetFeatures,
    area_downsample,
    lpips_distance,
    lpips_distance_to_features,
    lpips_target_features,
)
from pipeline.progress import Progress


def adaptation_objective(
    synthesis: FastSynthesis,
    lpips_model: LpipsModel,
    lpips_target: LpipsTargetFeatures | torch.Tensor,
    target: torch.Tensor,
    ws: torch.Tensor,
    noise: dict[str, torch.Tensor],
    lpips_max_side: int,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LPIPS [N] and mean squared error [N] of the synthesis of ``ws`` against the target."""
    image = synthesis(ws, noise)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    if isinstance(lpips_target, LpipsTargetFeatures):
        distance = lpips_distance_to_features(lpips_model, image, lpips_target)
    else:
        distance = lpips_distance(lpips_model, image, lpips_target, max_side=lpips_max_side)
    l2 = (image.float() - target).square().mean(dim=(1, 2, 3))
    return distance, l2


def adapt_batch(
    G: torch.nn.Module,
    targets: torch.Tensor,
    ws: torch.Tensor,
    noise: Mapping[str, torch.Tensor],
    lpips_model: LpipsModel,
    settings: AdaptationSettings,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    performance: PerformanceSettings | None = None,
    progress: Callable[[Progress], None] | None = None,
    keep_synthesis: bool = False,
) -> tuple[AdaptationResult, ...]:
    """Adapt a copy of ``G.synthesis`` to each of N photos; one result per photo (see the module text).

    ``progress`` is called after every step of every photo (stage "adaptation", steps
    counted per photo). ``keep_synthesis`` returns each photo's tuned copy (memory-heavy).
    """
    device = torch.device(device)
    performance = performance or PerformanceSettings()
    perf.check_precision(performance, dtype)
    if not isinstance(targets, torch.Tensor) or targets.ndim != 4 or targets.shape[0] < 1:
        raise ValueError(f"targets must be a tensor [N, 3, S, S], got {getattr(targets, 'shape', targets)}")
    count = int(targets.shape[0])
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[0] != count:
        raise ValueError(f"ws must be [{count}, {G.num_ws}, {G.w_dim}], got {getattr(ws, 'shape', ws)}")
    for index in range(count):
        check_target(targets[index : index + 1], G)
        _check_latents(G, ws[index : index + 1], {name: maps[index : index + 1] for name, maps in noise.items()})
    check_lpips_device(lpips_model, device)

    working = copy.deepcopy(G.synthesis).to(device=device, dtype=dtype).eval()
    weights = [parameter for parameter in working.parameters() if parameter.is_floating_point()]
    if not weights:
        raise ValueError("G.synthesis has no floating-point parameters to adapt")
    initial = [parameter.detach().clone() for parameter in weights]
    synthesis = perf.fast_synthesis(working, performance)
    objective = perf.maybe_compile(adaptation_objective, performance)
    lpips_side = min(int(G.img_resolution), settings.lpips_max_side)

    results = []
    with perf.numerics(performance):
        for index in range(count):
            target = targets[index : index + 1].detach().to(device=device, dtype=dtype)
            w_fixed = ws[index : index + 1].detach().to(device=device, dtype=dtype)
            noise_fixed = {name: maps[index : index + 1].detach().to(device=device, dtype=dtype)
                           for name, maps in noise.items()}
            lpips_target = perf.memory_format(area_downsample(target, lpips_side), performance)
            if performance.cache_target_features:
                lpips_target = lpips_target_features(lpips_model, lpips_target, max_side=lpips_side)
            with torch.no_grad():
                for parameter, value in zip(weights, initial):
                    parameter.copy_(value)
            working.requires_grad_(True)
            optimizer = perf.adam(weights, settings.lr, performance, device)
            scaler = perf.grad_scaler(performance, device)
            history: list[torch.Tensor] = []
            for step in range(settings.steps):
                perf.mark_step(performance)
                with perf.autocast(performance, device):
                    distance, l2 = objective(synthesis, lpips_model, lpips_target, target, w_fixed, noise_fixed,
                                             lpips_side, performance.channels_last)
                total = settings.lpips_weight * distance.float() + settings.l2_weight * l2
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    total.sum().backward()
                    optimizer.step()
                else:
                    scaler.scale(total.sum()).backward()
                    scaler.step(optimizer)
                    scaler.update()
                history.append(torch.cat([total, distance.float(), l2]).detach())
                if progress is not None:
                    progress(Progress(stage="adaptation", step=step + 1, total=settings.steps,
                                      loss=float(total.detach()[0])))
            working.requires_grad_(False)
            with torch.no_grad():
                image = working(w_fixed, noise=noise_fixed)
                final_distance = (lpips_distance_to_features(lpips_model, image, lpips_target)
                                  if isinstance(lpips_target, LpipsTargetFeatures)
                                  else lpips_distance(lpips_model, image, lpips_target, max_side=lpips_side))
                final_l2 = (image - target).square().mean()
                final_total = settings.lpips_weight * final_distance[0] + settings.l2_weight * final_l2
            records = torch.stack(history).cpu().tolist() if history else []
            results.append(AdaptationResult(
                image=image.detach(),
                losses=tuple(AdaptationStepLoss(total=r[0], lpips=r[1], l2=r[2]) for r in records),
                final_loss=AdaptationStepLoss(total=float(final_total), lpips=float(final_distance[0]),
                                              l2=float(final_l2)),
                steps=settings.steps,
                synthesis=copy.deepcopy(working) if keep_synthesis else None,
            ))
    return tuple(results)
