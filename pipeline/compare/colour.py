"""RGB → YCbCr, ITU-R BT.601 ("studio swing"), as method.md section 3 gives it.

With R, G, B in [0, 1]::

    Y  =  16 +  65.481 R + 128.553 G +  24.966 B      (Y  in [16, 235])
    Cb = 128 −  37.797 R −  74.203 G + 112.000 B      (Cb in [16, 240])
    Cr = 128 + 112.000 R −  93.786 G −  18.214 B      (Cr in [16, 240])

This is the matrix of MATLAB's ``rgb2ycbcr`` and of ``skimage.color.rgb2ycbcr``.
The paper prints Cb and Cr with wrong signs; we use the standard.

The output is in BT.601 code units (the 8-bit scale), which is the scale the
PSE heatmap uses for YCbCr. ``ycbcr_to_unit_range`` maps it onto [0, 1] per
channel, for metrics (LPIPS) that expect image-like input.
"""

from __future__ import annotations

import numpy as np
import torch

#: Rows: Y, Cb, Cr; columns: R, G, B (inputs in [0, 1]).
YCBCR_FROM_RGB = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
)
#: Added after the matrix product: Y, Cb, Cr.
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
#: Nominal lower ends of Y, Cb, Cr for RGB in [0, 1].
YCBCR_MIN = np.array([16.0, 16.0, 16.0], dtype=np.float64)
#: Nominal upper ends of Y, Cb, Cr for RGB in [0, 1].
YCBCR_MAX = np.array([235.0, 240.0, 240.0], dtype=np.float64)

# Tolerance on the [0, 1] input check (float rounding from upstream resampling).
_RANGE_TOLERANCE = 1e-6


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 YCbCr of a floating RGB image with values in [0, 1].

    rgb: [..., 3] float32 or float64 (typically [H, W, 3]).
    Returns the same shape and dtype: Y in [16, 235], Cb and Cr in [16, 240].
    """
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"rgb must be float32 or float64 in [0, 1], got dtype {rgb.dtype}; "
            "use rgb_uint8_to_ycbcr for 8-bit images"
        )
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have 3 channels in its last axis, got shape {rgb.shape}")
    if not np.all(np.isfinite(rgb)):
        raise ValueError("rgb contains NaN or infinite values")
    if rgb.size and (rgb.min() < -_RANGE_TOLERANCE or rgb.max() > 1.0 + _RANGE_TOLERANCE):
        raise ValueError(
            f"rgb values must lie in [0, 1], got [{rgb.min():.6g}, {rgb.max():.6g}]"
        )
    matrix = YCBCR_FROM_RGB.astype(rgb.dtype)
    offset = YCBCR_OFFSET.astype(rgb.dtype)
    return rgb @ matrix.T + offset


def rgb_uint8_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 YCbCr (float64, code units) of an 8-bit RGB image [..., 3] uint8."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError(
            f"rgb must be a uint8 numpy array, got "
            f"{getattr(rgb, 'dtype', type(rgb).__name__)}"
        )
    return rgb_to_ycbcr(rgb.astype(np.float64) / 255.0)


def ycbcr_to_unit_range(ycbcr: np.ndarray) -> np.ndarray:
    """Map BT.601 YCbCr code units onto [0, 1] per channel.

    Y: (Y − 16) / 219; Cb, Cr: (C − 16) / 224; clipped to [0, 1] to absorb
    rounding. ycbcr: [..., 3] float. Returns the same shape and dtype.
    """
    if not isinstance(ycbcr, np.ndarray) or ycbcr.dtype not in (np.float32, np.float64):
        raise TypeError("ycbcr must be a float32 or float64 numpy array")
    if ycbcr.ndim < 1 or ycbcr.shape[-1] != 3:
        raise ValueError(f"ycbcr must have 3 channels in its last axis, got shape {ycbcr.shape}")
    low = YCBCR_MIN.astype(ycbcr.dtype)
    span = (YCBCR_MAX - YCBCR_MIN).astype(ycbcr.dtype)
    return np.clip((ycbcr - low) / span, 0.0, 1.0)


def rgb_to_ycbcr_torch(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 YCbCr of a floating RGB tensor [..., 3, H, W] with values in [0, 1].

    Channel-first (torch convention). Returns the same shape, dtype and device,
    in code units (Y in [16, 235], Cb and Cr in [16, 240]). Differentiable. The
    [0, 1] range is not checked here (that would force a device sync).
    """
    if not isinstance(rgb, torch.Tensor):
        raise TypeError(f"rgb must be a torch.Tensor, got {type(rgb).__name__}")
    if not rgb.is_floating_point():
        raise TypeError(f"rgb must be a floating tensor in [0, 1], got dtype {rgb.dtype}")
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must have shape [..., 3, H, W], got {tuple(rgb.shape)}")
    matrix = torch.as_tensor(YCBCR_FROM_RGB, dtype=rgb.dtype, device=rgb.device)
    offset = torch.as_tensor(YCBCR_OFFSET, dtype=rgb.dtype, device=rgb.device)
    ycbcr = torch.einsum("oc,...chw->...ohw", matrix, rgb)
    return ycbcr + offset[:, None, None]
