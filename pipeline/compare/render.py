"""Heatmaps as colour images for display (reports, DICOM Secondary Capture).

Colour scale: linear from 0 (bottom of the colormap) to ``vmax`` (top),
clipped above. Zero is always the bottom, because every heatmap here is
non-negative and 0 means "no difference". With ``vmax=None`` the scale tops
out at the map's own maximum (or, with ``mask``, at the maximum inside the
mask), so colours then compare regions within one image but NOT across images;
pass a fixed ``vmax`` (and print it on the legend) to compare images.
Default colormap: 'inferno' (perceptually uniform, monotone in lightness, and
readable in greyscale print).
"""

from __future__ import annotations

import numpy as np

DEFAULT_COLORMAP = "inferno"


def display_vmax(heatmap: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The top of the automatic colour scale: max of the map (inside mask); 1.0 if that is 0."""
    _check_heatmap(heatmap)
    values = heatmap if mask is None else heatmap[_check_mask(mask, heatmap.shape)]
    top = float(values.max()) if values.size else 0.0
    return top if top > 0 else 1.0


def heatmap_to_rgb(
    heatmap: np.ndarray,
    vmax: float | None = None,
    *,
    colormap: str = DEFAULT_COLORMAP,
) -> np.ndarray:
    """Colour image of a heatmap: uint8 RGB [H, W, 3].

    heatmap: [H, W], non-negative and finite. vmax: value drawn at the top of
    the colormap (values above are clipped); None → ``display_vmax(heatmap)``.
    colormap: a matplotlib colormap name.
    """
    from matplotlib import colormaps

    _check_heatmap(heatmap)
    if vmax is None:
        vmax = display_vmax(heatmap)
    if not (np.isfinite(vmax) and vmax > 0):
        raise ValueError(f"vmax must be a positive finite number, got {vmax}")
    if colormap not in colormaps:
        raise ValueError(f"unknown matplotlib colormap {colormap!r}")
    unit = np.clip(heatmap.astype(np.float64) / vmax, 0.0, 1.0)
    rgba = colormaps[colormap](unit, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def overlay_heatmap(
    rgb: np.ndarray,
    heatmap: np.ndarray,
    alpha: float,
    mask: np.ndarray | None = None,
    *,
    vmax: float | None = None,
    colormap: str = DEFAULT_COLORMAP,
) -> np.ndarray:
    """Blend the coloured heatmap over a photo: uint8 RGB [H, W, 3].

    rgb: uint8 [H, W, 3]; heatmap: [H, W]; alpha in [0, 1] is the heatmap's
    weight. With mask (bool [H, W]) only pixels inside it are blended, the rest
    keep the photo, and the automatic vmax is taken inside the mask.
    Result = round((1 − alpha)·rgb + alpha·colour).
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError(
            f"rgb must be a uint8 numpy array, got {getattr(rgb, 'dtype', type(rgb).__name__)}"
        )
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be [H, W, 3], got shape {rgb.shape}")
    _check_heatmap(heatmap)
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match rgb {rgb.shape[:2]}")
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if vmax is None:
        vmax = display_vmax(heatmap, mask)
    colour = heatmap_to_rgb(heatmap, vmax, colormap=colormap).astype(np.float64)
    blended = np.rint((1.0 - alpha) * rgb.astype(np.float64) + alpha * colour).astype(np.uint8)
    if mask is None:
        return blended
    inside = _check_mask(mask, heatmap.shape)
    return np.where(inside[..., None], blended, rgb)


def _check_heatmap(heatmap: np.ndarray) -> None:
    if not isinstance(heatmap, np.ndarray) or heatmap.dtype.kind not in "uif":
        raise TypeError("heatmap must be a real numeric numpy array")
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be [H, W], got shape {heatmap.shape}")
    if not np.all(np.isfinite(heatmap)):
        raise ValueError("heatmap contains NaN or infinite values")
    if heatmap.size and heatmap.min() < 0:
        raise ValueError(f"heatmap must be non-negative, minimum is {heatmap.min():.6g}")


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError("mask must be a bool numpy array")
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}, expected {shape}")
    return mask
