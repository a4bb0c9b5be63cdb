"""SQLAlchemy 2.0 ORM tables and their conversion to the records in ``db.records``.

Datetimes are stored through :class:`UtcDateTime`: TIMESTAMP WITH TIME ZONE on PostgreSQL,
naive UTC text on SQLite; values always come back timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db import records as r
from db.timeutil import as_utc
from pipeline.vocabulary import ScoreVariant, VariantScore

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out; naive values are refused on the way in."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value, "datetime value")
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _enum(enum_type: type[Enum], name: str) -> sa.Enum:
    """A portable VARCHAR enum storing the member values, with a CHECK constraint."""
    return sa.Enum(enum_type, name=name, native_enum=False, create_constraint=True, length=32,
                   values_callable=lambda members: [m.value for m in members],
                   validate_strings=True)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: sa.JSON(), float: sa.Double()}


class PatientRow(Base):
    __tablename__ = "patients"
    __table_args__ = (sa.UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(sa.Text)
    issuer_of_patient_id: Mapped[str] = mapped_column(sa.Text)
    patient_name: Mapped[str] = mapped_column(sa.Text)
    birth_date: Mapped[str] = mapped_column(sa.Text)
    sex: Mapped[str] = mapped_column(sa.Text)


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(sa.String(64), unique=True)
    study_date: Mapped[str] = mapped_column(sa.Text)
    study_time: Mapped[str] = mapped_column(sa.Text)
    study_datetime: Mapped[datetime | None]
    study_description: Mapped[str] = mapped_column(sa.Text)
    accession_number: Mapped[str] = mapped_column(sa.Text)


class PhotoRow(Base):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(sa.String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(sa.String(64))
    series_instance_uid: Mapped[str] = mapped_column(sa.String(64))
    file_path: Mapped[str] = mapped_column(sa.Text)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    received_at: Mapped[datetime]
    calling_ae: Mapped[str] = mapped_column(sa.Text)
    acquisition_datetime: Mapped[datetime | None]
    attributes: Mapped[dict[str, Any]]


class _LeasedWork:
    """Columns shared by jobs and transfers (work items with attempts, leases and backoff)."""

    attempts: Mapped[int]
    max_attempts: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(sa.String(64))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    finished_at: Mapped[datetime | None]


class JobRow(_LeasedWork, Base):
    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"), index=True)
    state: Mapped[r.JobState] = mapped_column(_enum(r.JobState, "job_state"))


class AppraisalRow(Base):
    __tablename__ = "appraisals"

    id: Mapped[int] = mapped_column(primary_key=True)
    photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("jobs.id"), unique=True)
    model_name: Mapped[str] = mapped_column(sa.Text)
    model_id_hash: Mapped[str] = mapped_column(sa.Text)
    non_clinical: Mapped[bool]
    status: Mapped[r.AppraisalStatus] = mapped_column(_enum(r.AppraisalStatus, "appraisal_status"))
    failure_reason: Mapped[str] = mapped_column(sa.Text)
    settings: Mapped[dict[str, Any]]
    timings: Mapped[dict[str, Any]]
    pose: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    #: AppraisalRepeats.to_dict() when the scores are means of K >= 2 normalisations (revision 0002).
    repeats: Mapped[dict[str, Any] | None]
    scores: Mapped[list[ScoreRowRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ScoreRowRow.id")


class ScoreRowRow(Base):
    __tablename__ = "scores"
    __table_args__ = (sa.UniqueConstraint("appraisal_id", "method", "processing", "region",
                                          "erosion_order", "adaptation",
                                          name="uq_scores_appraisal_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    appraisal_id: Mapped[int] = mapped_column(sa.ForeignKey("appraisals.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(sa.Text)
    processing: Mapped[str] = mapped_column(sa.Text)
    region: Mapped[str] = mapped_column(sa.Text)
    erosion_order: Mapped[str] = mapped_column(sa.Text)
    adaptation: Mapped[bool]
    score: Mapped[float]


class ResultObjectRow(Base):
    __tablename__ = "result_objects"

    id: Mapped[int] = mapped_column(primary_key=True)
    appraisal_id: Mapped[int] = mapped_column(sa.ForeignKey("appraisals.id"), index=True)
    kind: Mapped[r.ResultKind] = mapped_column(_enum(r.ResultKind, "result_kind"))
    sop_instance_uid: Mapped[str] = mapped_column(sa.String(64), unique=True)
    series_instance_uid: Mapped[str] = mapped_column(sa.String(64))
    file_path: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]


class TransferRow(_LeasedWork, Base):
    __tablename__ = "transfers"
    __table_args__ = (sa.UniqueConstraint("result_object_id", "destination"),
                      sa.Index("ix_transfers_state_next_attempt_at", "state", "next_attempt_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    result_object_id: Mapped[int] = mapped_column(sa.ForeignKey("result_objects.id"))
    destination: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[r.TransferState] = mapped_column(_enum(r.TransferState, "transfer_state"))


class CalibrationRow(Base):
    __tablename__ = "calibrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    slope: Mapped[float]
    intercept: Mapped[float]
    slope_se: Mapped[float]
    intercept_se: Mapped[float]
    residual_sd: Mapped[float]
    n: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(index=True)
    provenance: Mapped[dict[str, Any]]


class RepeatabilityStudyRow(Base):
    __tablename__ = "repeatability_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_identity: Mapped[str] = mapped_column(sa.Text, index=True)
    model_name: Mapped[str] = mapped_column(sa.Text)
    non_clinical: Mapped[bool]
    photos: Mapped[int]
    repeats: Mapped[int]
    confidence: Mapped[float]
    created_at: Mapped[datetime]
    provenance: Mapped[dict[str, Any]]
    variants: Mapped[list[RepeatabilityVariantRow]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="RepeatabilityVariantRow.id")


class RepeatabilityVariantRow(Base):
    __tablename__ = "repeatability_variants"
    __table_args__ = (sa.UniqueConstraint("study_id", "method", "processing", "region", "erosion_order",
                                          "adaptation", name="uq_repeatability_variants_study_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey("repeatability_studies.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(sa.Text)
    processing: Mapped[str] = mapped_column(sa.Text)
    region: Mapped[str] = mapped_column(sa.Text)
    erosion_order: Mapped[str] = mapped_column(sa.Text)
    adaptation: Mapped[bool]
    within_sd: Mapped[float]
    rc: Mapped[float]
    rc_low: Mapped[float]
    rc_high: Mapped[float]


# --- rows to records ----------------------------------------------------------------------------

_WORK_FIELDS = ("id", "state", "attempts", "max_attempts", "created_at", "updated_at",
                "next_attempt_at", "lease_owner", "lease_expires_at", "error_code", "last_error",
                "finished_at")


def _fields(row: Base, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def patient_record(row: PatientRow) -> r.Patient:
    return r.Patient(**_fields(row, ("id", "patient_id", "issuer_of_patient_id", "patient_name",
                                     "birth_date", "sex")))


def study_record(row: StudyRow) -> r.Study:
    return r.Study(**_fields(row, ("id", "patient_pk", "study_instance_uid", "study_date",
                                   "study_time", "study_datetime", "study_description",
                                   "accession_number")))


def photo_record(row: PhotoRow) -> r.Photo:
    return r.Photo(**_fields(row, ("id", "study_id", "sop_instance_uid", "sop_class_uid",
                                   "series_instance_uid", "file_path", "sha256", "received_at",
                                   "calling_ae", "acquisition_datetime", "attributes")))


def job_record(row: JobRow) -> r.Job:
    return r.Job(photo_id=row.photo_id, **_fields(row, _WORK_FIELDS))


def transfer_record(row: TransferRow) -> r.Transfer:
    return r.Transfer(result_object_id=row.result_object_id, destination=row.destination,
                      **_fields(row, _WORK_FIELDS))


def variant_columns(variant: ScoreVariant) -> dict[str, Any]:
    """A score variant's columns (scores, repeatability_variants); no erosion order is stored as ""."""
    return {"method": variant.method.value, "processing": variant.processing.value, "region": variant.region.value,
            "adaptation": variant.adaptation,
            "erosion_order": "" if variant.erosion_order is None else variant.erosion_order.value}


