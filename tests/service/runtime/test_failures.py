"""Bad input while the listener keeps serving, end to end with dcmtk peers.

Photos the method cannot apply to (corrupt pixel data, no face, no Patient ID) are
acknowledged, fail with a one-sentence reason that ``cleftscore status --json``
lists, and still get a PDF at the destination that explains the failure. A
non-photo SOP class is refused at association negotiation. A good photo sent
afterwards is scored as usual. One service (subprocess) serves the whole module.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.service.harness import (
    DCMTK_TOOLS,
    DEMO_LABEL,
    ENCAPSULATED_PDF_STORAGE,
    SC_STORAGE,
    ServiceProcess,
    StoreSCP,
    dciodvfy_errors,
    demo_bundle,
    free_port,
    img2dcm,
    pdf_text,
    read_full,
    running_service,
    storescu,
    wait_for_results,
    wait_until,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(t) is None for t in DCMTK_TOOLS), reason=f"needs {', '.join(DCMTK_TOOLS)}"),
]

#: case → (what the status reason must mention, regex, case-insensitive)
EXPECTED_REASON = {
    "corrupt_pixels": r"pixel|decode|read|compressed image",
    "no_face": r"no face",
    "no_patient_id": r"patient id",
}


@dataclass
class Rig:
    service: ServiceProcess
    scp: StoreSCP
    root: Path


@dataclass(frozen=True)
class Outcome:
    """What happened to one bad photo: the storescu run, its job's failure and the PDF received."""

    sent: subprocess.CompletedProcess
    sop_uid: str
    study_uid: str
    job_id: int
    failure: dict[str, Any]
    received: list
    pdf_text: str


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("failures")
    bundle = demo_bundle(tmp_path_factory.getbasetemp())
    with contextlib.ExitStack() as stack:
        scp = StoreSCP("DEST", free_port(), root / "received").start()
        stack.callback(scp.stop)
        service = stack.enter_context(running_service(root, bundle, [scp.destination]))
        yield Rig(service, scp, root)


def _new_uids(ds: Dataset) -> None:
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


@pytest.fixture(scope="module")
def bad_photos(rig: Rig, faces_dir: Path) -> dict[str, Path]:
    from skimage import data

    folder = rig.root / "photos"
    folder.mkdir()
    photos = {}

    # (a) valid header, JPEG stream cut after 600 bytes and followed by garbage.
    good = img2dcm(faces_dir / "obama.jpg", folder / "source.dcm", PatientID="BAD-PIXELS", StudyDate="20240101")
    ds = pydicom.dcmread(good)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert frame[:2] == b"\xff\xd8" and len(frame) > 10_000
    ds.PixelData = encapsulate([frame[:600] + bytes(range(256)) * 8])
    _new_uids(ds)
    photos["corrupt_pixels"] = folder / "corrupt_pixels.dcm"
    ds.save_as(photos["corrupt_pixels"], enforce_file_format=True)

    # (b) a photo of a coffee cup: no face.
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg", quality=92)
    photos["no_face"] = img2dcm(folder / "coffee.jpg", folder / "no_face.dcm", PatientID="BAD-NOFACE")

    # (c) a good face photo whose Patient ID element is deleted.
    path = img2dcm(faces_dir / "biden.jpg", folder / "no_patient_id.dcm", PatientID="BAD-NOPID")
    ds = pydicom.dcmread(path)
    del ds.PatientID
    ds.save_as(path, enforce_file_format=True)
    assert "PatientID" not in pydicom.dcmread(path, stop_before_pixels=True)
    photos["no_patient_id"] = path
    return photos


