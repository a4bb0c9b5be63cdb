"""Model adaptation: method.md 2b, the paper's Algorithm 2 (Pivotal Tuning's idea).

With w and the noise maps from the inversion frozen, a per-image copy of the
synthesis network is fine-tuned with Adam on LPIPS + L2 (mean squared error)
towards the target, for a fixed, small number of steps (50 by default: the step
count is a clinical parameter, since longer tuning starts to rebuild the cleft).
The caller's generator is never modified, and the copy is dropped unless asked for.

:func:`adapt` is the one optimisation loop. Each photo tunes its own copy of the
weights, so the photos of a batch run one after the other through one working copy
(reset from G before each photo). ``performance``
(:class:`~pipeline.normalize.engine.PerformanceSettings`) chooses how the arithmetic
runs; its defaults are the reference arithmetic in float32 (bit for bit the reference
loop on the CPU).

Shapes: targets [N, 3, R, R] in [-1, 1]; ws [N, num_ws, w_dim]; noise maps
{name: [N, 1, H, W]} keyed as G.synthesis.noise_shapes (an inversion result's w and
noise are a batch of one); one :class:`AdaptationResult` per photo.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch

from pipeline.models.stylegan2.networks import SynthesisImpl, SynthesisNetwork
from pipeline.normalize import engine
from pipeline.normalize.engine import EXACT, PerformanceSettings
from pipeline.normalize.inversion import check_lpips_device, check_targets
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


@dataclass(frozen=True)
class AdaptationSettings:
    """Algorithm 2's parameters: Adam ``lr`` (Pivotal Tuning's 3e-4) for ``steps`` steps.

    ``lpips_max_side``: images are area-downsampled to this side for LPIPS, as
    in the inversion (Pivotal Tuning computes LPIPS at full resolution; the
    paper does not say).
    """

    steps: int = 50
    lr: float = 3e-4
    lpips_weight: float = 1.0
    l2_weight: float = 1.0
    lpips_max_side: int = LPIPS_MAX_SIDE

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"AdaptationSettings.{field.name} must be an int, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"AdaptationSettings.{field.name} must be a finite number, got {value!r}")
        if self.steps < 1:
            raise ValueError(f"AdaptationSettings.steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"AdaptationSettings.lr must be > 0, got {self.lr}")
        if self.lpips_weight < 0 or self.l2_weight < 0:
            raise ValueError(
                f"AdaptationSettings weights must be >= 0, got lpips_weight={self.lpips_weight}, "
                f"l2_weight={self.l2_weight}"
            )
        if self.lpips_weight == 0 and self.l2_weight == 0:
            raise ValueError("AdaptationSettings: lpips_weight and l2_weight cannot both be 0")
        if self.lpips_max_side < 16:
            raise ValueError(f"AdaptationSettings.lpips_max_side must be >= 16, got {self.lpips_max_side}")


@dataclass(frozen=True)
class AdaptationStepLoss:
    """total = lpips_weight * lpips + l2_weight * l2, with l2 the mean squared error."""

    total: float
    lpips: float
    l2: float


@dataclass(frozen=True)
class AdaptationResult:
    """One photo's output of :func:`adapt` (tensors detached, on the adaptation's device and dtype).

    Attributes:
        image: [1, 3, R, R], the adapted synthesis of the frozen w and noise: the normalised face
            (reference-form synthesis without autocast, whatever the performance settings).
        losses: one record per step, evaluated before that step's update.
        final_loss: the loss of ``image``, after the last update.
        steps: number of steps run.
        synthesis: the tuned copy, frozen, only when ``keep_synthesis`` was asked for.
    """

    image: torch.Tensor
    losses: tuple[AdaptationStepLoss, ...]
    final_loss: AdaptationStepLoss
    steps: int
    synthesis: torch.nn.Module | None = None


def adaptation_objective(
    synthesis: SynthesisNetwork,
    lpips_model: LpipsModel,
    lpips_target: LpipsTargetFeatures | torch.Tensor,
    target: torch.Tensor,
    ws: torch.Tensor,
    noise: dict[str, torch.Tensor],
    lpips_max_side: int,
    impl: SynthesisImpl,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The synthesis of ``ws``, its LPIPS [N] and mean squared error [N] against the target
    (module level so ``torch.compile`` can reuse it)."""
    image = synthesis(ws, noise=noise, impl=impl)
    if impl.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    if isinstance(lpips_target, LpipsTargetFeatures):
        distance = lpips_distance_to_features(lpips_model, image, lpips_target)
    else:
        distance = lpips_distance(lpips_model, image, lpips_target, max_side=lpips_max_side)
    l2 = (image.to(target.dtype) - target).square().mean(dim=(1, 2, 3))
    return image, distance, l2


