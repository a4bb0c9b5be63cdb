"""Reading photographs into RGB uint8 arrays.

Clinical photos arrive as JPEG, PNG or TIFF files (and, through the DICOM layer,
as decoded pixel arrays). Everything downstream takes ``[H, W, 3] uint8 RGB``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import UnreadableImageError

#: Refuse anything larger than this many pixels (a 200 MP photo is not a face photo;
#: it also bounds memory: 200 MP RGB is 600 MB).
MAX_PIXELS = 200_000_000


def load_photo(source: str | Path | bytes) -> np.ndarray:
    """Decode a photo file (path or bytes) into ``[H, W, 3] uint8`` RGB.

    EXIF orientation is applied; greyscale, palette, CMYK and RGBA images are converted
    (alpha composited onto white); 16-bit and float images are scaled to 8 bits.

    Raises:
        UnreadableImageError: the data is not an image we can decode.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            handle = Image.open(io.BytesIO(source))
            name = "the uploaded data"
        else:
            handle = Image.open(Path(source))
            name = Path(source).name
        with handle as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UnreadableImageError(
                    f"{name} has {width * height / 1e6:.0f} megapixels; at most "
                    f"{MAX_PIXELS / 1e6:.0f} are accepted."
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return pil_to_rgb_array(image)
    except UnreadableImageError:
        raise
    except FileNotFoundError as error:
        raise UnreadableImageError(f"The photo file {error.filename} does not exist.") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(f"The input is not a readable image ({error}).") from error


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to ``[H, W, 3] uint8`` RGB."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return array_to_rgb_uint8(np.asarray(image), bits_stored=16)
    if mode in ("I", "F"):
        return array_to_rgb_uint8(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def array_to_rgb_uint8(array: np.ndarray, bits_stored: int | None = None) -> np.ndarray:
    """Convert a greyscale/RGB/RGBA array of any integer or float depth to RGB uint8.

    Integer data is scaled from ``bits_stored`` bits to 8 when given (16-bit PNG/TIFF,
    DICOM BitsStored); without it, data whose values fit 0..255 is taken as is and
    wider data is scaled by the smallest bit depth that holds its maximum. Floats are
    taken as [0, 1].
    """
    if bits_stored is not None and not 1 <= bits_stored <= 32:
        raise ValueError(f"bits_stored must be within 1..32, got {bits_stored!r}")
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[2] not in (1, 3, 4):
        raise UnreadableImageError(f"Pixel data of shape {array.shape} is not a greyscale or colour image.")
    if data.shape[2] == 4:
        data = data[:, :, :3]
    if data.dtype == np.uint8:
        scaled = data
    elif np.issubdtype(data.dtype, np.integer) and bits_stored is not None:
        scale = 255.0 / (2**bits_stored - 1)
        scaled = np.clip(np.round(data.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(data.dtype, np.integer):
        high = int(data.max()) if data.size else 0
        if high <= 255 and int(data.min()) >= 0:
            scaled = data.astype(np.uint8)
        else:
            bits = max(8, int(np.ceil(np.log2(high + 1))))
            scaled = np.clip(np.round(data.astype(np.float64) * 255.0 / (2**bits - 1)), 0, 255).astype(np.uint8)
    elif np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise UnreadableImageError("Pixel data contains NaN or infinite values.")
        scaled = np.clip(np.round(data * 255.0), 0, 255).astype(np.uint8)
    else:
        raise UnreadableImageError(f"Pixel data of type {data.dtype} is not an image.")
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return np.ascontiguousarray(scaled)
