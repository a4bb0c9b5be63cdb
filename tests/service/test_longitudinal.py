"""The longitudinal record: calibration, a patient's timeline, and the report of the
third visit — photos sent through the running service (in process) by dcmtk — and whether
each change exceeds the model's repeatability coefficient (a second service with a stored study)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timezone

import numpy as np
import pydicom
import pytest
from scipy import stats

from service.cli.main import main
from service.config.settings import load_config
from service.research.calibration import calibrated_rating, fit_calibration
from service.research.repeatability import NO_STUDY

WHO = dict(model_identity="sha256:model", source="ratings.csv", created_at=datetime(2026, 1, 5, tzinfo=timezone.utc))


def test_calibration_recovers_a_known_line():
    rng = np.random.default_rng(7)
    scores = rng.uniform(0.0, 5.0, 60)
    ratings = np.clip(1.5 + 0.9 * scores + rng.normal(0, 0.15, scores.size), 1, 7)
    fit = fit_calibration(scores, ratings, **WHO)
    reference = stats.linregress(scores, ratings)
    assert fit.slope == pytest.approx(reference.slope) and fit.intercept == pytest.approx(reference.intercept)
    assert fit.slope_se == pytest.approx(reference.stderr) and fit.intercept_se == pytest.approx(reference.intercept_stderr)
    assert fit.pearson_r == pytest.approx(reference.rvalue) and fit.n == 60 and fit.model_identity == "sha256:model"
    residuals = ratings - reference.intercept - reference.slope * scores
    assert fit.residual_sd == pytest.approx(np.sqrt(residuals @ residuals / 58))
    assert abs(fit.slope - 0.9) < 3 * fit.slope_se and abs(fit.intercept - 1.5) < 3 * fit.intercept_se
    rating = calibrated_rating(fit, 2.0)
    assert rating.low < 1.5 + 0.9 * 2.0 < rating.high and rating.value == pytest.approx(fit.intercept + 2 * fit.slope)
    # Prediction intervals widen away from the mean score.
    far = calibrated_rating(fit, 10.0)
    assert (far.high - far.low) > (rating.high - rating.low) and far.outside_scale


def test_prediction_intervals_cover_new_photos():
    rng = np.random.default_rng(3)
    scores = rng.uniform(2.0, 6.0, 25)
    fit = fit_calibration(scores, 1.0 + 0.8 * scores + rng.normal(0, 0.3, 25), **WHO)
    new_scores = rng.uniform(2.0, 6.0, 4000)
    new_ratings = 1.0 + 0.8 * new_scores + rng.normal(0, 0.3, new_scores.size)
    inside = [calibrated_rating(fit, s).low <= r <= calibrated_rating(fit, s).high
              for s, r in zip(new_scores, new_ratings)]
    assert 0.9 < np.mean(inside) < 0.99  # nominal 95 % for this one fit


def test_calibration_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        fit_calibration(np.array([1.0, 2.0]), np.array([3.0, 4.0]), **WHO)
    with pytest.raises(ValueError, match="1–7"):
        fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 9.0]), **WHO)
    with pytest.raises(ValueError, match="all scores are equal"):
        fit_calibration(np.array([1.0, 1.0, 1.0]), np.array([3.0, 4.0, 5.0]), **WHO)
    with pytest.raises(ValueError, match="all ratings are equal"):
        fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0]), **WHO)
    with pytest.raises(ValueError, match="model_identity"):
        fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 6.0]), **{**WHO, "model_identity": ""})
    with pytest.raises(ValueError, match="level"):
        calibrated_rating(fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 6.0]), **WHO), 2.0, 1.5)


# Sent out of order; different real faces so that the scores differ.
VISITS = [("20260301", "Post-op 2", "obama.jpg"), ("20240501", "Consultation", "biden.jpg"),
          ("20250201", "Post-op 1", "two_people.jpg")]


def serve_visits(root, faces_dir, visits, before_start=None) -> tuple[dict, list[str]]:
    """Start the service on a new data folder with the 64² demo bundle (``before_start(config)`` first),
    send ``visits`` in the order given, wait until every job has finished; the environment and the UIDs."""
    from service.runtime.app import start_service
    from service.runtime.model_store import make_demo_bundle

    env = {"CLEFTSCORE_DATA_DIR": str(root / "data"), "CLEFTSCORE_PORT": "0", "CLEFTSCORE_INVERSION_STEPS": "5",
           "CLEFTSCORE_ADAPTATION_STEPS": "2", "CLEFTSCORE_DEVICE": "cpu", "CLEFTSCORE_TIMEZONE": "Europe/Berlin",
           "CLEFTSCORE_DEMO": "1"}
    config = load_config(env)
    make_demo_bundle(config.models_dir, resolution=64)
    if before_start is not None:
        before_start(config)
    service = start_service(config)
    uids = []
    try:
        for index, (date, description, photo) in enumerate(visits):
            dcm = root / f"visit{index}.dcm"
            subprocess.run(["img2dcm", str(faces_dir / photo), str(dcm), "-k", "PatientID=P100",
                            "-k", "PatientName=Test^Child", "-k", f"StudyDate={date}", "-k", "StudyTime=101500",
                            "-k", f"StudyDescription={description}"], check=True, capture_output=True, timeout=60)
            uids.append(str(pydicom.dcmread(dcm).SOPInstanceUID))
            sent = subprocess.run(["storescu", "-xy", "-aec", config.ae_title, "127.0.0.1", str(service.port), str(dcm)],
                                  capture_output=True, timeout=60)
            assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            counts = service.repository.queue_counts()
            if counts.jobs.get("succeeded", 0) + counts.jobs.get("failed", 0) == len(visits):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"jobs did not finish: {counts}")
    finally:
        service.stop()
    return env, uids


@pytest.fixture(scope="module")
def service_with_three_visits(tmp_path_factory, faces_dir):
    """No repeatability study is stored for this service's model."""
    return serve_visits(tmp_path_factory.mktemp("svc"), faces_dir, VISITS)


