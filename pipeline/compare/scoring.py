"""Masked anomaly score and the paper's Table 1 grid of variants (method.md 5 and 6).

Score. For a heatmap e (summed over channels) and a region mask m with N pixels:

    S = −log( sqrt(Σ_{(i,j) ∈ m} e_ij) / N )

S rises as the face gets closer to normal (it correlates positively with the
1–7 human rating). Identical images give Σ e = 0 and −log(0) = +inf, so the
quantity r = sqrt(Σ e) / N is floored at ``ROOT_ENERGY_FLOOR`` before the log:
every score is finite and at most ``MAX_SCORE`` (= −log 1e-12 ≈ 27.63), and a
score equal to ``MAX_SCORE`` means "no measurable difference in the region".
Real differences are many orders of magnitude above the floor (one 8-bit step
in one pixel of a 1024² face gives r ≈ 1e-6).

Grid. heatmap method × processing × region × adaptation × erosion order (erosion
variants only), named by :class:`pipeline.vocabulary.ScoreVariant`; adaptation
says where the normalised face came from. Scales and the meaning of "processing"
per method:

* Colour scales. "base" compares RGB; PSE and SSIM see the 8-bit values
  (0–255) as floats. "ycbcr" compares BT.601 YCbCr in code units (Y 16–235,
  Cb/Cr 16–240), i.e. the same 8-bit scale, so PSE base and ycbcr scores are
  comparable in magnitude. SSIM uses data_range 255 in both.
* LPIPS expects RGB-like input in [−1, 1]: "base" feeds the RGB photo; "ycbcr"
  feeds Y, Cb, Cr each mapped to [0, 1] by its nominal range and then to
  [−1, 1], in the RGB slots. LPIPS was not calibrated for such input; it is
  the paper's grid cell, not a validated perceptual metric.
* "erosion": 3×3 grey erosion, per channel. ERODE_THEN_DIFF (arXiv) erodes
  both input images (after the colour transform, if any) and then builds the
  map; DIFF_THEN_ERODE (journal, default) builds the map and erodes it (per
  channel for PSE and SSIM; the single-channel map for LPIPS). The map is
  summed over channels after erosion, and the same S applies to every method
  (method.md: "The same scoring applies to LPIPS maps and SSIM maps").

Only heatmap pixels inside the mask count, but heatmaps are not all local:
erosion reaches 1 pixel, SSIM's window 5 pixels and LPIPS' receptive field much
further, so image changes just outside a mask can still move its score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pipeline.compare.colour import rgb_uint8_to_ycbcr, ycbcr_to_unit_range
from pipeline.compare.heatmaps import compare_with_erosion, lpips_heatmap, pse_heatmap, ssim_heatmap
from pipeline.vocabulary import (
    DEFAULT_EROSION_ORDER,
    ErosionOrder,
    HeatmapMethod,
    Processing,
    Region,
    ScoreVariant,
    VariantScore,
    heatmap_key,
)

__all__ = [
    "MAX_SCORE",
    "ROOT_ENERGY_FLOOR",
    "SSIM_DATA_RANGE",
    "masked_energy",
    "masked_score",
    "score_all_variants",
    "score_from_energy",
]

#: Floor on r = sqrt(Σ_m e) / N before the −log; identical images score MAX_SCORE.
ROOT_ENERGY_FLOOR = 1e-12
#: Highest possible score, −log(ROOT_ENERGY_FLOOR) ≈ 27.631.
MAX_SCORE = -math.log(ROOT_ENERGY_FLOOR)
#: SSIM value span for both RGB (0–255) and BT.601 code units.
SSIM_DATA_RANGE = 255.0


def _check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str = "mask") -> int:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a bool numpy array, got {getattr(mask, 'dtype', type(mask).__name__)}"
        )
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape}, expected {shape}")
    n_pixels = int(np.count_nonzero(mask))
    if n_pixels == 0:
        raise ValueError(f"{name} is empty: no pixels to score")
    return n_pixels


def masked_energy(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Σ of the heatmap inside the mask, in float64.

    heatmap: [H, W], or [H, W, C] (summed over channels), non-negative and finite.
    mask: bool [H, W], not empty.
    """
    if not isinstance(heatmap, np.ndarray) or heatmap.dtype.kind not in "uif":
        raise TypeError("heatmap must be a real numeric numpy array")
    if heatmap.ndim not in (2, 3):
        raise ValueError(f"heatmap must be [H, W] or [H, W, C], got shape {heatmap.shape}")
    _check_mask(mask, heatmap.shape[:2])
    if not np.all(np.isfinite(heatmap)):
        raise ValueError("heatmap contains NaN or infinite values")
    if heatmap.size and heatmap.min() < 0:
        raise ValueError(f"heatmap must be non-negative, minimum is {heatmap.min():.6g}")
    return float(np.sum(heatmap[mask], dtype=np.float64))


