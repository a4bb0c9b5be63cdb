"""Per-pixel difference maps between the aligned photo and its normalised face.

method.md section 4. Every map here is non-negative, at image resolution, and
larger where the two images differ more:

* ``pse_heatmap``   – per-channel squared error, [H, W, C].
* ``ssim_heatmap``  – per-channel 1 − local SSIM (Gaussian window, Wang et al. 2004), [H, W, C].
* ``lpips_heatmap`` – lpips' spatial output, [H, W].

``grey_erode_3x3`` is the paper's grey-level erosion (3×3 square minimum filter,
per channel: ``scipy.ndimage.grey_erosion``, mode 'reflect', i.e. the edge pixel is
repeated). ``compare_with_erosion`` applies it in either order: erode both images,
then compare (arXiv version), or compare, then erode the map (journal version, the
default).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from pipeline.vocabulary import DEFAULT_EROSION_ORDER, ErosionOrder

#: SSIM window: Gaussian, sigma 1.5, truncated at 3.5 sigma (11 taps, skimage's fixed
#: truncation for ``gaussian_weights=True``), population covariance; K1, K2 as Wang et al. 2004.
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Smallest image side skimage's SSIM accepts with this window (2·round(3.5·1.5) + 1).
MIN_SSIM_SIDE = 11

#: Smallest image side lpips' AlexNet/VGG trunks accept without failing.
MIN_LPIPS_SIDE = 32

ImageComparison = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_pair(original: np.ndarray, normalized: np.ndarray) -> None:
    for name, image in (("original", original), ("normalized", normalized)):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
        if image.ndim not in (2, 3):
            raise ValueError(f"{name} must be [H, W] or [H, W, C], got shape {image.shape}")
        if image.dtype.kind not in "uif":
            raise TypeError(f"{name} must be numeric, got dtype {image.dtype}")
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if original.shape != normalized.shape:
        raise ValueError(
            f"original and normalized differ in shape: {original.shape} vs {normalized.shape}"
        )


def grey_erode_3x3(image: np.ndarray) -> np.ndarray:
    """Grey-level erosion with a 3×3 square: each pixel becomes its 3×3 minimum.

    image: [H, W] or [H, W, C] (channels eroded independently), any real dtype.
    Returns the same shape and dtype. Edges repeat the border pixel
    (``scipy.ndimage.grey_erosion``'s default mode 'reflect').
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W] or [H, W, C], got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    return ndimage.grey_erosion(image, size=(3, 3) + (1,) * (image.ndim - 2), mode="reflect")


def pse_heatmap(original: np.ndarray, normalized: np.ndarray) -> np.ndarray:
    """Pixel-wise squared error (x_org − x_norm)², per channel, float64.

    original, normalized: [H, W] or [H, W, C], same shape, in the same units
    (the pipeline uses 8-bit RGB values or BT.601 YCbCr code units).
    """
    _check_pair(original, normalized)
    difference = original.astype(np.float64) - normalized.astype(np.float64)
    return difference * difference


def ssim_heatmap(original: np.ndarray, normalized: np.ndarray, *, data_range: float) -> np.ndarray:
    """Per-channel 1 − local SSIM, float64, clipped below at 0.

    original, normalized: [H, W] or [H, W, C], same shape, H and W at least
    ``MIN_SSIM_SIDE``; channels are compared independently. data_range: the span of
    the value scale (255 for 8-bit values and for BT.601 code units in this
    pipeline); it sets C1 = (K1·L)², C2 = (K2·L)². The local SSIM map is skimage's
    ``structural_similarity(..., full=True)`` with a Gaussian window (``SSIM_SIGMA``),
    population covariance and reflected edges; it covers the whole image (no border
    crop). Values lie in [0, 2]; 0 = identical.
    """
    _check_pair(original, normalized)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    if min(original.shape[:2]) < MIN_SSIM_SIDE:
        raise ValueError(f"SSIM needs images of at least {MIN_SSIM_SIDE}×{MIN_SSIM_SIDE}, "
                         f"got {original.shape[0]}×{original.shape[1]}")
    _, similarity = structural_similarity(
        original.astype(np.float64), normalized.astype(np.float64), data_range=data_range,
        channel_axis=-1 if original.ndim == 3 else None, gaussian_weights=True, sigma=SSIM_SIGMA,
        use_sample_covariance=False, K1=SSIM_K1, K2=SSIM_K2, full=True,
    )
    return np.maximum(1.0 - similarity, 0.0)


