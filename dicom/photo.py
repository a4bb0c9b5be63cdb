"""Turn a received photograph (a DICOM dataset) into an RGB array and its clinical context.

``decode_rgb`` returns what ``pipeline`` expects: an ``(H, W, 3)`` ``uint8`` RGB
array. ``extract_context`` reads the patient, study and acquisition attributes
without touching pixel data, so the listener can record them at intake.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.valuerep import DA, DT, TM

from pipeline.errors import UnreadableImageError


class PhotoDecodeError(UnreadableImageError):
    """The DICOM object has missing, corrupt or unsupported pixel data.

    The message is one sentence for the clinician; ``detail`` keeps the decoder's
    own words for the logs.
    """

    code = "unreadable_dicom_pixels"

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


# ---------------------------------------------------------------------------- pixels


def decode_rgb(source: Dataset | Path | str) -> np.ndarray:
    """Decode frame 0 of ``source`` to an RGB image.

    ``source`` is a dataset (with ``file_meta.TransferSyntaxUID``) or a path to a
    DICOM file (read frame by frame, which saves memory for multi-frame files).

    Handles YBR_FULL / YBR_FULL_422 (converted by pydicom's decoders),
    YBR_ICT/RCT in JPEG 2000, RGB in either planar configuration,
    MONOCHROME1/2 (replicated to three channels; MONOCHROME1 inverted) and
    PALETTE COLOR. Samples wider than 8 bits are rescaled linearly from their
    full stored range to 0..255.

    Returns:
        ``np.ndarray`` of shape ``(Rows, Columns, 3)``, dtype ``uint8``, C-contiguous.

    Raises:
        PhotoDecodeError: no pixel data, unsupported layout, or decoding failed.
    """
    header = _read_header(source)
    if isinstance(source, (str, Path)) and _is_deflated(header):
        # pydicom's frame-by-frame file reader cannot inflate: read it whole.
        source = _read_whole(source)
        header = source
    if "PixelData" not in header and not isinstance(source, (str, Path)):
        raise PhotoDecodeError("The photo has no Pixel Data (7FE0,0010).")
    interpretation = str(header.get("PhotometricInterpretation", "")).strip()
    samples = int(header.get("SamplesPerPixel", 0) or 0)
    rows = int(header.get("Rows", 0) or 0)
    columns = int(header.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise PhotoDecodeError(f"The photo's image has no usable size (Rows={rows}, Columns={columns}).")

    try:
        frame = pixel_array(source, index=0)
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise PhotoDecodeError(
            "The photo's pixel data could not be decoded; the file may be damaged or use an "
            "unsupported compression.",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc

    try:
        rgb = _to_rgb(frame, header, interpretation, samples)
    except (ValueError, TypeError) as exc:
        raise PhotoDecodeError(f"The photo's colour format is not supported ({exc}).", detail=str(exc)) from exc
    if rgb.shape != (rows, columns, 3):
        raise PhotoDecodeError(
            f"The photo's decoded image has shape {rgb.shape} instead of {(rows, columns, 3)}."
        )
    return np.ascontiguousarray(rgb)


def _read_header(source: Dataset | Path | str) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, Path)):
        try:
            return dcmread(source, stop_before_pixels=True)
        except Exception as exc:
            raise PhotoDecodeError("The stored photo is not a readable DICOM file.", detail=f"{source}: {exc}") from exc
    raise TypeError(f"source must be a pydicom Dataset or a path, got {type(source).__name__}")


def _is_deflated(header: Dataset) -> bool:
    file_meta = getattr(header, "file_meta", None)
    syntax = getattr(file_meta, "TransferSyntaxUID", None) if file_meta is not None else None
    return syntax is not None and syntax.is_deflated


def _read_whole(path: Path | str) -> Dataset:
    try:
        return dcmread(path)
    except Exception as exc:
        raise PhotoDecodeError("The stored photo is not a readable DICOM file.", detail=f"{path}: {exc}") from exc


def _to_rgb(frame: np.ndarray, header: Dataset, interpretation: str, samples: int) -> np.ndarray:
    if interpretation in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"):
        if samples != 3 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(
                f"{interpretation} needs 3 samples per pixel, got SamplesPerPixel={samples} "
                f"and a decoded frame of shape {frame.shape}"
            )
        # pydicom converts YBR_FULL(_422) to RGB unless asked for raw data, and the
        # JPEG 2000 decoders undo ICT/RCT themselves; nothing more to do here.
        return _to_uint8(frame, header)
    if interpretation in ("MONOCHROME1", "MONOCHROME2"):
        if frame.ndim != 2:
            raise ValueError(f"{interpretation} frame has shape {frame.shape}, expected 2-D")
        grey = _to_uint8(frame, header)
        if interpretation == "MONOCHROME1":
            grey = 255 - grey
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    if interpretation == "PALETTE COLOR":
        if frame.ndim != 2:
            raise ValueError(f"PALETTE COLOR frame has shape {frame.shape}, expected 2-D")
        coloured = apply_color_lut(frame, header)
        bits = 16 if coloured.dtype.itemsize > 1 else 8
        return _rescale(coloured, low=0, high=(1 << bits) - 1)
    raise ValueError(f"photometric interpretation {interpretation!r} is not supported")


def _to_uint8(frame: np.ndarray, header: Dataset) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    bits_stored = int(header.get("BitsStored", frame.dtype.itemsize * 8))
    if not 1 <= bits_stored <= 32:
        raise ValueError(f"BitsStored={bits_stored} is out of range")
    if int(header.get("PixelRepresentation", 0)) == 1:
        return _rescale(frame, low=-(1 << (bits_stored - 1)), high=(1 << (bits_stored - 1)) - 1)
    return _rescale(frame, low=0, high=(1 << bits_stored) - 1)


def _rescale(values: np.ndarray, *, low: int, high: int) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class PatientContext:
    patient_id: str | None
    issuer_of_patient_id: str | None
    name: str | None  #: DICOM PN form, e.g. ``"Doe^Jane"``.
    birth_date: dt.date | None
    sex: str | None  #: ``"M"``, ``"F"``, ``"O"`` or None.


@dataclass(frozen=True)
class StudyContext:
    study_instance_uid: str | None
    study_date: dt.date | None
    study_time: dt.time | None
    description: str | None
    accession_number: str | None


@dataclass(frozen=True)
class PhotoContext:
    """Who, which study and when, as read from a received photograph."""

    patient: PatientContext
    study: StudyContext
    series_instance_uid: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    modality: str | None
    #: Timezone-aware acquisition time, or None when the object gives no date
    #: (or no timezone and no ``local_timezone`` was supplied).
    acquisition_datetime: dt.datetime | None


def extract_context(ds: Dataset, *, local_timezone: dt.tzinfo | None = None) -> PhotoContext:
    """Read the clinical context of ``ds``; never reads pixel data.

    Missing, empty or malformed values become None rather than errors: the
    consumer decides what is fatal (e.g. a missing PatientID fails the job with
    an explained reason).

    The acquisition time is taken from AcquisitionDateTime, else ContentDate +
    ContentTime, else StudyDate + StudyTime. Its UTC offset is the one inside
    AcquisitionDateTime, else TimezoneOffsetFromUTC (0008,0201), else
    ``local_timezone`` (the sending site's zone, from configuration); if none
    applies the result is None rather than a naive datetime.
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a pydicom Dataset, got {type(ds).__name__}")
    if local_timezone is not None and not isinstance(local_timezone, dt.tzinfo):
        raise TypeError(f"local_timezone must be a datetime.tzinfo, got {local_timezone!r}")
    patient = PatientContext(
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        name=_text(ds, "PatientName"),
        birth_date=_date(ds, "PatientBirthDate"),
        sex=_sex(ds),
    )
    study = StudyContext(
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        study_date=_date(ds, "StudyDate"),
        study_time=_time(ds, "StudyTime"),
        description=_text(ds, "StudyDescription"),
        accession_number=_text(ds, "AccessionNumber"),
    )
    return PhotoContext(
        patient=patient,
        study=study,
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        modality=_text(ds, "Modality"),
        acquisition_datetime=acquisition_datetime(ds, local_timezone=local_timezone),
    )


def acquisition_datetime(
    ds: Dataset, *, local_timezone: dt.tzinfo | None = None
) -> dt.datetime | None:
    """The timezone-aware acquisition time of ``ds`` (rules in ``extract_context``)."""
    fallback_zone = timezone_offset(ds) or local_timezone
    stamp = _datetime(ds, "AcquisitionDateTime")
    if stamp is None:
        for date_keyword, time_keyword in (("ContentDate", "ContentTime"), ("StudyDate", "StudyTime")):
            date = _date(ds, date_keyword)
            if date is not None:
                time = _time(ds, time_keyword) or dt.time(0, 0)
                stamp = dt.datetime.combine(date, time.replace(tzinfo=None))
                break
    if stamp is None:
        return None
    if stamp.tzinfo is not None:
        return stamp
    if fallback_zone is None:
        return None
    return stamp.replace(tzinfo=fallback_zone)


_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")


def timezone_offset(ds: Dataset) -> dt.timezone | None:
    """TimezoneOffsetFromUTC (0008,0201) as a timezone, or None if absent or malformed."""
    text = _text(ds, "TimezoneOffsetFromUTC")
    if text is None:
        return None
    match = _OFFSET.fullmatch(text)
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 14 or minutes > 59:
        return None
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _raw(ds: Dataset, keyword: str) -> object | None:
    try:
        value = ds.get(keyword)
    except Exception:  # malformed element (e.g. undecodable bytes): treat as absent
        return None
    if value is None:
        return None
    return value


def _text(ds: Dataset, keyword: str) -> str | None:
    value = _raw(ds, keyword)
    if value is None:
        return None
    text = str(value).strip(" \x00")
    return text or None


def _date(ds: Dataset, keyword: str) -> dt.date | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        value = DA(text)
    except (ValueError, OverflowError):
        return None
    return None if value is None else dt.date(value.year, value.month, value.day)


def _time(ds: Dataset, keyword: str) -> dt.time | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        value = TM(text)
    except (ValueError, OverflowError):
        return None
    return None if value is None else dt.time(value.hour, value.minute, value.second, value.microsecond)


def _datetime(ds: Dataset, keyword: str) -> dt.datetime | None:
    text = _text(ds, keyword)
    if text is None:
        return None
    try:
        value = DT(text)
    except (ValueError, OverflowError):
        return None
    if value is None:
        return None
    return dt.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, tzinfo=value.tzinfo,
    )


def _sex(ds: Dataset) -> str | None:
    text = _text(ds, "PatientSex")
    return text.upper() if text is not None and text.upper() in ("M", "F", "O") else None
