"""Engines, the UTC boundary and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db.engine import create_engine_for
from db.migrate import alembic_config, current_revision, head_revision, is_up_to_date, upgrade
from db.models import Base, PhotoRow
from db.sql import SqlRepository
from tests.db.support import fresh_pg_schema, patient, photo, postgres_base_url, study

TOKYO = timezone(timedelta(hours=9))


def schema_differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def check_migrations(url) -> None:
    engine = create_engine_for(url)
    try:
        assert current_revision(engine) is None
        upgrade(url)
        assert current_revision(url) == head_revision() and is_up_to_date(engine)
        assert table_names(engine) == {t.name for t in Base.metadata.sorted_tables} | {
            "alembic_version"}
        assert schema_differences(engine) == []
        upgrade(engine)  # already at head: a no-op
        with engine.begin() as conn:  # the comparison does notice a missing index
            conn.exec_driver_sql("DROP INDEX ix_jobs_state_next_attempt_at")
        assert [d[0] for d in schema_differences(engine)] == ["add_index"]
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert table_names(engine) == {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_migration_matches_the_models(tmp_path):
    check_migrations(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_migration_matches_the_models():
    with fresh_pg_schema(postgres_base_url()) as url:
        check_migrations(url)


def test_sqlite_engine_settings(tmp_path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'e.db'}", busy_timeout_ms=1234)
    try:
        with engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == 1234
            assert pragma("synchronous") == 2  # FULL
    finally:
        engine.dispose()


def test_engine_refuses_what_it_cannot_serve():
    with pytest.raises(ValueError, match="in-memory"):
        create_engine_for("sqlite://")
    with pytest.raises(ValueError, match="in-memory"):
        create_engine_for("sqlite:///:memory:")
    with pytest.raises(ValueError, match="unsupported"):
        create_engine_for("mysql://u@h/db")
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        create_engine_for("sqlite:////tmp/x.db", busy_timeout_ms=-1)


def test_sqlite_enforces_foreign_keys(tmp_path):
    repo = SqlRepository.from_url(f"sqlite:///{tmp_path / 'fk.db'}")
    Base.metadata.create_all(repo.engine)
    try:
        with pytest.raises(sa.exc.IntegrityError):
            with repo.engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO jobs (photo_id, state, attempts, max_attempts, created_at, "
                    "updated_at, next_attempt_at) VALUES (42, 'queued', 0, 3, '2024-01-01', "
                    "'2024-01-01', '2024-01-01')")
    finally:
        repo.close()


def test_sqlite_stores_naive_utc_and_returns_aware_utc(tmp_path):
    repo = SqlRepository.from_url(f"sqlite:///{tmp_path / 'tz.db'}")
    Base.metadata.create_all(repo.engine)
    try:
        received = datetime(2024, 3, 1, 18, 30, 15, 250000, tzinfo=TOKYO)
        stored = repo.record_received_photo(patient(), study(), photo(received_at=received)).photo
        with repo.engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT received_at FROM photos").scalar()
        assert raw == "2024-03-01 09:30:15.250000"
        assert stored.received_at == received
        assert stored.received_at.tzinfo == timezone.utc and stored.received_at.hour == 9
        assert repo.get_photo(stored.id).received_at == received
        # the column type itself refuses naive values (SQLAlchemy wraps the ValueError)
        with pytest.raises(sa.exc.StatementError, match="timezone-aware"):
            with repo.engine.begin() as conn:
                conn.execute(sa.update(PhotoRow).values(received_at=datetime(2024, 1, 1)))
    finally:
        repo.close()


@pytest.mark.postgres
def test_postgres_returns_utc_whatever_the_session_time_zone():
    received = datetime(2024, 3, 1, 18, 30, 15, 250000, tzinfo=TOKYO)
    with fresh_pg_schema(postgres_base_url(), timezone_name="America/New_York") as url:
        upgrade(url)
        repo = SqlRepository.from_url(url)
        try:
            stored = repo.record_received_photo(patient(), study(),
                                                photo(received_at=received)).photo
            with repo.engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW timezone").scalar() == "America/New_York"
                text = conn.exec_driver_sql("SELECT received_at::text FROM photos").scalar()
            assert text == "2024-03-01 04:30:15.25-05"  # stored as an instant
            loaded = repo.get_photo(stored.id).received_at
            assert loaded == received and loaded.utcoffset() == timedelta(0)
            assert loaded.hour == 9
        finally:
            repo.close()


def check_upgrade_from_0001_keeps_the_data(url) -> None:
    """A database at revision 0001 holding an appraisal with scores and a calibration reaches head
    (0002: repeatability tables, appraisals.repeats) with everything kept, and goes back down again."""
    from db.models import AppraisalRow, ScoreRowRow
    from db.records import RepeatabilityStudy, VariantRepeatability
    from pipeline.vocabulary import PRIMARY_VARIANT
    from tests.db.test_contract_results import calibration

    upgrade(url, "0001")
    repo = SqlRepository.from_url(url)
    try:
        assert current_revision(repo.engine) == "0001"
        assert "repeatability_studies" not in table_names(repo.engine)
        intake = repo.record_received_photo(patient(), study(), photo())
        created = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
        with repo.engine.begin() as conn:  # the 0001 columns only: there is no appraisals.repeats yet
            appraisal_id = conn.execute(sa.insert(AppraisalRow.__table__).values(
                photo_id=intake.photo.id, job_id=intake.job.id, model_name="ffhq", model_id_hash="sha256:abc",
                non_clinical=False, status="succeeded", failure_reason="", settings={"inversion": {"steps": 2000}},
                timings={}, pose=None, created_at=created)).inserted_primary_key[0]
            conn.execute(sa.insert(ScoreRowRow.__table__).values(
                appraisal_id=appraisal_id, method="pse", processing="ycbcr+erosion", region="mouth_nose",
                erosion_order="diff_then_erode", adaptation=True, score=-0.75))
        repo.save_calibration(calibration(1.0, created))

        upgrade(url)
        assert current_revision(repo.engine) == head_revision()
        assert schema_differences(repo.engine) == []
        kept = repo.get_appraisal(appraisal_id)
        assert kept.primary_score == -0.75 and kept.repeats is None and kept.settings == {"inversion": {"steps": 2000}}
        assert [entry.appraisal.id for entry in repo.timeline("P001")] == [appraisal_id]
        assert repo.latest_calibration() == calibration(1.0, created)
        study_record = RepeatabilityStudy(
            model_identity="sha256:abc", model_name="ffhq", non_clinical=False, photos=4, repeats=3, confidence=0.95,
            variants=(VariantRepeatability(PRIMARY_VARIANT, 0.05, 0.139, 0.1, 0.22),), created_at=created,
            provenance={"photo_sha256": ["a" * 64]})
        repo.save_repeatability(study_record)
        assert repo.latest_repeatability("sha256:abc") == study_record

        with repo.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert "repeatability_studies" not in table_names(repo.engine)
        with repo.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(ScoreRowRow.__table__)).scalar() == 1
            assert "repeats" not in {c["name"] for c in sa.inspect(conn).get_columns("appraisals")}
    finally:
        repo.close()


def test_sqlite_upgrade_from_0001_keeps_the_data(tmp_path):
    check_upgrade_from_0001_keeps_the_data(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_from_0001_keeps_the_data():
    with fresh_pg_schema(postgres_base_url()) as url:
        check_upgrade_from_0001_keeps_the_data(url)
