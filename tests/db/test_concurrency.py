"""Concurrent workers and deliveries: no job claimed twice, no duplicate photos or studies.

Each thread gets its own repository (its own engine and connections) on the same database,
as separate worker processes would; the in-memory fake shares one instance across threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from db.memory import InMemoryRepository
from db.models import Base
from db.sql import SqlRepository
from tests.db.support import BACKENDS, T0, at, patient, pg_session_url, photo, study, truncate_all  # noqa: F401

THREADS = 4


@pytest.fixture(params=[*BACKENDS, "sqlite_shared"])
def repo_factory(request: pytest.FixtureRequest, tmp_path) -> Callable[[], object]:
    """Returns a function making one more repository on the same (empty) database.

    "memory" and "sqlite_shared" hand every thread the same instance, as in-process worker
    threads would use it.
    """
    if request.param == "memory":
        shared = InMemoryRepository()
        return lambda: shared
    if request.param == "sqlite_shared":
        shared = SqlRepository.from_url(f"sqlite:///{tmp_path / 'shared.db'}")
        Base.metadata.create_all(shared.engine)
        request.addfinalizer(shared.close)
        return lambda: shared
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        first = SqlRepository.from_url(url)
        Base.metadata.create_all(first.engine)
        first.close()
    else:
        url = request.getfixturevalue("pg_session_url")
        first = SqlRepository.from_url(url)
        truncate_all(first.engine)
        first.close()

    def make() -> SqlRepository:
        made = SqlRepository.from_url(url)
        request.addfinalizer(made.close)
        return made
    return make


def run_threads(target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors


def test_concurrent_workers_never_claim_the_same_job(repo_factory):
    setup = repo_factory()
    job_ids = {setup.record_received_photo(patient(), study(), photo(f"1.{i}")).job.id
               for i in range(40)}
    repos = [repo_factory() for _ in range(THREADS)]
    claims: list[tuple[int, int]] = []

    def worker(index: int) -> None:
        while (job := repos[index].claim_job(f"worker-{index}", 300, now=at(1))) is not None:
            claims.append((index, job.id))

    run_threads(worker)
    per_job = Counter(job_id for _, job_id in claims)
    assert set(per_job) == job_ids
    assert max(per_job.values()) == 1
    assert sum(setup.queue_counts().jobs.values()) == 40


def test_concurrent_duplicate_deliveries_file_one_photo(repo_factory):
    repos = [repo_factory() for _ in range(THREADS)]
    results = []

    def deliver(index: int) -> None:
        results.append(repos[index].record_received_photo(patient(), study(), photo("1.1")))

    run_threads(deliver)
    assert sum(r.created for r in results) == 1
    assert len({r.photo.id for r in results}) == 1
    assert len({r.job.id for r in results}) == 1
    assert sum(repos[0].queue_counts().jobs.values()) == 1


def test_concurrent_photos_of_a_new_study_share_one_patient_and_study(repo_factory):
    repos = [repo_factory() for _ in range(THREADS)]
    results = []

    def deliver(index: int) -> None:
        for k in range(3):
            results.append(repos[index].record_received_photo(
                patient(), study(), photo(f"1.{index}.{k}", received_at=T0)))

    run_threads(deliver)
    assert all(r.created for r in results) and len(results) == THREADS * 3
    assert len({r.photo.study_id for r in results}) == 1
    [summary] = repos[0].patients()
    assert (summary.study_count, summary.photo_count) == (1, THREADS * 3)