def row_variant(row: ScoreRowRow | RepeatabilityVariantRow) -> ScoreVariant:
    return ScoreVariant(row.method, row.processing, row.region, row.adaptation, row.erosion_order or None)


def score_row(item: VariantScore) -> ScoreRowRow:
    """A score as a row."""
    return ScoreRowRow(**variant_columns(item.variant), score=item.score)


def variant_score(row: ScoreRowRow) -> VariantScore:
    return VariantScore(row_variant(row), row.score)


def appraisal_row(appraisal: r.NewAppraisal) -> AppraisalRow:
    fields = vars(appraisal).copy()
    scores = [score_row(score) for score in fields.pop("scores")]
    repeats = fields.pop("repeats")
    return AppraisalRow(**fields, scores=scores, repeats=None if repeats is None else repeats.to_dict())


def appraisal_record(row: AppraisalRow) -> r.Appraisal:
    scores = tuple(variant_score(s) for s in row.scores)
    repeats = None if row.repeats is None else r.AppraisalRepeats.from_dict(row.repeats)
    return r.Appraisal(scores=scores, repeats=repeats, **_fields(row, (
        "id", "photo_id", "job_id", "model_name", "model_id_hash", "non_clinical", "status",
        "failure_reason", "settings", "timings", "pose", "created_at")))


