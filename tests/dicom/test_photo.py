"""dicom.photo: RGB decoding across transfer syntaxes and colour models; clinical context."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from dicom.photo import PhotoDecodeError, decode_rgb, extract_context
from pipeline.errors import UnreadableImageError

pytestmark = pytest.mark.skipif(
    shutil.which("img2dcm") is None or shutil.which("dcmdjpeg") is None, reason="needs dcmtk"
)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, faces_dir: Path) -> dict[str, Path]:
    """obama.jpg as DICOM in many encodings, made with dcmtk (the 'raw' one is lossless RGB)."""
    out = tmp_path_factory.mktemp("photo")
    jpeg = out / "jpeg_baseline.dcm"
    _run("img2dcm", "-vlp", "-k", "PatientID=P1", str(faces_dir / "obama.jpg"), str(jpeg))
    raw = out / "raw.dcm"
    _run("dcmdjpeg", str(jpeg), str(raw))
    files = {"jpeg_baseline_from_camera": jpeg, "explicit_le": raw}
    for name, tool, flags in [
        ("jpeg_extended", "dcmcjpeg", ["+ee"]),
        ("jpeg_lossless_p14", "dcmcjpeg", ["+el"]),
        ("jpeg_lossless_sv1", "dcmcjpeg", ["+e1"]),
        ("jpeg_baseline_rgb", "dcmcjpeg", ["+eb", "+cr"]),
        ("jpegls_lossless", "dcmcjpls", ["+el"]),
        ("jpegls_near_lossless", "dcmcjpls", ["+en"]),
        ("rle", "dcmcrle", []),
        ("deflated", "dcmconv", ["+td"]),
        ("implicit_le", "dcmconv", ["+ti"]),
    ]:
        files[name] = out / f"{name}.dcm"
        _run(tool, *flags, str(raw), str(files[name]))
    return files


@pytest.fixture(scope="module")
def raw_rgb(photo_files) -> np.ndarray:
    return pydicom.dcmread(photo_files["explicit_le"]).pixel_array


# Maximum absolute error allowed per encoding (0 = lossless).
TOLERANCE = {
    "explicit_le": 0, "implicit_le": 0, "deflated": 0, "rle": 0,
    "jpeg_lossless_p14": 0, "jpeg_lossless_sv1": 0, "jpegls_lossless": 0,
    "jpegls_near_lossless": 2,  # NEAR=2 by definition
}


@pytest.mark.parametrize(
    "name",
    ["explicit_le", "implicit_le", "deflated", "rle", "jpeg_lossless_p14", "jpeg_lossless_sv1",
     "jpegls_lossless", "jpegls_near_lossless", "jpeg_extended", "jpeg_baseline_rgb"],
)
def test_transfer_syntaxes_decode_to_the_same_rgb(name, photo_files, raw_rgb) -> None:
    rgb = decode_rgb(pydicom.dcmread(photo_files[name]))
    assert rgb.dtype == np.uint8 and rgb.shape == raw_rgb.shape and rgb.flags.c_contiguous
    np.testing.assert_array_equal(decode_rgb(photo_files[name]), rgb)  # from the file, frame by frame
    error = np.abs(rgb.astype(int) - raw_rgb.astype(int))
    if name in TOLERANCE:
        assert error.max() <= TOLERANCE[name]
    else:  # lossy JPEG re-encoding: small on average
        assert error.mean() < 2.0


def test_camera_jpeg_decodes_like_pil(photo_files, faces_dir) -> None:
    """img2dcm keeps the camera's JPEG stream (YBR_FULL_422); decoders may differ by rounding."""
    ds = pydicom.dcmread(photo_files["jpeg_baseline_from_camera"])
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    rgb = decode_rgb(ds)
    reference = np.asarray(Image.open(faces_dir / "obama.jpg").convert("RGB"))
    error = np.abs(rgb.astype(int) - reference.astype(int))
    assert error.max() <= 4 and error.mean() < 0.5
    # Decoding straight from the file gives the identical array.
    np.testing.assert_array_equal(decode_rgb(photo_files["jpeg_baseline_from_camera"]), rgb)


