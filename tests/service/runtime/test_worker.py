"""The scoring worker and the sender's bookkeeping, on the in-memory repository.

The photo goes through the real listener code path (stored file, intake rows); the
worker runs the whole method with a small demo bundle; results are checked as DICOM.
"""

from __future__ import annotations

import datetime as dt
import functools
import subprocess

import numpy as np
import pydicom
import pytest
from PIL import Image

from db.memory import InMemoryRepository
from db.records import AppraisalStatus, JobState, ResultKind, TransferState
from dicom.listener import ReceivedPhoto
from dicom.photo import extract_context
from dicom.storage import DicomFileStore, StoreOutcome
from pipeline.appraise import AppraisalSettings
from pipeline.models.bundle import load_bundle
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from service.reports.assemble import make_report_pdf
from service.runtime.intake import make_photo_recorder
from service.runtime.model_store import make_demo_bundle
from service.runtime.worker import AppraisalWorker, crop_to_face

UID_ROOT = "1.2.826.0.1.3680043.10.1187."
DESTINATION = "PACS@127.0.0.1:104"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_demo_bundle(tmp_path_factory.mktemp("models"), resolution=64))


def make_dicom(tmp_path, image_path, *keys: str):
    out = tmp_path / f"{image_path.stem}.dcm"
    args = ["img2dcm", str(image_path), str(out)]
    for key in keys:
        args += ["-k", key]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return out


def received(path, problems=()) -> ReceivedPhoto:
    ds = pydicom.dcmread(path)
    context = extract_context(ds, local_timezone=dt.timezone.utc)
    import hashlib

    return ReceivedPhoto(
        path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size_bytes=path.stat().st_size,
        outcome=StoreOutcome.CREATED, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID), series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), context=context, calling_ae_title="MODALITY",
        peer_address="127.0.0.1", received_at=now(), intake_problems=tuple(problems),
    )


def worker_for(repository, bundle, tmp_path) -> AppraisalWorker:
    (tmp_path / "results").mkdir(exist_ok=True)
    return AppraisalWorker(
        worker_id="w1", repository=repository, bundle=bundle,
        settings=AppraisalSettings(inversion=InversionSettings(steps=6, w_avg_samples=300),
                                   adaptation=AdaptationSettings(steps=2)),
        result_store=DicomFileStore(tmp_path / "results", reserve_bytes=0), destinations=[DESTINATION],
        uid_root=UID_ROOT, make_pdf=functools.partial(make_report_pdf, repository), lease_s=600, clock=now,
    )


def test_photo_is_appraised_and_results_are_queued(bundle, faces_dir, tmp_path):
    repository = InMemoryRepository()
    photo = make_dicom(tmp_path, faces_dir / "obama.jpg", "PatientID=P1", "StudyDescription=Pre-op", "StudyDate=20260110")
    make_photo_recorder(repository)(received(photo))
    make_photo_recorder(repository)(received(photo))  # a duplicate delivery adds no job
    worker = worker_for(repository, bundle, tmp_path)
    assert worker.run_once() is True
    assert worker.run_once() is False
    job = repository.get_job(1)
    assert job.state is JobState.SUCCEEDED
    appraisal = repository.appraisal_for_job(job.id)
    assert appraisal.status is AppraisalStatus.SUCCEEDED and appraisal.non_clinical
    assert np.isfinite(appraisal.primary_score) and len(appraisal.scores) == 48
    results = repository.result_objects_for(appraisal.id)
    assert {r.kind for r in results} == {ResultKind.SECONDARY_CAPTURE, ResultKind.ENCAPSULATED_PDF}
    source = pydicom.dcmread(photo)
    for result in results:
        ds = pydicom.dcmread(result.file_path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.SOPInstanceUID.startswith(UID_ROOT)
        ours = [item for item in ds.ContributingEquipmentSequence if item.Manufacturer == "cleftscore"]
        assert len(ours) == 1 and ours[0].DeviceUID.startswith(UID_ROOT)
        transfers = repository.transfers_for(result.id)
        assert [(t.destination, t.state) for t in transfers] == [(DESTINATION, TransferState.PENDING)]
    timeline = repository.timeline("P1")
    assert [entry.appraisal.id for entry in timeline] == [appraisal.id]


def test_rebuilt_results_have_the_same_uids(bundle, faces_dir, tmp_path):
    """A job resumed after a crash files nothing twice: result UIDs derive from the job."""
    from service.runtime.results import build_results

    source = pydicom.dcmread(make_dicom(tmp_path, faces_dir / "obama.jpg", "PatientID=P2"))
    first = build_results(source, job_id=7, model=bundle.identity, uid_root=UID_ROOT, overlay=None,
                          pdf=b"%PDF-1.4 test", created_at=now())
    again = build_results(source, job_id=7, model=bundle.identity, uid_root=UID_ROOT, overlay=None,
                          pdf=b"%PDF-1.4 test", created_at=now())
    assert first[0].dataset.SOPInstanceUID == again[0].dataset.SOPInstanceUID
    other = build_results(source, job_id=8, model=bundle.identity, uid_root=UID_ROOT, overlay=None,
                          pdf=b"%PDF-1.4 test", created_at=now())
    assert other[0].dataset.SOPInstanceUID != first[0].dataset.SOPInstanceUID


@pytest.mark.parametrize("case", ["no_face", "no_patient_id"])
def test_failures_are_recorded_with_a_reason_and_a_pdf(bundle, tmp_path, case):
    repository = InMemoryRepository()
    if case == "no_face":
        grey = tmp_path / "grey.jpg"
        Image.fromarray(np.full((400, 300, 3), 128, np.uint8)).save(grey)
        photo = make_dicom(tmp_path, grey, "PatientID=P9")
        problems, expected = (), "No face was found"
    else:
        from skimage import data

        face = tmp_path / "astronaut.jpg"
        Image.fromarray(data.astronaut()).save(face)
        photo = make_dicom(tmp_path, face)
        problems, expected = ("the photo has no Patient ID (0010,0020), so it cannot be linked to a patient",), "Patient ID"
    make_photo_recorder(repository)(received(photo, problems))
    worker = worker_for(repository, bundle, tmp_path)
    assert worker.run_once() is True
    job = repository.get_job(1)
    assert job.state is JobState.FAILED and expected in job.last_error
    appraisal = repository.appraisal_for_job(job.id)
    assert appraisal.status is AppraisalStatus.FAILED and expected in appraisal.failure_reason
    results = repository.result_objects_for(appraisal.id)
    assert [r.kind for r in results] == [ResultKind.ENCAPSULATED_PDF]
    pdf = pydicom.dcmread(results[0].file_path)
    text = subprocess.run(["pdftotext", "-", "-"], input=bytes(pdf.EncapsulatedDocument), capture_output=True,
                          timeout=60, check=True).stdout.decode()
    assert expected.split()[0] in text


def test_crop_to_face_keeps_the_square_and_a_margin():
    image = np.zeros((1000, 800, 3), np.uint8)
    quad = np.array([[300.0, 300.0], [300.0, 500.0], [500.0, 500.0], [500.0, 300.0]])
    assert crop_to_face(image, quad).shape == (240, 240, 3)
    edge = np.array([[-50.0, 900.0], [-50.0, 1100.0], [150.0, 1100.0], [150.0, 900.0]])
    assert crop_to_face(image, edge).shape == (120, 170, 3)
