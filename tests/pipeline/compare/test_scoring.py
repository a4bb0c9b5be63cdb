"""The masked score S = −log(sqrt(Σ_m e) / N) and the Table 1 grid of variants."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from skimage.color import rgb2ycbcr

from pipeline.compare.scoring import (
    MAX_SCORE,
    ROOT_ENERGY_FLOOR,
    masked_energy,
    masked_score,
    score_all_variants,
    score_from_energy,
)
from pipeline.vocabulary import ErosionOrder, HeatmapMethod, Processing, Region

H = W = 40


def hand_score(heatmap_sum: np.ndarray, mask: np.ndarray) -> float:
    return -math.log(math.sqrt(float(heatmap_sum[mask].sum())) / int(mask.sum()))


def rect_mask(top: int, left: int, height: int, width: int, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


@pytest.fixture(scope="module")
def masks() -> dict[str, np.ndarray]:
    return {"mouth_nose": rect_mask(20, 12, 12, 16), "face_without_eyes": rect_mask(4, 4, 32, 32)}


@pytest.fixture(scope="module")
def image_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    aligned = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    normalized = np.clip(aligned.astype(int) + rng.integers(-40, 41, aligned.shape), 0, 255)
    return aligned, normalized.astype(np.uint8)


@pytest.fixture(scope="module")
def lpips_model():
    import lpips

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return lpips.LPIPS(net="alex", spatial=True, pretrained=True, pnet_rand=True, verbose=False)


# ---------------------------------------------------------------- the score


def test_constant_heatmap_known_answer():
    mask = rect_mask(0, 0, 2, 2, shape=(3, 3))  # N = 4
    heatmap = np.full((3, 3), 1.0)
    heatmap[2, :] = 1e6  # outside the mask
    # sqrt(4 · 1) / 4 = 1/2, S = log 2
    assert masked_score(heatmap, mask) == pytest.approx(math.log(2.0), rel=1e-15)


@pytest.mark.parametrize("c, n", [(0.25, 9), (3.0, 100), (1e-4, 1024)])
def test_constant_heatmap_formula(c, n):
    mask = np.ones((1, n), dtype=bool)
    expected = -math.log(math.sqrt(n * c) / n)
    assert masked_score(np.full((1, n), c), mask) == pytest.approx(expected, rel=1e-13)


def test_channels_are_summed():
    rng = np.random.default_rng(0)
    heatmap = rng.random((6, 7, 3))
    mask = rng.random((6, 7)) > 0.5
    assert masked_score(heatmap, mask) == pytest.approx(hand_score(heatmap.sum(2), mask))
    assert masked_energy(heatmap, mask) == pytest.approx(heatmap[mask].sum())


def test_floor_and_max_score_constants():
    assert MAX_SCORE == pytest.approx(27.631021115928547)
    assert score_from_energy(0.0, 1) == MAX_SCORE
    assert score_from_energy(0.0, 10**6) == MAX_SCORE
    # just above the floor the formula applies unclamped
    n = 100
    energy = (10 * ROOT_ENERGY_FLOOR * n) ** 2
    assert score_from_energy(energy, n) == pytest.approx(MAX_SCORE - math.log(10))


@pytest.mark.parametrize(
    "heatmap, mask, error",
    [
        (np.ones((4, 4)), np.ones((4, 4), dtype=bool), None),
        (np.ones((4, 4)), np.ones((4, 4)), TypeError),  # mask not bool
        (np.ones((4, 4)), np.ones((4, 5), dtype=bool), ValueError),
        (np.ones((4, 4)), np.zeros((4, 4), dtype=bool), ValueError),  # empty
        (-np.ones((4, 4)), np.ones((4, 4), dtype=bool), ValueError),
        (np.full((4, 4), np.inf), np.ones((4, 4), dtype=bool), ValueError),
        (np.full((4, 4), np.nan), np.ones((4, 4), dtype=bool), ValueError),
    ],
)
def test_score_validation(heatmap, mask, error):
    if error is None:
        assert math.isfinite(masked_score(heatmap, mask))
    else:
        with pytest.raises(error):
            masked_score(heatmap, mask)


def test_score_from_energy_validation():
    for energy, n in [(-1.0, 4), (float("nan"), 4), (1.0, 0), (1.0, 2.5)]:
        with pytest.raises(ValueError):
            score_from_energy(energy, n)


heatmaps_10x10 = hnp.arrays(np.float64, (10, 10), elements=st.floats(0, 1e4))
masks_10x10 = hnp.arrays(np.bool_, (10, 10)).filter(lambda m: m.any())


@settings(max_examples=60, deadline=None)
@given(heatmaps_10x10, masks_10x10, heatmaps_10x10)
def test_changes_outside_mask_do_not_move_score(heatmap, mask, other):
    changed = np.where(mask, heatmap, other)
    assert masked_score(changed, mask) == masked_score(heatmap, mask)


@settings(max_examples=60, deadline=None)
@given(
    heatmaps_10x10,
    masks_10x10,
    st.floats(1e-3, 1e3),
    st.floats(1.01, 100),
)
def test_score_strictly_falls_as_added_energy_grows(heatmap, mask, amplitude, factor):
    pattern = np.where(mask, 1.0, 0.0)
    smaller = masked_score(heatmap + amplitude * pattern, mask)
    larger = masked_score(heatmap + amplitude * factor * pattern, mask)
    assert larger < smaller <= MAX_SCORE


# ---------------------------------------------------------------- the grid


def test_grid_counts_and_keys(image_pair, masks, lpips_model):
    aligned, normalized = image_pair
    both = tuple(ErosionOrder)
    cases = [
        (None, (ErosionOrder.DIFF_THEN_ERODE,), 2 * 4),
        (None, both, 2 * 6),
        (lpips_model, (ErosionOrder.DIFF_THEN_ERODE,), 3 * 4),
        (lpips_model, both, 3 * 6),
    ]
    for model, orders, n_heatmaps in cases:
        scores, heatmaps = score_all_variants(
            aligned, normalized, masks, adaptation=True, lpips_model=model, erosion_orders=orders
        )
        assert len(heatmaps) == n_heatmaps
        assert len(scores) == n_heatmaps * len(masks)
        assert len({s.variant for s in scores}) == len(scores)
        assert all(s.variant.adaptation is True for s in scores)
        assert {s.variant.region for s in scores} == set(Region)
        assert {s.variant.heatmap_key for s in scores} == set(heatmaps)
        for heatmap in heatmaps.values():
            assert heatmap.shape == (H, W) and heatmap.dtype == np.float64
            assert np.all(np.isfinite(heatmap)) and heatmap.min() >= 0
        assert all(math.isfinite(s.score) and s.score < MAX_SCORE for s in scores)
    assert set(heatmaps) == {
        f"{m}/{p}" for m in ("pse", "lpips", "ssim") for p in ("base", "ycbcr")
    } | {
        f"{m}/{p}/{o}"
        for m in ("pse", "lpips", "ssim")
        for p in ("erosion", "ycbcr+erosion")
        for o in ("diff_then_erode", "erode_then_diff")
    }


def test_grid_is_deterministic_and_adaptation_only_names_the_variants(image_pair, masks, lpips_model):
    first = score_all_variants(*image_pair, masks, adaptation=True, lpips_model=lpips_model)
    second = score_all_variants(*image_pair, masks, adaptation=True, lpips_model=lpips_model)
    assert first[0] == second[0]
    without, _ = score_all_variants(*image_pair, masks, adaptation=False, lpips_model=lpips_model)
    assert [s.score for s in without] == [s.score for s in first[0]]
    assert all(s.variant.adaptation is False for s in without)
    for key in first[1]:
        np.testing.assert_array_equal(first[1][key], second[1][key])


def hand_ycbcr_erosion_pse(aligned, normalized, order):
    """skimage YCbCr + scipy erosion + numpy PSE, summed over channels."""
    y_a, y_n = rgb2ycbcr(aligned), rgb2ycbcr(normalized)

    def erode(image):
        return np.stack([ndimage.grey_erosion(image[..., c], size=(3, 3)) for c in range(3)], 2)

    if order is ErosionOrder.DIFF_THEN_ERODE:
        return erode((y_a - y_n) ** 2).sum(2)
    return ((erode(y_a) - erode(y_n)) ** 2).sum(2)


@pytest.mark.parametrize("order", list(ErosionOrder))
def test_pse_ycbcr_erosion_equals_hand_composition(image_pair, masks, order):
    aligned, normalized = image_pair
    scores, heatmaps = score_all_variants(aligned, normalized, masks, adaptation=True, erosion_orders=(order,))
    expected_map = hand_ycbcr_erosion_pse(aligned, normalized, order)
    key = f"pse/ycbcr+erosion/{order.value}"
    np.testing.assert_allclose(heatmaps[key], expected_map, rtol=1e-10, atol=1e-9)
    for region, mask in masks.items():
        (cell,) = [
            s
            for s in scores
            if s.variant.method is HeatmapMethod.PSE
            and s.variant.processing is Processing.YCBCR_EROSION
            and s.variant.region == region
        ]
        assert cell.variant.erosion_order is order
        assert cell.score == pytest.approx(hand_score(expected_map, mask), rel=1e-12)


def test_pse_base_equals_hand_computation(image_pair, masks):
    aligned, normalized = image_pair
    scores, heatmaps = score_all_variants(aligned, normalized, masks, adaptation=False)
    expected = ((aligned.astype(float) - normalized.astype(float)) ** 2).sum(2)
    np.testing.assert_array_equal(heatmaps["pse/base"], expected)
    base = {s.variant.region: s.score for s in scores if s.variant.heatmap_key == "pse/base"}
    for region, mask in masks.items():
        assert base[region] == pytest.approx(hand_score(expected, mask), rel=1e-12)


small_images = hnp.arrays(np.uint8, (16, 16, 3))


@settings(max_examples=15, deadline=None)
@given(small_images)
def test_identical_images_score_the_maximum_everywhere(image):
    masks = {Region.FACE_WITHOUT_EYES: np.ones((16, 16), dtype=bool),
             Region.MOUTH_NOSE: rect_mask(0, 0, 3, 3, (16, 16))}
    scores, heatmaps = score_all_variants(
        image, image.copy(), masks, adaptation=True, erosion_orders=tuple(ErosionOrder)
    )
    assert len(scores) == 2 * 6 * 2
    assert all(s.score == MAX_SCORE for s in scores)
    assert all(not heatmap.any() for heatmap in heatmaps.values())


def test_identical_images_with_lpips_score_the_maximum(image_pair, masks, lpips_model):
    aligned = image_pair[0]
    scores, _ = score_all_variants(aligned, aligned.copy(), masks, adaptation=True, lpips_model=lpips_model)
    assert all(s.score == MAX_SCORE for s in scores)


@settings(max_examples=20, deadline=None)
@given(
    hnp.arrays(np.uint8, (16, 16, 3), elements=st.integers(0, 120)),
    st.integers(0, 9),
    st.integers(0, 9),
    st.lists(st.integers(1, 130), min_size=2, max_size=4, unique=True),
)
def test_pse_scores_strictly_fall_with_growing_difference_inside_mask(image, top, left, steps):
    mask = rect_mask(top, left, 5, 6, (16, 16))
    previous = None
    for amplitude in sorted(steps):
        normalized = image.copy()
        normalized[mask] += np.uint8(amplitude)  # ≤ 250: no wrap-around
        scores, _ = score_all_variants(
            image, normalized, {"mouth_nose": mask}, adaptation=True, erosion_orders=tuple(ErosionOrder)
        )
        pse = {s.variant.heatmap_key: s.score for s in scores if s.variant.method is HeatmapMethod.PSE}
        assert len(pse) == 6
        if previous is not None:
            assert all(pse[key] < previous[key] for key in pse), (pse, previous)
        previous = pse


@settings(max_examples=20, deadline=None)
@given(
    hnp.arrays(np.uint8, (H, W, 3)),
    hnp.arrays(np.uint8, (H, W, 3)),
    hnp.arrays(np.uint8, (H, W, 3)),
)
def test_image_changes_outside_mask_reach_only_through_map_support(aligned, normalized, noise):
    """PSE base/ycbcr: any change outside the mask is invisible. Erosion and SSIM
    look a few pixels around each pixel (1 and 5), so change only pixels ≥ 7 away."""
    mask = rect_mask(14, 14, 10, 12)
    near = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=6)
    outside = ~mask
    far = ~near
    orders = tuple(ErosionOrder)
    reference, _ = score_all_variants(aligned, normalized, {"mouth_nose": mask}, adaptation=True, erosion_orders=orders)
    reference = {s.variant.heatmap_key: s.score for s in reference}

    changed = normalized.copy()
    changed[outside] = noise[outside]
    scores, _ = score_all_variants(aligned, changed, {"mouth_nose": mask}, adaptation=True, erosion_orders=orders)
    for s in scores:
        if s.variant.heatmap_key in ("pse/base", "pse/ycbcr"):
            assert s.score == reference[s.variant.heatmap_key]

    changed = normalized.copy()
    changed[far] = noise[far]
    changed_aligned = aligned.copy()
    changed_aligned[far] = noise[::-1][far]
    scores, _ = score_all_variants(changed_aligned, changed, {"mouth_nose": mask}, adaptation=True,
                                   erosion_orders=orders)
    assert len(scores) == 12
    for s in scores:
        assert s.score == pytest.approx(reference[s.variant.heatmap_key], rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"aligned_rgb": np.zeros((8, 8, 3))}, TypeError),
        ({"normalized_rgb": np.zeros((8, 9, 3), dtype=np.uint8)}, ValueError),
        ({"aligned_rgb": np.zeros((8, 8), dtype=np.uint8)}, ValueError),
        ({"masks": {}}, ValueError),
        ({"masks": {"mouth_nose": np.zeros((8, 8), dtype=bool)}}, ValueError),
        ({"masks": {"mouth_nose": np.ones((8, 8), dtype=np.uint8)}}, TypeError),
        ({"masks": {"mouth_nose": np.ones((8, 7), dtype=bool)}}, ValueError),
        ({"masks": {"": np.ones((8, 8), dtype=bool)}}, ValueError),
        ({"masks": {"roi": np.ones((8, 8), dtype=bool)}}, ValueError),  # not a region of the vocabulary
        ({"adaptation": 1}, TypeError),
        ({"adaptation": None}, TypeError),
        ({"erosion_orders": ()}, ValueError),
        ({"erosion_orders": ("diff_then_erode",)}, TypeError),
        ({"erosion_orders": (ErosionOrder.DIFF_THEN_ERODE,) * 2}, ValueError),
    ],
)
def test_grid_validation(kwargs, error):
    args = {
        "aligned_rgb": np.zeros((8, 8, 3), dtype=np.uint8),
        "normalized_rgb": np.zeros((8, 8, 3), dtype=np.uint8),
        "masks": {"mouth_nose": np.ones((8, 8), dtype=bool)},
        "adaptation": True,
    }
    args.update(kwargs)
    masks_arg = args.pop("masks")
    with pytest.raises(error):
        score_all_variants(args.pop("aligned_rgb"), args.pop("normalized_rgb"), masks_arg, **args)


def test_changes_just_outside_mask_leak_into_erosion_and_ssim_but_not_plain_pse(image_pair):
    aligned, normalized = image_pair
    mask = rect_mask(14, 14, 10, 12)
    ring = ndimage.binary_dilation(mask, structure=np.ones((3, 3))) & ~mask
    changed = normalized.copy()
    changed[ring] = 255 - changed[ring]
    before, _ = score_all_variants(aligned, normalized, {"mouth_nose": mask}, adaptation=True)
    after, _ = score_all_variants(aligned, changed, {"mouth_nose": mask}, adaptation=True)
    moved = {a.variant.heatmap_key for a, b in zip(after, before) if a.score != b.score}
    assert "pse/base" not in moved and "pse/ycbcr" not in moved
    assert {"pse/erosion/diff_then_erode", "ssim/base", "ssim/ycbcr"} <= moved
