"""Shared helpers and fixtures for the db tests (no tests here).

PostgreSQL tests run in a schema created for this test session and dropped afterwards, named
by CLEFTSCORE_TEST_POSTGRES_URL; without it (or with the server down) they are skipped.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from db.memory import InMemoryRepository
from db.models import Base
from db.records import NewPatient, NewPhoto, NewStudy
from db.rules import RetryPolicy
from db.sql import SqlRepository

PG_ENV = "CLEFTSCORE_TEST_POSTGRES_URL"
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
JOB_RETRY = RetryPolicy(max_attempts=3, base_delay_s=10.0, max_delay_s=15.0)
TRANSFER_RETRY = RetryPolicy(max_attempts=4, base_delay_s=30.0, max_delay_s=100.0, jitter=0.5)
TRANSFER_RNG_SEED = 1234
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_base_url() -> sa.URL:
    """The configured PostgreSQL URL, or skip the test saying why."""
    text = os.environ.get(PG_ENV)
    if not text:
        pytest.skip(f"{PG_ENV} is not set")
    url = sa.make_url(text)
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {url.render_as_string(hide_password=True)} is unreachable: "
                    f"{str(exc).splitlines()[0]}")
    finally:
        engine.dispose()
    return url


@contextmanager
def fresh_pg_schema(base_url: sa.URL, *, timezone_name: str | None = None) -> Iterator[sa.URL]:
    """A URL whose connections work in a new, empty schema, dropped on exit."""
    schema = f"cleftscore_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    options = f"-csearch_path={schema}"
    if timezone_name:
        options += f" -ctimezone={timezone_name}"
    try:
        yield base_url.update_query_dict({"options": options})
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[sa.URL]:
    """One migrated schema for the whole test session (tables truncated per test)."""
    from db.migrate import upgrade

    with fresh_pg_schema(postgres_base_url()) as url:
        upgrade(url)
        yield url


def truncate_all(engine: sa.Engine) -> None:
    """Empty every table (DELETE: far quicker than TRUNCATE on tables this small)."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def make_repo(backend: str, tmp_path, request: pytest.FixtureRequest, **kwargs):
    """A repository of the given backend on an empty database, closed at test teardown."""
    kwargs.setdefault("job_retry", JOB_RETRY)
    kwargs.setdefault("transfer_retry", TRANSFER_RETRY)
    kwargs.setdefault("rng", random.Random(TRANSFER_RNG_SEED))
    if backend == "memory":
        return InMemoryRepository(**kwargs)
    if backend == "sqlite":
        repo = SqlRepository.from_url(f"sqlite:///{tmp_path / 'cleftscore.db'}", **kwargs)
        Base.metadata.create_all(repo.engine)
    elif backend == "postgres":
        repo = SqlRepository.from_url(request.getfixturevalue("pg_session_url"), **kwargs)
        truncate_all(repo.engine)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    request.addfinalizer(repo.close)
    return repo


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path):
    return make_repo(request.param, tmp_path, request)


def patient(pid: str = "P001", issuer: str = "", name: str = "Doe^Jane") -> NewPatient:
    return NewPatient(patient_id=pid, issuer_of_patient_id=issuer, patient_name=name,
                      birth_date="20200101", sex="F")


def study(uid: str = "1.2.3.1", description: str = "Pre-op", *,
          at: datetime | None = None) -> NewStudy:
    return NewStudy(study_instance_uid=uid, study_date="20240301", study_time="090000",
                    study_datetime=at, study_description=description, accession_number="A1")


def photo(uid: str = "1.2.3.1.1", *, received_at: datetime = T0,
          acquired: datetime | None = None, series: str = "1.2.3.1.100") -> NewPhoto:
    return NewPhoto(sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.4",
                    series_instance_uid=series, file_path=f"/data/in/{uid}.dcm",
                    sha256=hashlib.sha256(uid.encode()).hexdigest(), received_at=received_at,
                    calling_ae="CAMERA", acquisition_datetime=acquired,
                    attributes={"Rows": 480, "Columns": 640, "Modality": "XC"})


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)
