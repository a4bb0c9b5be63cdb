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
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array
from pydicom.valuerep import DA, DT, TM

from dicom.pixel_checks import (
    IMPOSSIBLE_YBR_SHARE,
    PhotoDecodeError,
    plan_decoding,
    rgb_mislabelled_as_ybr,
)
from dicom.text import VR_MAX_CHARS, clean_text, has_control_characters, read_text

__all__ = ["DecodedPhoto", "PhotoContext", "PhotoDecodeError", "decode_photo", "decode_rgb", "extract_context"]


# ---------------------------------------------------------------------------- pixels


@dataclass(frozen=True)
class DecodedPhoto:
    """Frame 0 as RGB, and what the decoder had to correct (one sentence each, for the report)."""

    rgb: np.ndarray  #: [Rows, Columns, 3] uint8, C-contiguous.
    notes: tuple[str, ...] = ()


def decode_photo(source: Dataset | Path | str) -> DecodedPhoto:
    """Decode frame 0 of ``source`` to RGB after checking its pixel data against its header
    (:func:`dicom.pixel_checks.plan_decoding`).

    ``source`` is a dataset (with ``file_meta.TransferSyntaxUID``) or a path to a DICOM file.

    Handles YBR_FULL / YBR_FULL_422 (converted by pydicom's decoders),
    YBR_ICT/RCT in JPEG 2000, RGB in either planar configuration,
    MONOCHROME1/2 (replicated to three channels; MONOCHROME1 inverted) and
    PALETTE COLOR. Samples wider than 8 bits are rescaled linearly from their
    full stored range to 0..255. A mislabelled colour model is decoded under its
    correction and named in ``notes``.

    Raises:
        PhotoDecodeError: no pixel data, a header the data contradict, unsupported layout,
            or decoding failed.
    """
    ds = _read_whole(source) if isinstance(source, (str, Path)) else source
    if not isinstance(ds, Dataset):
        raise TypeError(f"source must be a pydicom Dataset or a path, got {type(source).__name__}")
    plan = plan_decoding(ds)
    options = {"photometric_interpretation": plan.photometric} if plan.notes else {}
    try:
        frame = pixel_array(ds, index=0, raw=plan.check_ybr_gamut, **options)
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise PhotoDecodeError(
            "The photo's pixel data could not be decoded; the file may be damaged or use an "
            "unsupported compression.",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    interpretation, notes = plan.photometric, plan.notes
    if plan.check_ybr_gamut:
        impossible = rgb_mislabelled_as_ybr(frame)
        if impossible > IMPOSSIBLE_YBR_SHARE:
            interpretation = "RGB"
            notes += (f"The photo was decoded as RGB although its header says YBR_FULL: {impossible:.0%} of its "
                      "pixels would be impossible colours in YBR_FULL.",)
        else:
            frame = convert_color_space(frame, "YBR_FULL", "RGB")
    try:
        rgb = _to_rgb(frame, ds, interpretation, plan.samples)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise PhotoDecodeError("The photo's colours could not be converted to RGB; its colour format or lookup "
                               "table is damaged or not supported.", detail=f"{type(exc).__name__}: {exc}") from exc
    if rgb.shape != (plan.rows, plan.columns, 3):
        raise PhotoDecodeError(
            f"The photo's decoded image has shape {rgb.shape} instead of {(plan.rows, plan.columns, 3)}."
        )
    return DecodedPhoto(np.ascontiguousarray(rgb), notes)


def decode_rgb(source: Dataset | Path | str) -> np.ndarray:
    """:func:`decode_photo`'s RGB image alone: ``(Rows, Columns, 3)`` uint8."""
    return decode_photo(source).rgb


def _read_whole(path: Path | str) -> Dataset:
    try:
        return dcmread(path)
    except Exception as exc:
        raise PhotoDecodeError("The stored photo is not a readable DICOM file.", type(exc).__name__) from exc


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
    #: Why the Patient ID present in the photo cannot be used (too long, control characters);
    #: ``patient.patient_id`` is None then.
    patient_id_problem: str | None = None
    #: How text was read where the declared character set did not serve (sentences for the report).
    text_notes: tuple[str, ...] = ()


#: Longest text kept per attribute (characters): the DICOM maximum of its VR (PN: three
#: component groups of 64). Longer values are cut; a longer Patient ID is refused instead.
TEXT_LIMITS = {"PatientName": 3 * VR_MAX_CHARS["PN"] + 2, "IssuerOfPatientID": VR_MAX_CHARS["LO"],
               "StudyDescription": VR_MAX_CHARS["LO"], "AccessionNumber": VR_MAX_CHARS["SH"]}


def extract_context(ds: Dataset, *, local_timezone: dt.tzinfo | None = None) -> PhotoContext:
    """Read the clinical context of ``ds``; never reads pixel data, never fails on hostile text.

    Missing, empty or malformed values become None rather than errors: the
    consumer decides what is fatal (e.g. a missing PatientID fails the job with
    an explained reason). Text is decoded with the declared character set, with a
    safe fallback noted in ``text_notes`` (:func:`dicom.text.read_text`), cleaned of
    control characters and cut to its VR's maximum length (``TEXT_LIMITS``). A
    Patient ID that is too long or holds control characters is not used
    (``patient_id_problem`` says why): cutting or cleaning it could match another patient.

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
    notes: list[str] = []

    def text(keyword: str) -> str | None:
        value = read_text(ds, keyword)
        if value.note and value.note not in notes:
            notes.append(value.note)
        limit = TEXT_LIMITS.get(keyword)
        return clean_text(value.text, limit) or None if value.text is not None and limit else value.text

    patient_id, id_problem = _patient_id(ds)
    patient = PatientContext(
        patient_id=patient_id,
        issuer_of_patient_id=text("IssuerOfPatientID"),
        name=text("PatientName"),
        birth_date=_date(ds, "PatientBirthDate"),
        sex=_sex(ds),
    )
    study = StudyContext(
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        study_date=_date(ds, "StudyDate"),
        study_time=_time(ds, "StudyTime"),
        description=text("StudyDescription"),
        accession_number=text("AccessionNumber"),
    )
    return PhotoContext(
        patient=patient,
        study=study,
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        modality=_text(ds, "Modality"),
        acquisition_datetime=acquisition_datetime(ds, local_timezone=local_timezone),
        patient_id_problem=id_problem,
        text_notes=tuple(notes),
    )


def _patient_id(ds: Dataset) -> tuple[str | None, str | None]:
    value = read_text(ds, "PatientID").text
    if value is None:
        return None, None
    try:
        raw = ds.get_item("PatientID").value
    except Exception:  # noqa: BLE001 - read_text found it, so this does not fail in practice
        raw = value
    original = bytes(raw).decode("latin-1") if isinstance(raw, (bytes, bytearray)) else str(raw)
    limit = VR_MAX_CHARS["LO"]
    if has_control_characters(original) or len(value) > limit or "\\" in original:
        return None, (f"the photo's Patient ID (0010,0020) is not valid (it must be at most {limit} characters "
                      "without control characters), so it cannot be linked to a patient")
    return value, None


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


def _text(ds: Dataset, keyword: str) -> str | None:
    return read_text(ds, keyword).text


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