def run(env, monkeypatch, *args):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return main(list(args))


def test_timeline_lists_visits_in_date_order(service_with_three_visits, monkeypatch, capsys, tmp_path):
    env, _ = service_with_three_visits
    plot = tmp_path / "trend.png"
    assert run(env, monkeypatch, "timeline", "P100", "--json", "--plot", str(plot)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["study_description"] for r in rows] == ["Consultation", "Post-op 1", "Post-op 2"]
    assert [r["at"][:10] for r in rows] == ["2024-05-01", "2025-02-01", "2026-03-01"]
    assert rows[0]["at"].endswith("+00:00") and rows[0]["change_since_baseline"] is None
    assert rows[2]["change_since_baseline"] == pytest.approx(rows[2]["score"] - rows[0]["score"])
    assert rows[2]["change_since_previous"] == pytest.approx(rows[2]["score"] - rows[1]["score"])
    for row in rows[1:]:  # no study stored: every change says so
        for judged in (row["change_since_baseline_vs_noise"], row["change_since_previous_vs_noise"]):
            assert judged["exceeds_noise"] is None and judged["repeatability_coefficient"] is None
            assert judged["text"] == NO_STUDY
    assert rows[0]["change_since_baseline_vs_noise"] is None and rows[0]["repeats"] == 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(env, monkeypatch, "patients") == 0
    assert "P100" in capsys.readouterr().out


def test_report_of_the_third_visit(service_with_three_visits, monkeypatch, capsys, tmp_path):
    env, _ = service_with_three_visits
    assert run(env, monkeypatch, "timeline", "P100", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    last_processed = max(rows, key=lambda r: r["appraisal_id"])  # the third photo sent: "Post-op 1", 2025
    pdf = tmp_path / "report.pdf"
    assert run(env, monkeypatch, "report", str(last_processed["appraisal_id"]), "--out", str(pdf)) == 0
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, timeout=60, check=True).stdout.decode()
    assert "P100" in text and "01 Feb 2025" in text
    assert f"{last_processed['score']:.2f}".replace("-", "\u2212") in text  # typographic minus
    assert "DEMO" in text
    assert " ".join(text.split()).count(NO_STUDY) == 2  # since baseline and since the previous visit
    trend = text[text.index("Score over time"):]
    dates = [trend.index(d) for d in ("01 May 2024", "01 Feb 2025", "01 Mar 2026") if d in trend]
    assert len(dates) == 3 and dates == sorted(dates), "the visit table lists all three visits in date order"
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=60)
    from PIL import Image

    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages
    for page in pages:
        pixels = np.asarray(Image.open(page).convert("L"), dtype=float)
        assert pixels.std() > 10 and (pixels < 200).mean() > 0.01, f"{page.name} looks blank"


