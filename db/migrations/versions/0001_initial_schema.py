"""Initial schema: patients, studies, photos, jobs, appraisals, scores, result objects,
transfers, calibrations.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _utc(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _state(name: str, values: tuple[str, ...]) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _leased_work_columns() -> list[sa.Column]:
    return [
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        _utc("created_at"), _utc("updated_at"), _utc("next_attempt_at"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _utc("lease_expires_at", nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _utc("finished_at", nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("issuer_of_patient_id", sa.Text(), nullable=False),
        sa.Column("patient_name", sa.Text(), nullable=False),
        sa.Column("birth_date", sa.Text(), nullable=False),
        sa.Column("sex", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.UniqueConstraint("patient_id", "issuer_of_patient_id",
                            name="uq_patients_patient_id_issuer_of_patient_id"),
    )
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_date", sa.Text(), nullable=False),
        sa.Column("study_time", sa.Text(), nullable=False),
        _utc("study_datetime", nullable=True),
        sa.Column("study_description", sa.Text(), nullable=False),
        sa.Column("accession_number", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.id"],
                                name="fk_studies_patient_pk_patients"),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.UniqueConstraint("study_instance_uid", name="uq_studies_study_instance_uid"),
    )
    op.create_index("ix_studies_patient_pk", "studies", ["patient_pk"])
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _utc("received_at"),
        sa.Column("calling_ae", sa.Text(), nullable=False),
        _utc("acquisition_datetime", nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_photos_study_id_studies"),
        sa.PrimaryKeyConstraint("id", name="pk_photos"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_photos_sop_instance_uid"),
    )
    op.create_index("ix_photos_study_id", "photos", ["study_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("state", _state("job_state", ("queued", "running", "succeeded", "failed")),
                  nullable=False),
        *_leased_work_columns(),
        sa.ForeignKeyConstraint(["photo_id"], ["photos.id"], name="fk_jobs_photo_id_photos"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_photo_id", "jobs", ["photo_id"])
    op.create_index("ix_jobs_state_next_attempt_at", "jobs", ["state", "next_attempt_at"])
    op.create_table(
        "appraisals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_id_hash", sa.Text(), nullable=False),
        sa.Column("non_clinical", sa.Boolean(), nullable=False),
        sa.Column("status", _state("appraisal_status", ("succeeded", "failed")), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("pose", sa.JSON(), nullable=True),
        _utc("created_at"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_appraisals_job_id_jobs"),
        sa.ForeignKeyConstraint(["photo_id"], ["photos.id"],
                                name="fk_appraisals_photo_id_photos"),
        sa.PrimaryKeyConstraint("id", name="pk_appraisals"),
        sa.UniqueConstraint("job_id", name="uq_appraisals_job_id"),
    )
    op.create_index("ix_appraisals_photo_id", "appraisals", ["photo_id"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appraisal_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("processing", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("erosion_order", sa.Text(), nullable=False),
        sa.Column("adaptation", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["appraisal_id"], ["appraisals.id"], ondelete="CASCADE",
                                name="fk_scores_appraisal_id_appraisals"),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
        sa.UniqueConstraint("appraisal_id", "method", "processing", "region", "erosion_order",
                            "adaptation", name="uq_scores_appraisal_key"),
    )
    op.create_table(
        "result_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appraisal_id", sa.Integer(), nullable=False),
        sa.Column("kind", _state("result_kind", ("secondary_capture", "encapsulated_pdf",
                                                 "structured_report")), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        _utc("created_at"),
        sa.ForeignKeyConstraint(["appraisal_id"], ["appraisals.id"],
                                name="fk_result_objects_appraisal_id_appraisals"),
        sa.PrimaryKeyConstraint("id", name="pk_result_objects"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_result_objects_sop_instance_uid"),
    )
    op.create_index("ix_result_objects_appraisal_id", "result_objects", ["appraisal_id"])
    op.create_table(
        "transfers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_object_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("state", _state("transfer_state", ("pending", "sending", "done", "failed")),
                  nullable=False),
        *_leased_work_columns(),
        sa.ForeignKeyConstraint(["result_object_id"], ["result_objects.id"],
                                name="fk_transfers_result_object_id_result_objects"),
        sa.PrimaryKeyConstraint("id", name="pk_transfers"),
        sa.UniqueConstraint("result_object_id", "destination",
                            name="uq_transfers_result_object_id_destination"),
    )
    op.create_index("ix_transfers_state_next_attempt_at", "transfers",
                    ["state", "next_attempt_at"])
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slope", sa.Double(), nullable=False),
        sa.Column("intercept", sa.Double(), nullable=False),
        sa.Column("slope_se", sa.Double(), nullable=False),
        sa.Column("intercept_se", sa.Double(), nullable=False),
        sa.Column("residual_sd", sa.Double(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        _utc("created_at"),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calibrations"),
    )
    op.create_index("ix_calibrations_created_at", "calibrations", ["created_at"])


def downgrade() -> None:
    for table in ("calibrations", "transfers", "result_objects", "scores", "appraisals", "jobs",
                  "photos", "studies", "patients"):
        op.drop_table(table)
