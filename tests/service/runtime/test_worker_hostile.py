"""Every photo the listener acknowledges ends with results filed: hostile text, damaged pixels,
report-builder faults and a job's last failed attempt all still give a failure report.

In-process worker, in-memory repository, small demo bundle; photos are grey (no face), so each
job fails fast at face detection unless it fails earlier.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from db import rules
from db.memory import InMemoryRepository
from db.records import JobState, ResultKind
from dicom.listener import _intake_problems  # the listener's own rule for intake problems, reused as is
from dicom.photo import extract_context
from dicom.storage import DicomFileStore
from pipeline.appraise import AppraisalSettings
from pipeline.models.bundle import load_bundle
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from service.reports.assemble import make_report_pdf
from service.runtime import worker as worker_module
from service.runtime.intake import make_photo_recorder
from service.runtime.model_store import make_demo_bundle
from service.runtime.worker import INTERNAL_FAILURE, STOPPED_FAILURE, AppraisalWorker
from tests.service.runtime.test_worker import received

UID_ROOT = "1.2.826.0.1.3680043.10.1187."


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_demo_bundle(tmp_path_factory.mktemp("models"), resolution=64))


def _photo(tmp_path, name: str, **attributes) -> object:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDescription, ds.Modality = "P1", "Doe^Jane", "Pre-op", "XC"
    grey = np.full((96, 80, 3), 128, np.uint8)
    ds.Rows, ds.Columns = grey.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = grey.tobytes()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _run_job(bundle, tmp_path, path, *, repository=None, make_pdf=None, rounds: int = 1, record: bool = True,
             start: dt.datetime | None = None):
    repository = repository or InMemoryRepository()
    if record:
        ds = pydicom.dcmread(path)
        problems = tuple(_intake_problems(ds, extract_context(ds), None))
        make_photo_recorder(repository)(received(path, problems))
    (tmp_path / "results").mkdir(exist_ok=True)
    clock = [start or dt.datetime.now(dt.timezone.utc)]
    worker = AppraisalWorker(
        worker_id="w1", repository=repository, bundle=bundle,
        settings=AppraisalSettings(inversion=InversionSettings(steps=3, w_avg_samples=300),
                                   adaptation=AdaptationSettings(steps=1)),
        result_store=DicomFileStore(tmp_path / "results", reserve_bytes=0), destinations=["PACS@127.0.0.1:104"],
        uid_root=UID_ROOT, make_pdf=make_pdf or functools.partial(make_report_pdf, repository), lease_s=600,
        clock=lambda: clock[0],
    )
    for _ in range(rounds):
        assert worker.run_once()
        clock[0] += dt.timedelta(hours=1)  # past any retry backoff
    job = repository.get_job(1)
    appraisal = repository.appraisal_for_job(job.id)
    results = repository.result_objects_for(appraisal.id) if appraisal else []
    return job, results


def _pdf_text(result) -> str:
    pdf = pydicom.dcmread(result.file_path)
    text = subprocess.run(["pdftotext", "-", "-"], input=bytes(pdf.EncapsulatedDocument), capture_output=True,
                          timeout=60, check=True).stdout.decode()
    return " ".join(text.split())


HOSTILE = {
    "long-name": dict(PatientName="A" * 65000 + "^B"),
    "long-id": dict(PatientID="9" * 1700),
    "ir87-alone": dict(SpecificCharacterSet="ISO 2022 IR 87"),
    "iso-ir-6": dict(SpecificCharacterSet="ISO_IR 6"),
    "unknown-charset": dict(SpecificCharacterSet="KLINGON"),
    "nul-in-name": dict(PatientName="Doe\x00^Jane"),
    "markup-in-name": dict(PatientName="<b>Doe</b>&<font size=90>^<para/>"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_text_still_gets_a_failure_report(bundle, tmp_path, case) -> None:
    job, results = _run_job(bundle, tmp_path, _photo(tmp_path, case, **HOSTILE[case]))
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.error_code in ("no_face", "intake"), job.last_error
    assert [r.kind for r in results] == [ResultKind.ENCAPSULATED_PDF]
    text = _pdf_text(results[0])
    assert "could not be appraised" in text
    assert "short report is shown because the full report" not in text  # the full report, not the fallback


def test_palette_without_blue_table_fails_once_with_a_reason_and_a_report(bundle, tmp_path) -> None:
    lut = (np.arange(256, dtype=np.uint16) * 257).tobytes()
    path = _photo(tmp_path, "palette", SamplesPerPixel=1, PhotometricInterpretation="PALETTE COLOR",
                  PlanarConfiguration=None, PixelData=bytes(96 * 80),
                  RedPaletteColorLookupTableDescriptor=[256, 0, 16], RedPaletteColorLookupTableData=lut,
                  GreenPaletteColorLookupTableDescriptor=[256, 0, 16], GreenPaletteColorLookupTableData=lut)
    job, results = _run_job(bundle, tmp_path, path)
    assert (job.state, job.attempts, job.error_code) == (JobState.FAILED, 1, "unreadable_dicom_pixels")
    assert "blue" in job.last_error
    assert [r.kind for r in results] == [ResultKind.ENCAPSULATED_PDF]


def test_last_attempt_of_an_internal_error_ends_with_a_failure_report(bundle, tmp_path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(worker_module, "appraise", broken)
    repository = InMemoryRepository(job_retry=rules.RetryPolicy(max_attempts=2, base_delay_s=1.0, max_delay_s=1.0))
    job, results = _run_job(bundle, tmp_path, _photo(tmp_path, "fault"), repository=repository, rounds=2)
    assert (job.state, job.attempts, job.error_code) == (JobState.FAILED, 2, "internal_error")
    assert job.last_error == INTERNAL_FAILURE
    [pdf] = results
    assert "internal fault" in _pdf_text(pdf)


def test_job_whose_workers_all_died_gets_a_failure_report(bundle, tmp_path, monkeypatch) -> None:
    """Every attempt's process died (e.g. killed for memory): the report pass answers the photo, without
    scoring it again."""
    def must_not_score(*args, **kwargs):
        raise AssertionError("the report pass must not appraise the photo again")

    monkeypatch.setattr(worker_module, "appraise", must_not_score)
    repository = InMemoryRepository(job_retry=rules.RetryPolicy(max_attempts=2, base_delay_s=1.0, max_delay_s=1.0))
    started = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    path = _photo(tmp_path, "oom")
    make_photo_recorder(repository)(received(path))
    for attempt in range(2):  # two workers claim it and die: their leases run out
        assert repository.claim_job(f"dead{attempt}", 60, now=started + dt.timedelta(minutes=10 * attempt))
    job, results = _run_job(bundle, tmp_path, path, repository=repository, record=False,
                            start=started + dt.timedelta(minutes=30))
    assert (job.state, job.attempts, job.error_code) == (JobState.FAILED, 3, "lease_expired")
    assert job.last_error == STOPPED_FAILURE
    [pdf] = results
    assert "scoring process stopped" in _pdf_text(pdf)


def test_report_builder_fault_still_files_the_minimal_report(bundle, tmp_path) -> None:
    def broken_pdf(request):
        raise RuntimeError("layout exploded")

    job, results = _run_job(bundle, tmp_path, _photo(tmp_path, "nopdf", PatientName="Müller^Zoë"),
                            make_pdf=broken_pdf)
    assert job.state is JobState.FAILED and job.error_code == "no_face"
    [pdf] = results
    text = _pdf_text(pdf)
    assert "No face was found" in text and "short report is shown because the full report" in text
    assert "Zoë" not in text and "Doe" not in text  # the minimal report shows no patient text
    document = pydicom.dcmread(pdf.file_path)
    assert document.PatientID == "P1"  # the DICOM header still names the patient


def test_unreadable_stored_file_still_gets_a_report(bundle, tmp_path) -> None:
    path = _photo(tmp_path, "vanishing")
    repository = InMemoryRepository()
    original = path.read_bytes()

    make_photo_recorder(repository)(received(path))
    path.write_bytes(b"garbage" * 10)  # the stored file is damaged after intake (a disk fault)
    (tmp_path / "results").mkdir(exist_ok=True)
    worker = AppraisalWorker(
        worker_id="w1", repository=repository, bundle=bundle, settings=AppraisalSettings(),
        result_store=DicomFileStore(tmp_path / "results", reserve_bytes=0), destinations=["PACS@127.0.0.1:104"],
        uid_root=UID_ROOT, make_pdf=functools.partial(make_report_pdf, repository), lease_s=600,
        clock=lambda: dt.datetime.now(dt.timezone.utc))
    assert worker.run_once()
    job = repository.get_job(1)
    assert job.state is JobState.FAILED and job.error_code == "unreadable_dicom_pixels"
    [pdf] = repository.result_objects_for(repository.appraisal_for_job(1).id)
    assert pydicom.dcmread(pdf.file_path).StudyInstanceUID == pydicom.dcmread(io.BytesIO(original)).StudyInstanceUID
