"""The JSON log scrubs patient data from every line, third-party warnings included."""

from __future__ import annotations

import io
import json
import logging
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.runtime.logs import JsonFormatter, configure_logging, scrub

NAME, PATIENT_ID, DESCRIPTION = "Zyxwvut^Qwerty", "PHI-83201", "PHI STUDY 5521"


@pytest.fixture
def log_stream():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level
                                            for name in ("pydicom", "pynetdicom", "highdicom", "PIL")})
    stream = io.StringIO()
    configure_logging("INFO", stream)
    yield stream
    logging.captureWarnings(False)
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_scrub_replaces_quoted_values_but_keeps_uids_and_numbers() -> None:
    assert scrub("Invalid value for VR UI: '1.2.3\\x00Zyx^Q'") == "Invalid value for VR UI: '<14 chars>'"
    assert scrub("uid '1.2.840.10008.1.2' len '42'") == "uid '1.2.840.10008.1.2' len '42'"
    assert scrub('name "Doe^Jane" and b\'\\xff\\x00raw\'') == "name \"<8 chars>\" and b'<11 chars>'"
    assert scrub("The photo's colour isn't it") == "The photo's colour isn't it"
    assert len(scrub("x" * 100_000)) < 2100


def test_third_party_warnings_and_exceptions_are_scrubbed(log_stream) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR PN: '{NAME}' in '{PATIENT_ID}'", UserWarning)
    logging.getLogger("pydicom").error("value %r", DESCRIPTION)
    try:
        raise ValueError(f"{NAME!r} is not valid")
    except ValueError:
        logging.getLogger("cleftscore.test").exception("failed", extra={"detail": f"saw {PATIENT_ID!r}"})
    text = log_stream.getvalue()
    for secret in (NAME, PATIENT_ID, DESCRIPTION):
        assert secret not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert {r["logger"] for r in records} >= {"py.warnings", "pydicom", "cleftscore.test"}
    assert "Traceback" in records[-1]["exception"] and "ValueError" in records[-1]["exception"]


def test_swallowed_uid_warning_from_pydicom_is_scrubbed(log_stream, tmp_path) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.StudyDescription, ds.PatientName, ds.PatientID = DESCRIPTION, NAME, PATIENT_ID
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    at = data.find(b"\x08\x00\x18\x00UI")
    data[at + 6: at + 8] = (len(data) - at - 8).to_bytes(2, "little")  # the UID swallows the rest
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        str(pydicom.dcmread(path).get("SOPInstanceUID"))
    text = log_stream.getvalue()
    assert text, "pydicom said nothing about the damaged UID"
    for secret in (NAME, PATIENT_ID, DESCRIPTION, "Zyxwvut", "83201"):
        assert secret not in text


def test_formatter_keeps_ids_in_extras() -> None:
    record = logging.makeLogRecord({"msg": "job failed", "levelname": "WARNING", "name": "cleftscore.worker",
                                    "job_id": 7, "sop_uid": "1.2.3", "reason": "The photo's header says 'X'."})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["job_id"] == 7 and entry["sop_uid"] == "1.2.3"
    assert entry["reason"] == "The photo's header says '<1 chars>'."
