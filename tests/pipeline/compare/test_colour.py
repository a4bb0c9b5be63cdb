"""BT.601 RGB → YCbCr against skimage and against the formula in method.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import rgb2ycbcr

from pipeline.compare.colour import (
    rgb_to_ycbcr,
    rgb_to_ycbcr_torch,
    rgb_uint8_to_ycbcr,
    ycbcr_to_unit_range,
)


def hand_ycbcr(r: float, g: float, b: float) -> tuple[float, float, float]:
    """method.md section 3, written out term by term."""
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    cb = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return y, cb, cr


def test_matches_skimage_on_float_image():
    rgb = np.random.default_rng(0).random((17, 23, 3))
    np.testing.assert_allclose(rgb_to_ycbcr(rgb), rgb2ycbcr(rgb), rtol=0, atol=1e-10)


def test_uint8_matches_skimage_on_uint8_image(astronaut_rgb):
    ours = rgb_uint8_to_ycbcr(astronaut_rgb)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, rgb2ycbcr(astronaut_rgb), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "rgb, expected",
    [
        ((0.0, 0.0, 0.0), (16.0, 128.0, 128.0)),
        ((1.0, 1.0, 1.0), (235.0, 128.0, 128.0)),
        ((1.0, 0.0, 0.0), (81.481, 90.203, 240.0)),
        ((0.0, 0.0, 1.0), (40.966, 240.0, 109.786)),
    ],
)
def test_known_colours(rgb, expected):
    got = rgb_to_ycbcr(np.array([[rgb]], dtype=np.float64))[0, 0]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(got, hand_ycbcr(*rgb), atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*(st.floats(0.0, 1.0) for _ in range(3))))
def test_hand_formula_and_nominal_ranges(rgb):
    got = rgb_to_ycbcr(np.array(rgb, dtype=np.float64))
    np.testing.assert_allclose(got, hand_ycbcr(*rgb), atol=1e-9)
    assert 16 - 1e-9 <= got[0] <= 235 + 1e-9
    assert 16 - 1e-9 <= got[1] <= 240 + 1e-9 and 16 - 1e-9 <= got[2] <= 240 + 1e-9
    unit = ycbcr_to_unit_range(got)
    np.testing.assert_allclose(
        unit, [(got[0] - 16) / 219, (got[1] - 16) / 224, (got[2] - 16) / 224], atol=1e-12
    )


def test_float32_keeps_dtype():
    rgb = np.random.default_rng(1).random((4, 5, 3)).astype(np.float32)
    out = rgb_to_ycbcr(rgb)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, rgb2ycbcr(rgb.astype(np.float64)), atol=1e-3)


def test_unit_range_of_grey_and_extremes():
    ycbcr = rgb_to_ycbcr(np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]))
    np.testing.assert_allclose(ycbcr_to_unit_range(ycbcr), [[[0, 0.5, 0.5], [1, 0.5, 0.5]]])


def test_torch_matches_numpy_and_is_differentiable():
    rgb = np.random.default_rng(2).random((2, 6, 7, 3))
    tensor = torch.tensor(rgb.transpose(0, 3, 1, 2), requires_grad=True)
    out = rgb_to_ycbcr_torch(tensor)
    assert out.shape == (2, 3, 6, 7) and out.dtype == torch.float64
    np.testing.assert_allclose(
        out.detach().numpy().transpose(0, 2, 3, 1), rgb_to_ycbcr(rgb), atol=1e-10
    )
    out[:, 0].sum().backward()  # dY/dR = 65.481 at every pixel
    np.testing.assert_allclose(tensor.grad[:, 0].numpy(), 65.481)


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((2, 2, 3), dtype=np.uint8), TypeError),
        (np.zeros((2, 2, 4)), ValueError),
        (np.full((2, 2, 3), 1.5), ValueError),
        (np.full((2, 2, 3), np.nan), ValueError),
    ],
)
def test_rejects_bad_input(bad, error):
    with pytest.raises(error):
        rgb_to_ycbcr(bad)


def test_uint8_entry_rejects_float():
    with pytest.raises(TypeError):
        rgb_uint8_to_ycbcr(np.zeros((2, 2, 3)))


def test_torch_rejects_channel_last():
    with pytest.raises(ValueError):
        rgb_to_ycbcr_torch(torch.zeros(4, 4, 3))
