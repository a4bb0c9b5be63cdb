"""Result objects returned to the PACS: a Secondary Capture overlay and an Encapsulated PDF.

Both join the source photo's study (patient and study attributes copied from
it) in a new series, get new UIDs under our UID root, reference the source
image, and name the algorithm in the Contributing Equipment Sequence (IHE AIR):
Manufacturer, Manufacturer's Model Name, Software Versions and a Device UID
derived from the model weights' hash, so it changes whenever the weights do.

dciodvfy (dicom3tools 2022-06) reports no errors for either object. It does
warn "Attribute is not present in standard DICOM IOD - (0x0018,0x1002) Device
UID" and hence "Standard Extended SOP Class": its tables predate Device UID in
the Contributing Equipment Sequence (current PS3.3 SOP Common module has it, as
do highdicom's tables). We keep it because IHE AIR identifies the algorithm
by it; it is not repeated in General Equipment (same warning, nothing gained).

Text copied from the photo is hostile (any length, bytes or character set):
:func:`text_safe_reference` makes the copy both builders work from, with every text
value decoded, cleaned and cut to its VR's length, and a Specific Character Set that is
valid and can hold it. :func:`minimal_reference` keeps only identifiers, in ASCII, for
the last-resort failure report.

Objects made with a non-clinical (demo/test) model carry
``NON_CLINICAL_MARKER`` in SeriesDescription (and the PDF's Document Title);
the marker is prefixed when the caller's text lacks it.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass

import numpy as np
from highdicom import ContributingEquipment
from highdicom.base import SOPClass
from highdicom.sc import SCImage
from pydicom import dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from dicom.photo import timezone_offset
from dicom.storage import sanitise_uid
from dicom.text import (
    VR_MAX_CHARS,
    clean_person_name,
    clean_text,
    declared_character_set,
    read_text,
    result_character_set,
)
from dicom.uids import DEFAULT_UID_ROOT, derive_uid, new_uid, validate_uid_root
from pipeline.vocabulary import NON_CLINICAL_LABEL_ASCII

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"

#: The non-clinical label in ASCII: the copied SpecificCharacterSet may not cover an em dash.
NON_CLINICAL_MARKER = NON_CLINICAL_LABEL_ASCII

#: Default Concept Name of the PDF: LOINC 18748-4 "Diagnostic Imaging Report".
REPORT_CONCEPT_NAME = codes.LN.DiagnosticImagingReport

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


# ------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class AlgorithmIdentity:
    """Who made a result: recorded as General and Contributing Equipment."""

    manufacturer: str
    model_name: str
    software_versions: tuple[str, ...]
    model_sha256: str  #: Hex SHA-256 of the model weights; drives the Device UID.
    non_clinical: bool  #: True for demo/test models; results then say so.

    def __post_init__(self) -> None:
        for name in ("manufacturer", "model_name"):
            _check_lo(getattr(self, name), name)
        versions = self.software_versions
        if isinstance(versions, str) or not isinstance(versions, tuple) or not versions:
            raise TypeError(f"software_versions must be a non-empty tuple of str, got {versions!r}")
        for version in versions:
            _check_lo(version, "software_versions item")
        if not isinstance(self.model_sha256, str) or _HEX_SHA256.fullmatch(self.model_sha256) is None:
            raise ValueError(f"model_sha256 must be 64 lower-case hex digits, got {self.model_sha256!r}")
        if not isinstance(self.non_clinical, bool):
            raise TypeError(f"non_clinical must be a bool, got {self.non_clinical!r}")

    def device_uid(self, uid_root: str = DEFAULT_UID_ROOT) -> str:
        """The model's Device UID: deterministic from ``model_sha256`` under ``uid_root``."""
        return derive_uid(uid_root, "model-weights", self.model_sha256)

    def contributing_equipment(self, uid_root: str, when: dt.datetime) -> ContributingEquipment:
        item = ContributingEquipment(
            manufacturer=self.manufacturer,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=self.model_name,
            software_versions=list(self.software_versions),
            contribution_datetime=when,
            contribution_description=(
                "Cleft-lip appraisal algorithm"
                + (" (" + NON_CLINICAL_MARKER + ")" if self.non_clinical else "")
            ),
        )
        item.DeviceUID = self.device_uid(uid_root)
        return item


# -------------------------------------------------------------------------- builders


