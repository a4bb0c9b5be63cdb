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
