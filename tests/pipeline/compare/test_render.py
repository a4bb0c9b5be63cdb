"""Heatmap colouring and overlay against matplotlib's colormap and a hand blend."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from pipeline.compare.render import DEFAULT_COLORMAP, display_vmax, heatmap_to_rgb, overlay_heatmap


def cmap_rgb(values, name=DEFAULT_COLORMAP) -> np.ndarray:
    rgba = colormaps[name](np.asarray(values, dtype=float), bytes=True)
    return np.asarray(rgba, dtype=np.uint8)[..., :3]  # a scalar value gives a tuple


def test_linear_scale_from_zero_to_vmax_clipped_above():
    heatmap = np.array([[0.0, 1.0, 2.0, 4.0, 8.0]])
    rgb = heatmap_to_rgb(heatmap, vmax=4.0)
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, cmap_rgb([[0.0, 0.25, 0.5, 1.0, 1.0]]))


def test_automatic_vmax_is_the_map_maximum():
    heatmap = np.array([[0.0, 3.0], [6.0, 1.5]])
    assert display_vmax(heatmap) == 6.0
    np.testing.assert_array_equal(heatmap_to_rgb(heatmap), heatmap_to_rgb(heatmap, vmax=6.0))
    np.testing.assert_array_equal(heatmap_to_rgb(heatmap)[1, 0], cmap_rgb(1.0))


def test_all_zero_map_is_drawn_at_the_bottom_colour():
    zeros = np.zeros((3, 4))
    assert display_vmax(zeros) == 1.0
    np.testing.assert_array_equal(heatmap_to_rgb(zeros), np.broadcast_to(cmap_rgb(0.0), (3, 4, 3)))


def test_other_colormap():
    heatmap = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(
        heatmap_to_rgb(heatmap, 1.0, colormap="viridis"), cmap_rgb([[0, 0.5, 1]], "viridis")
    )


def test_overlay_blend_matches_hand_computation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    heatmap = rng.random((6, 5))
    colour = heatmap_to_rgb(heatmap, vmax=0.5).astype(float)
    got = overlay_heatmap(rgb, heatmap, 0.3, vmax=0.5)
    np.testing.assert_array_equal(got, np.rint(0.7 * rgb + 0.3 * colour).astype(np.uint8))
    np.testing.assert_array_equal(overlay_heatmap(rgb, heatmap, 0.0), rgb)
    np.testing.assert_array_equal(
        overlay_heatmap(rgb, heatmap, 1.0, vmax=0.5), colour.astype(np.uint8)
    )


def test_overlay_with_mask_leaves_outside_untouched_and_scales_inside():
    rgb = np.full((4, 4, 3), 100, dtype=np.uint8)
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 50.0  # outside the mask: must not set the automatic scale
    heatmap[2, 2] = 2.0
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    got = overlay_heatmap(rgb, heatmap, 1.0, mask)
    np.testing.assert_array_equal(got[~mask], rgb[~mask])
    np.testing.assert_array_equal(got[2, 2], cmap_rgb(1.0))
    np.testing.assert_array_equal(got[1, 1], cmap_rgb(0.0))


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: heatmap_to_rgb(np.full((2, 2), -1.0)), ValueError),
        (lambda: heatmap_to_rgb(np.full((2, 2), np.nan)), ValueError),
        (lambda: heatmap_to_rgb(np.ones((2, 2, 3))), ValueError),
        (lambda: heatmap_to_rgb(np.ones((2, 2)), vmax=0.0), ValueError),
        (lambda: heatmap_to_rgb(np.ones((2, 2)), colormap="no-such-map"), ValueError),
        (lambda: overlay_heatmap(np.zeros((2, 2, 3)), np.ones((2, 2)), 0.5), TypeError),
        (lambda: overlay_heatmap(np.zeros((2, 3, 3), np.uint8), np.ones((2, 2)), 0.5), ValueError),
        (lambda: overlay_heatmap(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2)), 1.5), ValueError),
        (
            lambda: overlay_heatmap(
                np.zeros((2, 2, 3), np.uint8), np.ones((2, 2)), 0.5, np.ones((2, 2))
            ),
            TypeError,
        ),
    ],
)
def test_render_validation(call, error):
    with pytest.raises(error):
        call()
