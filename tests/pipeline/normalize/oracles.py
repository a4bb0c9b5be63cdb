"""Test oracles: the reference loops of Algorithms 1 and 2 as they stood before the one loop.

These are the plain single-photo loops of ``pipeline/normalize/inversion.py`` and
``pipeline/normalize/adaptation.py`` at commit 28541f3 (the reference StyleGAN2-ADA
projector and Pivotal Tuning, written straight), kept only to check that the production
loop in its default settings computes the same thing. Their regulariser and
renormalisation are the reference's own (whole-map means), not the production ones.

Shapes: target [1, 3, R, R] in [-1, 1]; w [1, num_ws, w_dim]; noise maps [1, 1, H, W].
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pipeline.normalize.adaptation import AdaptationResult, AdaptationSettings, AdaptationStepLoss
from pipeline.normalize.inversion import (
    NOISE_REG_MIN_SIDE,
    InversionResult,
    InversionSettings,
    InversionStepLoss,
    WStats,
    latent_jitter_scale,
    learning_rate,
)
from pipeline.normalize.perceptual import LpipsModel, lpips_distance


def reference_noise_regularization(noise: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Scalar: sum over maps [1, 1, H, W] and scales of squared lag-1 autocorrelations along W and H."""
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


def reference_renormalize_noise_(noise: Mapping[str, torch.Tensor]) -> None:
    """In place: every whole map to zero mean and unit (population) variance."""
    with torch.no_grad():
        for values in noise.values():
            values -= values.mean()
            values *= values.square().mean().rsqrt()


def reference_invert(G: torch.nn.Module, target: torch.Tensor, lpips_model: LpipsModel, settings: InversionSettings,
                     w_stats: WStats, generator: torch.Generator | None = None) -> InversionResult:
    """Algorithm 1 on one target [1, 3, R, R] on the CPU in float32 (the reference projector's loop)."""
    if generator is None:
        generator = torch.Generator().manual_seed(settings.seed)
    synthesis = copy.deepcopy(G.synthesis).eval().requires_grad_(False)
    target = target.detach()

    def standard_normal(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    w_opt = w_stats.w_avg.clone().requires_grad_(True)
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
        reg = reference_noise_regularization(noise)
        loss = distance + settings.regularize_noise_weight * reg

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        reference_renormalize_noise_(noise)
        losses.append(InversionStepLoss(total=float(loss.detach()), lpips=float(distance.detach()),
                                        noise_reg=float(reg.detach())))

    with torch.no_grad():
        w_final = w_opt.detach().repeat(1, G.num_ws, 1)
        noise_final = {name: values.detach().clone() for name, values in noise.items()}
        image = synthesis(w_final, noise=noise_final)
    return InversionResult(w=w_final, noise=noise_final, image=image, losses=tuple(losses), steps=settings.steps)


def reference_adapt(G: torch.nn.Module, target: torch.Tensor, w: torch.Tensor, noise: Mapping[str, torch.Tensor],
                    lpips_model: LpipsModel, settings: AdaptationSettings) -> AdaptationResult:
    """Algorithm 2 on one target [1, 3, R, R] on the CPU in float32 (Pivotal Tuning's loop)."""
    target = target.detach()
    w_fixed = w.detach().clone()
    noise_fixed = {name: noise[name].detach().clone() for name in noise}
    synthesis = copy.deepcopy(G.synthesis).eval()
    weights = [parameter for parameter in synthesis.parameters() if parameter.is_floating_point()]
    for parameter in weights:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(weights, lr=settings.lr, betas=(0.9, 0.999))

    def evaluate() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        image = synthesis(w_fixed, noise=noise_fixed)
        distance = lpips_distance(lpips_model, image, target, max_side=settings.lpips_max_side)[0]
        l2 = (image - target).square().mean()
        return image, settings.lpips_weight * distance + settings.l2_weight * l2, distance, l2

    def record(loss: torch.Tensor, distance: torch.Tensor, l2: torch.Tensor) -> AdaptationStepLoss:
        return AdaptationStepLoss(total=float(loss.detach()), lpips=float(distance.detach()), l2=float(l2.detach()))

    losses: list[AdaptationStepLoss] = []
    for _ in range(settings.steps):
        _, loss, distance, l2 = evaluate()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(record(loss, distance, l2))

    synthesis.requires_grad_(False)
    with torch.no_grad():
        image, loss, distance, l2 = evaluate()
    return AdaptationResult(image=image.detach(), losses=tuple(losses), final_loss=record(loss, distance, l2),
                            steps=settings.steps, synthesis=synthesis)