@dataclass(frozen=True)
class ResultSeries:
    """Where a result goes: its series and instance identity."""

    series_description: str
    series_number: int
    instance_number: int = 1
    series_instance_uid: str | None = None  #: None: a new random UID under the root.
    sop_instance_uid: str | None = None  #: None: a new random UID under the root.

    def __post_init__(self) -> None:
        _check_lo(self.series_description, "series_description")
        for name in ("series_number", "instance_number"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("series_instance_uid", "sop_instance_uid"):
            value = getattr(self, name)
            if value is not None:
                sanitise_uid(value, what=name)


def build_overlay_secondary_capture(
    source: Dataset,
    overlay_rgb: np.ndarray,
    *,
    algorithm: AlgorithmIdentity,
    series: ResultSeries,
    uid_root: str = DEFAULT_UID_ROOT,
    created_at: dt.datetime | None = None,
) -> SCImage:
    """An RGB Secondary Capture of ``overlay_rgb`` (``(H, W, 3)`` uint8) in ``source``'s study.

    BurnedInAnnotation is YES (the overlay carries legend and score text);
    RecognizableVisualFeatures is YES (it shows the face). The source image is
    referenced in both ReferencedImageSequence and SourceImageSequence.
    """
    _check_source(source)
    source = text_safe_reference(source)
    if not isinstance(overlay_rgb, np.ndarray):
        raise TypeError(f"overlay_rgb must be a numpy array, got {type(overlay_rgb).__name__}")
    if overlay_rgb.dtype != np.uint8 or overlay_rgb.ndim != 3 or overlay_rgb.shape[2] != 3:
        raise ValueError(
            f"overlay_rgb must be (H, W, 3) uint8, got shape {overlay_rgb.shape} dtype {overlay_rgb.dtype}"
        )
    if not (1 <= overlay_rgb.shape[0] <= 65535 and 1 <= overlay_rgb.shape[1] <= 65535):
        raise ValueError(f"overlay_rgb size {overlay_rgb.shape[:2]} is outside 1..65535 pixels")
    when, offset = _local_time(source, created_at)
    uid_root = validate_uid_root(uid_root)

    image = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(overlay_rgb),
        photometric_interpretation="RGB",
        bits_allocated=8,
        # highdicom needs PATIENT plus an orientation: the overlay shows an
        # upright frontal face (the pipeline rejects other poses), so rows run
        # towards the patient's left and columns towards the feet.
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),
        series_instance_uid=series.series_instance_uid or new_uid(uid_root),
        series_number=series.series_number,
        sop_instance_uid=series.sop_instance_uid or new_uid(uid_root),
        instance_number=series.instance_number,
        manufacturer=algorithm.manufacturer,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm.contributing_equipment(uid_root, when)],
        series_description=_series_text(series.series_description, algorithm.non_clinical),
        manufacturer_model_name=algorithm.model_name,
        software_versions=_software_versions(algorithm),
        content_date=when.date(),
        content_time=when.time().replace(tzinfo=None),
    )
    image.copy_patient_and_study_information(source)
    # A face is an unpaired body part. Saying so also meets General Series'
    # Laterality 2C condition, which dciodvfy reports as an error otherwise.
    image.ImageLaterality = "U"
    image.ConversionType = "WSD"  # workstation-generated, not a digitised film
    image.BurnedInAnnotation = "YES"
    image.RecognizableVisualFeatures = "YES"
    # Derived from the photo, so lossy if the photo ever was (PS3.3 C.7.6.1.1.5).
    image.LossyImageCompression = "01" if str(source.get("LossyImageCompression", "")) == "01" else "00"
    image.DerivationDescription = "Heatmap of deformity scores overlaid on the aligned face"
    image.ReferencedImageSequence = [_image_reference(source, with_purpose=False)]
    image.SourceImageSequence = [_image_reference(source, with_purpose=True)]
    if offset is not None:
        image.TimezoneOffsetFromUTC = offset
    return image


