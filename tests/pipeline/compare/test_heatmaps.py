"""Heatmaps against independent computations: hand-written erosion and SSIM oracles, numpy PSE, lpips.

The module uses scipy's grey erosion and skimage's SSIM map; the oracles here are written out
(numpy minimum over the 3×3 shifts; Wang et al.'s formula with scipy's Gaussian filter) so the
tests check the parameters we pass (window, truncation, covariance, edges), not the library
against itself."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage
from skimage.transform import resize

from pipeline.compare.heatmaps import (
    MIN_SSIM_SIDE,
    ErosionOrder,
    compare_with_erosion,
    grey_erode_3x3,
    lpips_heatmap,
    pse_heatmap,
    ssim_heatmap,
)


def build_lpips(spatial: bool, seed: int = 0):
    """AlexNet LPIPS with a random trunk (no download) and the packaged linear heads."""
    import lpips

    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated"
        torch.manual_seed(seed)
        return lpips.LPIPS(
            net="alex", spatial=spatial, pretrained=True, pnet_rand=True, verbose=False
        )


@pytest.fixture(scope="module")
def lpips_pair():
    spatial = build_lpips(spatial=True)
    scalar = build_lpips(spatial=False, seed=1)
    scalar.load_state_dict(spatial.state_dict())  # strict: same backbone and heads
    return spatial, scalar


@pytest.fixture(scope="module")
def face_pair(astronaut_rgb):
    """A 96×96 crop of a real photo and a noisy, shifted copy (uint8 RGB)."""
    crop = astronaut_rgb[30:230, 150:350]
    small = (resize(crop, (96, 96), anti_aliasing=True) * 255).round().astype(np.uint8)
    noise = np.random.default_rng(0).integers(-25, 26, small.shape)
    other = np.clip(np.roll(small, 2, axis=1).astype(int) + noise, 0, 255).astype(np.uint8)
    return small, other


def erode_oracle(image: np.ndarray) -> np.ndarray:
    """3×3 minimum per channel, edges repeating the border pixel (numpy 'symmetric' padding)."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((1, 1), (1, 1)) + ((0, 0),) * (image.ndim - 2), mode="symmetric")
    shifts = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.minimum.reduce(shifts)


