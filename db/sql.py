"""SqlRepository: the Repository over SQLAlchemy, for SQLite (embedded) and PostgreSQL.

Claims are safe across processes: PostgreSQL picks the candidate with ``SELECT ... FOR UPDATE
SKIP LOCKED``; SQLite serialises writers with ``BEGIN IMMEDIATE``; on both the claim itself is a
compare-and-set UPDATE guarded by the attempt count and the "still due" condition. The schema
comes from ``db.migrate.upgrade`` (tests may use ``Base.metadata.create_all``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db import models as m
from db import rules
from db import sql_queries as q
from db.engine import WRITE, create_engine_for
from db.errors import ConflictError, NotFoundError
from db.records import (
    Appraisal,
    Calibration,
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
from db.sql_work import WorkSpec, claim_next
from db.timeutil import as_utc, utc_now

__all__ = ["SqlRepository", "create_engine_for"]

_T = TypeVar("_T")
_INTEGRITY_RETRIES = 5  # each lost race settles one of patient, study, photo
_JOB = WorkSpec(m.JobRow, "job", JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED,
                JobState.FAILED, m.job_record, report_pass=True)
_TRANSFER = WorkSpec(m.TransferRow, "transfer", TransferState.PENDING, TransferState.SENDING,
                     TransferState.DONE, TransferState.FAILED, m.transfer_record)


class SqlRepository:
    def __init__(self, engine: sa.Engine, *,
                 job_retry: rules.RetryPolicy = rules.DEFAULT_JOB_RETRY,
                 transfer_retry: rules.RetryPolicy = rules.DEFAULT_TRANSFER_RETRY,
                 rng: random.Random | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE: True})
        self._postgres = engine.dialect.name == "postgresql"
        self._job_retry, self._transfer_retry = job_retry, transfer_retry
        self._rng, self._clock = rng, clock

    @classmethod
    def from_url(cls, url: str | sa.URL, **kwargs: Any) -> SqlRepository:
        """A repository on a new engine (see ``db.engine.create_engine_for``)."""
        return cls(create_engine_for(url), **kwargs)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # --- plumbing -------------------------------------------------------------------------------
    def _now(self, now: datetime | None) -> datetime:
        return as_utc(self._clock() if now is None else now, "now")

    @contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        with Session(self._write_engine if write else self._engine,
                     expire_on_commit=False) as session, session.begin():
            yield session

    @staticmethod
    def _retry_integrity(attempt: Callable[[], _T]) -> _T:
        """Rerun ``attempt`` when a concurrent insert of the same natural key won the race."""
        for tries_left in range(_INTEGRITY_RETRIES - 1, -1, -1):
            try:
                return attempt()
            except sa.exc.IntegrityError:
                if tries_left == 0:
                    raise
        raise AssertionError("unreachable")

    def _load(self, session: Session, model: type, key: int, what: str, lock: bool = False):
        row = session.get(model, key, with_for_update=lock and self._postgres)
        if row is None:
            raise NotFoundError(f"{what} {key} does not exist")
        return row

    def _read(self, model: type, key: int, what: str, convert: Callable[[Any], _T]) -> _T:
        with self._session(write=False) as session:
            return convert(self._load(session, model, key, what))

    # --- intake ---------------------------------------------------------------------------------
    def record_received_photo(self, patient: NewPatient, study: NewStudy, photo: NewPhoto, *,
                              now: datetime | None = None) -> IntakeResult:
        now = as_utc(photo.received_at if now is None else now, "now")

        def attempt() -> IntakeResult:
            with self._session(write=True) as s:
                existing = s.scalars(sa.select(m.PhotoRow).where(
                    m.PhotoRow.sop_instance_uid == photo.sop_instance_uid)).first()
                if existing is not None:
                    job = s.scalars(sa.select(m.JobRow).where(m.JobRow.photo_id == existing.id)
                                    .order_by(m.JobRow.id.desc()).limit(1)).one()
                    return IntakeResult(m.photo_record(existing), m.job_record(job), False)
                identity = (patient.patient_id, patient.issuer_of_patient_id)
                study_row = s.scalars(sa.select(m.StudyRow).where(
                    m.StudyRow.study_instance_uid == study.study_instance_uid)).first()
                if study_row is not None:
                    patient_row = s.get(m.PatientRow, study_row.patient_pk)
                    if (patient_row.patient_id, patient_row.issuer_of_patient_id) != identity:
                        raise ConflictError("the study is already filed under another patient")
                else:
                    patient_row = s.scalars(sa.select(m.PatientRow).where(
                        m.PatientRow.patient_id == patient.patient_id,
                        m.PatientRow.issuer_of_patient_id == patient.issuer_of_patient_id)
                    ).first()
                if patient_row is None:
                    patient_row = m.PatientRow(**vars(patient))
                    s.add(patient_row)
                    s.flush()
                if study_row is None:
                    study_row = m.StudyRow(**vars(study), patient_pk=patient_row.id)
                    s.add(study_row)
                    s.flush()
                photo_row = m.PhotoRow(**vars(photo), study_id=study_row.id)
                s.add(photo_row)
                s.flush()
                job = self._add_job(s, photo_row.id, now)
                return IntakeResult(m.photo_record(photo_row), m.job_record(job), True)

        return self._retry_integrity(attempt)

    def get_patient(self, patient_pk: int) -> Patient:
        return self._read(m.PatientRow, patient_pk, "patient", m.patient_record)

    def get_study(self, study_id: int) -> Study:
        return self._read(m.StudyRow, study_id, "study", m.study_record)

    def get_photo(self, photo_id: int) -> Photo:
        return self._read(m.PhotoRow, photo_id, "photo", m.photo_record)

    def find_photo(self, sop_instance_uid: str) -> Photo | None:
        with self._session(write=False) as s:
            row = s.scalars(sa.select(m.PhotoRow).where(
                m.PhotoRow.sop_instance_uid == sop_instance_uid)).first()
            return None if row is None else m.photo_record(row)

    # --- jobs and transfers: the shared leased-work state machine -------------------------------
    def _add_job(self, s: Session, photo_id: int, now: datetime) -> m.JobRow:
        job = m.JobRow(photo_id=photo_id, state=JobState.QUEUED, attempts=0,
                       max_attempts=self._job_retry.max_attempts, created_at=now,
                       updated_at=now, next_attempt_at=now)
        s.add(job)
        s.flush()
        return job

    def enqueue_job(self, photo_id: int, *, now: datetime | None = None) -> Job:
        now = self._now(now)
        with self._session(write=True) as s:
            self._load(s, m.PhotoRow, photo_id, "photo")
            return m.job_record(self._add_job(s, photo_id, now))

    def get_job(self, job_id: int) -> Job:
        return self._read(m.JobRow, job_id, "job", m.job_record)

    def _claim(self, spec: WorkSpec, worker_id: str, lease_seconds: float,
               now: datetime | None) -> Any:
        rules.check_worker_id(worker_id)
        lease, now = rules.lease_delta(lease_seconds), self._now(now)
        with self._session(write=True) as s:
            return claim_next(s, spec, worker_id, lease, now, postgres=self._postgres)

    def _update_leased(self, spec: WorkSpec, item_id: int, worker_id: str,
                       now: datetime | None, change: Callable[[Any, datetime], None]) -> Any:
        now = self._now(now)
        with self._session(write=True) as s:
            row = self._load(s, spec.model, item_id, spec.kind, lock=True)
            rules.check_lease(spec.kind, item_id, row.state, spec.running, row.lease_owner,
                              worker_id)
            change(row, now)
            row.updated_at = now
            s.flush()
            return spec.convert(row)

    def _heartbeat(self, spec: WorkSpec, item_id: int, worker_id: str, lease_seconds: float,
                   now: datetime | None) -> Any:
        lease = rules.lease_delta(lease_seconds)

        def extend(row: Any, at: datetime) -> None:
            row.lease_expires_at = at + lease
        return self._update_leased(spec, item_id, worker_id, now, extend)

    def _complete(self, spec: WorkSpec, item_id: int, worker_id: str, now: datetime | None) -> Any:
        def finish(row: Any, at: datetime) -> None:
            row.state, row.lease_owner, row.lease_expires_at, row.finished_at = (
                spec.done, None, None, at)
        return self._update_leased(spec, item_id, worker_id, now, finish)

    def _fail(self, spec: WorkSpec, policy: rules.RetryPolicy, item_id: int, worker_id: str,
              error_code: str, message: str, retryable: bool, now: datetime | None) -> Any:
        error_code, message = rules.check_error_code(error_code), rules.one_line_message(message)

        def fail(row: Any, at: datetime) -> None:
            again = rules.retry_at(row.attempts, row.max_attempts, bool(retryable), at, policy,
                                   self._rng)
            row.lease_owner, row.lease_expires_at = None, None
            row.error_code, row.last_error = error_code, message
            if again is None:
                row.state, row.finished_at = spec.failed, at
            else:
                row.state, row.next_attempt_at = spec.queued, again
        return self._update_leased(spec, item_id, worker_id, now, fail)

    def claim_job(self, worker_id: str, lease_seconds: float, *,
                  now: datetime | None = None) -> Job | None:
        return self._claim(_JOB, worker_id, lease_seconds, now)

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float, *,
                  now: datetime | None = None) -> Job:
        return self._heartbeat(_JOB, job_id, worker_id, lease_seconds, now)

    def complete_job(self, job_id: int, worker_id: str, *, now: datetime | None = None) -> Job:
        return self._complete(_JOB, job_id, worker_id, now)

    def fail_job(self, job_id: int, worker_id: str, *, error_code: str, message: str,
                 retryable: bool, now: datetime | None = None) -> Job:
        return self._fail(_JOB, self._job_retry, job_id, worker_id, error_code, message,
                          retryable, now)

    # --- appraisals and results -----------------------------------------------------------------
    def save_appraisal(self, appraisal: NewAppraisal, *,
                       worker_id: str | None = None) -> Appraisal:
        with self._session(write=True) as s:
            self._load(s, m.PhotoRow, appraisal.photo_id, "photo")
            if appraisal.job_id is None:
                if worker_id is not None:
                    raise ValueError("worker_id given for an appraisal without a job_id")
            else:
                job = self._load(s, m.JobRow, appraisal.job_id, "job", lock=True)
                if job.photo_id != appraisal.photo_id:
                    raise ConflictError(f"job {job.id} scores photo {job.photo_id}, "
                                        f"not photo {appraisal.photo_id}")
                if worker_id is not None:
                    rules.check_lease("job", job.id, job.state, JobState.RUNNING,
                                      job.lease_owner, worker_id)
                if s.scalars(sa.select(m.AppraisalRow.id).where(
                        m.AppraisalRow.job_id == job.id)).first() is not None:
                    raise ConflictError(f"job {job.id} already has an appraisal")
            row = m.appraisal_row(appraisal)
            s.add(row)
            s.flush()
            return m.appraisal_record(row)

    def get_appraisal(self, appraisal_id: int) -> Appraisal:
        return self._read(m.AppraisalRow, appraisal_id, "appraisal", m.appraisal_record)

    def _list(self, model: type, where: Any, convert: Callable[[Any], _T]) -> list[_T]:
        with self._session(write=False) as s:
            return [convert(row) for row in s.scalars(sa.select(model).where(where)
                                                      .order_by(model.id))]

    def appraisal_for_job(self, job_id: int) -> Appraisal | None:
        found = self._list(m.AppraisalRow, m.AppraisalRow.job_id == job_id, m.appraisal_record)
        return found[0] if found else None

    def appraisals_for_photo(self, photo_id: int) -> list[Appraisal]:
        return self._list(m.AppraisalRow, m.AppraisalRow.photo_id == photo_id,
                          m.appraisal_record)

    def record_result_object(self, result: NewResultObject, destinations: Sequence[str] = (), *,
                             now: datetime | None = None) -> ResultObject:
        now = as_utc(result.created_at if now is None else now, "now")
        for destination in destinations:
            rules.check_destination(destination)
        try:
            with self._session(write=True) as s:
                self._load(s, m.AppraisalRow, result.appraisal_id, "appraisal")
                if s.scalars(sa.select(m.ResultObjectRow.id).where(
                        m.ResultObjectRow.sop_instance_uid == result.sop_instance_uid)
                        ).first() is not None:
                    raise ConflictError("a result object with this SOP Instance UID already "
                                        "exists")
                row = m.ResultObjectRow(**vars(result))
                s.add(row)
                s.flush()
                for destination in dict.fromkeys(destinations):
                    self._add_transfer(s, row.id, destination, now)
                return m.result_object_record(row)
        except sa.exc.IntegrityError:
            raise ConflictError("a result object with this SOP Instance UID already "
                                "exists") from None

    def get_result_object(self, result_object_id: int) -> ResultObject:
        return self._read(m.ResultObjectRow, result_object_id, "result object",
                          m.result_object_record)

    def result_objects_for(self, appraisal_id: int) -> list[ResultObject]:
        return self._list(m.ResultObjectRow, m.ResultObjectRow.appraisal_id == appraisal_id,
                          m.result_object_record)

    # --- transfers ------------------------------------------------------------------------------
    def _add_transfer(self, s: Session, result_object_id: int, destination: str,
                      now: datetime) -> m.TransferRow:
        row = m.TransferRow(result_object_id=result_object_id, destination=destination,
                            state=TransferState.PENDING, attempts=0,
                            max_attempts=self._transfer_retry.max_attempts, created_at=now,
                            updated_at=now, next_attempt_at=now)
        s.add(row)
        s.flush()
        return row

    def enqueue_transfer(self, result_object_id: int, destination: str, *,
                         now: datetime | None = None) -> Transfer:
        rules.check_destination(destination)
        now = self._now(now)

        def attempt() -> Transfer:
            with self._session(write=True) as s:
                self._load(s, m.ResultObjectRow, result_object_id, "result object")
                row = s.scalars(sa.select(m.TransferRow).where(
                    m.TransferRow.result_object_id == result_object_id,
                    m.TransferRow.destination == destination)).first()
                if row is None:
                    row = self._add_transfer(s, result_object_id, destination, now)
                return m.transfer_record(row)

        return self._retry_integrity(attempt)

    def get_transfer(self, transfer_id: int) -> Transfer:
        return self._read(m.TransferRow, transfer_id, "transfer", m.transfer_record)

    def transfers_for(self, result_object_id: int) -> list[Transfer]:
        return self._list(m.TransferRow, m.TransferRow.result_object_id == result_object_id,
                          m.transfer_record)

    def claim_transfer(self, sender_id: str, lease_seconds: float, *,
                       now: datetime | None = None) -> Transfer | None:
        return self._claim(_TRANSFER, sender_id, lease_seconds, now)

    def complete_transfer(self, transfer_id: int, sender_id: str, *,
                          now: datetime | None = None) -> Transfer:
        return self._complete(_TRANSFER, transfer_id, sender_id, now)

    def fail_transfer(self, transfer_id: int, sender_id: str, *, error_code: str, message: str,
                      retryable: bool, now: datetime | None = None) -> Transfer:
        return self._fail(_TRANSFER, self._transfer_retry, transfer_id, sender_id, error_code,
                          message, retryable, now)

    # --- queries --------------------------------------------------------------------------------
    def queue_counts(self) -> QueueCounts:
        with self._session(write=False) as s:
            return q.queue_counts(s)

    def recent_failures(self, limit: int = 20) -> list[FailureRecord]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        with self._session(write=False) as s:
            return q.recent_failures(s, limit)

    def timeline(self, patient_id: str, issuer_of_patient_id: str = "") -> list[TimelineEntry]:
        with self._session(write=False) as s:
            return q.timeline(s, patient_id, issuer_of_patient_id)

    def patients(self) -> list[PatientSummary]:
        with self._session(write=False) as s:
            return q.patient_summaries(s)

    # --- calibration ----------------------------------------------------------------------------
    def save_calibration(self, calibration: Calibration) -> int:
        if not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be a Calibration, got {type(calibration).__name__}")
        with self._session(write=True) as s:
            row = m.calibration_row(calibration)
            s.add(row)
            s.flush()
            return row.id

    def latest_calibration(self) -> Calibration | None:
        with self._session(write=False) as s:
            row = s.scalars(sa.select(m.CalibrationRow).order_by(
                m.CalibrationRow.created_at.desc(), m.CalibrationRow.id.desc()).limit(1)).first()
            return None if row is None else m.calibration_record(row)

    # --- repeatability --------------------------------------------------------------------------
    def save_repeatability(self, study: RepeatabilityStudy) -> int:
        if not isinstance(study, RepeatabilityStudy):
            raise TypeError(f"study must be a RepeatabilityStudy, got {type(study).__name__}")
        with self._session(write=True) as s:
            row = m.repeatability_row(study)
            s.add(row)
            s.flush()
            return row.id

    def latest_repeatability(self, model_identity: str) -> RepeatabilityStudy | None:
        with self._session(write=False) as s:
            row = s.scalars(sa.select(m.RepeatabilityStudyRow)
                            .where(m.RepeatabilityStudyRow.model_identity == model_identity)
                            .order_by(m.RepeatabilityStudyRow.created_at.desc(), m.RepeatabilityStudyRow.id.desc())
                            .limit(1)).first()
            return None if row is None else m.repeatability_record(row)