def _to_lpips_input(image: np.ndarray, name: str, device: torch.device) -> torch.Tensor:
    """[H, W, 3] uint8, or float in [0, 1] → float32 tensor [1, 3, H, W] in [−1, 1]."""
    if image.dtype == np.uint8:
        unit = image.astype(np.float32) / 255.0
    elif image.dtype.kind == "f":
        if image.min() < 0.0 or image.max() > 1.0:
            raise ValueError(
                f"{name} floating values must lie in [0, 1], "
                f"got [{image.min():.6g}, {image.max():.6g}]"
            )
        unit = image.astype(np.float32)
    else:
        raise TypeError(f"{name} must be uint8 or floating in [0, 1], got dtype {image.dtype}")
    tensor = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))[None]
    return (tensor * 2.0 - 1.0).to(device)


def lpips_heatmap(
    model: torch.nn.Module,
    original: np.ndarray,
    normalized: np.ndarray,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """lpips' spatial distance map at image resolution, float64 [H, W].

    model: an ``lpips.LPIPS(..., spatial=True)`` in eval mode, already on
    ``device``, or a module wrapping one (``spatial`` attribute True, forward
    returning lpips' raw [1, 1, H, W] output, e.g. ``pipeline.normalize.perceptual.LpipsModel``).
    original, normalized: [H, W, 3] RGB-like images, uint8 (0–255) or floating
    in [0, 1]; both are mapped to [−1, 1], the range lpips expects.
    lpips upsamples each layer's map bilinearly to H×W and sums the layers, so
    the mean of this map approximates the scalar (non-spatial) LPIPS distance.
    """
    _check_pair(original, normalized)
    if original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"LPIPS needs [H, W, 3] images, got shape {original.shape}")
    if min(original.shape[:2]) < MIN_LPIPS_SIDE:
        raise ValueError(
            f"LPIPS needs images of at least {MIN_LPIPS_SIDE}×{MIN_LPIPS_SIDE}, "
            f"got {original.shape[0]}×{original.shape[1]}"
        )
    if not isinstance(model, torch.nn.Module) or getattr(model, "spatial", None) is not True:
        raise ValueError("model must be an lpips.LPIPS built with spatial=True")
    if model.training:
        raise ValueError("the LPIPS model is in training mode (dropout active); call model.eval()")
    device = torch.device(device)
    model_device = next(model.parameters()).device
    if model_device.type != device.type or (
        device.index is not None and model_device.index != device.index
    ):
        raise ValueError(f"the LPIPS model is on {model_device}, but device={device}")
    with torch.inference_mode():
        distance = model(
            _to_lpips_input(original, "original", device),
            _to_lpips_input(normalized, "normalized", device),
        )
    if tuple(distance.shape) != (1, 1) + original.shape[:2]:
        raise ValueError(
            f"LPIPS returned shape {tuple(distance.shape)}, expected a spatial map "
            f"{(1, 1) + original.shape[:2]}"
        )
    return distance[0, 0].detach().to("cpu", torch.float64).numpy()


def compare_with_erosion(
    compare: ImageComparison,
    original: np.ndarray,
    normalized: np.ndarray,
    order: ErosionOrder = DEFAULT_EROSION_ORDER,
) -> np.ndarray:
    """A difference map with the 3×3 erosion placed as ``order`` says.

    compare: (original, normalized) → map ([H, W] or [H, W, C]), e.g. ``pse_heatmap``.
    ERODE_THEN_DIFF: compare(erode(original), erode(normalized)).
    DIFF_THEN_ERODE: erode(compare(original, normalized)), per channel.
    """
    if not isinstance(order, ErosionOrder):
        raise TypeError(f"order must be an ErosionOrder, got {order!r}")
    _check_pair(original, normalized)
    if order is ErosionOrder.ERODE_THEN_DIFF:
        return compare(grey_erode_3x3(original), grey_erode_3x3(normalized))
    return grey_erode_3x3(compare(original, normalized))