def build_encapsulated_pdf(
    source: Dataset,
    pdf: bytes,
    *,
    algorithm: AlgorithmIdentity,
    series: ResultSeries,
    document_title: str,
    uid_root: str = DEFAULT_UID_ROOT,
    concept_name: Code = REPORT_CONCEPT_NAME,
    created_at: dt.datetime | None = None,
) -> Dataset:
    """An Encapsulated PDF (1.2.840.10008.5.1.4.1.1.104.1) of ``pdf`` in ``source``'s study.

    The source photo is listed in SourceInstanceSequence (the report shows it);
    BurnedInAnnotation and RecognizableVisualFeatures are YES.
    """
    _check_source(source)
    source = text_safe_reference(source)
    if not isinstance(pdf, (bytes, bytearray)):
        raise TypeError(f"pdf must be bytes, got {type(pdf).__name__}")
    if not bytes(pdf[:5]) == b"%PDF-":
        raise ValueError(f"pdf does not start with '%PDF-': {bytes(pdf[:16])!r}")
    if len(pdf) >= 0xFFFFFFFE:
        raise ValueError(f"pdf is too large for one DICOM element ({len(pdf)} bytes)")
    when, offset = _local_time(source, created_at)
    uid_root = validate_uid_root(uid_root)
    title = _series_text(document_title, algorithm.non_clinical)

    document = SOPClass(
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=series.series_instance_uid or new_uid(uid_root),
        series_number=series.series_number,
        sop_instance_uid=series.sop_instance_uid or new_uid(uid_root),
        sop_class_uid=ENCAPSULATED_PDF_STORAGE,
        instance_number=series.instance_number,
        modality="DOC",
        manufacturer=algorithm.manufacturer,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=_series_text(series.series_description, algorithm.non_clinical),
        manufacturer_model_name=algorithm.model_name,
        software_versions=_software_versions(algorithm),
        content_date=when.date(),
        content_time=when.time().replace(tzinfo=None),
        specific_character_set=source.get("SpecificCharacterSet"),
    )
    document.copy_patient_and_study_information(source)
    document.ContributingEquipmentSequence = [
        *_acquisition_equipment(source), algorithm.contributing_equipment(uid_root, when)
    ]
    document.ConversionType = "WSD"  # SC Equipment module
    document.AcquisitionDateTime = None  # type 2: a report is not acquired
    document.BurnedInAnnotation = "YES"
    document.RecognizableVisualFeatures = "YES"
    document.SourceInstanceSequence = [_image_reference(source, with_purpose=False)]
    document.DocumentTitle = title
    document.ConceptNameCodeSequence = [_code_item(concept_name)]
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    payload = bytes(pdf)
    document.EncapsulatedDocumentLength = len(payload)
    # OB values must have even length; the length above records the real size.
    document.EncapsulatedDocument = payload + (b"\x00" if len(payload) % 2 else b"")
    if offset is not None:
        document.TimezoneOffsetFromUTC = offset
    return document


def encode_part10(dataset: Dataset) -> bytes:
    """The dataset as DICOM Part 10 file bytes (preamble, file meta, data set)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


# ------------------------------------------------------------------------ safe copies

#: Text VRs whose values depend on the character set (decoded, cleaned, re-encoded).
_CHARSET_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
#: Text VRs of the default repertoire only (cleaned to printable ASCII).
_ASCII_VRS = frozenset({"CS", "AE"})
#: Deepest sequence nesting copied; deeper sequences are left out of the results.
MAX_SEQUENCE_DEPTH = 6
#: What the minimal reference keeps besides the UIDs (type 2 attributes of Patient and General Study).
_MINIMAL_TEXT = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "StudyID", "AccessionNumber", "ReferringPhysicianName")


def text_safe_reference(source: Dataset) -> Dataset:
    """A copy of ``source`` (no pixel data, no private attributes) that is safe to copy into results.

    Each text value is decoded with the declared character set (or the fallback of
    :func:`dicom.text.read_text`), cleaned of control characters and cut to its VR's
    maximum; elements that cannot be read at all are left out; sequences deeper than
    ``MAX_SEQUENCE_DEPTH`` are left out. SpecificCharacterSet is the source's when that is
    valid DICOM and served every value, else ISO_IR 192 (UTF-8).
    """
    fell_back: list[bool] = []
    terms = declared_character_set(source)
    copy = _safe_items(source, terms, depth=0, fell_back=fell_back)
    charset = "ISO_IR 192" if any(fell_back) else result_character_set(terms)
    if charset is not None:
        copy.SpecificCharacterSet = charset
    if hasattr(source, "file_meta"):
        copy.file_meta = source.file_meta
    return copy


def minimal_reference(source: Dataset) -> Dataset:
    """Only ``source``'s UIDs and basic Patient/Study attributes, as printable ASCII (others become
    '?'), for a report that must be built whatever the photo's text holds."""
    minimal = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(minimal, keyword, str(source.get(keyword, "") or "").strip("\x00 "))
    for keyword in _MINIMAL_TEXT:
        value = read_text(source, keyword).text
        if value is not None:
            ascii_text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in value)
            vr = {"PatientName": "PN", "ReferringPhysicianName": "PN", "StudyID": "SH", "AccessionNumber": "SH",
                  "PatientSex": "CS", "PatientBirthDate": "DA", "StudyDate": "DA", "StudyTime": "TM"}.get(keyword, "LO")
            setattr(minimal, keyword, ascii_text[: VR_MAX_CHARS[vr]])
    if hasattr(source, "file_meta"):
        minimal.file_meta = source.file_meta
    return minimal