@pytest.fixture(scope="module")
def outcomes(rig: Rig, bad_photos: dict[str, Path]) -> dict[str, Outcome]:
    """Send the three bad photos, wait for their failures and PDFs, read ``status --json`` once."""
    service, scp = rig.service, rig.scp
    sent = {case: storescu(service.port, path) for case, path in bad_photos.items()}
    headers = {case: pydicom.dcmread(path, stop_before_pixels=True) for case, path in bad_photos.items()}
    jobs = {}
    for case, ds in headers.items():
        [recorded] = service.wait_for_log("photo recorded", sop_uid=str(ds.SOPInstanceUID), timeout=30)
        jobs[case] = recorded["job_id"]
    for case, job_id in jobs.items():
        service.wait_for_log("job failed", job_id=job_id, timeout=90)
    received = {case: wait_for_results(service, scp, str(ds.StudyInstanceUID), count=1, timeout=90)
                for case, ds in headers.items()}
    status = service.status()
    by_job = {f["id"]: f for f in status["recent_failures"] if f["kind"] == "job"}
    found = {}
    for case, ds in headers.items():
        pdfs = [item for item in received[case] if item.sop_class_uid == ENCAPSULATED_PDF_STORAGE]
        text = pdf_text(read_full(pdfs[0]), rig.root / "pdf" / case) if pdfs else ""
        found[case] = Outcome(sent[case], str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), jobs[case],
                              by_job.get(jobs[case], {}), received[case], text)
    return found


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("case", list(EXPECTED_REASON))
def test_bad_photo_is_acknowledged_and_explained(case: str, rig: Rig, outcomes: dict[str, Outcome]):
    outcome = outcomes[case]
    context = rig.service.describe()
    assert outcome.sent.returncode == 0, f"{outcome.sent.stdout}\n{outcome.sent.stderr}"
    assert "Received Store Response (Success)" in outcome.sent.stdout + outcome.sent.stderr

    # Listed by `cleftscore status --json` with a one-line reason naming the cause.
    failure = outcome.failure
    assert failure, f"job {outcome.job_id} not among the recent failures\n{context}"
    reason = failure["reason"]
    assert reason and "\n" not in reason and "Traceback" not in reason, reason
    assert re.search(EXPECTED_REASON[case], reason, re.IGNORECASE), reason
    assert failure["attempts"] == 1  # failed for good at once: retrying cannot help

    # Exactly one result: the failure PDF (no Secondary Capture without a score).
    assert [item.sop_class_uid for item in outcome.received] == [ENCAPSULATED_PDF_STORAGE], context
    document = read_full(outcome.received[0])
    assert document.StudyInstanceUID == outcome.study_uid
    assert [str(i.ReferencedSOPInstanceUID) for i in document.SourceInstanceSequence] == [outcome.sop_uid]
    assert DEMO_LABEL in str(document.DocumentTitle)
    assert dciodvfy_errors(outcome.received[0].path) == []
    # The PDF says why (the status may shorten a long reason with "…").
    shown = _words(reason.rstrip("…"))
    assert shown in _words(outcome.pdf_text), (reason, outcome.pdf_text[:3000])
    assert "could not be appraised" in outcome.pdf_text


def test_non_photo_sop_class_is_refused_at_negotiation(rig: Rig, outcomes):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "CT-0001", "Test^CT", "CT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).reshape(8, 8).tobytes()
    path = rig.root / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)

    sent = storescu(rig.service.port, path, options=())
    output = sent.stdout + sent.stderr
    assert sent.returncode != 0 and "no presentation context" in output.lower(), output
    assert "Received Store Response" not in output, output
    assert not rig.service.matching("photo recorded", sop_uid=str(ds.SOPInstanceUID)), rig.service.describe()


def test_good_photo_after_bad_ones_is_scored(rig: Rig, outcomes, faces_dir: Path):
    photo = img2dcm(faces_dir / "obama.jpg", rig.root / "good.dcm", PatientID="GOOD-AFTER-BAD",
                    StudyDescription="after bad input", StudyDate="20240202")
    study_uid = str(pydicom.dcmread(photo, stop_before_pixels=True).StudyInstanceUID)
    sent = storescu(rig.service.port, photo)
    assert sent.returncode == 0, sent.stderr
    received = wait_for_results(rig.service, rig.scp, study_uid, count=2)
    assert sorted(i.sop_class_uid for i in received) == sorted([SC_STORAGE, ENCAPSULATED_PDF_STORAGE])
    text = pdf_text(read_full(next(i for i in received if i.sop_class_uid == ENCAPSULATED_PDF_STORAGE)),
                    rig.root / "pdf" / "good")
    assert "GOOD-AFTER-BAD" in text and "could not be appraised" not in text
    # Nothing else failed on the way.
    wait_until(lambda: rig.service.matching("job succeeded"), 10, "job succeeded", rig.service.describe)
    assert len(rig.service.matching("job failed")) == len(EXPECTED_REASON)


@pytest.mark.parametrize("case", [
    "corrupt_pixels",
    "no_face",
    "no_patient_id",
])
def test_failure_reason_is_one_plain_sentence(case: str, outcomes: dict[str, Outcome]):
    reason = outcomes[case].failure["reason"]
    assert re.fullmatch(r"[A-Z][^\n…]{10,250}\.", reason), reason


@pytest.mark.parametrize("case", ["corrupt_pixels", "no_patient_id"])
def test_failure_pdf_advice_fits_the_cause(case: str, outcomes: dict[str, Outcome]):
    assert "Retake a frontal photo" not in outcomes[case].pdf_text
