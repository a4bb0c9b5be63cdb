"""Quality checks of ``benchmarks/normalize_gpu.py``: the protocol on guard targets, and scores.

Guard targets are generated images (random-weight generator, so not faces) with a dark
vertical stripe of graded strength (0 for the first target, 0.9 for the last) in the
lower middle, so that their scores spread; the scored region is a box around it.
Scores are the primary cell of the method (PSE on YCbCr, diff-then-erode, summed over
channels, S = −log(sqrt(Σ)/N)) with and without adaptation. Only torch, numpy, scipy
and lpips are needed (no face detection).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from pipeline.compare.colour import rgb_uint8_to_ycbcr
from pipeline.compare.heatmaps import ErosionOrder, compare_with_erosion, pse_heatmap
from pipeline.compare.scoring import masked_score
from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.engine import EXACT, PerformanceSettings, numerics
from pipeline.normalize.inversion import InversionSettings, WStats, invert, invert_many
from pipeline.normalize.perceptual import LpipsModel, lpips_distance
from pipeline.normalize.schedules import FastSchedule, invert_fast, score_agreement

SEED = 303  # InversionSettings().seed: every photo starts from the same seed, as in the service


@dataclass(frozen=True)
class ProtocolRun:
    """Per target: LPIPS of the inverted and normalised images to the target, the two scores, and wall time."""

    inverted_lpips: list[float]
    normalized_lpips: list[float]
    score_inverted: list[float]
    score_normalized: list[float]
    seconds: float

    def to_dict(self) -> dict:
        return {"inverted_lpips": self.inverted_lpips, "normalized_lpips": self.normalized_lpips,
                "score_inverted": self.score_inverted, "score_normalized": self.score_normalized,
                "seconds": round(self.seconds, 3)}


def guard_targets(G: torch.nn.Module, count: int, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` targets [count, 3, R, R] in [-1, 1] with graded stripes, and the scored region (bool [R, R])."""
    rng = torch.Generator().manual_seed(2024)
    size = int(G.img_resolution)
    with torch.no_grad():
        z = torch.randn(count, G.z_dim, generator=rng)
        noise = {name: torch.randn(count, 1, h, w, generator=rng) for name, (h, w) in G.synthesis.noise_shapes.items()}
        ws = G.mapping(z.to(device))
        images = G.synthesis(ws, noise={k: v.to(device) for k, v in noise.items()}).clamp(-1, 1).float()
    rows, cols = torch.arange(size, device=device)[:, None] / size, torch.arange(size, device=device)[None, :] / size
    stripe = ((rows >= 0.62) & (rows < 0.82) & (cols >= 0.47) & (cols < 0.53)).float()
    strength = torch.linspace(0.0, 0.9, count, device=device).reshape(count, 1, 1, 1)
    targets = images * (1 - strength * stripe) + (-0.8) * strength * stripe
    region = np.zeros((size, size), dtype=bool)
    region[int(0.55 * size) : int(0.9 * size), int(0.3 * size) : int(0.7 * size)] = True
    return targets.clamp(-1, 1), region


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[1, 3, S, S] -> [S, S, 3] uint8, the reference's save convention (as pipeline.appraise.tensor_to_image)."""
    pixels = (image.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return pixels[0].permute(1, 2, 0).cpu().numpy()


def primary_score(aligned: np.ndarray, counterpart: np.ndarray, region: np.ndarray) -> float:
    """PSE, YCbCr, diff-then-erode, summed over channels, scored over ``region``."""
    heatmap = compare_with_erosion(pse_heatmap, rgb_uint8_to_ycbcr(aligned), rgb_uint8_to_ycbcr(counterpart),
                                   ErosionOrder.DIFF_THEN_ERODE)
    return masked_score(heatmap.sum(axis=2), region)


def run_protocol(
    G: torch.nn.Module,
    lpips_model: LpipsModel,
    targets: torch.Tensor,
    region: np.ndarray,
    w_stats: WStats,
    inversion: InversionSettings,
    adaptation: AdaptationSettings,
    performance: PerformanceSettings,
    device: torch.device,
    schedule: FastSchedule | None = None,
    seed: int = SEED,
) -> ProtocolRun:
    """Inversion + adaptation of every target (in batches of ``performance.batch_size``), then scores.

    ``schedule``: the FAST inversion instead of the paper's. ``seed``: every photo's RNG seed.
    """
    count = int(targets.shape[0])
    generators = [torch.Generator().manual_seed(seed) for _ in range(count)]
    _sync(device)
    started = time.perf_counter()
    if schedule is None:
        inversions = invert_many(G, targets, lpips_model, inversion, performance=performance,
                                 generators=generators, w_stats=w_stats, device=device)
    else:
        inversions = []
        for first in range(0, count, performance.batch_size):
            chunk = slice(first, min(first + performance.batch_size, count))
            inversions.extend(invert_fast(G, targets[chunk], lpips_model, inversion, schedule, w_stats=w_stats,
                                          generators=generators[chunk], device=device, performance=performance))
    ws = torch.cat([r.w for r in inversions])
    noise = {name: torch.cat([r.noise[name] for r in inversions]) for name in inversions[0].noise}
    adaptations = adapt(G, targets, ws, noise, lpips_model, adaptation, device=device, performance=performance)
    _sync(device)
    seconds = time.perf_counter() - started
    columns: tuple[list[float], ...] = ([], [], [], [])
    with torch.no_grad(), numerics(EXACT):
        for i in range(count):
            target = targets[i : i + 1]
            aligned = to_uint8(target)
            columns[0].append(float(lpips_distance(lpips_model, inversions[i].image, target)[0]))
            columns[1].append(float(lpips_distance(lpips_model, adaptations[i].image, target)[0]))
            columns[2].append(primary_score(aligned, to_uint8(inversions[i].image), region))
            columns[3].append(primary_score(aligned, to_uint8(adaptations[i].image), region))
    return ProtocolRun(*columns, seconds=seconds)


def compare_runs(reference: ProtocolRun, candidate: ProtocolRun, lpips_tolerance: float, min_r: float) -> dict:
    """Final-LPIPS differences and score agreement of ``candidate`` against ``reference``; ``passed`` flags."""
    ref, cand = np.asarray(reference.normalized_lpips), np.asarray(candidate.normalized_lpips)
    relative = np.abs(cand - ref) / np.maximum(ref, 1e-12)
    mean_relative = float(abs(cand.mean() - ref.mean()) / max(ref.mean(), 1e-12))
    with_adaptation = score_agreement(reference.score_normalized, candidate.score_normalized)
    without_adaptation = score_agreement(reference.score_inverted, candidate.score_inverted)
    passed_lpips = mean_relative <= lpips_tolerance
    passed_scores = bool(with_adaptation.pearson_r >= min_r)  # NaN fails
    return {
        "final_lpips_mean_relative_difference": mean_relative,
        "final_lpips_max_relative_difference": float(relative.max()),
        "final_lpips_targets_within_tolerance": int(np.sum(relative <= lpips_tolerance)),
        "scores_with_adaptation": with_adaptation.to_dict(),
        "scores_without_adaptation": without_adaptation.to_dict(),
        "passed_lpips": bool(passed_lpips), "passed_scores": passed_scores,
        "passed": bool(passed_lpips and passed_scores),
        "criteria": {"final_lpips": f"|mean difference| <= {lpips_tolerance:.0%} of the reference mean",
                     "scores": f"Pearson r (with adaptation) >= {min_r}"},
    }


def reference_vs_engine(G: torch.nn.Module, lpips_model: LpipsModel, target: torch.Tensor, w_stats: WStats,
                        steps: int, device: torch.device, engine: PerformanceSettings) -> dict:
    """The default settings (the reference arithmetic) against ``engine`` (exact rewrites) on one target
    [1, 3, S, S]: how far apart."""
    settings = InversionSettings(steps=steps, w_avg_samples=w_stats.samples)
    (plain,) = invert(G, target, lpips_model, settings, w_stats=w_stats,
                      generators=[torch.Generator().manual_seed(SEED)], device=device)
    (engine,) = invert(G, target, lpips_model, settings, w_stats=w_stats,
                       generators=[torch.Generator().manual_seed(SEED)], device=device, performance=engine)
    return {
        "steps": steps,
        "max_abs_w_difference": float((plain.w - engine.w).abs().max()),
        "max_abs_image_difference": float((plain.image - engine.image).abs().max()),
        "final_loss_relative_difference": abs(plain.losses[-1].total - engine.losses[-1].total)
        / max(abs(plain.losses[-1].total), 1e-12),
    }


def with_batch(performance: PerformanceSettings, batch: int) -> PerformanceSettings:
    return replace(performance, batch_size=batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