def ssim_oracle(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Wang et al. (2004) local SSIM per channel: Gaussian window sigma 1.5 truncated at 3.5 sigma,
    population covariance, reflected edges, K1 = 0.01, K2 = 0.03."""
    sigma = (1.5, 1.5) + (0.0,) * (a.ndim - 2)

    def mean(values: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(values, sigma=sigma, truncate=3.5, mode="reflect")

    mx, my = mean(a), mean(b)
    vx, vy, cxy = mean(a * a) - mx * mx, mean(b * b) - my * my, mean(a * b) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))


# ---------------------------------------------------------------- erosion


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.float64]),
        shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
        elements={"min_value": 0, "max_value": 255},
    )
)
def test_erosion_equals_the_oracle_2d(image):
    eroded = grey_erode_3x3(image)
    assert eroded.dtype == image.dtype
    np.testing.assert_array_equal(eroded, erode_oracle(image))


def test_erosion_is_per_channel_3d():
    image = np.random.default_rng(3).random((31, 17, 3))
    eroded = grey_erode_3x3(image)
    assert eroded.shape == image.shape and eroded.dtype == image.dtype
    np.testing.assert_array_equal(eroded, erode_oracle(image))
    for c in range(3):
        np.testing.assert_array_equal(eroded[..., c], grey_erode_3x3(np.ascontiguousarray(image[..., c])))


def test_erosion_rejects_bad_input():
    with pytest.raises(ValueError):
        grey_erode_3x3(np.zeros((0, 4)))
    with pytest.raises(ValueError):
        grey_erode_3x3(np.zeros((4, 4, 3, 1)))
    with pytest.raises(TypeError):
        grey_erode_3x3([[1, 2], [3, 4]])


def test_erosion_removes_single_bright_pixel_and_grows_dark_one():
    image = np.full((5, 5), 10.0)
    image[2, 2] = 99.0
    np.testing.assert_array_equal(grey_erode_3x3(image), 10.0)
    image[2, 2] = 0.0
    expected = np.full((5, 5), 10.0)
    expected[1:4, 1:4] = 0.0
    np.testing.assert_array_equal(grey_erode_3x3(image), expected)


# ---------------------------------------------------------------- PSE


def test_pse_matches_hand_computation_without_uint8_wraparound():
    a = np.array([[[0, 10, 255]], [[200, 3, 7]]], dtype=np.uint8)
    b = np.array([[[255, 12, 0]], [[190, 3, 9]]], dtype=np.uint8)
    expected = np.array([[[65025.0, 4.0, 65025.0]], [[100.0, 0.0, 4.0]]])
    got = pse_heatmap(a, b)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


def test_pse_float_matches_numpy():
    rng = np.random.default_rng(4)
    a, b = rng.random((8, 9, 3)) * 255, rng.random((8, 9, 3)) * 255
    np.testing.assert_allclose(pse_heatmap(a, b), (a - b) ** 2, rtol=1e-15)


@pytest.mark.parametrize("order", list(ErosionOrder))
def test_erosion_orders_match_hand_composition(order):
    rng = np.random.default_rng(5)
    a, b = rng.random((12, 14, 3)) * 255, rng.random((12, 14, 3)) * 255
    if order is ErosionOrder.ERODE_THEN_DIFF:
        expected = (erode_oracle(a) - erode_oracle(b)) ** 2
    else:
        expected = erode_oracle((a - b) ** 2)
    np.testing.assert_allclose(compare_with_erosion(pse_heatmap, a, b, order), expected, rtol=1e-14)


def test_default_order_is_journal_and_orders_differ():
    rng = np.random.default_rng(6)
    a, b = rng.random((10, 10, 3)), rng.random((10, 10, 3))
    default = compare_with_erosion(pse_heatmap, a, b)
    journal = compare_with_erosion(pse_heatmap, a, b, ErosionOrder.DIFF_THEN_ERODE)
    arxiv = compare_with_erosion(pse_heatmap, a, b, ErosionOrder.ERODE_THEN_DIFF)
    np.testing.assert_array_equal(default, journal)
    assert not np.allclose(journal, arxiv)


def test_pse_rejects_shape_mismatch_and_nan():
    with pytest.raises(ValueError):
        pse_heatmap(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError):
        pse_heatmap(np.full((4, 4), np.nan), np.zeros((4, 4)))


# ---------------------------------------------------------------- SSIM


def test_ssim_map_matches_the_oracle(face_pair):
    a, b = (image.astype(np.float64) for image in face_pair)
    ours = ssim_heatmap(a, b, data_range=255)
    assert ours.shape == a.shape and ours.dtype == np.float64
    np.testing.assert_allclose(ours, np.maximum(1.0 - ssim_oracle(a, b, 255.0), 0.0), rtol=0, atol=1e-12)
    assert ours.max() > 0.1  # the pair really differs
    # uint8 input is compared on its values, as float
    np.testing.assert_array_equal(ssim_heatmap(*face_pair, data_range=255), ours)


def test_ssim_map_grey_image_matches_the_oracle():
    rng = np.random.default_rng(7)
    a = rng.random((20, 24))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    expected = np.maximum(1.0 - ssim_oracle(a, b, 1.0), 0.0)
    np.testing.assert_allclose(ssim_heatmap(a, b, data_range=1.0), expected, rtol=0, atol=1e-12)


def test_ssim_map_of_identical_images_is_exactly_zero(face_pair):
    a = face_pair[0].astype(np.float64)
    np.testing.assert_array_equal(ssim_heatmap(a, a.copy(), data_range=255), 0.0)


def test_ssim_rejects_bad_data_range_and_too_small_images():
    with pytest.raises(ValueError, match="data_range"):
        ssim_heatmap(np.zeros((16, 16)), np.zeros((16, 16)), data_range=0)
    side = MIN_SSIM_SIDE
    ssim_heatmap(np.zeros((side, side, 3)), np.zeros((side, side, 3)), data_range=255)
    with pytest.raises(ValueError, match=f"at least {side}"):
        ssim_heatmap(np.zeros((side - 1, 40, 3)), np.zeros((side - 1, 40, 3)), data_range=255)


# ---------------------------------------------------------------- LPIPS


def test_lpips_map_of_identical_images_is_zero(lpips_pair, face_pair):
    spatial, _ = lpips_pair
    heatmap = lpips_heatmap(spatial, face_pair[0], face_pair[0].copy())
    assert heatmap.shape == (96, 96) and heatmap.dtype == np.float64
    np.testing.assert_allclose(heatmap, 0.0, atol=1e-7)


def test_lpips_map_mean_equals_scalar_lpips(lpips_pair, face_pair):
    spatial, scalar = lpips_pair
    a, b = face_pair
    heatmap = lpips_heatmap(spatial, a, b)
    assert heatmap.shape == a.shape[:2]
    assert heatmap.min() >= 0 and heatmap.max() > 0

    def to_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1)

    with torch.no_grad():
        distance = scalar(to_tensor(a), to_tensor(b)).item()
    # lpips averages each layer's low-resolution map; the spatial output upsamples
    # it bilinearly first, which keeps the mean up to edge effects.
    assert heatmap.mean() == pytest.approx(distance, rel=1e-3)


def test_lpips_map_float_input_equals_uint8_input(lpips_pair, face_pair):
    spatial, _ = lpips_pair
    a, b = face_pair
    from_uint8 = lpips_heatmap(spatial, a, b)
    from_float = lpips_heatmap(spatial, a / 255.0, b / 255.0)
    np.testing.assert_allclose(from_float, from_uint8, rtol=1e-4, atol=1e-7)


def test_lpips_map_rejects_wrong_model_and_input(lpips_pair, face_pair):
    spatial, scalar = lpips_pair
    a, b = face_pair
    with pytest.raises(ValueError, match="spatial=True"):
        lpips_heatmap(scalar, a, b)
    with pytest.raises(ValueError, match="at least"):
        lpips_heatmap(spatial, a[:16, :16], b[:16, :16])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips_heatmap(spatial, a * 2.0, b / 255.0)
    with pytest.raises(ValueError, match="device"):
        lpips_heatmap(spatial, a, b, device="meta")
    spatial.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            lpips_heatmap(spatial, a, b)
    finally:
        spatial.eval()
