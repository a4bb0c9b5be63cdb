"""Domain records the repositories take and return: frozen dataclasses and Enums, no SQL.

Conventions: ``id`` is a record's own surrogate key; ``<thing>_id`` refers to another record's
``id`` (except :attr:`Study.patient_pk`, because ``patient_id`` is the DICOM Patient ID).
Every datetime is timezone-aware UTC. JSON-valued fields are normalised on construction
(round-tripped through ``json``) so the in-memory fake returns exactly what a database would;
treat them as read-only.
"""

from __future__ import annotations

import math
import re
import statistics
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
class AppraisalRepeats:
    """The K >= 2 normalisations behind a succeeded appraisal (``CLEFTSCORE_REPEATS``): each one's
    inversion seed and primary score; the appraisal's scores are the means over the repeats."""

    seeds: tuple[int, ...]
    primary_scores: tuple[float, ...]

    def __post_init__(self) -> None:
        set_field(self, "seeds", tuple(self.seeds))
        set_field(self, "primary_scores", tuple(self.primary_scores))
        if len(self.seeds) < 2 or len(self.seeds) != len(self.primary_scores):
            raise ValueError(f"repeats need K >= 2 seeds and one primary score each, got {len(self.seeds)} seeds "
                             f"and {len(self.primary_scores)} scores")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seeds must be non-negative integers, got {seed!r}")
        for score in self.primary_scores:
            require_finite(score, "primary_scores")
        set_field(self, "primary_scores", tuple(float(v) for v in self.primary_scores))

    @property
    def count(self) -> int:
        """K, the number of repeats."""
        return len(self.seeds)

    @property
    def primary_mean(self) -> float:
        return statistics.fmean(self.primary_scores)

    @property
    def primary_sd(self) -> float:
        """Sample standard deviation of the K primary scores (K − 1 denominator)."""
        return statistics.stdev(self.primary_scores)

    def to_dict(self) -> JsonObject:
        return {"count": self.count, "seeds": list(self.seeds), "primary_scores": list(self.primary_scores)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> AppraisalRepeats:
        return cls(tuple(record["seeds"]), tuple(record["primary_scores"]))


@dataclass(frozen=True)
class NewAppraisal:
    """The outcome of scoring one photo with one model; failed ones carry a reason and no scores.

    ``scores``: one :class:`pipeline.vocabulary.VariantScore` per grid cell computed.
    ``repeats``: present when the scores are means of K >= 2 normalisations; then the primary
    score is the mean of ``repeats.primary_scores``.
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
    repeats: AppraisalRepeats | None = None

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
        if self.repeats is not None:
            if not isinstance(self.repeats, AppraisalRepeats):
                raise TypeError(f"repeats must be AppraisalRepeats, got {type(self.repeats).__name__}")
            primary = self.primary_score
            if primary is None or not math.isclose(self.repeats.primary_mean, primary, rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"the primary score {primary!r} is not the mean of the repeats' primary scores "
                                 f"{list(self.repeats.primary_scores)}")

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


# --- repeatability ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantRepeatability:
    """One score variant's repeatability in a study: the pooled within-photo standard deviation
    and the repeatability coefficient RC = 1.96·√2·SD with its confidence interval
    (:mod:`service.research.repeatability`)."""

    variant: ScoreVariant
    within_sd: float
    rc: float
    rc_low: float
    rc_high: float

    def __post_init__(self) -> None:
        if not isinstance(self.variant, ScoreVariant):
            raise TypeError(f"variant must be a ScoreVariant, got {type(self.variant).__name__}")
        for name in ("within_sd", "rc", "rc_low", "rc_high"):
            require_finite(getattr(self, name), name)
            set_field(self, name, float(getattr(self, name)))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.rc_low <= self.rc <= self.rc_high:
            raise ValueError(f"the interval [{self.rc_low!r}, {self.rc_high!r}] must contain rc {self.rc!r}")


@dataclass(frozen=True)
class RepeatabilityStudy:
    """How far one photo's scores spread when it is appraised again with other seeds, for one model.

    ``photos`` (n) photos were each appraised ``repeats`` (K >= 2) times with one normalisation
    each; every variant's pooled within-photo SD has n(K − 1) degrees of freedom and its RC
    interval the level ``confidence``. Scores compare only within one model identity, so a study
    applies to that model's results only. ``provenance``: the photos' SHA-256 hashes, the seeds,
    the appraisal settings, the tool version. Made by :mod:`service.research.repeatability`.
    """

    model_identity: str
    model_name: str
    non_clinical: bool
    photos: int
    repeats: int
    confidence: float
    variants: tuple[VariantRepeatability, ...]
    created_at: datetime
    provenance: JsonObject = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_text(self.model_identity, "model_identity")
        require_text(self.model_name, "model_name")
        if not isinstance(self.non_clinical, bool):
            raise TypeError(f"non_clinical must be a bool, got {type(self.non_clinical).__name__}")
        for name, least in (("photos", 1), ("repeats", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        require_finite(self.confidence, "confidence")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence!r}")
        set_field(self, "variants", tuple(self.variants))
        if not self.variants or not all(isinstance(v, VariantRepeatability) for v in self.variants):
            raise ValueError("variants must be a non-empty sequence of VariantRepeatability records")
        keys = [v.variant for v in self.variants]
        if len(set(keys)) != len(keys):
            raise ValueError("variants contain the same score variant twice")
        set_field(self, "created_at", as_utc(self.created_at, "created_at"))
        set_field(self, "provenance", json_object(self.provenance, "provenance"))

    @property
    def degrees_of_freedom(self) -> int:
        """n(K − 1), the degrees of freedom of the pooled within-photo variance."""
        return self.photos * (self.repeats - 1)

    def for_variant(self, variant: ScoreVariant) -> VariantRepeatability | None:
        """The variant's figures, or None when the study did not score it."""
        return next((v for v in self.variants if v.variant == variant), None)


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
