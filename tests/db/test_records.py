"""Records validate their inputs; the shared rules compute backoff, parse destinations, etc."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from db.records import AppraisalStatus, Calibration, NewAppraisal, NewPatient, NewStudy
from db.rules import RetryPolicy, check_destination, one_line_message, retry_at
from pipeline.vocabulary import PRIMARY_VARIANT, ScoreVariant, VariantScore
from tests.db.support import T0, photo


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(max_attempts=10, base_delay_s=30.0, max_delay_s=300.0)
    delays = [policy.delay(n, None).total_seconds() for n in range(1, 7)]
    assert delays == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    assert policy.delay(10_000, None) == timedelta(seconds=300)  # no overflow


def test_jitter_is_bounded_and_reproducible_with_a_seeded_rng():
    policy = RetryPolicy(base_delay_s=100.0, max_delay_s=100.0, jitter=0.25)
    first = [policy.delay(1, random.Random(5)) for _ in range(3)]
    assert len(set(first)) == 1
    rng, reference = random.Random(11), random.Random(11)
    for _ in range(50):
        expected = 100.0 * (1.0 - 0.25 * reference.random())
        got = policy.delay(1, rng).total_seconds()
        assert math.isclose(got, expected, abs_tol=1e-6) and 75.0 <= got <= 100.0
    with pytest.raises(ValueError, match="random.Random"):
        policy.delay(1, None)


@pytest.mark.parametrize("kwargs", [dict(max_attempts=0), dict(base_delay_s=-1.0),
                                    dict(base_delay_s=10.0, max_delay_s=5.0), dict(jitter=1.5),
                                    dict(max_delay_s=math.inf)])
def test_retry_policy_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_retry_at_is_none_when_final():
    policy = RetryPolicy(max_attempts=3, base_delay_s=10.0, max_delay_s=100.0)
    assert retry_at(1, 3, True, T0, policy, None) == T0 + timedelta(seconds=10)
    assert retry_at(2, 3, True, T0, policy, None) == T0 + timedelta(seconds=20)
    assert retry_at(3, 3, True, T0, policy, None) is None
    assert retry_at(1, 3, False, T0, policy, None) is None


@pytest.mark.parametrize("text", ["PACS@pacs.example.org:104", "MY AE@10.0.0.1:11112", "A@[::1]:104", "archive"])
def test_destination_is_stored_as_given(text):
    assert check_destination(text) == text


@pytest.mark.parametrize("text", ["", "   ", " PACS@h:1", "PACS@h:1 ", "A@h:1\nB@h:2", "x" * 201, None, 104])
def test_destination_must_be_one_short_line(text):
    with pytest.raises(ValueError):
        check_destination(text)


def test_error_messages_become_one_bounded_line():
    assert one_line_message("  Bad\n\tthing  happened. ") == "Bad thing happened."
    long = one_line_message("x" * 1000)
    assert len(long) == 300 and long.endswith("…")
    with pytest.raises(ValueError):
        one_line_message("\n ")


def test_photo_validation_and_utc_normalisation():
    tokyo = timezone(timedelta(hours=9))
    normalised = photo(received_at=datetime(2024, 3, 1, 18, 0, tzinfo=tokyo))
    assert normalised.received_at == datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
    assert normalised.received_at.tzinfo is timezone.utc
    good = vars(photo())
    for field, bad in (("sha256", "ABC"), ("sop_instance_uid", "1." * 40), ("calling_ae", ""),
                       ("attributes", {"x": object()}), ("attributes", {"x": math.nan})):
        with pytest.raises((ValueError, TypeError)):
            type(normalised)(**{**good, field: bad})
    with pytest.raises(ValueError):
        NewPatient(patient_id="  ")
    with pytest.raises(ValueError):
        NewStudy(study_instance_uid="1.2", study_datetime=datetime(2024, 1, 1))


def test_appraisal_validation():
    base = dict(photo_id=1, job_id=1, model_name="m", model_id_hash="h", non_clinical=False,
                created_at=T0)
    row = VariantScore(ScoreVariant("pse", "base", "mouth_nose", True), 1.0)
    with pytest.raises(ValueError, match="no scores"):
        NewAppraisal(status=AppraisalStatus.FAILED, failure_reason="no face", scores=(row,),
                     **base)
    with pytest.raises(ValueError, match="failure_reason"):
        NewAppraisal(status=AppraisalStatus.FAILED, **base)
    with pytest.raises(ValueError, match="failure_reason"):
        NewAppraisal(status=AppraisalStatus.SUCCEEDED, failure_reason="x", **base)
    with pytest.raises(ValueError, match="twice"):
        NewAppraisal(status=AppraisalStatus.SUCCEEDED, scores=(row, row), **base)
    with pytest.raises(ValueError, match="twice"):  # the same variant, even with another score
        NewAppraisal(status=AppraisalStatus.SUCCEEDED, scores=(row, VariantScore(row.variant, 2.0)), **base)
    with pytest.raises(TypeError, match="VariantScore"):
        NewAppraisal(status=AppraisalStatus.SUCCEEDED, scores=({"method": "pse", "score": 1.0},), **base)
    primary = VariantScore(PRIMARY_VARIANT, 6.5)
    assert NewAppraisal(status=AppraisalStatus.SUCCEEDED, scores=(row, primary), **base).primary_score == 6.5
    made = NewAppraisal(status="succeeded", scores=[row], settings={"t": (1, 2)}, **base)
    assert made.status is AppraisalStatus.SUCCEEDED and made.scores == (row,)
    assert made.settings == {"t": [1, 2]} and made.primary_score is None


def test_calibration_validation():
    good = dict(slope=1.0, intercept=0.0, slope_se=0.1, intercept_se=0.1, residual_sd=0.3, n=13, score_mean=4.0,
                score_sxx=9.0, pearson_r=0.9, model_identity="sha256:abc", source="ratings.csv", created_at=T0)
    made = Calibration(**good)
    assert made.provenance == {} and made.rating(2.0) == 2.0
    for field, bad in (("n", 2), ("n", 2.5), ("n", True), ("slope_se", -0.1), ("slope", math.nan), ("slope", 0.0),
                       ("score_sxx", 0.0), ("pearson_r", 1.5), ("model_identity", ""),
                       ("created_at", datetime(2024, 1, 1)), ("provenance", {"score_mean": 1.0})):
        with pytest.raises(ValueError):
            Calibration(**{**good, field: bad})
    with pytest.raises(TypeError):
        Calibration(**{**good, "source": None})


def test_implementations_have_the_protocol_signatures():
    import inspect

    from db.memory import InMemoryRepository
    from db.repository import Repository
    from db.sql import SqlRepository

    def shape(function) -> list[tuple]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    methods = [name for name, value in vars(Repository).items()
               if callable(value) and not name.startswith("_")]
    assert "claim_job" in methods and len(methods) > 25
    for implementation in (InMemoryRepository, SqlRepository):
        for name in methods:
            assert shape(getattr(implementation, name)) == shape(getattr(Repository, name)), name
