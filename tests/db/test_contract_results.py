"""Repository contract, part 2: appraisals, result objects, transfers, queries, calibration."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from db.errors import ConflictError, LeaseLostError, NotFoundError
from db.records import (
    AppraisalStatus,
    Calibration,
    FailureKind,
    JobState,
    NewAppraisal,
    NewResultObject,
    ResultKind,
    TransferState,
)
from pipeline.vocabulary import PRIMARY_VARIANT, ScoreVariant, VariantScore
from tests.db.support import T0, TRANSFER_RNG_SEED, at, patient, pg_session_url, photo, repo, study  # noqa: F401

PACS = "PACS@pacs.example.org:104"
VIEWER = "VIEWER@10.0.0.7:11112"


def grid_scores(offset: float = 0.0) -> tuple[VariantScore, ...]:
    rows = [("pse", "ycbcr+erosion", "mouth_nose", True, "erode_then_diff", 5.0 + offset),
            ("pse", "ycbcr+erosion", "mouth_nose", True, "diff_then_erode", 5.25 + offset),
            ("pse", "ycbcr+erosion", "mouth_nose", False, "diff_then_erode", 4.5 + offset),
            ("lpips", "base", "face_without_eyes", True, None, 3.125 + offset)]
    return tuple(VariantScore(ScoreVariant(*row[:5]), row[5]) for row in rows)


def appraisal(photo_id: int, job_id: int | None, created: datetime = T0, *,
              failed: bool = False, offset: float = 0.0) -> NewAppraisal:
    common = dict(photo_id=photo_id, job_id=job_id, model_name="ffhq-config-f",
                  model_id_hash="sha256:abc", non_clinical=True, created_at=created,
                  settings={"iterations": 50, "erosion": "after", "sizes": (3, 3)},
                  timings={"total_s": 12.5}, pose={"yaw": 2.0})
    if failed:
        return NewAppraisal(status=AppraisalStatus.FAILED, failure_reason="No face was found.",
                            **common)
    return NewAppraisal(status=AppraisalStatus.SUCCEEDED, scores=grid_scores(offset), **common)


def scored(repo, sop: str, *, pid: str = "P001", study_uid: str = "1.2.3.1",
           description: str = "Pre-op", study_at: datetime | None = None,
           acquired: datetime | None = None, received: datetime = T0, failed: bool = False,
           offset: float = 0.0):
    """Receive, claim, appraise and complete one photo; return the appraisal."""
    intake = repo.record_received_photo(patient(pid), study(study_uid, description, at=study_at),
                                        photo(sop, acquired=acquired, received_at=received))
    job = repo.claim_job("w1", 60, now=received)
    assert job.id == intake.job.id
    saved = repo.save_appraisal(appraisal(intake.photo.id, job.id, received, failed=failed,
                                          offset=offset), worker_id="w1")
    repo.complete_job(job.id, "w1", now=received)
    return saved


def test_appraisal_round_trip(repo):
    saved = scored(repo, "1.1")
    loaded = repo.get_appraisal(saved.id)
    assert loaded == saved
    assert loaded.scores == grid_scores()
    assert loaded.settings == {"iterations": 50, "erosion": "after", "sizes": [3, 3]}
    assert loaded.pose == {"yaw": 2.0} and loaded.non_clinical is True
    assert loaded.primary_score == 5.25 == loaded.score(PRIMARY_VARIANT)
    assert loaded.scores[3].variant.erosion_order is None
    assert loaded.score(ScoreVariant("lpips", "base", "face_without_eyes", True)) == 3.125
    assert loaded.score(ScoreVariant("pse", "ycbcr+erosion", "mouth_nose", True, "erode_then_diff")) == 5.0
    assert loaded.score(ScoreVariant("ssim", "base", "mouth_nose", True)) is None
    assert repo.appraisal_for_job(saved.job_id) == loaded
    assert repo.appraisals_for_photo(saved.photo_id) == [loaded]
    with pytest.raises(NotFoundError):
        repo.get_appraisal(saved.id + 100)


def test_failed_appraisal_keeps_reason_and_no_scores(repo):
    saved = scored(repo, "1.1", failed=True)
    loaded = repo.get_appraisal(saved.id)
    assert (loaded.status, loaded.failure_reason, loaded.scores) == (
        AppraisalStatus.FAILED, "No face was found.", ())
    assert loaded.primary_score is None


def test_one_appraisal_per_job_and_only_under_the_lease(repo):
    intake = repo.record_received_photo(patient(), study(), photo("1.1"))
    other = repo.record_received_photo(patient(), study(), photo("1.2"))
    job = repo.claim_job("w1", 60, now=T0)
    with pytest.raises(LeaseLostError):
        repo.save_appraisal(appraisal(intake.photo.id, job.id), worker_id="w2")
    with pytest.raises(ConflictError):
        repo.save_appraisal(appraisal(other.photo.id, job.id), worker_id="w1")
    repo.save_appraisal(appraisal(intake.photo.id, job.id), worker_id="w1")
    with pytest.raises(ConflictError):
        repo.save_appraisal(appraisal(intake.photo.id, job.id), worker_id="w1")
    assert len(repo.appraisals_for_photo(intake.photo.id)) == 1
    assert repo.appraisals_for_photo(other.photo.id) == []


def test_result_object_queues_its_transfers_atomically(repo):
    saved = scored(repo, "1.1")
    new = NewResultObject(saved.id, ResultKind.SECONDARY_CAPTURE, "2.25.1", "2.25.100",
                          "/data/out/sc.dcm", at(10))
    with pytest.raises(ValueError, match="destination"):
        repo.record_result_object(new, [PACS, "BAD@host:104\nX@h:1"])
    assert repo.result_objects_for(saved.id) == []
    result = repo.record_result_object(new, [PACS, VIEWER, PACS])
    assert repo.get_result_object(result.id) == result
    assert (result.kind, result.created_at) == (ResultKind.SECONDARY_CAPTURE, at(10))
    transfers = repo.transfers_for(result.id)
    assert [t.destination for t in transfers] == [PACS, VIEWER]
    assert all(t.state is TransferState.PENDING and t.next_attempt_at == at(10)
               for t in transfers)
    assert repo.enqueue_transfer(result.id, PACS, now=at(50)) == transfers[0]
    with pytest.raises(ConflictError):
        repo.record_result_object(new)
    pdf = repo.record_result_object(NewResultObject(saved.id, ResultKind.ENCAPSULATED_PDF,
                                                    "2.25.2", "2.25.200", "/data/out/r.dcm",
                                                    at(11)))
    assert [r.kind for r in repo.result_objects_for(saved.id)] == [
        ResultKind.SECONDARY_CAPTURE, ResultKind.ENCAPSULATED_PDF]
    assert repo.transfers_for(pdf.id) == []
    with pytest.raises(NotFoundError):
        repo.enqueue_transfer(pdf.id + 100, PACS, now=at(12))


def test_transfer_retries_with_deterministic_jittered_backoff(repo):
    saved = scored(repo, "1.1")
    result = repo.record_result_object(
        NewResultObject(saved.id, ResultKind.ENCAPSULATED_PDF, "2.25.1", "2.25.100",
                        "/data/out/r.dcm", at(0)), [PACS])
    expected_rng = random.Random(TRANSFER_RNG_SEED)
    now = at(0)
    for attempt, nominal in enumerate((30.0, 60.0, 100.0), start=1):
        transfer = repo.claim_transfer("sender", 20, now=now)
        assert (transfer.attempts, transfer.state) == (attempt, TransferState.SENDING)
        failed = repo.fail_transfer(transfer.id, "sender", error_code="0xA700",
                                    message="Out of resources.", retryable=True, now=now)
        delay = timedelta(seconds=nominal * (1.0 - 0.5 * expected_rng.random()))
        assert failed.state is TransferState.PENDING
        assert failed.next_attempt_at == now + delay
        assert repo.claim_transfer("sender", 20, now=failed.next_attempt_at
                                   - timedelta(milliseconds=1)) is None
        now = failed.next_attempt_at
    last = repo.claim_transfer("sender", 20, now=now)
    final = repo.fail_transfer(last.id, "sender", error_code="0xA700", message="Still full.",
                               retryable=True, now=now)
    assert (final.state, final.attempts, final.finished_at) == (TransferState.FAILED, 4, now)
    [failure] = repo.recent_failures()
    assert (failure.kind, failure.destination, failure.error_code) == (FailureKind.TRANSFER,
                                                                       PACS, "0xA700")


def test_transfer_success_and_lease_rules(repo):
    saved = scored(repo, "1.1")
    result = repo.record_result_object(
        NewResultObject(saved.id, ResultKind.SECONDARY_CAPTURE, "2.25.1", "2.25.100",
                        "/data/out/sc.dcm", at(0)), [PACS])
    transfer = repo.claim_transfer("s1", 20, now=at(1))
    assert repo.claim_transfer("s2", 20, now=at(2)) is None
    reclaimed = repo.claim_transfer("s2", 20, now=at(21))
    assert (reclaimed.id, reclaimed.lease_owner) == (transfer.id, "s2")
    with pytest.raises(LeaseLostError):
        repo.complete_transfer(transfer.id, "s1", now=at(22))
    done = repo.complete_transfer(transfer.id, "s2", now=at(23))
    assert (done.state, done.finished_at) == (TransferState.DONE, at(23))
    assert repo.transfers_for(result.id) == [done]


def test_queue_counts_cover_every_state(repo):
    a = repo.record_received_photo(patient(), study(), photo("1.1")).job
    repo.record_received_photo(patient(), study(), photo("1.2"))
    repo.record_received_photo(patient(), study(), photo("1.3"))
    repo.claim_job("w1", 60, now=T0)
    repo.complete_job(a.id, "w1", now=T0)
    repo.claim_job("w1", 60, now=T0)
    counts = repo.queue_counts()
    assert dict(counts.jobs) == {JobState.QUEUED: 1, JobState.RUNNING: 1,
                                 JobState.SUCCEEDED: 1, JobState.FAILED: 0}
    assert dict(counts.transfers) == {state: 0 for state in TransferState}


def test_recent_failures_newest_first_with_limit(repo):
    for i in range(3):
        job = repo.record_received_photo(patient(), study(), photo(f"1.{i}")).job
        repo.claim_job("w1", 60, now=at(i))
        repo.fail_job(job.id, "w1", error_code=f"e{i}", message=f"Failure {i}.", retryable=False,
                      now=at(100 - i * 10))
    assert [f.error_code for f in repo.recent_failures()] == ["e0", "e1", "e2"]
    assert [f.error_code for f in repo.recent_failures(limit=2)] == ["e0", "e1"]
    assert repo.recent_failures(limit=0) == []
    with pytest.raises(ValueError):
        repo.recent_failures(limit=-1)


def test_timeline_orders_by_acquisition_then_study_time(repo):
    jan, mar, jun = (datetime(2023, m, 1, tzinfo=timezone.utc) for m in (1, 3, 6))
    later = scored(repo, "2.1", study_uid="2", description="Post-op", study_at=jun,
                   received=at(10), offset=1.0)
    undated = scored(repo, "3.1", study_uid="3", description="Undated", received=at(1),
                     offset=2.0)
    early = scored(repo, "1.1", study_uid="1", description="Pre-op", study_at=jun,
                   acquired=jan, received=at(20), offset=3.0)
    scored(repo, "1.2", study_uid="1", acquired=mar, received=at(21), failed=True)
    scored(repo, "9.1", pid="OTHER", study_uid="9", acquired=jan)
    entries = repo.timeline("P001")
    assert [e.appraisal.id for e in entries] == [early.id, later.id, undated.id]
    assert [e.at for e in entries] == [jan, jun, None]
    assert [e.study.study_description for e in entries] == ["Pre-op", "Post-op", "Undated"]
    assert [e.appraisal.primary_score for e in entries] == [8.25, 6.25, 7.25]
    assert entries[0].photo.sop_instance_uid == "1.1"
    assert repo.timeline("P001", "OTHER_ISSUER") == []
    assert repo.timeline("NOBODY") == []


def test_patients_lists_counts(repo):
    scored(repo, "1.1", study_uid="1", received=at(5))
    scored(repo, "1.2", study_uid="1", received=at(6), failed=True)
    scored(repo, "2.1", study_uid="2", received=at(7))
    repo.record_received_photo(patient("A0"), study("3"), photo("3.1", received_at=at(9)))
    summaries = repo.patients()
    assert [(s.patient.patient_id, s.study_count, s.photo_count, s.succeeded_appraisal_count,
             s.last_received_at) for s in summaries] == [("A0", 1, 1, 0, at(9)),
                                                         ("P001", 2, 3, 2, at(7))]


def calibration(slope: float, created: datetime, **changes) -> Calibration:
    fields = dict(slope=slope, intercept=-1.5, slope_se=0.1, intercept_se=0.2, residual_sd=0.4, n=13,
                  score_mean=5.5, score_sxx=16.0, pearson_r=0.94, model_identity="sha256:abc",
                  source="paper-13.csv", created_at=created, provenance={"rows": [{"photo": "a.jpg", "rating": 4}]})
    return Calibration(**{**fields, **changes})


def test_latest_calibration_wins_by_creation_time(repo):
    assert repo.latest_calibration() is None
    first_id = repo.save_calibration(calibration(1.0, at(100)))
    second_id = repo.save_calibration(calibration(2.0, at(50)))  # saved later but older
    assert second_id != first_id
    latest = repo.latest_calibration()
    assert latest == calibration(1.0, at(100))
    assert (latest.slope, latest.n, latest.model_identity, latest.provenance) == (
        1.0, 13, "sha256:abc", {"rows": [{"photo": "a.jpg", "rating": 4}]})
    repo.save_calibration(calibration(3.0, at(200)))
    assert repo.latest_calibration() == calibration(3.0, at(200))
    repo.save_calibration(calibration(4.0, at(200), source="tie.csv"))  # same time: the last saved wins
    assert repo.latest_calibration().source == "tie.csv"
    with pytest.raises(TypeError):
        repo.save_calibration({"slope": 1.0})

def test_calibration_fields_without_a_column_travel_in_provenance(repo):
    if not hasattr(repo, "engine"):
        pytest.skip("SQL repositories only")
    import sqlalchemy as sa

    from db.models import CalibrationRow

    repo.save_calibration(calibration(1.0, at(100)))
    with repo.engine.connect() as conn:
        stored = conn.execute(sa.select(CalibrationRow.__table__.c.provenance)).scalar_one()
    # The layout `cleftscore calibrate` has always written: the schema is unchanged.
    assert stored == {"rows": [{"photo": "a.jpg", "rating": 4}], "model_identity": "sha256:abc",
                      "source": "paper-13.csv", "score_mean": 5.5, "score_sxx": 16.0, "pearson_r": 0.94}
    with repo.engine.begin() as conn:
        conn.execute(sa.update(CalibrationRow).values(provenance={"source": "hand-made.csv"}))
    with pytest.raises(ValueError, match=r"lacks \['model_identity', 'score_mean'"):
        repo.latest_calibration()