def score_from_energy(energy: float, n_pixels: int) -> float:
    """S = −log(max(sqrt(energy) / n_pixels, ROOT_ENERGY_FLOOR)); at most MAX_SCORE."""
    if not (math.isfinite(energy) and energy >= 0):
        raise ValueError(f"energy must be finite and non-negative, got {energy}")
    if isinstance(n_pixels, bool) or int(n_pixels) != n_pixels or n_pixels <= 0:
        raise ValueError(f"n_pixels must be a positive integer, got {n_pixels}")
    root_energy = math.sqrt(energy) / int(n_pixels)
    return -math.log(max(root_energy, ROOT_ENERGY_FLOOR))


def masked_score(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """The paper's score S of ``heatmap`` ([H, W] or [H, W, C]) over ``mask`` (bool [H, W])."""
    energy = masked_energy(heatmap, mask)
    return score_from_energy(energy, int(np.count_nonzero(mask)))


def _check_rgb_pair(aligned_rgb: np.ndarray, normalized_rgb: np.ndarray) -> None:
    for name, image in (("aligned_rgb", aligned_rgb), ("normalized_rgb", normalized_rgb)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(
                f"{name} must be a uint8 numpy array, got "
                f"{getattr(image, 'dtype', type(image).__name__)}"
            )
        if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"{name} must be RGB [H, W, 3], got shape {image.shape}")
    if aligned_rgb.shape != normalized_rgb.shape:
        raise ValueError(
            f"aligned_rgb and normalized_rgb differ in shape: "
            f"{aligned_rgb.shape} vs {normalized_rgb.shape}"
        )


def _check_erosion_orders(erosion_orders: Sequence[ErosionOrder]) -> tuple[ErosionOrder, ...]:
    orders = tuple(erosion_orders)
    if not orders:
        raise ValueError("erosion_orders must name at least one ErosionOrder")
    for order in orders:
        if not isinstance(order, ErosionOrder):
            raise TypeError(f"erosion_orders must hold ErosionOrder values, got {order!r}")
    if len(set(orders)) != len(orders):
        raise ValueError(f"erosion_orders has duplicates: {orders}")
    return orders


def _method_inputs(
    method: HeatmapMethod, aligned_rgb: np.ndarray, normalized_rgb: np.ndarray, ycbcr: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The two images a method compares, in the scale documented above."""
    if not ycbcr:
        if method is HeatmapMethod.LPIPS:
            return aligned_rgb, normalized_rgb  # uint8; lpips_heatmap maps to [−1, 1]
        return aligned_rgb.astype(np.float64), normalized_rgb.astype(np.float64)
    pair = rgb_uint8_to_ycbcr(aligned_rgb), rgb_uint8_to_ycbcr(normalized_rgb)
    if method is HeatmapMethod.LPIPS:
        return ycbcr_to_unit_range(pair[0]), ycbcr_to_unit_range(pair[1])
    return pair


def _variant_heatmap(
    method: HeatmapMethod,
    processing: Processing,
    erosion_order: ErosionOrder | None,
    aligned_rgb: np.ndarray,
    normalized_rgb: np.ndarray,
    lpips_model: torch.nn.Module | None,
    device: str | torch.device,
) -> np.ndarray:
    """One variant's heatmap, summed over channels: float64 [H, W]."""
    if method is HeatmapMethod.PSE:
        compare = pse_heatmap
    elif method is HeatmapMethod.SSIM:

        def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return ssim_heatmap(a, b, data_range=SSIM_DATA_RANGE)

    else:

        def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return lpips_heatmap(lpips_model, a, b, device=device)

    original, normalized = _method_inputs(
        method, aligned_rgb, normalized_rgb, processing.uses_ycbcr
    )
    if erosion_order is None:
        heatmap = compare(original, normalized)
    else:
        heatmap = compare_with_erosion(compare, original, normalized, erosion_order)
    return heatmap.sum(axis=2) if heatmap.ndim == 3 else heatmap.astype(np.float64)


def _check_masks(masks: Mapping[Region | str, np.ndarray], shape: tuple[int, ...]) -> dict[Region, int]:
    """Pixel count per region; region names must be :class:`Region` values."""
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError("masks must be a non-empty mapping of region name to bool mask")
    n_pixels = {}
    for name, mask in masks.items():
        try:
            region = Region(name)
        except ValueError:
            raise ValueError(f"mask names must be regions ({', '.join(r.value for r in Region)}), "
                             f"got {name!r}") from None
        n_pixels[region] = _check_mask(mask, shape, name=f"mask {region.value!r}")
    return n_pixels


def score_all_variants(
    aligned_rgb: np.ndarray,
    normalized_rgb: np.ndarray,
    masks: Mapping[Region | str, np.ndarray],
    *,
    adaptation: bool,
    lpips_model: torch.nn.Module | None = None,
    erosion_orders: Sequence[ErosionOrder] = (DEFAULT_EROSION_ORDER,),
    device: str | torch.device = "cpu",
) -> tuple[list[VariantScore], dict[str, np.ndarray]]:
    """Every Table 1 cell for one photo and one normalised face: scores and the heatmaps behind them.

    aligned_rgb, normalized_rgb: uint8 RGB [H, W, 3], same shape (aligned
    photo and its normalised face). masks: region (:class:`Region` or its value) →
    bool [H, W], not empty. adaptation: whether ``normalized_rgb`` comes from model
    adaptation (True) or from the inversion alone (False); it names the variants.
    lpips_model: an eval-mode ``lpips.LPIPS(spatial=True)`` on ``device``; when
    None the LPIPS variants are left out (no scores, no heatmaps).
    erosion_orders: the orders to compute for the erosion variants.

    Returns (scores, heatmaps). scores is ordered method → processing → erosion
    order → region (in the order of ``masks``); heatmaps maps
    :func:`pipeline.vocabulary.heatmap_key` to a float64 [H, W] map summed over
    channels. Per region: 2 + 2·len(orders) scores per method, for 2 or 3 methods.
    """
    _check_rgb_pair(aligned_rgb, normalized_rgb)
    orders = _check_erosion_orders(erosion_orders)
    if not isinstance(adaptation, bool):
        raise TypeError(f"adaptation must be a bool, got {adaptation!r}")
    n_pixels = _check_masks(masks, aligned_rgb.shape[:2])
    regions = [(region, masks[region]) for region in n_pixels]

    methods = [HeatmapMethod.PSE, HeatmapMethod.LPIPS, HeatmapMethod.SSIM]
    if lpips_model is None:
        methods.remove(HeatmapMethod.LPIPS)

    scores: list[VariantScore] = []
    heatmaps: dict[str, np.ndarray] = {}
    for method in methods:
        for processing in Processing:
            for order in orders if processing.uses_erosion else (None,):
                heatmap = _variant_heatmap(
                    method, processing, order, aligned_rgb, normalized_rgb, lpips_model, device
                )
                heatmaps[heatmap_key(method, processing, order)] = heatmap
                for region, mask in regions:
                    score = score_from_energy(masked_energy(heatmap, mask), n_pixels[region])
                    variant = ScoreVariant(method, processing, region, adaptation, order)
                    scores.append(VariantScore(variant, score))
    return scores, heatmaps
