"""dicom.results and dicom.sender: SC and Encapsulated PDF pass dciodvfy, round-trip, and reach dcmtk storescp."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from reportlab.pdfgen import canvas

from dicom.listener import ListenerConfig, ReceivedPhoto, build_listener
from dicom.photo import decode_rgb
from dicom.results import (
    DEFAULT_UID_ROOT,
    ENCAPSULATED_PDF_STORAGE,
    NON_CLINICAL_MARKER,
    AlgorithmIdentity,
    ResultSeries,
    build_encapsulated_pdf,
    build_overlay_secondary_capture,
    derive_uid,
    encode_part10,
)
from dicom.sender import Destination, SendOutcome, send_file
from dicom.storage import DicomFileStore, sanitise_uid

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("storescu", "storescp", "img2dcm", "dciodvfy")),
    reason="needs dcmtk and dicom3tools",
)

STUDY_UID = "1.2.826.0.1.3680043.10.1234.99.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: dciodvfy warnings we accept, with the reason (see dicom/results.py docstring):
#: its 2022-06 tables predate Device UID (0018,1002) in the Contributing
#: Equipment Sequence, which IHE AIR uses to identify the algorithm.
ACCEPTED_DCIODVFY_WARNINGS = {
    "Warning - Attribute is not present in standard DICOM IOD - (0x0018,0x1002) UI Device UID",
    "Warning - Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard Extended SOP Class",
}

DEMO_MODEL = AlgorithmIdentity(
    manufacturer="Cleftscore Project",
    model_name="cleftscore-stylegan2-demo",
    software_versions=("cleftscore 0.1.0", "weights demo-1"),
    model_sha256="3f" * 32,
    non_clinical=True,
)


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dciodvfy_problems(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines not in the accepted set)."""
    result = _run("dciodvfy", str(path))
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning") and line not in ACCEPTED_DCIODVFY_WARNINGS]
    return errors, warnings


@pytest.fixture(scope="module")
def received_photo(tmp_path_factory, faces_dir: Path) -> ReceivedPhoto:
    """obama.jpg sent by storescu to our listener: the dataset results are built from."""
    folder = tmp_path_factory.mktemp("received")
    source = folder / "photo.dcm"
    keys = ["PatientID=P-0002", "PatientName=Test^Obama", "PatientSex=M", "PatientBirthDate=19610804",
            f"StudyInstanceUID={STUDY_UID}", "StudyDate=20240305", "StudyTime=081500", "StudyID=S2",
            "AccessionNumber=ACC2", "SeriesNumber=1", "InstanceNumber=1", "Manufacturer=Canon",
            "TimezoneOffsetFromUTC=+0100"]
    result = _run("img2dcm", "-vlp", *[a for k in keys for a in ("-k", k)], str(faces_dir / "obama.jpg"), str(source))
    assert result.returncode == 0, result.stderr
    (folder / "store").mkdir()
    photos: list[ReceivedPhoto] = []
    config = ListenerConfig(ae_title="CLEFTSCORE", port=0, bind_address="127.0.0.1",
                            allowed_calling_ae_titles=frozenset({"MODALITY"}))
    with build_listener(config, DicomFileStore(folder / "store", reserve_bytes=0), photos.append) as listener:
        result = _run("storescu", "-xy", "-to", "10", "-aet", "MODALITY", "-aec", "CLEFTSCORE",
                      "127.0.0.1", str(listener.port), str(source))
    assert result.returncode == 0, result.stderr
    return photos[0]


@pytest.fixture(scope="module")
def source_dataset(received_photo) -> pydicom.Dataset:
    return pydicom.dcmread(received_photo.path)


@pytest.fixture(scope="module")
def overlay(received_photo) -> np.ndarray:
    rgb = decode_rgb(received_photo.path)[200:456, 300:556].copy()
    rgb[:20, :, 0] = 255  # a burned-in red bar standing in for the legend
    return rgb


@pytest.fixture(scope="module")
def pdf_bytes() -> bytes:
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer)
    page.drawString(72, 770, "Cleft lip appraisal - test report")
    page.save()
    data = buffer.getvalue()
    return data if len(data) % 2 else data + b"\n"  # odd length, so the even-length padding is exercised

