"""dicom.pixel_checks and decode_photo on real encoded objects that contradict their header.

Every object is encoded here (Pillow JPEG and JPEG 2000, pyjpegls JPEG-LS) and then
mislabelled or damaged the way the reliability campaign found them. Before these checks
each decoded "successfully" (or crashed with an AttributeError) without a word.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    generate_uid,
)

from dicom.codestream import StreamKind, encapsulated_fragments, inspect_stream
from dicom.photo import PhotoDecodeError, decode_photo
from dicom.pixel_checks import encapsulation_problem


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:196, 150:278])  # 96 x 128, a face and colours


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _j2k(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG2000", no_jp2=True, irreversible=False, mct=1)
    return buffer.getvalue()


def _dataset(rgb: np.ndarray, syntax=ExplicitVRLittleEndian, photometric: str = "RGB") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, photometric, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    return ds


def _encapsulated(rgb: np.ndarray, frame: bytes, syntax, photometric: str) -> Dataset:
    ds = _dataset(rgb, syntax, photometric)
    ds.PixelData = encapsulate([frame])
    return ds


def _close(a: np.ndarray, b: np.ndarray, tolerance: float = 6.0) -> bool:
    return float(np.abs(a.astype(float) - b.astype(float)).mean()) < tolerance


# ------------------------------------------------------------------------ corrections


def test_jpeg_labelled_rgb_is_decoded_as_ycbcr_and_says_so(rgb) -> None:
    decoded = decode_photo(_encapsulated(rgb, _jpeg(rgb), JPEGBaseline8Bit, "RGB"))
    assert _close(decoded.rgb, rgb)
    assert decoded.notes == ("The photo was decoded as YBR_FULL_422 although its header says RGB: its JPEG stream "
                             "declares YCbCr colours.",)


@pytest.mark.parametrize("label", ["YBR_ICT", "YBR_RCT"])
def test_jpeg_labelled_with_a_jpeg_2000_colour_model_is_decoded_as_ycbcr(rgb, label) -> None:
    jpeg = _jpeg(rgb)
    no_jfif = jpeg[:2] + jpeg[2 + 2 + struct.unpack(">H", jpeg[4:6])[0]:]  # drop APP0: the stream says nothing
    for frame in (jpeg, no_jfif):
        decoded = decode_photo(_encapsulated(rgb, frame, JPEGBaseline8Bit, label))
        assert _close(decoded.rgb, rgb), label
        assert len(decoded.notes) == 1 and f"header says {label}" in decoded.notes[0]


def test_native_rgb_labelled_ybr_full_is_decoded_as_rgb_and_says_so(rgb) -> None:
    decoded = decode_photo(_dataset(rgb, photometric="YBR_FULL"))
    np.testing.assert_array_equal(decoded.rgb, rgb)
    assert len(decoded.notes) == 1 and "decoded as RGB although its header says YBR_FULL" in decoded.notes[0]


def test_true_ybr_full_is_not_corrected(rgb) -> None:
    ds = _dataset(rgb, photometric="YBR_FULL")
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    decoded = decode_photo(ds)
    assert decoded.notes == () and _close(decoded.rgb, rgb, 2.0)


def test_correct_labels_decode_without_notes(rgb) -> None:
    for ds in (_encapsulated(rgb, _jpeg(rgb), JPEGBaseline8Bit, "YBR_FULL_422"),
               _encapsulated(rgb, _j2k(rgb), JPEG2000Lossless, "YBR_RCT"), _dataset(rgb)):
        decoded = decode_photo(ds)
        assert decoded.notes == () and _close(decoded.rgb, rgb)
    ds = _dataset(rgb)
    del ds.PixelData
    ds.compress(JPEGLSLossless, rgb, encoding_plugin="pyjpegls")
    decoded = decode_photo(ds)
    assert decoded.notes == ()
    np.testing.assert_array_equal(decoded.rgb, rgb)


# ------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, JPEG2000])
def test_jpeg_stream_under_another_transfer_syntax_is_refused(rgb, syntax) -> None:
    with pytest.raises(PhotoDecodeError, match="is a JPEG baseline stream but its header declares") as info:
        decode_photo(_encapsulated(rgb, _jpeg(rgb), syntax, "YBR_FULL_422"))
    assert info.value.code == "unreadable_dicom_pixels"


def test_jpeg_2000_stream_under_jpeg_baseline_is_refused(rgb) -> None:
    with pytest.raises(PhotoDecodeError, match="is a JPEG 2000 stream"):
        decode_photo(_encapsulated(rgb, _j2k(rgb), JPEGBaseline8Bit, "YBR_FULL_422"))


@pytest.mark.parametrize("size", [(0, 0), (65500, 65500), (97, 128)])
def test_jpeg_frame_size_must_match_rows_and_columns(rgb, size) -> None:
    jpeg = _jpeg(rgb)
    at = jpeg.find(b"\xff\xc0")
    jpeg = jpeg[: at + 5] + struct.pack(">HH", *size) + jpeg[at + 9:]
    assert inspect_stream(jpeg).rows == size[0]
    with pytest.raises(PhotoDecodeError, match=f"is {size[1]}×{size[0]} pixels but its header says 128×96"):
        decode_photo(_encapsulated(rgb, jpeg, JPEGBaseline8Bit, "YBR_FULL_422"))


def test_jpeg_without_end_marker_is_refused(rgb) -> None:
    jpeg = _jpeg(rgb)
    for cut in (jpeg[:-2], jpeg[: len(jpeg) * 2 // 3]):
        with pytest.raises(PhotoDecodeError, match="cut short"):
            decode_photo(_encapsulated(rgb, cut + b"\x00" * (len(cut) % 2), JPEGBaseline8Bit, "YBR_FULL_422"))


def test_fragment_length_past_the_end_is_refused(rgb) -> None:
    jpeg = _jpeg(rgb)
    jpeg += b"\x00" * (len(jpeg) % 2)
    value = b"\xfe\xff\x00\xe0" + struct.pack("<I", 0) + b"\xfe\xff\x00\xe0" + struct.pack("<I", 0x7FFFFFF0) + jpeg
    ds = _dataset(rgb, JPEGBaseline8Bit, "YBR_FULL_422")
    ds.PixelData = value
    with pytest.raises(PhotoDecodeError, match="damaged") as info:
        decode_photo(ds)
    assert "declares 2147483632 bytes" in info.value.detail
    assert len(encapsulated_fragments(encapsulate([jpeg]))) == 2


def test_palette_without_blue_table_is_refused_with_a_reason(rgb) -> None:
    ds = _dataset(rgb)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    del ds.PlanarConfiguration
    ds.PixelData = rgb[..., 0].tobytes()
    lut = (np.arange(256, dtype=np.uint16) * 257).tobytes()
    for colour in ("Red", "Green"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut)
    with pytest.raises(PhotoDecodeError, match="lacks its blue part"):
        decode_photo(ds)
    ds.BluePaletteColorLookupTableDescriptor, ds.BluePaletteColorLookupTableData = [256, 0, 16], lut
    assert decode_photo(ds).rgb.shape == (96, 128, 3)
    ds.BluePaletteColorLookupTableData = lut[:7]  # damaged: a reason, never an AttributeError
    with pytest.raises(PhotoDecodeError, match="colours could not be converted"):
        decode_photo(ds)


def test_explicit_length_encapsulated_pixel_data_is_detected_as_read(rgb, tmp_path) -> None:
    ds = _encapsulated(rgb, _jpeg(rgb), JPEGBaseline8Bit, "YBR_FULL_422")
    good = tmp_path / "good.dcm"
    ds.save_as(good, enforce_file_format=True)
    data = good.read_bytes()
    at = data.find(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
    value = data[at + 12:]
    value = value[: value.rfind(b"\xfe\xff\xdd\xe0")]
    bad = tmp_path / "explicit.dcm"
    bad.write_bytes(data[:at + 8] + struct.pack("<I", len(value)) + value)
    assert encapsulation_problem(pydicom.dcmread(good)) is None
    problem = encapsulation_problem(pydicom.dcmread(bad))
    assert problem is not None and "explicit length" in problem
    with pytest.raises(PhotoDecodeError, match="not encoded as DICOM requires"):
        decode_photo(bad)


def test_huge_images_are_refused_before_decoding(rgb) -> None:
    ds = _dataset(rgb)
    ds.Rows = ds.Columns = 20000
    with pytest.raises(PhotoDecodeError, match="megapixels"):
        decode_photo(ds)


def test_stream_kinds_are_recognised(rgb) -> None:
    assert inspect_stream(_jpeg(rgb)).kind is StreamKind.JPEG_BASELINE
    assert inspect_stream(_jpeg(rgb)).colour == "YBR"
    info = inspect_stream(_j2k(rgb))
    assert (info.kind, info.rows, info.columns, info.components, info.complete) == (StreamKind.JPEG_2000, 96, 128,
                                                                                   3, True)
