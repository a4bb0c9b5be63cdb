"""Repository contract, part 3: repeatability studies per model identity, and appraisals with repeats."""

from __future__ import annotations

from dataclasses import replace

import pytest

from db.records import AppraisalRepeats, RepeatabilityStudy, VariantRepeatability
from pipeline.vocabulary import PRIMARY_VARIANT, ScoreVariant, VariantScore
from tests.db.support import at, patient, pg_session_url, photo, repo, study  # noqa: F401
from tests.db.test_contract_results import appraisal

OTHER = ScoreVariant("ssim", "base", "face_without_eyes", False)


def repeatability(rc: float, created, *, model: str = "sha256:abc", **changes) -> RepeatabilityStudy:
    fields = dict(model_identity=model, model_name="ffhq-config-f", non_clinical=True, photos=12, repeats=3,
                  confidence=0.95,
                  variants=(VariantRepeatability(PRIMARY_VARIANT, rc / 2.77, rc, rc * 0.8, rc * 1.3),
                            VariantRepeatability(OTHER, 0.25, 0.69, 0.55, 0.9)),
                  created_at=created, provenance={"photo_sha256": ["0" * 64], "seeds": [303, 304, 305],
                                                  "tool_version": "0.1.0", "settings": {"inversion": {"steps": 5}}})
    return RepeatabilityStudy(**{**fields, **changes})


def test_latest_repeatability_per_model_identity(repo):
    assert repo.latest_repeatability("sha256:abc") is None
    first = repo.save_repeatability(repeatability(0.2, at(100)))
    second = repo.save_repeatability(repeatability(0.3, at(50)))  # saved later but older
    assert first != second
    repo.save_repeatability(repeatability(0.9, at(500), model="sha256:other"))
    latest = repo.latest_repeatability("sha256:abc")
    assert latest == repeatability(0.2, at(100))
    assert latest.for_variant(PRIMARY_VARIANT).rc == 0.2 and latest.for_variant(OTHER).within_sd == 0.25
    assert latest.for_variant(ScoreVariant("lpips", "base", "mouth_nose", True)) is None
    assert latest.degrees_of_freedom == 24 and latest.provenance["seeds"] == [303, 304, 305]
    assert repo.latest_repeatability("sha256:other").for_variant(PRIMARY_VARIANT).rc == 0.9
    assert repo.latest_repeatability("sha256:none") is None
    repo.save_repeatability(repeatability(0.4, at(100), provenance={"tie": True}))  # same time: the last saved wins
    assert repo.latest_repeatability("sha256:abc").provenance == {"tie": True}
    with pytest.raises(TypeError):
        repo.save_repeatability({"rc": 0.2})


def test_appraisal_with_repeats_round_trip(repo):
    intake = repo.record_received_photo(patient(), study(), photo("1.1"))
    job = repo.claim_job("w1", 60, now=at(0))
    plain = appraisal(intake.photo.id, job.id)
    mean = plain.primary_score
    repeats = AppraisalRepeats((303, 304, 305), (mean - 0.25, mean, mean + 0.25))
    saved = repo.save_appraisal(replace(plain, repeats=repeats), worker_id="w1")
    loaded = repo.get_appraisal(saved.id)
    assert loaded == saved and loaded.repeats == repeats
    assert loaded.repeats.count == 3 and loaded.repeats.primary_sd == pytest.approx(0.25)


def test_records_refuse_inconsistent_figures():
    created = at(0)
    with pytest.raises(ValueError, match="must contain rc"):
        VariantRepeatability(PRIMARY_VARIANT, 0.1, 0.277, 0.3, 0.4)
    with pytest.raises(ValueError, match="within_sd must be a finite number"):
        VariantRepeatability(PRIMARY_VARIANT, float("nan"), 0.277, 0.2, 0.4)
    with pytest.raises(ValueError, match="repeats must be an integer >= 2"):
        repeatability(0.2, created, repeats=1)
    with pytest.raises(ValueError, match="photos must be an integer >= 1"):
        repeatability(0.2, created, photos=0)
    with pytest.raises(ValueError, match="same score variant twice"):
        repeatability(0.2, created, variants=(VariantRepeatability(OTHER, 0.1, 0.2, 0.1, 0.3),) * 2)
    with pytest.raises(ValueError, match="confidence"):
        repeatability(0.2, created, confidence=1.0)
    with pytest.raises(ValueError, match="K >= 2 seeds"):
        AppraisalRepeats((303,), (1.0,))
    with pytest.raises(ValueError, match="seeds must be non-negative"):
        AppraisalRepeats((303, -1), (1.0, 2.0))
    plain = appraisal(1, 1)
    with pytest.raises(ValueError, match="not the mean of the repeats"):
        replace(plain, repeats=AppraisalRepeats((303, 304), (1.0, 2.0)))
    with pytest.raises(ValueError, match="not the mean of the repeats"):
        replace(appraisal(1, 1, failed=True), repeats=AppraisalRepeats((303, 304), (1.0, 2.0)))
    scores = (VariantScore(PRIMARY_VARIANT, 1.5),)
    assert replace(plain, scores=scores, repeats=AppraisalRepeats((303, 304), (1.0, 2.0))).repeats.primary_mean == 1.5
