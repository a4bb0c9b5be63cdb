"""The persistence interface the service uses, implemented by ``db.sql.SqlRepository`` and
``db.memory.InMemoryRepository``.

Every ``now`` is a timezone-aware datetime (converted to UTC; naive ones raise ValueError);
``None`` means the repository's clock (``db.timeutil.utc_now`` unless documented otherwise).
Look-ups by surrogate id raise ``db.errors.NotFoundError``; look-ups by natural key return None.
State-machine violations raise ``InvalidTransitionError``; acting on a job or transfer whose
lease the caller does not hold raises ``LeaseLostError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from db.records import (
    Appraisal,
    Calibration,
    FailureRecord,
    IntakeResult,
    Job,
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
)


@runtime_checkable
class Repository(Protocol):
    # --- intake ---------------------------------------------------------------------------------
    def record_received_photo(self, patient: NewPatient, study: NewStudy, photo: NewPhoto, *,
                              now: datetime | None = None) -> IntakeResult:
        """File the photo (creating its patient and study if new) and queue a job, atomically.

        Idempotent on the SOP Instance UID: a repeat returns the stored photo and its latest job
        with ``created=False`` and changes nothing. Stored patient and study attributes are never
        overwritten by later deliveries. Raises ConflictError when the study UID is already
        filed under a different patient. ``now`` (default: ``photo.received_at``) stamps the job.
        """
        ...

    def get_patient(self, patient_pk: int) -> Patient: ...
    def get_study(self, study_id: int) -> Study: ...
    def get_photo(self, photo_id: int) -> Photo: ...
    def find_photo(self, sop_instance_uid: str) -> Photo | None: ...

    # --- jobs -----------------------------------------------------------------------------------
    def enqueue_job(self, photo_id: int, *, now: datetime | None = None) -> Job:
        """Queue another scoring job for a stored photo (e.g. to re-score with a new model)."""
        ...

    def get_job(self, job_id: int) -> Job: ...

    def claim_job(self, worker_id: str, lease_seconds: float, *,
                  now: datetime | None = None) -> Job | None:
        """Lease the oldest due job: QUEUED with next_attempt_at <= now, or RUNNING with an
        expired lease (its worker died). A job whose last attempt's lease expired is leased
        once more with ``attempts > max_attempts``: the worker must then only record the
        failure and file its report. If that pass's lease expires too, the job is marked
        FAILED ("lease_expired"). Never hands one job to two workers."""
        ...

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float, *,
                  now: datetime | None = None) -> Job:
        """Extend the caller's lease to now + lease_seconds."""
        ...

    def complete_job(self, job_id: int, worker_id: str, *, now: datetime | None = None) -> Job: ...

    def fail_job(self, job_id: int, worker_id: str, *, error_code: str, message: str,
                 retryable: bool, now: datetime | None = None) -> Job:
        """Back to QUEUED after a backoff if ``retryable`` and attempts remain, else FAILED."""
        ...

    # --- appraisals and results -----------------------------------------------------------------
    def save_appraisal(self, appraisal: NewAppraisal, *, worker_id: str | None = None) -> Appraisal:
        """Store an appraisal with its scores. With ``worker_id``, the appraisal's job must be
        RUNNING under that worker's lease. At most one appraisal per job (ConflictError)."""
        ...

    def get_appraisal(self, appraisal_id: int) -> Appraisal: ...
    def appraisal_for_job(self, job_id: int) -> Appraisal | None: ...
    def appraisals_for_photo(self, photo_id: int) -> list[Appraisal]: ...

    def record_result_object(self, result: NewResultObject, destinations: Sequence[str] = (), *,
                             now: datetime | None = None) -> ResultObject:
        """Store a built result object and queue its transfers to ``destinations`` atomically.
        ``now`` (default: ``result.created_at``) stamps the transfers."""
        ...

    def get_result_object(self, result_object_id: int) -> ResultObject: ...
    def result_objects_for(self, appraisal_id: int) -> list[ResultObject]: ...

    # --- transfers ------------------------------------------------------------------------------
    def enqueue_transfer(self, result_object_id: int, destination: str, *,
                         now: datetime | None = None) -> Transfer:
        """Queue delivery to "AE@host:port"; returns the existing transfer if already queued."""
        ...

    def get_transfer(self, transfer_id: int) -> Transfer: ...
    def transfers_for(self, result_object_id: int) -> list[Transfer]: ...

    def claim_transfer(self, sender_id: str, lease_seconds: float, *,
                       now: datetime | None = None) -> Transfer | None: ...

    def complete_transfer(self, transfer_id: int, sender_id: str, *,
                          now: datetime | None = None) -> Transfer: ...

    def fail_transfer(self, transfer_id: int, sender_id: str, *, error_code: str, message: str,
                      retryable: bool, now: datetime | None = None) -> Transfer: ...

    # --- queries --------------------------------------------------------------------------------
    def queue_counts(self) -> QueueCounts: ...

    def recent_failures(self, limit: int = 20) -> list[FailureRecord]:
        """Jobs and transfers that ended FAILED, newest first."""
        ...

    def timeline(self, patient_id: str, issuer_of_patient_id: str = "") -> list[TimelineEntry]:
        """Every succeeded appraisal of the patient, ordered by photo acquisition time, else
        study time (undated last), then arrival time; empty for an unknown patient."""
        ...

    def patients(self) -> list[PatientSummary]:
        """Every patient with counts, ordered by (patient_id, issuer)."""
        ...

    # --- calibration ----------------------------------------------------------------------------
    def save_calibration(self, calibration: Calibration) -> int:
        """Store a calibration; returns its id."""
        ...

    def latest_calibration(self) -> Calibration | None:
        """The calibration with the latest created_at (ties: the last saved), or None."""
        ...

    # --- repeatability --------------------------------------------------------------------------
    def save_repeatability(self, study: RepeatabilityStudy) -> int:
        """Store a repeatability study (with its per-variant figures); returns its id."""
        ...

    def latest_repeatability(self, model_identity: str) -> RepeatabilityStudy | None:
        """The study of ``model_identity`` with the latest created_at (ties: the last saved), or None."""
        ...

    def close(self) -> None: ...


__all__ = ["Repository"]