CREATED_AT = dt.datetime(2024, 3, 5, 9, 30, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def result_files(tmp_path_factory, source_dataset, overlay, pdf_bytes) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("results")
    sc = build_overlay_secondary_capture(
        source_dataset, overlay, algorithm=DEMO_MODEL,
        series=ResultSeries("Cleft heatmap", series_number=901), created_at=CREATED_AT)
    pdf = build_encapsulated_pdf(
        source_dataset, pdf_bytes, algorithm=DEMO_MODEL,
        series=ResultSeries("Cleft report", series_number=902), document_title="Cleft lip appraisal",
        created_at=CREATED_AT)
    paths = {"sc": folder / "sc.dcm", "pdf": folder / "pdf.dcm"}
    sc.save_as(paths["sc"], enforce_file_format=True)
    paths["pdf"].write_bytes(encode_part10(pdf))
    return paths


@pytest.mark.parametrize("kind", ["sc", "pdf"])
def test_results_pass_dciodvfy(kind, result_files) -> None:
    errors, unexpected_warnings = dciodvfy_problems(result_files[kind])
    assert errors == []
    assert unexpected_warnings == []


def test_secondary_capture_round_trip(result_files, source_dataset, overlay) -> None:
    sc = pydicom.dcmread(result_files["sc"])
    assert sc.SOPClassUID == SECONDARY_CAPTURE
    np.testing.assert_array_equal(sc.pixel_array, overlay)
    assert sc.PhotometricInterpretation == "RGB" and sc.BurnedInAnnotation == "YES"
    assert sc.LossyImageCompression == source_dataset.LossyImageCompression == "01"  # the photo was JPEG
    # Same patient and study, new series and instance under our root.
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber"):
        assert sc[keyword].value == source_dataset[keyword].value, keyword
    assert sc.SeriesInstanceUID != source_dataset.SeriesInstanceUID
    for uid in (sc.SeriesInstanceUID, sc.SOPInstanceUID):
        assert uid.startswith(DEFAULT_UID_ROOT) and sanitise_uid(uid) == uid
    assert sc.SeriesNumber == 901
    assert sc.SeriesDescription == f"{NON_CLINICAL_MARKER}: Cleft heatmap"
    # References to the source photo.
    for sequence in (sc.ReferencedImageSequence, sc.SourceImageSequence):
        assert sequence[0].ReferencedSOPInstanceUID == source_dataset.SOPInstanceUID
        assert sequence[0].ReferencedSOPClassUID == source_dataset.SOPClassUID
    # Algorithm identity.
    ours = [item for item in sc.ContributingEquipmentSequence if item.Manufacturer == DEMO_MODEL.manufacturer]
    assert len(ours) == 1
    assert ours[0].ManufacturerModelName == DEMO_MODEL.model_name
    assert list(ours[0].SoftwareVersions) == list(DEMO_MODEL.software_versions)
    assert ours[0].DeviceUID == DEMO_MODEL.device_uid()
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
    # Times in the source's zone (+0100), which the result declares too.
    assert sc.TimezoneOffsetFromUTC == "+0100"
    assert (sc.ContentDate, sc.ContentTime[:6]) == ("20240305", "103000")


def test_encapsulated_pdf_round_trip(result_files, source_dataset, pdf_bytes) -> None:
    doc = pydicom.dcmread(result_files["pdf"])
    assert doc.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert doc.Modality == "DOC"
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert doc.EncapsulatedDocumentLength == len(pdf_bytes)
    assert len(doc.EncapsulatedDocument) % 2 == 0
    assert doc.EncapsulatedDocument[: doc.EncapsulatedDocumentLength] == pdf_bytes
    assert doc.DocumentTitle == f"{NON_CLINICAL_MARKER}: Cleft lip appraisal"
    assert NON_CLINICAL_MARKER in doc.SeriesDescription
    concept = doc.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    assert doc.SourceInstanceSequence[0].ReferencedSOPInstanceUID == source_dataset.SOPInstanceUID
    assert doc.StudyInstanceUID == source_dataset.StudyInstanceUID
    assert doc.PatientID == source_dataset.PatientID and doc.PatientName == source_dataset.PatientName
    assert doc.SeriesInstanceUID.startswith(DEFAULT_UID_ROOT)
    assert any(item.get("DeviceUID") == DEMO_MODEL.device_uid() for item in doc.ContributingEquipmentSequence)


def test_clinical_model_results_carry_no_demo_marker(source_dataset, overlay) -> None:
    clinical = AlgorithmIdentity("Cleftscore Project", "cleftscore", ("1.0",), "ab" * 32, non_clinical=False)
    sc = build_overlay_secondary_capture(source_dataset, overlay, algorithm=clinical,
                                         series=ResultSeries("Cleft heatmap", 901), created_at=CREATED_AT)
    assert sc.SeriesDescription == "Cleft heatmap"
    assert sc.SoftwareVersions == "1.0"


def test_device_uid_is_deterministic_and_follows_the_weights() -> None:
    again = AlgorithmIdentity("X", "Y", ("1",), DEMO_MODEL.model_sha256, non_clinical=True)
    other = AlgorithmIdentity("X", "Y", ("1",), "40" * 32, non_clinical=True)
    assert again.device_uid() == DEMO_MODEL.device_uid()
    assert other.device_uid() != DEMO_MODEL.device_uid()
    uid = DEMO_MODEL.device_uid("2.25.")
    assert uid.startswith("2.25.") and len(uid) == 64 and sanitise_uid(uid) == uid
    assert derive_uid(DEFAULT_UID_ROOT, "a", "b") != derive_uid(DEFAULT_UID_ROOT, "a\x1fb", "")


def test_builders_reject_bad_inputs(source_dataset, overlay) -> None:
    series = ResultSeries("Cleft heatmap", 901)
    with pytest.raises(ValueError, match="uint8"):
        build_overlay_secondary_capture(source_dataset, overlay.astype(np.float32), algorithm=DEMO_MODEL, series=series)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        build_overlay_secondary_capture(source_dataset, overlay[..., 0], algorithm=DEMO_MODEL, series=series)
    with pytest.raises(ValueError, match="%PDF-"):
        build_encapsulated_pdf(source_dataset, b"<html>", algorithm=DEMO_MODEL, series=series, document_title="t")
    with pytest.raises(ValueError, match="timezone-aware"):
        build_overlay_secondary_capture(source_dataset, overlay, algorithm=DEMO_MODEL, series=series,
                                        created_at=dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="UID root"):
        build_overlay_secondary_capture(source_dataset, overlay, algorithm=DEMO_MODEL, series=series,
                                        uid_root="1.2.x.")
    with pytest.raises(ValueError, match="model_sha256"):
        AlgorithmIdentity("X", "Y", ("1",), "not-a-hash", non_clinical=True)
    with pytest.raises(TypeError, match="software_versions"):
        AlgorithmIdentity("X", "Y", "1.0", "ab" * 32, non_clinical=True)
    with pytest.raises(ValueError, match="series_number"):
        ResultSeries("Cleft heatmap", 0)
    with pytest.raises(ValueError, match="64 characters"):
        ResultSeries("x" * 65, 1)
    with pytest.raises(ValueError, match="after adding the non-clinical marker"):
        build_overlay_secondary_capture(source_dataset, overlay, algorithm=DEMO_MODEL,
                                        series=ResultSeries("x" * 60, 1))


# ----------------------------------------------------------------------------- sender


@pytest.fixture
def storescp(tmp_path) -> Iterator[tuple[Destination, Path]]:
    """dcmtk storescp on a free loopback port, writing into a temporary folder."""
    out = tmp_path / "received"
    out.mkdir()
    port = _free_port()
    # `timeout` bounds its life even if pytest dies; its own session lets teardown
    # kill both it and storescp (a SIGKILL to `timeout` alone would orphan storescp).
    process = subprocess.Popen(
        ["timeout", "60", "storescp", "-aet", "RESULTS", "-od", str(out), "-ta", "10", "-td", "10", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"storescp did not start: {process.stdout.read()!r}")
                time.sleep(0.05)
        yield Destination("RESULTS", "127.0.0.1", port), out
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_results_are_sent_to_storescp(storescp, result_files, source_dataset) -> None:
    destination, out = storescp
    outcomes = [send_file(result_files[k], destination, calling_ae="CLEFTSCORE", timeout=10) for k in ("sc", "pdf")]
    assert all(o.success and o.status == 0x0000 for o in outcomes), outcomes
    received = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in out.iterdir()}
    sent = [pydicom.dcmread(result_files[k]) for k in ("sc", "pdf")]
    assert set(received) == {ds.SOPInstanceUID for ds in sent}
    for ds in received.values():
        assert ds.StudyInstanceUID == source_dataset.StudyInstanceUID == STUDY_UID
    pdf = received[sent[1].SOPInstanceUID]
    assert pdf.EncapsulatedDocument == sent[1].EncapsulatedDocument


def test_sender_unreadable_file_is_an_outcome(tmp_path) -> None:
    path = tmp_path / "not.dcm"
    path.write_bytes(b"plain text")
    outcome = send_file(path, Destination("NOBODY", "127.0.0.1", 104), "CLEFTSCORE", timeout=3)
    assert (outcome.success, outcome.status) == (False, None) and "cannot read" in outcome.message


def test_sender_network_failure_is_an_outcome_not_an_exception(result_files) -> None:
    outcome = send_file(result_files["sc"], Destination("NOBODY", "127.0.0.1", _free_port()), "CLEFTSCORE", timeout=3)
    assert isinstance(outcome, SendOutcome)
    assert (outcome.success, outcome.status) == (False, None)
    assert "NOBODY@127.0.0.1" in outcome.message


def test_sender_wrong_called_ae_is_reported(result_files) -> None:
    photos: list = []
    config = ListenerConfig(ae_title="CLEFTSCORE", port=0, bind_address="127.0.0.1", allowed_calling_ae_titles=None)
    with build_listener(config, DicomFileStore(result_files["sc"].parent, reserve_bytes=0), photos.append) as lst:
        outcome = send_file(result_files["sc"], Destination("WRONG", "127.0.0.1", lst.port), "CLEFTSCORE", timeout=5)
    assert not outcome.success and "rejected" in outcome.message
    assert "called AE title not recognised" in outcome.message


def test_own_results_routed_back_are_flagged_not_scored(tmp_path, result_files) -> None:
    """A PACS auto-routing rule may send our Secondary Capture back to the listener."""
    photos: list[ReceivedPhoto] = []
    config = ListenerConfig(ae_title="CLEFTSCORE", port=0, bind_address="127.0.0.1",
                            allowed_calling_ae_titles=None, own_uid_root=DEFAULT_UID_ROOT)
    with build_listener(config, DicomFileStore(tmp_path, reserve_bytes=0), photos.append) as listener:
        outcome = send_file(result_files["sc"], Destination("CLEFTSCORE", "127.0.0.1", listener.port),
                            "PACS", timeout=10)
    assert outcome.success  # acknowledged, so the PACS does not retry
    assert any("result made by this service" in problem for problem in photos[0].intake_problems)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("PACS@10.0.0.5:104", Destination("PACS", "10.0.0.5", 104)),
        ("ORTHANC@pacs.example.org:4242", Destination("ORTHANC", "pacs.example.org", 4242)),
        ("A@B@[::1]:11112", Destination("A@B", "::1", 11112)),
    ],
)
def test_destination_parse(text, expected) -> None:
    assert Destination.parse(text) == expected
    assert Destination.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text", ["PACS10.0.0.5:104", "PACS@10.0.0.5", "PACS@10.0.0.5:0", "PACS@10.0.0.5:70000",
             "@10.0.0.5:104", "A_TITLE_LONGER_THAN_16@h:1", "PACS@::1:104", "PACS@bad host:104",
             "PA\\CS@h:104"],
)
def test_destination_parse_rejects(text) -> None:
    with pytest.raises(ValueError):
        Destination.parse(text)
