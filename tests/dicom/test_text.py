"""Hostile text in received photos: decoded with the declared set, a noted fallback, never an error;
results built from such photos are valid DICOM with a valid character set."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom.photo import extract_context
from dicom.results import (
    AlgorithmIdentity,
    ResultSeries,
    build_encapsulated_pdf,
    build_overlay_secondary_capture,
    encode_part10,
    minimal_reference,
)
from dicom.text import clean_text, read_text, result_character_set

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
ALGORITHM = AlgorithmIdentity("cleftscore", "Cleft appraisal (test)", ("1.0",), "ab" * 32, True)


def _read(ds: Dataset) -> Dataset:
    """``ds`` written and read back, so its text elements are raw bytes again, as received."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _with_raw_name(raw: bytes, charset: str | list[str] | None) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = "X" * len(raw)
    ds.PatientID = "P1"
    read = _read(ds)
    data = io.BytesIO()
    read.save_as(data, enforce_file_format=True)
    blob = data.getvalue().replace(b"X" * len(raw), raw, 1)
    return pydicom.dcmread(io.BytesIO(blob))


@pytest.mark.parametrize("raw, charset, expected, note", [
    ("Müller^José".encode("latin-1"), "ISO_IR 100", "Müller^José", None),
    ("Ямада^Тарo".encode(), "ISO_IR 192", "Ямада^Тарo", None),
    ("Müller^José".encode(), None, "Müller^José", "read as UTF-8"),
    ("Müller^José".encode("latin-1"), None, "Müller^José", "read as Latin-1"),
    (b"Doe^Jane", "KLINGON", "Doe^Jane", None),  # ASCII reads the same in any set: nothing to say
    ("Müller".encode("latin-1"), "KLINGON", "Müller", "not a known DICOM character set"),
    (b"Bad\xff\xfe^Bytes", "ISO_IR 192", "Bad\xff\xfe^Bytes", "does not fit its declared character set"),
    (b"Doe^Jane", "ISO 2022 IR 87", "Doe^Jane", None),
    (b"Doe^Jane", "ISO_IR 6", "Doe^Jane", None),
    (b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎", None),
])
def test_names_decode_with_the_declared_set_or_a_noted_fallback(raw, charset, expected, note) -> None:
    ds = _with_raw_name(raw + b" " * (len(raw) % 2), charset)
    value = read_text(ds, "PatientName")
    if note == "does not fit its declared character set":
        assert value.text == raw.decode("latin-1")
    else:
        assert value.text == expected
    assert (value.note is None) if note is None else (note in value.note)
    context = extract_context(ds)
    assert context.patient.name == value.text
    assert context.text_notes == (() if value.note is None else (value.note,))


def test_unknown_charset_with_ascii_still_reads(recwarn) -> None:
    assert read_text(_with_raw_name(b"Doe^Jane", "KLINGON"), "PatientName").text == "Doe^Jane"


def test_control_characters_and_lengths() -> None:
    assert clean_text("Doe\x00^Jane\x07\u202e") == "Doe^Jane"
    assert clean_text("A" * 100, 10, ellipsis="…") == "A" * 9 + "…"
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.StudyDescription = "PX\x001", "N\x00ame^" + "B" * 5000, "D" * 3000
    context = extract_context(_read(ds))
    assert context.patient.patient_id is None and "Patient ID" in context.patient_id_problem
    assert context.patient.name.startswith("Name^B") and len(context.patient.name) == 194
    assert len(context.study.description) == 64
    ds = Dataset()
    ds.PatientID = "9" * 3000
    assert extract_context(_read(ds)).patient_id_problem is not None
    ds.PatientID = "ok-ID 1"
    assert extract_context(_read(ds)).patient.patient_id == "ok-ID 1"


@pytest.mark.parametrize("terms, expected", [
    ((), None), (("ISO_IR 6",), None), (("ISO_IR 100",), "ISO_IR 100"), (("ISO 2022 IR 87",), "ISO_IR 192"),
    (("KLINGON",), "ISO_IR 192"), (("", "ISO 2022 IR 87"), ["", "ISO 2022 IR 87"]),
    (("ISO 2022 IR 87", "ISO 2022 IR 6"), "ISO_IR 192"), (("ISO_IR 100", "ISO_IR 192"), "ISO_IR 192"),
])
def test_result_character_set_is_valid(terms, expected) -> None:
    assert result_character_set(terms) == expected


HOSTILE = {
    "ir87-alone": dict(SpecificCharacterSet="ISO 2022 IR 87"),
    "iso-ir-6": dict(SpecificCharacterSet="ISO_IR 6"),
    "unknown": dict(SpecificCharacterSet="KLINGON"),
    "nul-in-name": dict(PatientName="Doe\x00^Jane"),
    "long-texts": dict(PatientName="A" * 65000 + "^B", PatientID="9" * 3000, StudyDescription="D " * 20000),
    "utf8-no-charset": dict(PatientName="Müller^José"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_results_from_hostile_sources_are_valid(case) -> None:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyDescription = "Doe^Jane", "P1", "20240101", "Pre-op"
    ds.Modality = "XC"
    for keyword, value in HOSTILE[case].items():
        setattr(ds, keyword, value)
    source = _read(ds)
    overlay = np.zeros((32, 32, 3), np.uint8)
    sc = build_overlay_secondary_capture(source, overlay, algorithm=ALGORITHM,
                                         series=ResultSeries("Heatmap", 9101), created_at=NOW)
    pdf = build_encapsulated_pdf(source, b"%PDF-1.4 x", algorithm=ALGORITHM, series=ResultSeries("Report", 9102),
                                 document_title="Report", created_at=NOW)
    for result in (sc, pdf):
        back = pydicom.dcmread(io.BytesIO(encode_part10(result)))
        assert result_character_set(tuple(back.get("SpecificCharacterSet") or ())
                                    if not isinstance(back.get("SpecificCharacterSet"), str)
                                    else (back.SpecificCharacterSet,)) == back.get("SpecificCharacterSet")
        name = str(back.PatientName)
        assert all(len(group) <= 64 for group in name.split("=")) and "\x00" not in name
        assert len(str(back.get("StudyDescription", ""))) <= 64
        assert back.StudyInstanceUID == source.StudyInstanceUID
    minimal = minimal_reference(source)
    assert set(minimal.dir()) >= {"SOPInstanceUID", "StudyInstanceUID"}
    assert all(" " <= c <= "~" for c in str(minimal.get("PatientName", "")))


def test_deep_sequences_are_cut_in_results() -> None:
    ds = Dataset()
    ds.PatientName, ds.PatientID = "Doe^Jane", "P1"
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(100):
        outer = Dataset()
        outer.ProcedureCodeSequence = [inner]
        inner = outer
    ds.ProcedureCodeSequence = inner.ProcedureCodeSequence
    pdf = build_encapsulated_pdf(_read(ds), b"%PDF-1.4 x", algorithm=ALGORITHM, series=ResultSeries("Report", 9102),
                                 document_title="Report", created_at=NOW)
    pydicom.dcmread(io.BytesIO(encode_part10(pdf)))
