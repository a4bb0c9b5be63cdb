"""The whole method on one photo, with a small demo bundle (non-clinical)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from pipeline.appraise import AppraisalSettings, appraise, image_to_tensor, tensor_to_image
from pipeline.errors import NoFaceError
from pipeline.models.bundle import load_bundle
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from pipeline.preprocess.photo_io import load_photo
from pipeline.vocabulary import PRIMARY_VARIANT, ErosionOrder
from service.cli.main import main
from service.runtime.model_store import make_demo_bundle

FAST = AppraisalSettings(inversion=InversionSettings(steps=12, w_avg_samples=500),
                         adaptation=AdaptationSettings(steps=4))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    return load_bundle(make_demo_bundle(store, resolution=64))


def test_appraise_returns_every_score_and_image(bundle, faces_dir):
    photo = load_photo(faces_dir / "obama.jpg")
    steps = []
    result = appraise(photo, bundle, FAST, progress=steps.append)
    assert result.aligned.shape == result.inverted.shape == result.normalized.shape == (64, 64, 3)
    # PSE, LPIPS, SSIM × 4 processings × 2 regions, with and without adaptation.
    assert len(result.scores) == 2 * 3 * 4 * 2
    assert {s.variant.adaptation for s in result.scores} == {True, False}
    assert np.isfinite(result.primary_score)
    assert result.primary_score == result.score(PRIMARY_VARIANT)
    assert result.primary_heatmap is result.heatmaps["with_adaptation/pse/ycbcr+erosion/diff_then_erode"]
    with pytest.raises(KeyError, match="erode_then_diff"):  # not computed with these settings
        result.score(replace(PRIMARY_VARIANT, erosion_order=ErosionOrder.ERODE_THEN_DIFF))
    assert result.model.non_clinical and result.model.identity == bundle.identity.identity
    assert [s.stage for s in steps].count("inversion") == 12 and [s.stage for s in steps].count("adaptation") == 4
    assert set(result.timings) >= {"preprocess", "inversion", "adaptation", "scoring", "total"}
    assert len(result.inversion_losses) == 12
    # Adaptation moves the synthesis towards the photo.
    assert result.adaptation_losses[-1] < result.adaptation_losses[0]
    # Deterministic given the settings' seeds.
    again = appraise(photo, bundle, FAST)
    np.testing.assert_array_equal(again.normalized, result.normalized)
    assert again.primary_score == result.primary_score


def test_settings_must_compute_the_primary_variant():
    with pytest.raises(ValueError, match="must include 'diff_then_erode'"):
        AppraisalSettings(erosion_orders=(ErosionOrder.ERODE_THEN_DIFF,))


def test_appraise_refuses_a_photo_without_a_face(bundle):
    with pytest.raises(NoFaceError):
        appraise(np.full((300, 300, 3), 90, np.uint8), bundle, FAST)


def test_image_tensor_round_trip():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    tensor = image_to_tensor(image, "cpu", image_to_tensor(image, "cpu", __import__("torch").float32).dtype)
    assert tensor.shape == (1, 3, 16, 16) and float(tensor.min()) >= -1 and float(tensor.max()) <= 1
    # The reference's save convention (x·127.5 + 128, truncated) is within one grey level of the input.
    assert np.abs(tensor_to_image(tensor).astype(int) - image).max() <= 1


def test_score_command_end_to_end(faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "score"
    # A small demo bundle keeps this quick; `--demo` would make the default 256² one.
    assert main(["models", "make-demo", "--resolution", "64"]) == 0
    assert main(["score", str(faces_dir / "biden.jpg"), "--out", str(out), "--demo", "--steps", "20",
                 "--adapt-steps", "5", "--device", "cpu"]) == 0
    for name in ("aligned.png", "inverted.png", "normalized.png", "overlay.png", "scores.json", "landmarks.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "heatmaps").glob("*.png"))) == 2 * 12
    record = json.loads((out / "scores.json").read_text())
    assert record["non_clinical"] is True and record["label"] == "DEMO — NOT FOR CLINICAL USE"
    assert record["model"]["identity"] and record["settings"]["inversion"]["steps"] == 20
    assert np.isfinite(record["primary"]["score"]) and len(record["scores"]) == 48


def test_repeats_average_independent_runs_of_the_single_run(bundle, faces_dir):
    """K = 3: repeat 0 is the K = 1 run bit for bit, repeat i the K = 1 run with seed 303 + i; the result's
    scores and heatmaps are the means over the repeats, and the records say so only when K > 1."""
    from pipeline.appraise import repeat_seeds, scores_record

    photo = load_photo(faces_dir / "obama.jpg")
    repeated = appraise(photo, bundle, replace(FAST, repeats=3))
    singles = [appraise(photo, bundle, replace(FAST, inversion=replace(FAST.inversion, seed=seed)))
               for seed in (303, 304, 305)]
    assert repeat_seeds(303, 3) == repeated.repeats.seeds == (303, 304, 305) and repeated.repeats.count == 3
    assert [list(run) for run in repeated.repeats.runs] == [list(single.scores) for single in singles]
    np.testing.assert_array_equal(repeated.normalized, singles[0].normalized)
    np.testing.assert_array_equal(repeated.inverted, singles[0].inverted)
    for item in repeated.scores:
        values = [single.score(item.variant) for single in singles]
        assert item.score == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12)
        assert repeated.repeats.sd(item.variant) == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-12)
    primary = [single.primary_score for single in singles]
    assert repeated.repeats.primary_scores == tuple(primary) and len(set(primary)) == 3  # the seeds do matter
    np.testing.assert_allclose(repeated.primary_heatmap, np.mean([s.primary_heatmap for s in singles], axis=0),
                               rtol=1e-12, atol=1e-15)
    assert set(repeated.heatmaps) == set(singles[0].heatmaps) and singles[0].repeats is None
    record = scores_record(repeated)
    assert record["repeats"]["count"] == 3 and record["repeats"]["seeds"] == [303, 304, 305]
    assert record["settings"]["repeats"] == 3 and "repeats" not in scores_record(singles[0])
    assert "repeats" not in singles[0].settings.to_dict()
    json.dumps(record)  # JSON as it is


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_repeats_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        AppraisalSettings(repeats=bad)