def _safe_items(source: Dataset, terms: tuple[str, ...], *, depth: int, fell_back: list[bool]) -> Dataset:
    copy = Dataset()
    for tag in list(source.keys()):
        tag = Tag(tag)
        if tag.is_private or tag.group in (0x0002, 0x7FE0) or tag == 0x00080005:
            continue
        try:
            element = source[tag]
        except Exception:  # noqa: BLE001 - an element pydicom cannot read is not copied
            continue
        vr = str(element.VR)
        if vr == "SQ":
            if depth >= MAX_SEQUENCE_DEPTH:
                continue
            items = []
            for item in element.value or []:
                if isinstance(item, Dataset):  # an item without its own character set inherits ours
                    inner = declared_character_set(item) or terms
                    items.append(_safe_items(item, inner, depth=depth + 1, fell_back=fell_back))
            copy.add(DataElement(tag, "SQ", Sequence(items)))
        elif vr in _CHARSET_VRS or vr in _ASCII_VRS:
            value = read_text(source, tag, character_set=terms)
            fell_back.append(value.note is not None)
            if value.text is None:
                copy.add(DataElement(tag, vr, None))
                continue
            parts = value.text.split("\\")
            if vr in _ASCII_VRS:
                parts = ["".join(c for c in part if " " <= c <= "~") for part in parts]
            parts = [clean_person_name(part) if vr == "PN" else clean_text(part, VR_MAX_CHARS[vr]) for part in parts]
            copy.add(DataElement(tag, vr, parts[0] if len(parts) == 1 else parts))
        elif vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            continue  # binary data is not patient or study text; results do not need it
        else:
            copy.add(element)
    return copy


# --------------------------------------------------------------------------- helpers


def _check_source(source: Dataset) -> None:
    if not isinstance(source, Dataset):
        raise TypeError(f"source must be a pydicom Dataset, got {type(source).__name__}")
    for keyword in ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"):
        value = source.get(keyword)
        if value is None:
            raise ValueError(f"source dataset has no {keyword}")
        sanitise_uid(str(value), what=f"source {keyword}")


def _check_lo(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    if not value.strip() or len(value) > 64 or "\\" in value or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"{name} must be 1-64 characters without backslash or control characters, got {value!r}")


def _series_text(text: str, non_clinical: bool) -> str:
    _check_lo(text, "description")
    if non_clinical and NON_CLINICAL_MARKER.lower() not in text.lower():
        text = f"{NON_CLINICAL_MARKER}: {text}"
        if len(text) > 64:
            raise ValueError(
                f"description {text!r} is longer than 64 characters after adding the non-clinical marker"
            )
    return text


def _software_versions(algorithm: AlgorithmIdentity) -> str | list[str]:
    versions = algorithm.software_versions
    return versions[0] if len(versions) == 1 else list(versions)


def _image_reference(source: Dataset, *, with_purpose: bool) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = str(source.SOPClassUID)
    item.ReferencedSOPInstanceUID = str(source.SOPInstanceUID)
    if with_purpose:
        item.PurposeOfReferenceCodeSequence = [_code_item(codes.DCM.SourceImageForImageProcessingOperation)]
    return item


def _acquisition_equipment(source: Dataset) -> list[ContributingEquipment]:
    """The camera that took the photo, when the source names its manufacturer."""
    try:
        return [ContributingEquipment.for_image_acquisition(source)]
    except (ValueError, AttributeError):
        return []


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _local_time(source: Dataset, created_at: dt.datetime | None) -> tuple[dt.datetime, str | None]:
    """``created_at`` (default now) as wall time in the source's zone, and that zone's offset.

    Copied study dates are in the source's zone, so the new object's own times
    must be too. Without TimezoneOffsetFromUTC in the source, the wall time of
    ``created_at`` is written and no offset is claimed.
    """
    if created_at is None:
        created_at = dt.datetime.now(dt.timezone.utc).astimezone()
    if not isinstance(created_at, dt.datetime):
        raise TypeError(f"created_at must be a datetime, got {created_at!r}")
    if created_at.tzinfo is None:
        raise ValueError(f"created_at must be timezone-aware, got {created_at!r}")
    zone = timezone_offset(source)
    if zone is None:
        return created_at, None
    return created_at.astimezone(zone), str(source.TimezoneOffsetFromUTC).strip()