def result_object_record(row: ResultObjectRow) -> r.ResultObject:
    return r.ResultObject(**_fields(row, ("id", "appraisal_id", "kind", "sop_instance_uid",
                                          "series_instance_uid", "file_path", "created_at")))


_CALIBRATION_COLUMNS = ("slope", "intercept", "slope_se", "intercept_se", "residual_sd", "n", "created_at")


def calibration_row(calibration: r.Calibration) -> CalibrationRow:
    """The row of a calibration: its fields without a column of their own go into ``provenance``."""
    kept = {name: getattr(calibration, name) for name in r.CALIBRATION_PROVENANCE_FIELDS}
    return CalibrationRow(**{name: getattr(calibration, name) for name in _CALIBRATION_COLUMNS},
                          provenance={**calibration.provenance, **kept})


def calibration_record(row: CalibrationRow) -> r.Calibration:
    provenance = dict(row.provenance or {})
    missing = [name for name in r.CALIBRATION_PROVENANCE_FIELDS if name not in provenance]
    if missing:
        raise ValueError(f"calibration {row.id} lacks {missing} in its provenance; fit it again with "
                         "`cleftscore calibrate`")
    kept = {name: provenance.pop(name) for name in r.CALIBRATION_PROVENANCE_FIELDS}
    return r.Calibration(**_fields(row, _CALIBRATION_COLUMNS), **kept, provenance=provenance)


_STUDY_COLUMNS = ("model_identity", "model_name", "non_clinical", "photos", "repeats", "confidence", "created_at",
                  "provenance")
_FIGURES = ("within_sd", "rc", "rc_low", "rc_high")


def repeatability_row(study: r.RepeatabilityStudy) -> RepeatabilityStudyRow:
    variants = [RepeatabilityVariantRow(**variant_columns(v.variant), **{name: getattr(v, name) for name in _FIGURES})
                for v in study.variants]
    return RepeatabilityStudyRow(**{name: getattr(study, name) for name in _STUDY_COLUMNS}, variants=variants)


def repeatability_record(row: RepeatabilityStudyRow) -> r.RepeatabilityStudy:
    variants = tuple(r.VariantRepeatability(row_variant(v), **_fields(v, _FIGURES)) for v in row.variants)
    return r.RepeatabilityStudy(variants=variants, **_fields(row, _STUDY_COLUMNS))
