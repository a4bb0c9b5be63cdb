"""CLEFTSCORE_REPEATS through the worker: K normalisations, the stored appraisal records every repeat's
primary score and K, the timeline shows them, and the PDF says "mean of K repeats ± SD"."""

from __future__ import annotations

import functools
import statistics
import subprocess

import pydicom
import pytest

from db.memory import InMemoryRepository
from db.records import ResultKind
from dicom.storage import DicomFileStore
from pipeline.appraise import AppraisalSettings
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from service.cli.records import timeline_rows
from service.reports.assemble import make_report_pdf
from service.runtime.intake import make_photo_recorder
from service.runtime.worker import AppraisalWorker
from tests.service.runtime.test_worker import DESTINATION, UID_ROOT, bundle, make_dicom, now, received  # noqa: F401


def test_a_job_with_repeats_stores_each_repeat_and_reports_the_spread(bundle, faces_dir, tmp_path):  # noqa: F811
    repository = InMemoryRepository()
    photo = make_dicom(tmp_path, faces_dir / "biden.jpg", "PatientID=P7", "StudyDescription=Pre-op",
                       "StudyDate=20260110")
    make_photo_recorder(repository)(received(photo))
    (tmp_path / "results").mkdir()
    settings = AppraisalSettings(inversion=InversionSettings(steps=6, w_avg_samples=300),
                                 adaptation=AdaptationSettings(steps=2), repeats=3)
    worker = AppraisalWorker(
        worker_id="w1", repository=repository, bundle=bundle, settings=settings,
        result_store=DicomFileStore(tmp_path / "results", reserve_bytes=0), destinations=[DESTINATION],
        uid_root=UID_ROOT, make_pdf=functools.partial(make_report_pdf, repository), lease_s=600, clock=now)
    assert worker.run_once() is True
    appraisal = repository.appraisal_for_job(1)
    assert appraisal.repeats.count == 3 and appraisal.repeats.seeds == (303, 304, 305)
    assert appraisal.settings["repeats"] == 3
    assert appraisal.primary_score == pytest.approx(statistics.fmean(appraisal.repeats.primary_scores), rel=1e-12)
    assert len(set(appraisal.repeats.primary_scores)) == 3
    (row,) = timeline_rows(repository, "P7", "")
    assert row["repeats"] == 3 and row["repeat_primary_scores"] == list(appraisal.repeats.primary_scores)
    pdf_object = next(r for r in repository.result_objects_for(appraisal.id) if r.kind is ResultKind.ENCAPSULATED_PDF)
    document = pydicom.dcmread(pdf_object.file_path).EncapsulatedDocument
    path = tmp_path / "report.pdf"
    path.write_bytes(bytes(document))
    text = " ".join(subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True,
                                   timeout=60).stdout.decode().split())
    assert "mean of 3 repeats ± " in text and "(SD)" in text
