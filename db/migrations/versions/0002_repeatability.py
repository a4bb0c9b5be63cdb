"""Repeatability: studies per model identity with per-variant figures, and the repeats behind an appraisal.

Adds ``repeatability_studies`` and ``repeatability_variants`` (``cleftscore repeatability``) and
the nullable JSON column ``appraisals.repeats`` (the seeds and primary scores of the K >= 2
normalisations behind an appraisal's mean scores, ``CLEFTSCORE_REPEATS``). Existing rows are
untouched: their ``repeats`` is NULL (one normalisation, the paper's run).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repeatability_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_identity", sa.Text(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("non_clinical", sa.Boolean(), nullable=False),
        sa.Column("photos", sa.Integer(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repeatability_studies"),
    )
    op.create_index("ix_repeatability_studies_model_identity", "repeatability_studies", ["model_identity"])
    op.create_table(
        "repeatability_variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("processing", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("erosion_order", sa.Text(), nullable=False),
        sa.Column("adaptation", sa.Boolean(), nullable=False),
        sa.Column("within_sd", sa.Double(), nullable=False),
        sa.Column("rc", sa.Double(), nullable=False),
        sa.Column("rc_low", sa.Double(), nullable=False),
        sa.Column("rc_high", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["repeatability_studies.id"], ondelete="CASCADE",
                                name="fk_repeatability_variants_study_id_repeatability_studies"),
        sa.PrimaryKeyConstraint("id", name="pk_repeatability_variants"),
        sa.UniqueConstraint("study_id", "method", "processing", "region", "erosion_order", "adaptation",
                            name="uq_repeatability_variants_study_key"),
    )
    op.add_column("appraisals", sa.Column("repeats", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of ``appraisals`` would drop the
    # table its scores cascade from.
    op.drop_column("appraisals", "repeats")
    op.drop_table("repeatability_variants")
    op.drop_table("repeatability_studies")