@pytest.mark.parametrize("lossless", [True, False])
def test_jpeg2000_decodes(lossless, photo_files, raw_rgb) -> None:
    buffer = io.BytesIO()
    options = {"irreversible": not lossless, "mct": 1, "no_jp2": True}
    if not lossless:
        options |= {"quality_mode": "rates", "quality_layers": [10]}
    Image.fromarray(raw_rgb).save(buffer, format="JPEG2000", **options)
    ds = pydicom.dcmread(photo_files["explicit_le"])
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_RCT" if lossless else "YBR_ICT"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless if lossless else JPEG2000
    error = np.abs(decode_rgb(ds).astype(int) - raw_rgb.astype(int))
    if lossless:
        assert error.max() == 0
    else:
        assert error.mean() < 3.0


def _native(rgb: np.ndarray, **attributes) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rgb.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture(scope="module")
def small_rgb() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def test_planar_configuration_1_is_interleaved(small_rgb) -> None:
    planar = np.ascontiguousarray(small_rgb.transpose(2, 0, 1)).tobytes()
    ds = _native(small_rgb, PlanarConfiguration=1, PixelData=planar)
    np.testing.assert_array_equal(decode_rgb(ds), small_rgb)


def test_ybr_full_is_converted_to_rgb(small_rgb) -> None:
    ybr = convert_color_space(small_rgb, "RGB", "YBR_FULL")
    # Independent BT.601 full-range inverse, written out by hand.
    y, cb, cr = (ybr[..., i].astype(float) for i in range(3))
    expected = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)],
        axis=-1,
    )
    rgb = decode_rgb(_native(ybr, PhotometricInterpretation="YBR_FULL"))
    assert np.abs(rgb - np.clip(np.rint(expected), 0, 255)).max() <= 1
    assert np.abs(rgb.astype(int) - small_rgb.astype(int)).max() <= 2


def test_monochrome_is_replicated_and_monochrome1_inverted(small_rgb) -> None:
    grey = small_rgb[..., 0].copy()
    for interpretation, expected in (("MONOCHROME2", grey), ("MONOCHROME1", 255 - grey)):
        ds = _native(grey[..., None], SamplesPerPixel=1, PhotometricInterpretation=interpretation)
        del ds.PlanarConfiguration
        rgb = decode_rgb(ds)
        assert rgb.shape == (24, 32, 3)
        for channel in range(3):
            np.testing.assert_array_equal(rgb[..., channel], expected)


def test_twelve_bit_monochrome_is_scaled_to_eight_bits() -> None:
    values = np.array([[0, 4095], [2048, 1]], dtype=np.uint16)
    ds = _native(np.zeros((2, 2, 3), np.uint8), SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
                 BitsAllocated=16, BitsStored=12, HighBit=11, PixelData=values.tobytes())
    del ds.PlanarConfiguration
    rgb = decode_rgb(ds)
    np.testing.assert_array_equal(rgb[..., 0], np.rint(values / 4095 * 255).astype(np.uint8))


def test_multiframe_takes_frame_zero(small_rgb) -> None:
    second = 255 - small_rgb
    ds = _native(small_rgb, NumberOfFrames=2, PixelData=small_rgb.tobytes() + second.tobytes())
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"
    np.testing.assert_array_equal(decode_rgb(ds), small_rgb)


def test_truncated_jpeg_raises_typed_error(photo_files) -> None:
    ds = pydicom.dcmread(photo_files["jpeg_baseline_from_camera"])
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:2000]])
    with pytest.raises(PhotoDecodeError, match="cut short") as info:
        decode_rgb(ds)
    assert isinstance(info.value, UnreadableImageError)


def test_short_native_pixel_data_and_missing_pixel_data_raise(small_rgb) -> None:
    with pytest.raises(PhotoDecodeError):
        decode_rgb(_native(small_rgb, PixelData=small_rgb.tobytes()[:100]))
    ds = _native(small_rgb)
    del ds.PixelData
    with pytest.raises(PhotoDecodeError, match="no Pixel Data"):
        decode_rgb(ds)
    with pytest.raises(PhotoDecodeError, match="not supported"):
        decode_rgb(_native(small_rgb, PhotometricInterpretation="HSV"))


