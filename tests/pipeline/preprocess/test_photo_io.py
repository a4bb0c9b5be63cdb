"""Reading photos: formats, EXIF orientation, modes and bit depths."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UnreadableImageError
from pipeline.preprocess.photo_io import array_to_rgb_uint8, load_photo


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture()
def gradient() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:60]
    return np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)


def test_png_and_tiff_round_trip(gradient):
    for fmt in ("PNG", "TIFF"):
        np.testing.assert_array_equal(load_photo(encode(Image.fromarray(gradient), fmt)), gradient)


def test_jpeg_decodes_close_to_source(gradient):
    decoded = load_photo(encode(Image.fromarray(gradient), "JPEG", quality=95))
    assert decoded.shape == gradient.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - gradient).mean() < 3


def test_exif_orientation_is_applied(gradient):
    image = Image.fromarray(gradient)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    decoded = load_photo(encode(image, "PNG", exif=exif))
    np.testing.assert_array_equal(decoded, np.rot90(gradient, k=-1))


def test_greyscale_and_rgba_become_rgb(gradient):
    grey = gradient[:, :, 0]
    decoded = load_photo(encode(Image.fromarray(grey, "L"), "PNG"))
    np.testing.assert_array_equal(decoded, np.repeat(grey[:, :, None], 3, axis=2))
    rgba = np.dstack([gradient, np.full(gradient.shape[:2], 0, np.uint8)])
    rgba[:5, :5, 3] = 255
    decoded = load_photo(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(decoded[:5, :5], gradient[:5, :5])
    assert (decoded[10:, 10:] == 255).all()  # transparent → white


def test_sixteen_bit_is_scaled():
    data = (np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16))
    decoded = load_photo(encode(Image.fromarray(data), "PNG"))
    np.testing.assert_array_equal(decoded[:, :, 0], np.round(data / 65535 * 255).astype(np.uint8))
    twelve = np.array([[0, 4095]], dtype=np.uint16)
    np.testing.assert_array_equal(array_to_rgb_uint8(twelve, bits_stored=12)[0, :, 0], [0, 255])
    np.testing.assert_array_equal(array_to_rgb_uint8(np.array([[0.0, 1.0]]))[0, :, 1], [0, 255])


def test_unreadable_inputs_raise_one_clear_error(tmp_path):
    with pytest.raises(UnreadableImageError, match="not a readable image"):
        load_photo(b"this is not an image")
    with pytest.raises(UnreadableImageError, match="does not exist"):
        load_photo(tmp_path / "missing.jpg")
    truncated = encode(Image.fromarray(np.zeros((64, 64, 3), np.uint8)), "PNG")[:60]
    with pytest.raises(UnreadableImageError):
        load_photo(truncated)
    with pytest.raises(UnreadableImageError, match="NaN"):
        array_to_rgb_uint8(np.array([[np.nan]]))
