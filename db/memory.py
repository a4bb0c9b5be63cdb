"""InMemoryRepository: a thread-safe fake of the Repository, for unit tests of the service.

It follows the same rules (``db.rules``) as ``SqlRepository``; the contract tests run the same
cases against both. Records are immutable, so stored ones are handed out directly.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from db import rules
from db.errors import ConflictError, NotFoundError
from db.records import (
    Appraisal,
    AppraisalStatus,
    Calibration,
    FailureKind,
    FailureRecord,
    IntakeResult,
    Job,
    JobState,
    NewAppraisal,
    NewPatient,
    NewPhoto,
    NewResultObject,
    NewStudy,
    Patient,
    PatientSummary,
    Photo,
    QueueCounts,
    RepeatabilityStudy,
    ResultObject,
    Study,
    TimelineEntry,
    Transfer,
    TransferState,
)
from db.timeutil import as_utc, utc_now

_Work = TypeVar("_Work", Job, Transfer)


class InMemoryRepository:
    """Dictionaries behind one lock; ids count from 1 per table, like the database's."""

    def __init__(self, *, job_retry: rules.RetryPolicy = rules.DEFAULT_JOB_RETRY,
                 transfer_retry: rules.RetryPolicy = rules.DEFAULT_TRANSFER_RETRY,
                 rng: random.Random | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._job_retry, self._transfer_retry = job_retry, transfer_retry
        self._rng, self._clock = rng, clock
        self._lock = threading.RLock()
        self._patients: dict[int, Patient] = {}
        self._studies: dict[int, Study] = {}
        self._photos: dict[int, Photo] = {}
        self._jobs: dict[int, Job] = {}
        self._appraisals: dict[int, Appraisal] = {}
        self._results: dict[int, ResultObject] = {}
        self._transfers: dict[int, Transfer] = {}
        self._calibrations: list[Calibration] = []
        self._repeatability: list[RepeatabilityStudy] = []

    def _now(self, now: datetime | None) -> datetime:
        return as_utc(self._clock() if now is None else now, "now")

    @staticmethod
    def _get(table: dict, key: int, what: str):
        try:
            return table[key]
        except KeyError:
            raise NotFoundError(f"{what} {key} does not exist") from None

    # --- intake ---------------------------------------------------------------------------------
    def record_received_photo(self, patient: NewPatient, study: NewStudy, photo: NewPhoto, *,
                              now: datetime | None = None) -> IntakeResult:
        now = as_utc(photo.received_at if now is None else now, "now")
        with self._lock:
            existing = self.find_photo(photo.sop_instance_uid)
            if existing is not None:
                jobs = [j for j in self._jobs.values() if j.photo_id == existing.id]
                return IntakeResult(existing, max(jobs, key=lambda j: j.id), created=False)
            identity = (patient.patient_id, patient.issuer_of_patient_id)
            stored_patient = next((p for p in self._patients.values()
                                   if (p.patient_id, p.issuer_of_patient_id) == identity), None)
            stored_study = next((s for s in self._studies.values()
                                 if s.study_instance_uid == study.study_instance_uid), None)
            if stored_study is not None and (stored_patient is None
                                             or stored_study.patient_pk != stored_patient.id):
                raise ConflictError("the study is already filed under another patient")
            if stored_patient is None:
                stored_patient = Patient(**vars(patient), id=len(self._patients) + 1)
                self._patients[stored_patient.id] = stored_patient
            if stored_study is None:
                stored_study = Study(**vars(study), id=len(self._studies) + 1,
                                     patient_pk=stored_patient.id)
                self._studies[stored_study.id] = stored_study
            stored = Photo(**vars(photo), id=len(self._photos) + 1, study_id=stored_study.id)
            self._photos[stored.id] = stored
            return IntakeResult(stored, self._new_job(stored.id, now), created=True)

    def get_patient(self, patient_pk: int) -> Patient:
        return self._get(self._patients, patient_pk, "patient")

    def get_study(self, study_id: int) -> Study:
        return self._get(self._studies, study_id, "study")

    def get_photo(self, photo_id: int) -> Photo:
        return self._get(self._photos, photo_id, "photo")

    def find_photo(self, sop_instance_uid: str) -> Photo | None:
        with self._lock:
            return next((p for p in self._photos.values()
                         if p.sop_instance_uid == sop_instance_uid), None)

    # --- jobs -----------------------------------------------------------------------------------
    def _new_job(self, photo_id: int, now: datetime) -> Job:
        job = Job(id=len(self._jobs) + 1, photo_id=photo_id, state=JobState.QUEUED, attempts=0,
                  max_attempts=self._job_retry.max_attempts, created_at=now, updated_at=now,
                  next_attempt_at=now)
        self._jobs[job.id] = job
        return job

    def enqueue_job(self, photo_id: int, *, now: datetime | None = None) -> Job:
        now = self._now(now)
        with self._lock:
            self.get_photo(photo_id)
            return self._new_job(photo_id, now)

    def get_job(self, job_id: int) -> Job:
        return self._get(self._jobs, job_id, "job")

    def _claim(self, table: dict[int, _Work], queued: str, running: str, final_failed: str,
               worker_id: str, lease_seconds: float, now: datetime | None, *,
               report_pass: bool = False) -> _Work | None:
        rules.check_worker_id(worker_id)
        lease, now = rules.lease_delta(lease_seconds), self._now(now)
        with self._lock:
            for item in list(table.values()):
                if (item.state == running and item.lease_expires_at <= now
                        and item.attempts >= item.max_attempts + report_pass):
                    table[item.id] = replace(
                        item, state=final_failed, lease_owner=None, lease_expires_at=None,
                        error_code=rules.LEASE_EXPIRED_CODE,
                        last_error=rules.LEASE_EXPIRED_MESSAGE, finished_at=now, updated_at=now)
            due = [item for item in table.values()
                   if (item.state == queued and item.next_attempt_at <= now)
                   or (item.state == running and item.lease_expires_at <= now
                       and item.attempts < item.max_attempts + report_pass)]
            if not due:
                return None
            item = min(due, key=lambda i: (i.created_at, i.id))
            claimed = replace(item, state=running, lease_owner=worker_id,
                              lease_expires_at=now + lease, attempts=item.attempts + 1,
                              updated_at=now)
            table[item.id] = claimed
            return claimed

    def _heartbeat(self, table: dict[int, _Work], kind: str, running: str, item_id: int,
                   worker_id: str, lease_seconds: float, now: datetime | None) -> _Work:
        lease, now = rules.lease_delta(lease_seconds), self._now(now)
        with self._lock:
            item = self._get(table, item_id, kind)
            rules.check_lease(kind, item_id, item.state, running, item.lease_owner, worker_id)
            table[item_id] = replace(item, lease_expires_at=now + lease, updated_at=now)
            return table[item_id]

    def _complete(self, table: dict[int, _Work], kind: str, running: str, done: str,
                  item_id: int, worker_id: str, now: datetime | None) -> _Work:
        now = self._now(now)
        with self._lock:
            item = self._get(table, item_id, kind)
            rules.check_lease(kind, item_id, item.state, running, item.lease_owner, worker_id)
            table[item_id] = replace(item, state=done, lease_owner=None, lease_expires_at=None,
                                     finished_at=now, updated_at=now)
            return table[item_id]

    def _fail(self, table: dict[int, _Work], kind: str, states: tuple[str, str, str],
              policy: rules.RetryPolicy, item_id: int, worker_id: str, error_code: str,
              message: str, retryable: bool, now: datetime | None) -> _Work:
        queued, running, failed = states
        error_code, message = rules.check_error_code(error_code), rules.one_line_message(message)
        now = self._now(now)
        with self._lock:
            item = self._get(table, item_id, kind)
            rules.check_lease(kind, item_id, item.state, running, item.lease_owner, worker_id)
            again = rules.retry_at(item.attempts, item.max_attempts, bool(retryable), now,
                                   policy, self._rng)
            common = dict(lease_owner=None, lease_expires_at=None, error_code=error_code,
                          last_error=message, updated_at=now)
            if again is None:
                table[item_id] = replace(item, state=failed, finished_at=now, **common)
            else:
                table[item_id] = replace(item, state=queued, next_attempt_at=again, **common)
            return table[item_id]

    def claim_job(self, worker_id: str, lease_seconds: float, *,
                  now: datetime | None = None) -> Job | None:
        return self._claim(self._jobs, JobState.QUEUED, JobState.RUNNING, JobState.FAILED,
                           worker_id, lease_seconds, now, report_pass=True)

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float, *,
                  now: datetime | None = None) -> Job:
        return self._heartbeat(self._jobs, "job", JobState.RUNNING, job_id, worker_id,
                               lease_seconds, now)

    def complete_job(self, job_id: int, worker_id: str, *, now: datetime | None = None) -> Job:
        return self._complete(self._jobs, "job", JobState.RUNNING, JobState.SUCCEEDED, job_id,
                              worker_id, now)

    def fail_job(self, job_id: int, worker_id: str, *, error_code: str, message: str,
                 retryable: bool, now: datetime | None = None) -> Job:
        return self._fail(self._jobs, "job", (JobState.QUEUED, JobState.RUNNING, JobState.FAILED),
                          self._job_retry, job_id, worker_id, error_code, message, retryable, now)

    # --- appraisals and results -----------------------------------------------------------------
    def save_appraisal(self, appraisal: NewAppraisal, *,
                       worker_id: str | None = None) -> Appraisal:
        with self._lock:
            self.get_photo(appraisal.photo_id)
            if appraisal.job_id is None:
                if worker_id is not None:
                    raise ValueError("worker_id given for an appraisal without a job_id")
            else:
                job = self.get_job(appraisal.job_id)
                if job.photo_id != appraisal.photo_id:
                    raise ConflictError(f"job {job.id} scores photo {job.photo_id}, "
                                        f"not photo {appraisal.photo_id}")
                if worker_id is not None:
                    rules.check_lease("job", job.id, job.state, JobState.RUNNING,
                                      job.lease_owner, worker_id)
                if self.appraisal_for_job(job.id) is not None:
                    raise ConflictError(f"job {job.id} already has an appraisal")
            stored = Appraisal(**vars(appraisal), id=len(self._appraisals) + 1)
            self._appraisals[stored.id] = stored
            return stored

    def get_appraisal(self, appraisal_id: int) -> Appraisal:
        return self._get(self._appraisals, appraisal_id, "appraisal")

    def appraisal_for_job(self, job_id: int) -> Appraisal | None:
        with self._lock:
            return next((a for a in self._appraisals.values() if a.job_id == job_id), None)

    def appraisals_for_photo(self, photo_id: int) -> list[Appraisal]:
        with self._lock:
            return sorted((a for a in self._appraisals.values() if a.photo_id == photo_id),
                          key=lambda a: a.id)

    def record_result_object(self, result: NewResultObject, destinations: Sequence[str] = (), *,
                             now: datetime | None = None) -> ResultObject:
        now = as_utc(result.created_at if now is None else now, "now")
        for destination in destinations:
            rules.check_destination(destination)
        with self._lock:
            self.get_appraisal(result.appraisal_id)
            if any(r.sop_instance_uid == result.sop_instance_uid for r in self._results.values()):
                raise ConflictError("a result object with this SOP Instance UID already exists")
            stored = ResultObject(**vars(result), id=len(self._results) + 1)
            self._results[stored.id] = stored
            for destination in destinations:
                self.enqueue_transfer(stored.id, destination, now=now)
            return stored

    def get_result_object(self, result_object_id: int) -> ResultObject:
        return self._get(self._results, result_object_id, "result object")

    def result_objects_for(self, appraisal_id: int) -> list[ResultObject]:
        with self._lock:
            return sorted((r for r in self._results.values() if r.appraisal_id == appraisal_id),
                          key=lambda r: r.id)

    # --- transfers ------------------------------------------------------------------------------
    def enqueue_transfer(self, result_object_id: int, destination: str, *,
                         now: datetime | None = None) -> Transfer:
        rules.check_destination(destination)
        now = self._now(now)
        with self._lock:
            self.get_result_object(result_object_id)
            for transfer in self._transfers.values():
                if (transfer.result_object_id, transfer.destination) == (result_object_id,
                                                                         destination):
                    return transfer
            transfer = Transfer(id=len(self._transfers) + 1, result_object_id=result_object_id,
                                destination=destination, state=TransferState.PENDING,
                                attempts=0, max_attempts=self._transfer_retry.max_attempts,
                                created_at=now, updated_at=now, next_attempt_at=now)
            self._transfers[transfer.id] = transfer
            return transfer

    def get_transfer(self, transfer_id: int) -> Transfer:
        return self._get(self._transfers, transfer_id, "transfer")

    def transfers_for(self, result_object_id: int) -> list[Transfer]:
        with self._lock:
            return sorted((t for t in self._transfers.values()
                           if t.result_object_id == result_object_id), key=lambda t: t.id)

    def claim_transfer(self, sender_id: str, lease_seconds: float, *,
                       now: datetime | None = None) -> Transfer | None:
        return self._claim(self._transfers, TransferState.PENDING, TransferState.SENDING,
                           TransferState.FAILED, sender_id, lease_seconds, now)

    def complete_transfer(self, transfer_id: int, sender_id: str, *,
                          now: datetime | None = None) -> Transfer:
        return self._complete(self._transfers, "transfer", TransferState.SENDING,
                              TransferState.DONE, transfer_id, sender_id, now)

    def fail_transfer(self, transfer_id: int, sender_id: str, *, error_code: str, message: str,
                      retryable: bool, now: datetime | None = None) -> Transfer:
        states = (TransferState.PENDING, TransferState.SENDING, TransferState.FAILED)
        return self._fail(self._transfers, "transfer", states, self._transfer_retry, transfer_id,
                          sender_id, error_code, message, retryable, now)

    # --- queries --------------------------------------------------------------------------------
    def queue_counts(self) -> QueueCounts:
        with self._lock:
            jobs = {state: 0 for state in JobState}
            transfers = {state: 0 for state in TransferState}
            for job in self._jobs.values():
                jobs[job.state] += 1
            for transfer in self._transfers.values():
                transfers[transfer.state] += 1
            return QueueCounts(jobs=jobs, transfers=transfers)

    def recent_failures(self, limit: int = 20) -> list[FailureRecord]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        with self._lock:
            failures = [FailureRecord(FailureKind.JOB, j.id, j.error_code or "",
                                      j.last_error or "", j.attempts, j.finished_at)
                        for j in self._jobs.values() if j.state is JobState.FAILED]
            failures += [FailureRecord(FailureKind.TRANSFER, t.id, t.error_code or "",
                                       t.last_error or "", t.attempts, t.finished_at,
                                       t.destination)
                         for t in self._transfers.values() if t.state is TransferState.FAILED]
        return sorted(failures, key=rules.failure_sort_key, reverse=True)[:limit]

    def timeline(self, patient_id: str, issuer_of_patient_id: str = "") -> list[TimelineEntry]:
        with self._lock:
            entries = []
            for appraisal in self._appraisals.values():
                if appraisal.status is not AppraisalStatus.SUCCEEDED:
                    continue
                photo = self._photos[appraisal.photo_id]
                study = self._studies[photo.study_id]
                patient = self._patients[study.patient_pk]
                if (patient.patient_id, patient.issuer_of_patient_id) != (patient_id,
                                                                          issuer_of_patient_id):
                    continue
                at = photo.acquisition_datetime or study.study_datetime
                entries.append(TimelineEntry(at, appraisal, photo, study))
        return sorted(entries, key=rules.timeline_sort_key)

    def patients(self) -> list[PatientSummary]:
        with self._lock:
            summaries = []
            for patient in self._patients.values():
                studies = {s.id for s in self._studies.values() if s.patient_pk == patient.id}
                photos = [p for p in self._photos.values() if p.study_id in studies]
                photo_ids = {p.id for p in photos}
                succeeded = sum(1 for a in self._appraisals.values()
                                if a.photo_id in photo_ids
                                and a.status is AppraisalStatus.SUCCEEDED)
                last = max((p.received_at for p in photos), default=None)
                summaries.append(PatientSummary(patient, len(studies), len(photos), succeeded,
                                                last))
        return sorted(summaries, key=lambda s: (s.patient.patient_id,
                                                s.patient.issuer_of_patient_id))

    # --- calibration ----------------------------------------------------------------------------
    def save_calibration(self, calibration: Calibration) -> int:
        if not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        with self._lock:
            self._calibrations.append(calibration)
            return len(self._calibrations)

    def latest_calibration(self) -> Calibration | None:
        with self._lock:
            latest = max(enumerate(self._calibrations), key=lambda item: (item[1].created_at, item[0]),
                         default=None)
            return None if latest is None else latest[1]

    # --- repeatability --------------------------------------------------------------------------
    def save_repeatability(self, study: RepeatabilityStudy) -> int:
        if not isinstance(study, RepeatabilityStudy):
            raise TypeError(f"study must be a RepeatabilityStudy, got {type(study).__name__}")
        with self._lock:
            self._repeatability.append(study)
            return len(self._repeatability)

    def latest_repeatability(self, model_identity: str) -> RepeatabilityStudy | None:
        with self._lock:
            mine = [(study.created_at, index, study) for index, study in enumerate(self._repeatability)
                    if study.model_identity == model_identity]
            return max(mine, key=lambda item: item[:2], default=(None, None, None))[2]

    def close(self) -> None:
        """Nothing to release."""
