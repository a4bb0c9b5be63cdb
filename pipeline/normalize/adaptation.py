"""Model adaptation: method.md 2b, the paper's Algorithm 2 (Pivotal Tuning's idea).

With w and the noise maps from the inversion frozen, a per-image deep copy of
the synthesis network is fine-tuned with Adam on LPIPS + L2 (mean squared
error) towards the target, for a fixed, small number of steps (50 by default:
the step count is a clinical parameter, since longer tuning starts to rebuild
the cleft). The caller's generator is never modified, and the copy is dropped
unless asked for.

Shapes: target and image [1, 3, R, R] in [-1, 1]; w [1, num_ws, w_dim];
noise maps [1, 1, H, W] keyed as G.synthesis.noise_shapes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch

from pipeline.normalize.inversion import check_lpips_device, check_target
from pipeline.normalize.perceptual import LPIPS_MAX_SIDE, LpipsModel, lpips_distance
from pipeline.progress import Progress

if TYPE_CHECKING:
    from pipeline.normalize.engine import PerformanceSettings


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
    """Output of :func:`adapt` (tensors detached, on the adaptation's device and dtype).

    Attributes:
        image: [1, 3, R, R], the adapted synthesis of the frozen w and noise: the normalised face.
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


def adapt(
    G: torch.nn.Module,
    target: torch.Tensor,
    w: torch.Tensor,
    noise: Mapping[str, torch.Tensor],
    lpips_model: LpipsModel,
    settings: AdaptationSettings,
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[Progress], None] | None = None,
    keep_synthesis: bool = False,
    performance: PerformanceSettings | None = None,
) -> AdaptationResult:
    """Fine-tune a copy of ``G.synthesis`` so that synthesis(w, noise) approaches ``target``.

    Args:
        G: the generator (unchanged by this call).
        target: the aligned face [1, 3, R, R] in [-1, 1].
        w: [1, num_ws, w_dim] from the inversion (not modified).
        noise: name -> [1, 1, H, W] from the inversion (not modified).
        lpips_model: frozen LPIPS on ``device``.
        settings: Algorithm 2's parameters.
        device, dtype: where and in what precision to tune.
        progress: called after every step with stage "adaptation".
        keep_synthesis: also return the tuned copy (for inspection; memory-heavy).
        performance: None runs this reference loop; settings run the optimised engine
            (:func:`pipeline.normalize.batch_adaptation.adapt_batch`, same result to rounding or
            to the precision the settings choose).
    """
    if performance is not None:
        from pipeline.normalize.batch_adaptation import adapt_batch

        _check_latents(G, w, noise)
        return adapt_batch(G, target, w, noise, lpips_model, settings, device=device, dtype=dtype,
                           performance=performance, progress=progress, keep_synthesis=keep_synthesis)[0]
    device = torch.device(device)
    check_target(target, G)
    check_lpips_device(lpips_model, device)
    _check_latents(G, w, noise)

    target = target.detach().to(device=device, dtype=dtype)
    w_fixed = w.detach().to(device=device, dtype=dtype).clone()
    noise_fixed = {name: noise[name].detach().to(device=device, dtype=dtype).clone() for name in noise}
    synthesis = copy.deepcopy(G.synthesis).to(device=device, dtype=dtype).eval()
    weights = [parameter for parameter in synthesis.parameters() if parameter.is_floating_point()]
    if not weights:
        raise ValueError("G.synthesis has no floating-point parameters to adapt")
    for parameter in weights:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(weights, lr=settings.lr, betas=(0.9, 0.999))

    def evaluate() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        image = synthesis(w_fixed, noise=noise_fixed)
        distance = lpips_distance(lpips_model, image, target, max_side=settings.lpips_max_side)[0]
        l2 = (image - target).square().mean()
        return image, settings.lpips_weight * distance + settings.l2_weight * l2, distance, l2

    losses: list[AdaptationStepLoss] = []
    for step in range(settings.steps):
        _, loss, distance, l2 = evaluate()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record = _record(loss, distance, l2)
        losses.append(record)
        if progress is not None:
            progress(Progress(stage="adaptation", step=step + 1, total=settings.steps, loss=record.total))

    synthesis.requires_grad_(False)
    with torch.no_grad():
        image, loss, distance, l2 = evaluate()
    return AdaptationResult(
        image=image.detach(),
        losses=tuple(losses),
        final_loss=_record(loss, distance, l2),
        steps=settings.steps,
        synthesis=synthesis if keep_synthesis else None,
    )


def _record(loss: torch.Tensor, distance: torch.Tensor, l2: torch.Tensor) -> AdaptationStepLoss:
    return AdaptationStepLoss(total=float(loss.detach()), lpips=float(distance.detach()), l2=float(l2.detach()))


def _check_latents(G: torch.nn.Module, w: torch.Tensor, noise: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point torch.Tensor, got {type(w).__name__}")
    if tuple(w.shape) != (1, G.num_ws, G.w_dim):
        raise ValueError(f"w must be [1, {G.num_ws}, {G.w_dim}], got {tuple(w.shape)}")
    expected = G.synthesis.noise_shapes
    if set(noise) != set(expected):
        missing = sorted(set(expected) - set(noise))
        extra = sorted(set(noise) - set(expected))
        raise ValueError(f"noise maps do not match the generator: missing {missing}, unexpected {extra}")
    for name, (height, width) in expected.items():
        values = noise[name]
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != (1, 1, height, width):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"noise map {name!r} must be [1, 1, {height}, {width}], got {shape}")
