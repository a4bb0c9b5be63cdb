"""Repository contract, part 1: intake and the job state machine, on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from db.errors import ConflictError, InvalidTransitionError, LeaseLostError, NotFoundError
from db.records import JobState, NewPhoto
from db.repository import Repository
from db.rules import LEASE_EXPIRED_CODE
from tests.db.support import T0, at, patient, pg_session_url, photo, repo, study  # noqa: F401

CEST = timezone(timedelta(hours=2))


def test_implements_the_protocol(repo):
    assert isinstance(repo, Repository)


def test_intake_files_patient_study_photo_and_queues_a_job(repo):
    acquired = datetime(2024, 2, 29, 14, 30, tzinfo=CEST)
    result = repo.record_received_photo(patient(), study(at=T0), photo(acquired=acquired),
                                        now=at(1))
    assert result.created
    stored = repo.get_photo(result.photo.id)
    assert stored == result.photo
    assert stored.acquisition_datetime == acquired
    assert stored.acquisition_datetime.utcoffset() == timedelta(0)
    assert stored.acquisition_datetime.hour == 12
    assert stored.received_at == T0 and stored.received_at.tzinfo == timezone.utc
    assert stored.attributes == {"Rows": 480, "Columns": 640, "Modality": "XC"}
    assert repo.find_photo("1.2.3.1.1") == stored
    assert repo.find_photo("9.9.9") is None
    st = repo.get_study(stored.study_id)
    assert (st.study_instance_uid, st.study_description, st.study_datetime) == ("1.2.3.1",
                                                                                 "Pre-op", T0)
    pt = repo.get_patient(st.patient_pk)
    assert (pt.patient_id, pt.patient_name, pt.birth_date, pt.sex) == ("P001", "Doe^Jane",
                                                                       "20200101", "F")
    job = repo.get_job(result.job.id)
    assert job == result.job
    assert (job.photo_id, job.state, job.attempts, job.max_attempts) == (stored.id,
                                                                         JobState.QUEUED, 0, 3)
    assert job.created_at == job.next_attempt_at == at(1)


def test_repeated_delivery_is_idempotent(repo):
    first = repo.record_received_photo(patient(), study(), photo())
    again = repo.record_received_photo(patient(), study(), photo(received_at=at(60)))
    assert not again.created
    assert again.photo == first.photo
    assert again.job == first.job
    counts = repo.queue_counts()
    assert counts.jobs[JobState.QUEUED] == 1
    assert sum(counts.jobs.values()) == 1


def test_photos_of_one_study_share_patient_and_study(repo):
    a = repo.record_received_photo(patient(), study(), photo("1.2.3.1.1"))
    b = repo.record_received_photo(patient(name="Changed^Name"), study(description="Other"),
                                   photo("1.2.3.1.2"))
    assert a.photo.study_id == b.photo.study_id
    assert a.job.id != b.job.id
    st = repo.get_study(b.photo.study_id)
    assert st.study_description == "Pre-op"  # first delivery wins
    assert repo.get_patient(st.patient_pk).patient_name == "Doe^Jane"
    assert [s.photo_count for s in repo.patients()] == [2]


def test_study_under_another_patient_is_a_conflict_and_writes_nothing(repo):
    repo.record_received_photo(patient("P001"), study(), photo("1.2.3.1.1"))
    with pytest.raises(ConflictError):
        repo.record_received_photo(patient("P002"), study(), photo("1.2.3.1.2"))
    assert repo.find_photo("1.2.3.1.2") is None
    assert [s.patient.patient_id for s in repo.patients()] == ["P001"]
    assert sum(repo.queue_counts().jobs.values()) == 1


def test_issuer_distinguishes_patients(repo):
    a = repo.record_received_photo(patient("P001", "HOSP_A"), study("1.1"), photo("1.1.1"))
    b = repo.record_received_photo(patient("P001", "HOSP_B"), study("2.2"), photo("2.2.1"))
    pa = repo.get_study(a.photo.study_id).patient_pk
    pb = repo.get_study(b.photo.study_id).patient_pk
    assert pa != pb
    assert [(s.patient.patient_id, s.patient.issuer_of_patient_id) for s in repo.patients()] == [
        ("P001", "HOSP_A"), ("P001", "HOSP_B")]


def test_naive_datetimes_are_refused(repo):
    with pytest.raises(ValueError, match="received_at"):
        NewPhoto(sop_instance_uid="1.2", sop_class_uid="1.2", series_instance_uid="1.2",
                 file_path="/x", sha256="0" * 64, received_at=datetime(2024, 1, 1),
                 calling_ae="CAM")
    repo.record_received_photo(patient(), study(), photo())
    with pytest.raises(ValueError, match="now"):
        repo.claim_job("w1", 30, now=datetime(2024, 3, 1, 9, 0))
    assert repo.queue_counts().jobs[JobState.QUEUED] == 1


def test_unknown_ids_raise_not_found(repo):
    for call in (lambda: repo.get_photo(99), lambda: repo.get_job(99),
                 lambda: repo.get_study(99), lambda: repo.get_patient(99),
                 lambda: repo.enqueue_job(99, now=T0),
                 lambda: repo.complete_job(99, "w1", now=T0)):
        with pytest.raises(NotFoundError):
            call()


def test_claim_takes_the_oldest_due_job_once(repo):
    first = repo.record_received_photo(patient(), study(), photo("1.1"), now=at(0)).job
    second = repo.record_received_photo(patient(), study(), photo("1.2"), now=at(5)).job
    assert repo.claim_job("w1", 30, now=at(-1)) is None  # nothing is due yet
    claimed = repo.claim_job("w1", 30, now=at(10))
    assert claimed.id == first.id
    assert (claimed.state, claimed.lease_owner, claimed.attempts) == (JobState.RUNNING, "w1", 1)
    assert claimed.lease_expires_at == at(40)
    assert repo.claim_job("w2", 30, now=at(11)).id == second.id
    assert repo.claim_job("w3", 30, now=at(12)) is None


def test_heartbeat_complete_and_invalid_transitions(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    repo.claim_job("w1", 30, now=at(0))
    beat = repo.heartbeat(job.id, "w1", 60, now=at(20))
    assert beat.lease_expires_at == at(80)
    assert repo.claim_job("w2", 30, now=at(70)) is None  # the heartbeat kept the lease
    with pytest.raises(LeaseLostError):
        repo.heartbeat(job.id, "w2", 60, now=at(21))
    with pytest.raises(LeaseLostError):
        repo.complete_job(job.id, "w2", now=at(21))
    done = repo.complete_job(job.id, "w1", now=at(30))
    assert (done.state, done.finished_at, done.lease_owner) == (JobState.SUCCEEDED, at(30), None)
    with pytest.raises(InvalidTransitionError):
        repo.complete_job(job.id, "w1", now=at(31))
    with pytest.raises(InvalidTransitionError):
        repo.fail_job(job.id, "w1", error_code="x", message="m", retryable=True, now=at(31))
    with pytest.raises(InvalidTransitionError):
        repo.heartbeat(job.id, "w1", 30, now=at(31))
    assert repo.get_job(job.id) == done


def test_retryable_failures_back_off_then_fail(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    repo.claim_job("w1", 30, now=at(0))
    first = repo.fail_job(job.id, "w1", error_code="model_error",
                          message="CUDA out of memory.\n  Traceback follows", retryable=True,
                          now=at(5))
    assert (first.state, first.next_attempt_at, first.lease_owner) == (JobState.QUEUED, at(15),
                                                                       None)
    assert first.last_error == "CUDA out of memory. Traceback follows"
    assert repo.claim_job("w1", 30, now=at(14)) is None
    assert repo.claim_job("w1", 30, now=at(15)).attempts == 2
    second = repo.fail_job(job.id, "w1", error_code="model_error", message="again",
                           retryable=True, now=at(20))
    assert second.next_attempt_at == at(35)  # 10 s * 2, capped at 15 s
    repo.claim_job("w1", 30, now=at(35))
    final = repo.fail_job(job.id, "w1", error_code="model_error", message="third time",
                          retryable=True, now=at(40))
    assert (final.state, final.attempts, final.finished_at) == (JobState.FAILED, 3, at(40))
    [failure] = repo.recent_failures()
    assert (failure.record_id, failure.error_code, failure.last_error, failure.attempts,
            failure.failed_at) == (job.id, "model_error", "third time", 3, at(40))


def test_non_retryable_failure_is_final(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    repo.claim_job("w1", 30, now=at(0))
    failed = repo.fail_job(job.id, "w1", error_code="no_face", message="No face was found.",
                           retryable=False, now=at(3))
    assert (failed.state, failed.error_code, failed.attempts) == (JobState.FAILED, "no_face", 1)
    assert repo.claim_job("w1", 30, now=at(1000)) is None


def test_bad_error_arguments_are_refused(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    repo.claim_job("w1", 30, now=at(0))
    with pytest.raises(ValueError):
        repo.fail_job(job.id, "w1", error_code="has space", message="m", retryable=True, now=at(1))
    with pytest.raises(ValueError):
        repo.fail_job(job.id, "w1", error_code="x", message="   ", retryable=True, now=at(1))
    with pytest.raises(ValueError):
        repo.claim_job("", 30, now=at(1))
    with pytest.raises(ValueError):
        repo.claim_job("w1", 0, now=at(1))
    assert repo.get_job(job.id).state is JobState.RUNNING


def test_expired_lease_is_reclaimed_and_the_old_worker_is_fenced_off(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    repo.claim_job("w1", 30, now=at(0))
    assert repo.claim_job("w2", 30, now=at(29)) is None
    taken = repo.claim_job("w2", 30, now=at(30))
    assert (taken.id, taken.lease_owner, taken.attempts) == (job.id, "w2", 2)
    with pytest.raises(LeaseLostError):
        repo.complete_job(job.id, "w1", now=at(31))
    with pytest.raises(LeaseLostError):
        repo.heartbeat(job.id, "w1", 30, now=at(31))
    assert repo.complete_job(job.id, "w2", now=at(32)).state is JobState.SUCCEEDED


def test_job_whose_lease_keeps_expiring_gets_a_report_pass_then_fails(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    for attempt in range(3):
        claimed = repo.claim_job(f"w{attempt}", 10, now=at(100 * attempt))
        assert (claimed.id, claimed.attempts) == (job.id, attempt + 1)
    # the last attempt's worker died: one more lease, beyond max_attempts, to record the failure
    report_pass = repo.claim_job("w8", 10, now=at(300))
    assert (report_pass.id, report_pass.attempts, report_pass.max_attempts) == (job.id, 4, 3)
    assert repo.claim_job("w9", 10, now=at(405)) is None  # that worker died too
    failed = repo.get_job(job.id)
    assert (failed.state, failed.error_code, failed.finished_at) == (JobState.FAILED,
                                                                     LEASE_EXPIRED_CODE, at(405))
    assert failed.lease_owner is None
    with pytest.raises(InvalidTransitionError):
        repo.complete_job(job.id, "w8", now=at(406))


def test_report_pass_records_the_failure_for_good(repo):
    job = repo.record_received_photo(patient(), study(), photo()).job
    for attempt in range(3):
        repo.claim_job(f"w{attempt}", 10, now=at(100 * attempt))
    report_pass = repo.claim_job("w8", 10, now=at(300))
    failed = repo.fail_job(job.id, "w8", error_code="lease_expired", message="The scoring process stopped.",
                           retryable=False, now=at(301))
    assert (failed.state, failed.attempts, failed.error_code) == (JobState.FAILED, report_pass.attempts, "lease_expired")
    assert repo.claim_job("w9", 10, now=at(500)) is None


def test_enqueue_job_rescores_a_stored_photo(repo):
    first = repo.record_received_photo(patient(), study(), photo()).job
    repo.claim_job("w1", 30, now=at(0))
    repo.complete_job(first.id, "w1", now=at(1))
    again = repo.enqueue_job(first.photo_id, now=at(100))
    assert again.id != first.id and again.state is JobState.QUEUED
    assert repo.claim_job("w1", 30, now=at(100)).id == again.id
    # the latest job is what a repeated delivery reports
    assert repo.record_received_photo(patient(), study(), photo()).job.id == again.id