def test_non_dicom_file_raises_typed_error(tmp_path) -> None:
    path = tmp_path / "note.dcm"
    path.write_bytes(b"not dicom at all")
    with pytest.raises(PhotoDecodeError):
        decode_rgb(path)


# ---------------------------------------------------------------------------- context


def _context_dataset(**attributes) -> Dataset:
    ds = Dataset()
    ds.PatientID = "MRN-7"
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientName = "Doe^Jane"
    ds.PatientBirthDate = "20200131"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = "1.2.3"
    ds.StudyDate = "20240305"
    ds.StudyTime = "081500"
    ds.StudyDescription = "Cleft clinic"
    ds.AccessionNumber = "ACC9"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "XC"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_context_fields() -> None:
    context = extract_context(_context_dataset())
    assert context.patient.patient_id == "MRN-7"
    assert context.patient.issuer_of_patient_id == "HOSP"
    assert context.patient.name == "Doe^Jane"
    assert context.patient.birth_date == dt.date(2020, 1, 31)
    assert context.patient.sex == "F"
    assert context.study.study_instance_uid == "1.2.3"
    assert context.study.study_date == dt.date(2024, 3, 5)
    assert context.study.study_time == dt.time(8, 15)
    assert (context.study.description, context.study.accession_number) == ("Cleft clinic", "ACC9")
    assert (context.series_instance_uid, context.sop_instance_uid, context.modality) == ("1.2.3.4", "1.2.3.4.5", "XC")
    with pytest.raises(AttributeError):
        context.modality = "OT"  # frozen


def test_acquisition_datetime_precedence_and_zones() -> None:
    plus_one = dt.timezone(dt.timedelta(hours=1))
    minus_five = dt.timezone(dt.timedelta(hours=-5))
    # AcquisitionDateTime with its own offset wins over everything.
    ds = _context_dataset(AcquisitionDateTime="20240305101112.5+0100", TimezoneOffsetFromUTC="-0500",
                          ContentDate="20240306", ContentTime="090000")
    assert extract_context(ds).acquisition_datetime == dt.datetime(2024, 3, 5, 10, 11, 12, 500000, plus_one)
    # Without its own offset, TimezoneOffsetFromUTC applies.
    ds = _context_dataset(AcquisitionDateTime="20240305101112", TimezoneOffsetFromUTC="-0500")
    assert extract_context(ds).acquisition_datetime == dt.datetime(2024, 3, 5, 10, 11, 12, tzinfo=minus_five)
    # ContentDate + ContentTime before StudyDate + StudyTime.
    ds = _context_dataset(ContentDate="20240306", ContentTime="0900", TimezoneOffsetFromUTC="+0100")
    assert extract_context(ds).acquisition_datetime == dt.datetime(2024, 3, 6, 9, 0, tzinfo=plus_one)
    # Study date/time last; the configured local zone when the object names none.
    ds = _context_dataset()
    assert extract_context(ds).acquisition_datetime is None  # no zone known: not a naive guess
    assert extract_context(ds, local_timezone=dt.timezone.utc).acquisition_datetime == dt.datetime(
        2024, 3, 5, 8, 15, tzinfo=dt.timezone.utc
    )


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_missing_and_malformed_values_become_none() -> None:
    ds = _context_dataset(PatientID="", PatientBirthDate="2020-01-31", PatientSex="X",
                          AcquisitionDateTime="yesterday", TimezoneOffsetFromUTC="+2500")
    del ds.StudyDate
    context = extract_context(ds, local_timezone=dt.timezone.utc)
    assert context.patient.patient_id is None
    assert context.patient.birth_date is None
    assert context.patient.sex is None
    assert context.acquisition_datetime is None
    assert extract_context(Dataset()).study.study_instance_uid is None
    with pytest.raises(TypeError, match="tzinfo"):
        extract_context(ds, local_timezone="UTC")
