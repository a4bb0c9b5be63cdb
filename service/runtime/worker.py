"""The scoring worker: claim a job, appraise the photo, store scores, file results.

Every job ends in results filed for delivery: the Secondary Capture and PDF of a
success, or a failure report. A job whose photo the method cannot apply to (no
face, not frontal, unreadable pixels, no Patient ID) fails for good with one
sentence, logged as one WARNING line, and still gets a PDF that tells the
clinician what happened. Unexpected errors are logged with their traceback and
retried with backoff; when the last attempt fails too, the job fails for good
with a failure report as well. Should the full failure report itself fail, a
minimal one (:mod:`service.reports.fallback`, no patient text) is filed instead.
A crashed worker's job is reclaimed when its lease expires; the rebuilt results
have the same UIDs, and kinds already filed are not filed again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from db.records import AppraisalRepeats, AppraisalStatus, Job, NewAppraisal
from db.repository import Repository
from dicom.photo import decode_photo
from dicom.results import minimal_reference
from dicom.storage import DicomFileStore
from pipeline.appraise import AppraisalResult, AppraisalSettings, WStatsCache, appraise
from pipeline.compare.annotate import heatmap_on_photo
from pipeline.compare.render import display_vmax
from pipeline.errors import PipelineError
from pipeline.models.bundle import ModelBundle
from pipeline.vocabulary import PRIMARY_VARIANT
from service.reports.advice import ADVICE, RETAKE
from service.reports.fallback import build_minimal_report_pdf
from service.reports.request import ReportRequest
from service.runtime.burn_in import compose_secondary_capture
from service.runtime.results import build_results, file_results

LOG = logging.getLogger("cleftscore.worker")


def crop_to_face(image: np.ndarray, quad: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The part of ``image`` around the alignment square (plus ``margin`` of its size),
    so that the face, not the whole photo, fills the Secondary Capture."""
    low, high = quad.min(axis=0), quad.max(axis=0)
    pad = (high - low) * margin
    x0, y0 = np.maximum(np.floor(low - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(high + pad).astype(int), [image.shape[1], image.shape[0]])
    return np.ascontiguousarray(image[y0:y1, x0:x1])


class JobFailed(Exception):
    """A job that cannot succeed; ``code`` and the message are recorded, ``detail`` (no patient
    data) goes to the log only, ``notes`` to the report."""

    def __init__(self, code: str, message: str, detail: str = "", notes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail
        self.notes = notes


#: The reason recorded when a job's last attempt ended in an unexpected error.
INTERNAL_FAILURE = ("The photo could not be appraised because of an internal fault of the scoring service; "
                    "the service administrator has the details.")
#: A job whose scoring process stopped (killed, out of memory, power cut) during every allowed attempt.
STOPPED_FAILURE = ("The photo could not be appraised: the scoring process stopped during every attempt "
                   "(for example it ran out of memory); the service administrator has the details.")


class AppraisalWorker:
    """One worker thread's logic; dependencies are passed in, nothing is global."""

    def __init__(self, *, worker_id: str, repository: Repository, bundle: ModelBundle,
                 settings: AppraisalSettings, result_store: DicomFileStore, destinations: Sequence[str],
                 uid_root: str, make_pdf: Callable[[ReportRequest], bytes], lease_s: float,
                 clock: Callable[[], dt.datetime]) -> None:
        self.worker_id = worker_id
        self.repository = repository
        self.bundle = bundle
        self.settings = settings
        self.result_store = result_store
        self.destinations = tuple(destinations)
        self.uid_root = uid_root
        self.make_pdf = make_pdf
        self.lease_s = lease_s
        self.clock = clock
        self.w_stats = WStatsCache()

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # noqa: BLE001 - a worker must survive anything and retry later
                LOG.exception("worker loop error", extra={"worker": self.worker_id})
                worked = False
            if not worked:
                stop.wait(idle_s)

    def run_once(self) -> bool:
        """Claim and process one due job; False when none was due."""
        job = self.repository.claim_job(self.worker_id, self.lease_s, now=self.clock())
        if job is None:
            return False
        LOG.info("job claimed", extra={"job_id": job.id, "photo_id": job.photo_id, "attempt": job.attempts})
        if job.attempts > job.max_attempts:
            # The repository's report pass: every attempt's worker died. Do not score again (that is
            # what killed them); record the failure and answer the photo with a report.
            LOG.warning("every attempt's lease expired; failing the job with a report",
                        extra={"job_id": job.id, "attempt": job.attempts})
            self._fail_for_good(job, JobFailed("lease_expired", STOPPED_FAILURE))
            return True
        try:
            self._process(job)
        except JobFailed as failure:
            self._fail_for_good(job, failure)
        except Exception as error:  # noqa: BLE001 - recorded and retried with backoff
            if job.attempts < job.max_attempts:
                LOG.exception("job error; will retry", extra={"job_id": job.id, "attempt": job.attempts})
                self.repository.fail_job(job.id, self.worker_id, error_code="internal_error",
                                         message=f"Internal error: {type(error).__name__}: {error}",
                                         retryable=True, now=self.clock())
            else:
                LOG.exception("job error on its last attempt; failing it with a report",
                              extra={"job_id": job.id, "attempt": job.attempts})
                self._fail_for_good(job, JobFailed("internal_error", INTERNAL_FAILURE, type(error).__name__))
        return True

    # ------------------------------------------------------------------ steps
    def _process(self, job: Job) -> None:
        photo = self.repository.get_photo(job.photo_id)
        problems = photo.attributes.get("intake_problems") or []
        if problems:
            raise JobFailed("intake", "The photo cannot be appraised: " + "; ".join(problems) + ".")
        try:
            source = pydicom.dcmread(photo.file_path)
        except Exception as error:  # noqa: BLE001 - any parse failure is the file's fault
            raise JobFailed("unreadable_dicom_pixels", "The stored photo is not a readable DICOM file.",
                            type(error).__name__) from error
        try:
            decoded = decode_photo(source)
        except PipelineError as error:
            raise JobFailed(error.code, str(error), getattr(error, "detail", "")) from error
        rgb, notes = decoded.rgb, decoded.notes
        existing = self.repository.appraisal_for_job(job.id)
        last_beat = [time.monotonic()]

        def heartbeat(_progress) -> None:
            if time.monotonic() - last_beat[0] > min(30.0, self.lease_s / 4):
                self.repository.heartbeat(job.id, self.worker_id, self.lease_s, now=self.clock())
                last_beat[0] = time.monotonic()

        try:
            result = appraise(rgb, self.bundle, self.settings, progress=heartbeat, w_stats_cache=self.w_stats)
        except PipelineError as error:
            raise JobFailed(error.code, str(error), notes=notes) from error
        appraisal_id = existing.id if existing else self._save_appraisal(job, result, notes)
        overlay = self._overlay(rgb, result)
        created = self.clock()
        pdf = self.make_pdf(ReportRequest(source, appraisal_id, result, rgb, overlay, None, created, notes=notes))
        built = build_results(source, job_id=job.id, model=result.model, uid_root=self.uid_root,
                              overlay=overlay, pdf=pdf, created_at=created)
        file_results(self.repository, self.result_store, appraisal_id, built, self.destinations, self.clock)
        self.repository.complete_job(job.id, self.worker_id, now=self.clock())
        LOG.info("job succeeded", extra={"job_id": job.id, "appraisal_id": appraisal_id,
                                         "score": round(result.primary_score, 4), "seconds": result.timings["total"],
                                         "corrected": bool(notes)})

    def _save_appraisal(self, job: Job, result: AppraisalResult, notes: tuple[str, ...]) -> int:
        record = self.repository.save_appraisal(NewAppraisal(
            photo_id=job.photo_id, job_id=job.id, model_name=result.model.name, model_id_hash=result.model.identity,
            non_clinical=result.model.non_clinical, status=AppraisalStatus.SUCCEEDED, created_at=self.clock(),
            settings=_with_notes(result.settings.to_dict(), notes), timings=result.timings,
            pose=result.preprocessing.pose.to_dict(), scores=result.scores,
            repeats=None if result.repeats is None else AppraisalRepeats(
                result.repeats.seeds, result.repeats.primary_scores),
        ), worker_id=self.worker_id)
        return record.id

    def _overlay(self, rgb: np.ndarray, result: AppraisalResult) -> np.ndarray:
        pre = result.preprocessing
        mask = pre.masks[PRIMARY_VARIANT.region]
        vmax = display_vmax(result.primary_heatmap, mask)
        on_photo = crop_to_face(heatmap_on_photo(rgb, result.primary_heatmap, mask, pre.transform, vmax=vmax),
                                pre.transform.quad)
        caption = (f"PSE, YCbCr + 3x3 erosion, mouth/nose region, after model adaptation\n"
                   f"Model {result.model.name} ({result.model.identity[:12]}); research use; see the PDF report")
        return compose_secondary_capture(on_photo, score=result.primary_score, vmax=vmax, caption=caption,
                                         non_clinical_label=result.model.label)

    def _fail_for_good(self, job: Job, failure: JobFailed) -> None:
        reason = str(failure)
        LOG.warning("job failed", extra={"job_id": job.id, "error_code": failure.code, "reason": reason,
                                         "detail": failure.detail})
        existing = self.repository.appraisal_for_job(job.id)
        if existing is None:
            existing = self.repository.save_appraisal(NewAppraisal(
                photo_id=job.photo_id, job_id=job.id, model_name=self.bundle.identity.name,
                model_id_hash=self.bundle.identity.identity, non_clinical=self.bundle.identity.non_clinical,
                status=AppraisalStatus.FAILED, created_at=self.clock(), failure_reason=reason,
                settings=_with_notes(self.settings.to_dict(), failure.notes),
            ), worker_id=self.worker_id)
        source = self._source_for_report(job)
        created = self.clock()
        try:
            pdf = self.make_pdf(ReportRequest(source, existing.id, None, None, None, reason, created, failure.code,
                                              notes=failure.notes))
            built = build_results(source, job_id=job.id, model=self.bundle.identity, uid_root=self.uid_root,
                                  overlay=None, pdf=pdf, created_at=created)
        except Exception:  # noqa: BLE001 - the minimal report below must still go out
            LOG.exception("the full failure report could not be built; filing the minimal one",
                          extra={"job_id": job.id})
            built = self._minimal_failure_results(job, source, reason, failure.code, created)
        try:
            file_results(self.repository, self.result_store, existing.id, built, self.destinations, self.clock)
        except Exception:  # noqa: BLE001 - the failure itself must still be recorded; this is logged loudly
            LOG.exception("the failure report could not be filed", extra={"job_id": job.id})
        self.repository.fail_job(job.id, self.worker_id, error_code=failure.code, message=reason,
                                 retryable=False, now=self.clock())

    def _source_for_report(self, job: Job) -> Dataset:
        """The photo's data set; when the stored file is unreadable, one made of its database rows
        (UIDs and patient identity), so the failure report can still join the photo's study."""
        photo = self.repository.get_photo(job.photo_id)
        try:
            return pydicom.dcmread(photo.file_path, stop_before_pixels=True)
        except Exception as error:  # noqa: BLE001 - the rows identify the photo as well
            LOG.warning("stored photo unreadable; the report uses its database record",
                        extra={"job_id": job.id, "detail": type(error).__name__})
        study = self.repository.get_study(photo.study_id)
        patient = self.repository.get_patient(study.patient_pk)
        source = Dataset()
        source.SOPClassUID, source.SOPInstanceUID = photo.sop_class_uid, photo.sop_instance_uid
        source.SeriesInstanceUID, source.StudyInstanceUID = photo.series_instance_uid, study.study_instance_uid
        source.PatientID, source.PatientName = patient.patient_id, patient.patient_name
        source.StudyDate, source.StudyTime = study.study_date, study.study_time
        source.AccessionNumber = study.accession_number
        source.SpecificCharacterSet = "ISO_IR 192"
        return source

    def _minimal_failure_results(self, job: Job, source: Dataset, reason: str, code: str,
                                 created: dt.datetime) -> list:
        identity = self.bundle.identity
        pdf = build_minimal_report_pdf(
            reason=reason, advice=ADVICE.get(code, RETAKE), photo_uid=str(source.get("SOPInstanceUID", "")),
            model=f"{identity.name} ({identity.identity[:12]})", non_clinical=identity.non_clinical,
            generated_at=created)
        return build_results(minimal_reference(source), job_id=job.id, model=identity, uid_root=self.uid_root,
                             overlay=None, pdf=pdf, created_at=created)


def _with_notes(settings: dict, notes: tuple[str, ...]) -> dict:
    """The appraisal's settings record, with the decoding notes (corrections made) when there are any."""
    return {**settings, "decoding_notes": list(notes)} if notes else settings
