"""Simulation study: template landmarks, localisation metrics, normalize_aligned, and the simulate command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pipeline.appraise import AppraisalSettings, appraise, normalize_aligned
from pipeline.models.bundle import load_bundle
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from pipeline.preprocess.faces import FaceModels
from pipeline.preprocess.masks import region_masks
from pipeline.preprocess.photo_io import load_photo
from pipeline.preprocess.template import TEMPLATE_LANDMARKS_UNIT, derive_template, template_landmarks
from service.cli.main import main
from service.research.simulate import CaseResult, dose_response, localise
from service.runtime.model_store import make_demo_bundle

FAST = AppraisalSettings(inversion=InversionSettings(steps=10, w_avg_samples=500), adaptation=AdaptationSettings(steps=3))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    make_demo_bundle(folder, resolution=64)
    return folder


def test_template_is_rederived_from_the_real_photos(faces_dir, astronaut_rgb, grace_hopper_path):
    photos = [load_photo(path) for path in sorted(faces_dir.glob("*.jpg"))]
    photos += [astronaut_rgb, load_photo(grace_hopper_path)]
    assert len(photos) == 5
    derived = derive_template(photos, FaceModels(), size=256)
    np.testing.assert_allclose(derived, TEMPLATE_LANDMARKS_UNIT, atol=2e-3)
    # Unit coordinates do not depend on the size the photos were aligned at.
    np.testing.assert_allclose(derive_template(photos[:1], FaceModels(), size=128),
                               derive_template(photos[:1], FaceModels(), size=512), atol=1e-9)


def test_template_landmarks_give_a_plausible_face_layout():
    points = template_landmarks(64)
    assert points.shape == (68, 2)
    np.testing.assert_allclose((points + 0.5) / 64, TEMPLATE_LANDMARKS_UNIT)
    eyes_y, nose_y, mouth_y, chin_y = points[36:48, 1].mean(), points[33, 1], points[48:68, 1].mean(), points[8, 1]
    assert eyes_y < nose_y < mouth_y < chin_y
    masks = region_masks(points, 64)
    assert masks["mouth_nose"].sum() > 100 and masks["face_without_eyes"].sum() > masks["mouth_nose"].sum()


def test_localise_peak_and_topk_iou_by_hand():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True  # 36 pixels
    region = np.zeros((10, 10), bool)
    region[3:5, 3:5] = True  # 4 pixels, all inside the mask
    heat = np.zeros((10, 10))
    heat[0, 0] = 100.0  # outside the mask: ignored
    heat[3, 3], heat[3, 4], heat[6, 6], heat[7, 7] = 9.0, 8.0, 7.0, 6.0
    result = localise(heat, region, mask)
    assert result["peak_inside"] and (result["peak_x"], result["peak_y"]) == (3, 3)
    # Top 4 inside the mask: (3,3), (3,4), (6,6), (7,7) → 2 of them in the region; IoU = 2 / 6.
    assert result["iou"] == pytest.approx(2 / 6)
    assert result["chance_peak_inside"] == pytest.approx(4 / 36)
    heat[6, 6] = 50.0
    assert not localise(heat, region, mask)["peak_inside"]


def test_dose_response_is_one_when_scores_fall_with_severity():
    def case(face: int, level: int, score: float) -> CaseResult:
        return CaseResult(face=face, level=level, severity=level / 3, scores=(), primary_score=score, localisation=None)

    # Two faces with different baselines and nearly equal drops per level.
    cases = [case(0, k, 5.0 - k) for k in range(4)] + [case(1, k, 9.0 - 0.9 * k) for k in range(4)]
    result = dose_response(cases, lambda c: c.primary_score)
    assert result["per_face"] == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}
    severity = [c.severity for c in cases]
    drops = [0, 1, 2, 3, 0, 0.9, 1.8, 2.7]
    assert result["pooled"] == pytest.approx(scipy_stats.spearmanr(severity, drops)[0]) and result["pooled"] > 0.95
    assert result["pooled_raw"] == pytest.approx(scipy_stats.spearmanr(severity, [-c.primary_score for c in cases])[0])
    assert result["pooled_raw"] < 0.5  # the raw scores mix two baselines
    # Very different drops per face lower the pooled ρ: a drop then means different severities in different faces.
    uneven = [case(0, k, 5.0 - k) for k in range(4)] + [case(1, k, 9.0 - 0.1 * k) for k in range(4)]
    assert dose_response(uneven, lambda c: c.primary_score)["pooled"] < 0.9
    rising = [case(0, k, float(k)) for k in range(4)]
    assert dose_response(rising, lambda c: c.primary_score)["pooled"] == pytest.approx(-1.0)


def test_normalize_aligned_reproduces_appraise(store, faces_dir):
    bundle = load_bundle(store / "demo")
    result = appraise(load_photo(faces_dir / "obama.jpg"), bundle, FAST)
    again = normalize_aligned(result.aligned, result.preprocessing.masks, bundle, FAST)
    np.testing.assert_array_equal(again.normalized, result.normalized)
    assert [s.to_dict() for s in again.scores] == [s.to_dict() for s in result.scores]
    with pytest.raises(ValueError):
        normalize_aligned(result.aligned[:32], result.preprocessing.masks, bundle, FAST)


@pytest.mark.slow
def test_simulate_command_on_the_demo_bundle(store, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "sim"
    code = main(["simulate", "--demo", "--store", str(store), "--faces", "2", "--levels", "3", "--out", str(out),
                 "--steps", "6", "--adapt-steps", "2", "--device", "cpu", "--seed", "1"])
    assert code == 0
    for name in ("simulation.csv", "localisation.csv", "summary.json", "summary.md",
                 "plots/score_vs_severity.png", "plots/localisation.png"):
        assert (out / name).is_file(), name

    def strict(text: str):
        raise ValueError(f"non-standard JSON constant {text}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=strict)
    assert summary["non_clinical"] and summary["random_weight_generator"]
    assert [f["landmarks"] for f in summary["faces"]] == ["template", "template"]
    rho = summary["spearman_severity_vs_minus_score"]
    assert set(rho["per_face"]) == {"0", "1"}
    assert rho["pooled"] is None or -1 <= rho["pooled"] <= 1
    assert summary["localisation"]["cases"] == 2 * 3
    with open(out / "simulation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 4 * 72  # faces × levels 0..3 × (3 methods × 6 processings/orders × 2 regions × 2)
    assert {r["severity"] for r in rows} == {"0.0", str(1 / 3), str(2 / 3), "1.0"}
    with open(out / "localisation.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    text = (out / "summary.md").read_text()
    assert text.startswith("**DEMO — NOT FOR CLINICAL USE**")
    assert "random-weight demo generator" in text and "Pooled ρ ≥ 0.95" in text