def test_calibrate_from_stored_appraisals(service_with_three_visits, monkeypatch, capsys, tmp_path):
    env, uids = service_with_three_visits
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("photo,rating\n" + "".join(f"{uid},{r}\n" for uid, r in zip(uids, (2.0, 5.5, 3.0))))
    assert run(env, monkeypatch, "calibrate", str(ratings)) == 0
    output = capsys.readouterr()
    assert "rating ≈" in output.out and "n = 3" in output.out
    assert run(env, monkeypatch, "timeline", "P100", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["calibrated"] is not None and r["calibrated"]["low"] < r["calibrated"]["high"] for r in rows)
    bad = tmp_path / "bad.csv"
    bad.write_text("photo,rating\n" + "".join(f"{uid},9\n" for uid in uids))
    assert run(env, monkeypatch, "calibrate", str(bad)) == 2
    assert "1–7" in capsys.readouterr().err


# --- changes against a stored repeatability study -----------------------------------------------------------------


def timeline_of(env) -> list[dict]:
    from service.cli.records import timeline_rows
    from service.runtime.database import open_repository

    repository = open_repository(load_config(env), migrate=False)
    try:
        return timeline_rows(repository, "P100", "")
    finally:
        repository.close()


@pytest.fixture(scope="module")
def service_with_a_repeatability_study(tmp_path_factory, faces_dir, service_with_three_visits):
    """The same three photos through a second service, sent in date order (so the last report compares the
    2026 visit with both earlier ones), with a repeatability study stored for the demo model first.

    The study's coefficient is chosen from the first service's scores (the same bundle, settings and
    pixels give the same scores): the geometric mean of the last visit's two changes, which lies
    strictly between them, so exactly one of the two exceeds it."""
    from db.records import RepeatabilityStudy, VariantRepeatability
    from pipeline.vocabulary import PRIMARY_VARIANT
    from service.runtime.database import open_repository

    earlier = timeline_of(service_with_three_visits[0])
    last = earlier[2]
    changes = sorted((abs(last["change_since_baseline"]), abs(last["change_since_previous"])))
    assert changes[1] > 1.1 * changes[0] > 0, f"the two changes are too alike to split: {changes}"
    rc = float(np.sqrt(changes[0] * changes[1]))

    def store_study(config) -> None:
        repository = open_repository(config, migrate=True)
        try:
            repository.save_repeatability(RepeatabilityStudy(
                model_identity=last["model_identity"], model_name="demo", non_clinical=True, photos=5, repeats=3,
                confidence=0.95, variants=(VariantRepeatability(PRIMARY_VARIANT, rc / 2.7719, rc, rc / 2, rc * 2),),
                created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), provenance={"chosen_for": "test"}))
        finally:
            repository.close()

    in_date_order = sorted(VISITS)
    env, uids = serve_visits(tmp_path_factory.mktemp("svc-rc"), faces_dir, in_date_order, before_start=store_study)
    return env, rc, earlier


def test_changes_are_marked_as_exceeding_or_within_the_stored_coefficient(service_with_a_repeatability_study,
                                                                          monkeypatch, capsys, tmp_path):
    env, rc, earlier = service_with_a_repeatability_study
    assert run(env, monkeypatch, "timeline", "P100", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in earlier], abs=1e-9)
    last = rows[2]
    verdicts = {}
    for name in ("baseline", "previous"):
        change, judged = last[f"change_since_{name}"], last[f"change_since_{name}_vs_noise"]
        assert judged["repeatability_coefficient"] == pytest.approx(rc)
        assert judged["exceeds_noise"] == (abs(change) > rc)
        verdicts[judged["exceeds_noise"]] = judged["text"]
    assert set(verdicts) == {True, False}, "one change exceeds the coefficient and the other does not"
    assert verdicts[True].startswith("change ") and " exceeds the repeatability coefficient " in verdicts[True]
    assert verdicts[False].startswith("within measurement noise (repeatability coefficient ")
    assert run(env, monkeypatch, "timeline", "P100") == 0  # the text view says the same
    printed = capsys.readouterr().out
    assert verdicts[True] in printed and verdicts[False] in printed
    pdf = tmp_path / "report.pdf"
    assert run(env, monkeypatch, "report", str(max(r["appraisal_id"] for r in rows)), "--out", str(pdf)) == 0
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, timeout=60, check=True).stdout.decode()
    text = " ".join(text.split())
    assert verdicts[True] in text and verdicts[False] in text and NO_STUDY not in text
    assert "5 photos × 3 repeats with this model" in text
