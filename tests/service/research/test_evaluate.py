"""The Table 1 evaluation: ratings validation, per-photo cache and resume, statistics, and the command's files."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import stats as scipy_stats

from pipeline.appraise import AppraisalSettings
from pipeline.models.bundle import load_bundle
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.inversion import InversionSettings
from pipeline.vocabulary import ErosionOrder, ScoreVariant
from service.cli.main import main
from service.research.evaluate import DONE_MARKER, EvaluationInputError, appraise_photos, read_ratings, run_evaluation
from service.runtime.model_store import make_demo_bundle

#: What ``evaluate --steps 6 --adapt-steps 2 --device cpu`` builds, so the command reuses the tests' cache.
FAST = AppraisalSettings(inversion=InversionSettings(steps=6), adaptation=AdaptationSettings(steps=2),
                         erosion_orders=(ErosionOrder.DIFF_THEN_ERODE, ErosionOrder.ERODE_THEN_DIFF), device="cpu")
#: 3 methods × (base, ycbcr, erosion × 2 orders, ycbcr+erosion × 2 orders) × 2 regions × with/without adaptation.
VARIANTS_BOTH_ORDERS = 3 * 6 * 2 * 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    make_demo_bundle(folder, resolution=64)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, faces_dir, astronaut_rgb, grace_hopper_path):
    """Four real faces and one grey picture without a face."""
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(faces_dir / "obama.jpg", folder / "obama.jpg")
    shutil.copy(faces_dir / "biden.jpg", folder / "biden.jpg")
    shutil.copy(grace_hopper_path, folder / "grace_hopper.jpg")
    Image.fromarray(astronaut_rgb).save(folder / "astronaut.png")
    Image.fromarray(np.full((240, 240, 3), 128, np.uint8)).save(folder / "grey.png")
    return folder


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_ratings_are_validated_with_one_error_listing_every_problem(photos, tmp_path):
    bad = _write(tmp_path / "bad.csv", "file,rating\nobama.jpg,6\nmissing.jpg,3\nbiden.jpg,9\nobama.jpg,5\n"
                                       "grey.png,abc\n../obama.jpg,4\n")
    with pytest.raises(EvaluationInputError) as caught:
        read_ratings(bad, photos)
    message = str(caught.value)
    assert "5 problem(s)" in message
    for fragment in ("missing.jpg is not in", "rating '9' of biden.jpg", "obama.jpg is listed twice", "rating 'abc'",
                     "'../obama.jpg' must be a plain file name"):
        assert fragment in message, fragment
    with pytest.raises(EvaluationInputError, match="needs columns 'file' and 'rating'"):
        read_ratings(_write(tmp_path / "cols.csv", "name,score\nobama.jpg,3\n"), photos)
    with pytest.raises(EvaluationInputError, match="outside 1-7"):
        read_ratings(_write(tmp_path / "rater.csv", "file,rating,r1,r2\nobama.jpg,3,3,8\n"), photos)


def test_ratings_with_rater_columns(photos, tmp_path):
    table = read_ratings(_write(tmp_path / "r.csv", "file,rating,r1,r2,notes\nobama.jpg,6.5,7,6,fine\n"
                                                    "biden.jpg,5,5,,ok\n"), photos)
    assert table.files == ("obama.jpg", "biden.jpg") and table.ratings.tolist() == [6.5, 5.0]
    assert table.rater_names == ("r1", "r2") and table.ignored_columns == ("notes",)
    assert table.rater_matrix[0].tolist() == [7.0, 6.0] and np.isnan(table.rater_matrix[1, 1])


def test_cache_resumes_after_an_interruption(store, photos, tmp_path):
    bundle = load_bundle(store / "demo")
    table = read_ratings(_write(tmp_path / "r.csv", "file,rating\nobama.jpg,6\nbiden.jpg,5\ngrace_hopper.jpg,3\n"), photos)
    cache = tmp_path / "out" / "cache"
    started: list[int] = []

    class Stop(Exception):
        pass

    def interrupt_on_second_photo(step) -> None:
        if step.stage == "inversion" and step.step == 1:
            started.append(1)
            if len(started) == 2:
                raise Stop

    with pytest.raises(Stop):
        appraise_photos(table, photos, bundle, FAST, cache, progress=interrupt_on_second_photo)
    finished = [entry for entry in cache.iterdir() if (entry / DONE_MARKER).is_file()]
    assert len(finished) == 1 and len(list(cache.iterdir())) == 1  # the interrupted photo left nothing behind

    def count(step) -> None:
        if step.stage == "inversion" and step.step == 1:
            started.append(1)

    started.clear()
    outcomes = appraise_photos(table, photos, bundle, FAST, cache, progress=count)
    assert len(started) == 2 and [o.computed for o in outcomes] == [False, True, True]
    # A lost marker makes that photo count as unfinished; everything else is reused.
    (outcomes[1].folder / DONE_MARKER).unlink()
    started.clear()
    again = appraise_photos(table, photos, bundle, FAST, cache, progress=count)
    assert len(started) == 1 and [o.computed for o in again] == [False, True, False]
    assert [o.record["scores"] for o in again] == [o.record["scores"] for o in outcomes]
    for name in ("aligned.png", "inverted.png", "normalized.png", "masks/mouth_nose.png", "masks/face_without_eyes.png",
                 "scores.json", "primary_heatmap.npy"):
        assert (outcomes[0].folder / name).is_file(), name
    identity = bundle.identity.identity[:12]
    assert outcomes[0].folder.name.split("-")[1] == identity


@pytest.fixture(scope="module")
def evaluated(store, photos, tmp_path_factory):
    """Four faces evaluated through the API into an output folder that the command test reuses."""
    folder = tmp_path_factory.mktemp("evaluated")
    ratings = _write(folder / "r.csv", "file,rating\nobama.jpg,6\nbiden.jpg,5\ngrace_hopper.jpg,3\nastronaut.png,4\n")
    out = folder / "out"
    run = run_evaluation(photos, ratings, out, load_bundle(store / "demo"), FAST, bootstrap=200, seed=3)
    return run, ratings, out


def test_table1_statistics_match_scipy_on_the_cached_scores(store, photos, evaluated):
    run, ratings, out = evaluated
    assert len(run.rows) == VARIANTS_BOTH_ORDERS and run.scored == 4 and run.computed == 4
    for row in run.rows:
        values = [next(s["score"] for s in o.record["scores"] if ScoreVariant.from_dict(s) == row.key)
                  for o in run.outcomes]
        assert row.summary.pearson_r == pytest.approx(scipy_stats.pearsonr([6, 5, 3, 4], values)[0], abs=1e-12)
        assert row.summary.spearman_rho == pytest.approx(scipy_stats.spearmanr([6, 5, 3, 4], values)[0], abs=1e-12)
        assert row.summary.n == 4 and row.summary.bootstrap_used <= 200
    again = run_evaluation(photos, ratings, out, load_bundle(store / "demo"), FAST, bootstrap=200, seed=3)
    assert again.computed == 0 and [r.summary for r in again.rows] == [r.summary for r in run.rows]


@pytest.mark.slow
def test_evaluate_command_writes_every_output_and_reuses_its_cache(store, photos, evaluated, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path / "data"))
    ratings = _write(tmp_path / "ratings.csv", "file,rating,r1,r2\nobama.jpg,6.5,7,6\nbiden.jpg,5.2,5,5.5\n"
                                               "grace_hopper.jpg,3.1,3,3.5\nastronaut.png,4,4,4.5\ngrey.png,2,2,2\n")
    out = evaluated[2]  # its cache holds the four faces already (same photos, bundle and settings)
    args = ["evaluate", "--images", str(photos), "--ratings", str(ratings), "--out", str(out), "--demo",
            "--store", str(store), "--steps", "6", "--adapt-steps", "2", "--device", "cpu", "--bootstrap", "300"]
    assert main(args) == 0
    for name in ("scores.csv", "table1.csv", "table1.md", "failures.csv", "evaluation.json", "gallery.png",
                 "plots/fig11.png", "plots/pse_ycbcr_erosion_mouth_nose_adapted_diff_then_erode.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "plots").glob("*.png"))) == 7
    with open(out / "failures.csv", newline="") as handle:
        failures = list(csv.DictReader(handle))
    assert [f["file"] for f in failures] == ["grey.png"] and failures[0]["error"] == "NoFaceError"
    with open(out / "table1.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == VARIANTS_BOTH_ORDERS and {row["n"] for row in table} == {"4"}
    best = [r for r in table if (r["method"], r["processing"], r["region"], r["adaptation"]) ==
            ("pse", "ycbcr+erosion", "mouth_nose", "True")]
    assert {r["erosion_order"] for r in best} == {"diff_then_erode", "erode_then_diff"}
    assert {r["paper_r"] for r in best} == {"0.942"}
    with open(out / "scores.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4 * VARIANTS_BOTH_ORDERS
    markdown = (out / "table1.md").read_text()
    assert markdown.splitlines()[0].startswith("**DEMO — NOT FOR CLINICAL USE**")
    assert "1 refused by the method" in markdown and "Inter-rater agreement (2 raters" in markdown
    record = json.loads((out / "evaluation.json").read_text())
    assert record["computed_this_run"] == 1 and record["refused"] == 1 and record["inter_rater"]["raters"] == 2
    # No database in this data folder, so no repeatability study: every RC says why it is missing.
    assert record["repeatability"]["available"] is False
    assert record["repeatability"]["why_not"].startswith("not available: there is no database at")
    assert {r["repeatability_coefficient"] for r in table} == {""}
    assert "RC (repeatability coefficient): not available: there is no database" in markdown
    assert not (tmp_path / "data" / "cleftscore.db").exists()  # looking for a study created no database
    table_before = (out / "table1.csv").read_text()
    assert main(args) == 0  # everything from the cache, same numbers
    assert json.loads((out / "evaluation.json").read_text())["computed_this_run"] == 0
    assert (out / "table1.csv").read_text() == table_before
    # One clear error for bad ratings, exit code 2.
    assert main([*args[:3], str(_write(tmp_path / "bad.csv", "file,rating\nnope.jpg,3\n")), *args[5:]]) == 2


def test_table1_gives_each_variant_the_rc_of_the_stored_study_of_its_model(evaluated, tmp_path):
    from dataclasses import replace
    from datetime import datetime, timezone

    from db.records import RepeatabilityStudy, VariantRepeatability
    from pipeline.vocabulary import PRIMARY_VARIANT
    from service.research.evaluate import repeatability_record, with_repeatability, write_text_outputs

    run = evaluated[0]
    lpips = replace(PRIMARY_VARIANT, method="lpips")
    study = RepeatabilityStudy(
        model_identity=run.model.identity, model_name="demo", non_clinical=True, photos=5, repeats=3, confidence=0.95,
        variants=(VariantRepeatability(PRIMARY_VARIANT, 0.1, 0.277, 0.2, 0.45),
                  VariantRepeatability(lpips, 0.02, 0.0554, 0.04, 0.09)),
        created_at=datetime(2026, 12, 1, tzinfo=timezone.utc),
        provenance={"settings": replace(run.settings, repeats=1).to_dict(), "seeds": [303, 304, 305]})
    judged = with_repeatability(run, study, "")
    rows = {row.key: row for row in judged.rows}
    assert rows[PRIMARY_VARIANT].repeatability.rc == 0.277 and rows[lpips].repeatability.rc == 0.0554
    assert sum(row.repeatability is not None for row in judged.rows) == 2
    assert [row.summary for row in judged.rows] == [row.summary for row in run.rows]  # validity is untouched
    assert repeatability_record(judged)["available"] and judged.repeatability_note == ""
    write_text_outputs(tmp_path, judged)
    with open(tmp_path / "table1.csv", newline="") as handle:
        table = {(r["method"], r["processing"], r["region"], r["adaptation"], r["erosion_order"]): r
                 for r in csv.DictReader(handle)}
    primary = table[("pse", "ycbcr+erosion", "mouth_nose", "True", "diff_then_erode")]
    assert (primary["within_photo_sd"], primary["repeatability_coefficient"], primary["rc_ci_low"],
            primary["rc_ci_high"]) == ("0.1", "0.277", "0.2", "0.45")
    assert table[("ssim", "base", "mouth_nose", "True", "")]["repeatability_coefficient"] == ""
    record = json.loads((tmp_path / "evaluation.json").read_text())
    assert record["repeatability"]["repeats"] == 3 and record["repeatability"]["seeds"] == [303, 304, 305]
    # A study made with other settings measured another noise: the note says so.
    other = replace(study, provenance={"settings": {**study.provenance["settings"], "inversion": {"steps": 5}}})
    assert "other inversion settings" in with_repeatability(run, other, "").repeatability_note
    with pytest.raises(ValueError, match="another model"):
        with_repeatability(run, replace(study, model_identity="sha256:other"), "")