def adapt(
    G: torch.nn.Module,
    targets: torch.Tensor,
    ws: torch.Tensor,
    noise: Mapping[str, torch.Tensor],
    lpips_model: LpipsModel,
    settings: AdaptationSettings,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    performance: PerformanceSettings = EXACT,
    progress: Callable[[Progress], None] | None = None,
    keep_synthesis: bool = False,
) -> tuple[AdaptationResult, ...]:
    """Fine-tune a copy of ``G.synthesis`` per photo so that synthesis(w, noise) approaches its target.

    Args:
        G: the generator (unchanged by this call).
        targets: the aligned faces [N, 3, R, R] in [-1, 1].
        ws: [N, num_ws, w_dim] from the inversion (not modified).
        noise: name -> [N, 1, H, W] from the inversion (not modified).
        lpips_model: frozen LPIPS on ``device``.
        settings: Algorithm 2's parameters.
        device, dtype: where and in what precision to tune.
        performance: how the arithmetic runs (default: the exact float32 path).
        progress: called after every step of every photo with stage "adaptation"
            (steps counted per photo).
        keep_synthesis: also return each photo's tuned copy (for inspection; memory-heavy).
    """
    device = torch.device(device)
    engine.check_settings(performance, dtype)
    count = check_targets(targets, G)
    check_latents(G, ws, noise, count)
    check_lpips_device(lpips_model, device)

    working = copy.deepcopy(G.synthesis).to(device=device, dtype=dtype).eval()
    weights = [parameter for parameter in working.parameters() if parameter.is_floating_point()]
    if not weights:
        raise ValueError("G.synthesis has no floating-point parameters to adapt")
    initial = [parameter.detach().clone() for parameter in weights] if count > 1 else None
    objective = engine.maybe_compile(adaptation_objective, performance)
    impl = performance.synthesis_impl(1)
    lpips_side = min(int(G.img_resolution), settings.lpips_max_side)

    results = []
    with engine.numerics(performance, device):
        for index in range(count):
            target = targets[index : index + 1].detach().to(device=device, dtype=dtype)
            w_fixed = ws[index : index + 1].detach().to(device=device, dtype=dtype).clone()
            noise_fixed = {name: maps[index : index + 1].detach().to(device=device, dtype=dtype).clone()
                           for name, maps in noise.items()}
            lpips_target = engine.memory_format(area_downsample(target, lpips_side), performance)
            if performance.cache_target_features:
                lpips_target = lpips_target_features(lpips_model, lpips_target, max_side=lpips_side)
            if initial is not None and index > 0:
                with torch.no_grad():
                    for parameter, value in zip(weights, initial):
                        parameter.copy_(value)
            working.requires_grad_(True)
            optimizer = engine.adam(weights, settings.lr, performance, device)
            scaler = engine.grad_scaler(performance, device)
            history: list[torch.Tensor] = []
            for step in range(settings.steps):
                engine.mark_step(performance)
                with engine.autocast(performance, device):
                    _, distance, l2 = objective(working, lpips_model, lpips_target, target, w_fixed, noise_fixed,
                                                lpips_side, impl)
                distance = distance.to(l2.dtype)
                total = settings.lpips_weight * distance + settings.l2_weight * l2
                optimizer.zero_grad(set_to_none=True)
                engine.backward_and_step(total.sum(), optimizer, scaler)
                history.append(torch.cat([total, distance, l2]).detach())
                if progress is not None:
                    progress(Progress(stage="adaptation", step=step + 1, total=settings.steps,
                                      loss=float(total.detach()[0])))
            working.requires_grad_(False)
            with torch.no_grad():
                image, distance, l2 = adaptation_objective(working, lpips_model, lpips_target, target, w_fixed,
                                                           noise_fixed, lpips_side, EXACT.synthesis_impl(1))
                total = settings.lpips_weight * distance.to(l2.dtype) + settings.l2_weight * l2
            records = torch.stack(history).cpu().tolist()
            results.append(AdaptationResult(
                image=image.detach(),
                losses=tuple(AdaptationStepLoss(total=r[0], lpips=r[1], l2=r[2]) for r in records),
                final_loss=AdaptationStepLoss(total=float(total[0]), lpips=float(distance[0]), l2=float(l2[0])),
                steps=settings.steps,
                synthesis=copy.deepcopy(working) if keep_synthesis else None,
            ))
    return tuple(results)


def check_latents(G: torch.nn.Module, ws: torch.Tensor, noise: Mapping[str, torch.Tensor], count: int) -> None:
    """Validate ws [count, num_ws, w_dim] and noise maps {name: [count, 1, H, W]} for every layer of G."""
    if not isinstance(ws, torch.Tensor) or not ws.is_floating_point():
        raise TypeError(f"ws must be a floating-point torch.Tensor, got {type(ws).__name__}")
    if tuple(ws.shape) != (count, G.num_ws, G.w_dim):
        raise ValueError(f"ws must be [{count}, {G.num_ws}, {G.w_dim}], got {tuple(ws.shape)}")
    if not isinstance(noise, Mapping):
        raise TypeError(f"noise must be a mapping of layer name to map, got {type(noise).__name__}")
    expected = G.synthesis.noise_shapes
    if set(noise) != set(expected):
        missing = sorted(set(expected) - set(noise))
        extra = sorted(set(noise) - set(expected))
        raise ValueError(f"noise maps do not match the generator: missing {missing}, unexpected {extra}")
    for name, (height, width) in expected.items():
        values = noise[name]
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != (count, 1, height, width):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"noise map {name!r} must be [{count}, 1, {height}, {width}], got {shape}")
