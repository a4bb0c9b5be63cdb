"""Domain records the repositories take and return: frozen dataclasses and Enums, no SQL.

Conventions: ``id`` is a record's own surrogate key; ``<thing>_id`` refers to another record's
``id`` (except :attr:`Study.patient_pk`, because ``patient_id`` is the DICOM Patient ID).
Every datetime is timezone-aware UTC. JSON-valued fields are normalised on construction
(round-tripped through ``json``) so the in-memory fake returns exactly what a database would;
treat them as read-only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from db.checks import json_object, require_finite, require_text, require_uid, set_field
from db.timeutil import as_utc, as_utc_or_none
from pipeline.vocabulary import PRIMARY_VARIANT, ScoreVariant, VariantScore, find_score

JsonObject = dict[str, Any]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TransferState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"


class ResultKind(StrEnum):
    SECONDARY_CAPTURE = "secondary_capture"
    ENCAPSULATED_PDF = "encapsulated_pdf"
    STRUCTURED_REPORT = "structured_report"


class AppraisalStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class FailureKind(StrEnum):
    JOB = "job"
    TRANSFER = "transfer"


# --- intake -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPatient:
    """Patient module attributes as received (PHI: store, never log)."""

    patient_id: str
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""  # DICOM DA as received, e.g. "20190314"
    sex: str = ""

    def __post_init__(self) -> None:
        require_text(self.patient_id, "patient_id")


@dataclass(frozen=True)
class Patient(NewPatient):
    id: int = field(kw_only=True)


@dataclass(frozen=True)
class NewStudy:
    """Study attributes as received; ``study_datetime`` is derived by the caller (or None)."""

    study_instance_uid: str
    study_date: str = ""  # DICOM DA as received
    study_time: str = ""  # DICOM TM as received
    study_datetime: datetime | None = None
    study_description: str = ""
    accession_number: str = ""

    def __post_init__(self) -> None:
        require_uid(self.study_instance_uid, "study_instance_uid")
        set_field(self, "study_datetime", as_utc_or_none(self.study_datetime, "study_datetime"))


@dataclass(frozen=True)
class Study(NewStudy):
    id: int = field(kw_only=True)
    patient_pk: int = field(kw_only=True)


@dataclass(frozen=True)
class NewPhoto:
    """One received photo: where its file is and what identifies it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    file_path: str
    sha256: str  # lower-case hex of the stored file
    received_at: datetime
    calling_ae: str
    acquisition_datetime: datetime | None = None
    attributes: JsonObject = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sop_instance_uid", "sop_class_uid", "series_instance_uid"):
            require_uid(getattr(self, name), name)
        require_text(self.file_path, "file_path")
        require_text(self.calling_ae, "calling_ae")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ValueError(f"sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        set_field(self, "received_at", as_utc(self.received_at, "received_at"))
        set_field(self, "acquisition_datetime",
                  as_utc_or_none(self.acquisition_datetime, "acquisition_datetime"))
        set_field(self, "attributes", json_object(self.attributes, "attributes"))


@dataclass(frozen=True)
class Photo(NewPhoto):
    id: int = field(kw_only=True)
    study_id: int = field(kw_only=True)


@dataclass(frozen=True)
class Job:
    """A unit of scoring work for one photo (see the state machine in ``db.rules``)."""

    id: int
    photo_id: int
    state: JobState
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    error_code: str | None = None
    last_error: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class IntakeResult:
    """What ``record_received_photo`` did: ``created`` is False for a repeated SOP Instance UID."""

    photo: Photo
    job: Job
    created: bool


# --- appraisal ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewAppraisal:
    """The outcome of scoring one photo with one model; failed ones carry a reason and no scores.

    ``scores``: one :class:`pipeline.vocabulary.VariantScore` per grid cell computed.
    """

    photo_id: int
    job_id: int | None
    model_name: str
    model_id_hash: str
    non_clinical: bool
    status: AppraisalStatus
    created_at: datetime
    failure_reason: str = ""
    settings: JsonObject = field(default_factory=dict)
    timings: JsonObject = field(default_factory=dict)
    pose: JsonObject | None = None
    scores: tuple[VariantScore, ...] = ()

    def __post_init__(self) -> None:
        require_text(self.model_name, "model_name")
        require_text(self.model_id_hash, "model_id_hash")
        set_field(self, "status", AppraisalStatus(self.status))
        set_field(self, "created_at", as_utc(self.created_at, "created_at"))
        set_field(self, "scores", tuple(self.scores))
        for item in self.scores:
            if not isinstance(item, VariantScore):
                raise TypeError(f"scores must hold VariantScore records, got {type(item).__name__}")
        if self.status is AppraisalStatus.FAILED:
            require_text(self.failure_reason, "failure_reason of a failed appraisal")
            if self.scores:
                raise ValueError("a failed appraisal carries no scores")
        elif self.failure_reason:
            raise ValueError("a succeeded appraisal has no failure_reason")
        variants = [item.variant for item in self.scores]
        if len(set(variants)) != len(variants):
            raise ValueError("scores contain the same variant twice")
        for name in ("settings", "timings", "pose"):
            set_field(self, name, json_object(getattr(self, name), name))

    def score(self, variant: ScoreVariant) -> float | None:
        """The score of ``variant``, or None when it was not computed."""
        return find_score(self.scores, variant)

    @property
    def primary_score(self) -> float | None:
        """The score of :data:`pipeline.vocabulary.PRIMARY_VARIANT`, if it was computed."""
        return self.score(PRIMARY_VARIANT)


@dataclass(frozen=True)
class Appraisal(NewAppraisal):
    id: int = field(kw_only=True)


# --- results and transfers ----------------------------------------------------------------------


@dataclass(frozen=True)
class NewResultObject:
    """A DICOM object we built from an appraisal and stored at ``file_path``."""

    appraisal_id: int
    kind: ResultKind
    sop_instance_uid: str
    series_instance_uid: str
    file_path: str
    created_at: datetime

    def __post_init__(self) -> None:
        set_field(self, "kind", ResultKind(self.kind))
        for name in ("sop_instance_uid", "series_instance_uid"):
            require_uid(getattr(self, name), name)
        require_text(self.file_path, "file_path")
        set_field(self, "created_at", as_utc(self.created_at, "created_at"))


@dataclass(frozen=True)
class ResultObject(NewResultObject):
    id: int = field(kw_only=True)


@dataclass(frozen=True)
class Transfer:
    """Delivery of one result object to one destination ("AE@host:port")."""

    id: int
    result_object_id: int
    destination: str
    state: TransferState
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    error_code: str | None = None
    last_error: str | None = None
    finished_at: datetime | None = None


# --- calibration --------------------------------------------------------------------------------


#: Calibration fields kept in the ``provenance`` JSON column of the ``calibrations`` table.
CALIBRATION_PROVENANCE_FIELDS = ("model_identity", "source", "score_mean", "score_sxx", "pearson_r")


@dataclass(frozen=True)
class Calibration:
    """Linear map from the primary score S to the 1–7 human rating: rating ≈ intercept + slope·S.

    An ordinary least-squares fit on ``n`` photos rated by clinicians (mean rating per photo)
    and scored with one model (``model_identity``): scores compare only within one model, so
    a calibration applies to that model's results only. ``slope_se``/``intercept_se`` are the
    standard errors of the coefficients, ``residual_sd`` the residual standard deviation
    (n − 2 degrees of freedom), ``score_mean`` and ``score_sxx`` the mean of the rated scores and
    Σ (S − score_mean)²: with them :func:`service.research.calibration.calibrated_rating` gives a
    new photo's rating and its prediction interval. ``source`` names the ratings file;
    ``provenance`` keeps anything else (the file's hash, the rated rows). Made by
    :func:`service.research.calibration.fit_calibration`; stored as it is by the repositories.
    """

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    residual_sd: float
    n: int
    score_mean: float
    score_sxx: float
    pearson_r: float
    model_identity: str
    source: str
    created_at: datetime
    provenance: JsonObject = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("slope", "intercept", "slope_se", "intercept_se", "residual_sd", "score_mean", "score_sxx",
                     "pearson_r"):
            require_finite(getattr(self, name), name)
            set_field(self, name, float(getattr(self, name)))
        for name in ("slope_se", "intercept_se", "residual_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.slope == 0:
            raise ValueError("slope must not be 0: a flat line maps every score to one rating")
        if self.score_sxx <= 0:
            raise ValueError(f"score_sxx must be > 0 (the rated scores must differ), got {self.score_sxx!r}")
        if not -1.0 <= self.pearson_r <= 1.0:
            raise ValueError(f"pearson_r must lie in [-1, 1], got {self.pearson_r!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 3:
            raise ValueError(f"n must be an integer >= 3 (the interval has n - 2 degrees of freedom), got {self.n!r}")
        require_text(self.model_identity, "model_identity")
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a str, got {type(self.source).__name__}")
        set_field(self, "created_at", as_utc(self.created_at, "created_at"))
        set_field(self, "provenance", json_object(self.provenance, "provenance"))
        reserved = sorted(set(self.provenance) & set(CALIBRATION_PROVENANCE_FIELDS))
        if reserved:
            raise ValueError(f"provenance must not repeat the calibration's own fields {reserved}")

    def rating(self, score: float) -> float:
        """The calibrated rating intercept + slope·score (no interval; see calibrated_rating)."""
        return self.intercept + self.slope * score


# --- query results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueCounts:
    """Number of jobs and transfers in each state (every state present, zeros included)."""

    jobs: Mapping[JobState, int]
    transfers: Mapping[TransferState, int]


@dataclass(frozen=True)
class FailureRecord:
    """A job or transfer that ended FAILED."""

    kind: FailureKind
    record_id: int
    error_code: str
    last_error: str
    attempts: int
    failed_at: datetime
    destination: str = ""  # transfers only


@dataclass(frozen=True)
class TimelineEntry:
    """One succeeded appraisal in a patient's timeline; ``at`` is the time it is ordered by."""

    at: datetime | None
    appraisal: Appraisal
    photo: Photo
    study: Study


@dataclass(frozen=True)
class PatientSummary:
    patient: Patient
    study_count: int
    photo_count: int
    succeeded_appraisal_count: int
    last_received_at: datetime | None
