"""Repeatability: the statistics against an independent computation, the change judgement, and the command."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from db.records import RepeatabilityStudy, VariantRepeatability
from pipeline.vocabulary import NON_CLINICAL_LABEL, PRIMARY_VARIANT, ScoreVariant
from service.cli.main import main
from service.research.repeatability import NO_STUDY, judge_change, within_photo_spread

CREATED = datetime(2026, 12, 1, tzinfo=timezone.utc)


def anova_within(scores: np.ndarray) -> tuple[float, int]:
    """Within-subject mean square of a one-way ANOVA (photos as groups), by hand, and its degrees of freedom."""
    n, k = scores.shape
    residuals = scores - scores.mean(axis=1, keepdims=True)
    return float((residuals ** 2).sum() / (n * (k - 1))), n * (k - 1)


def chi2_rc_interval(ms_within: float, dof: int, confidence: float = 0.95) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low = np.sqrt(dof * ms_within / stats.chi2.isf(tail, dof))  # isf: the upper quantile
    high = np.sqrt(dof * ms_within / stats.chi2.isf(1 - tail, dof))
    return 1.96 * np.sqrt(2) * low, 1.96 * np.sqrt(2) * high


def test_within_photo_spread_is_the_anova_within_mean_square_with_a_chi_square_interval():
    rng = np.random.default_rng(11)
    scores = rng.normal(0, 1, (7, 1)) + rng.normal(0, 0.3, (7, 4))  # photos differ; repeats scatter around them
    spread = within_photo_spread(scores)
    ms_within, dof = anova_within(scores)
    assert (spread.photos, spread.repeats, spread.degrees_of_freedom) == (7, 4, 21) and dof == 21
    assert spread.within_sd == pytest.approx(np.sqrt(ms_within), rel=1e-12)
    assert spread.rc == pytest.approx(2.7719 * np.sqrt(ms_within), rel=1e-4)
    assert (spread.rc_low, spread.rc_high) == pytest.approx(chi2_rc_interval(ms_within, dof), rel=1e-12)
    assert spread.rc_low < spread.rc < spread.rc_high
    with pytest.raises(ValueError, match="K >= 2"):
        within_photo_spread(scores[:, :1])
    with pytest.raises(ValueError, match="finite"):
        within_photo_spread(np.array([[1.0, np.nan]]))


def test_the_rc_interval_covers_the_true_coefficient_at_its_level():
    rng = np.random.default_rng(5)
    sigma, covered, studies = 0.2, 0, 4000
    for _ in range(studies):
        spread = within_photo_spread(rng.normal(0, 1, (5, 1)) + rng.normal(0, sigma, (5, 3)))
        covered += spread.rc_low <= 1.96 * np.sqrt(2) * sigma <= spread.rc_high
    assert 0.935 < covered / studies < 0.965  # nominal 95 %


def study(rc: float, **changes) -> RepeatabilityStudy:
    fields = dict(model_identity="sha256:m", model_name="demo", non_clinical=True, photos=5, repeats=3,
                  confidence=0.95, variants=(VariantRepeatability(PRIMARY_VARIANT, rc / 2.77, rc, rc / 2, rc * 2),),
                  created_at=CREATED)
    return RepeatabilityStudy(**{**fields, **changes})


def test_judge_change_says_whether_a_change_exceeds_the_coefficient():
    exceeds = judge_change(-0.41, study(0.18))
    assert exceeds.exceeds is True and exceeds.rc == 0.18
    assert exceeds.text == "change −0.41 exceeds the repeatability coefficient 0.18"
    within = judge_change(0.12, study(0.18))
    assert within.exceeds is False and within.text == "within measurement noise (repeatability coefficient 0.18)"
    assert judge_change(0.18, study(0.18)).exceeds is False  # exceeding means larger than RC
    unknown = judge_change(0.5, None)
    assert unknown.exceeds is None and unknown.rc is None and unknown.text == NO_STUDY
    assert "no repeatability study stored for this model" in unknown.text
    other = judge_change(0.5, study(0.18), variant=ScoreVariant("ssim", "base", "mouth_nose", True))
    assert other.exceeds is None and "no figure for this score variant" in other.text
    # Visits that average K repeats: RC·sqrt((1/K1 + 1/K2)/2); two means of 4 halve it.
    halved = judge_change(0.12, study(0.18), repeats=(4, 4))
    assert halved.rc == pytest.approx(0.09) and halved.exceeds is True and halved.study_rc == 0.18
    assert judge_change(0.12, study(0.18), repeats=(1, 3)).rc == pytest.approx(0.18 * np.sqrt(2 / 3))
    # Small coefficients keep two significant figures.
    assert judge_change(0.0123, study(0.0042)).text == "change +0.0123 exceeds the repeatability coefficient 0.0042"
    assert json.loads(json.dumps(exceeds.to_dict()))["exceeds_noise"] is True
    for bad in (float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="change must be a finite number"):
            judge_change(bad, study(0.18))
    with pytest.raises(ValueError, match="repeats must be two integers"):
        judge_change(0.1, study(0.18), repeats=(0, 1))


# --- the command -------------------------------------------------------------------------------------------------

ARGS = ("--demo", "--steps", "5", "--adapt-steps", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """A data folder holding the 64² demo bundle (as `models make-demo --resolution 64` makes it)."""
    from service.runtime.model_store import make_demo_bundle

    data = tmp_path_factory.mktemp("data")
    make_demo_bundle(data / "models", resolution=64)
    return data


@pytest.fixture(scope="module")
def photos(tmp_path_factory, faces_dir, astronaut_rgb, grace_hopper_path):
    """The shared faces, the astronaut, Grace Hopper, and a grey picture without a face."""
    folder = tmp_path_factory.mktemp("photos")
    for path in faces_dir.glob("*.jpg"):
        shutil.copy(path, folder / path.name)
    shutil.copy(grace_hopper_path, folder / "grace_hopper.jpg")
    Image.fromarray(astronaut_rgb).save(folder / "astronaut.png")
    Image.fromarray(np.full((240, 240, 3), 128, np.uint8)).save(folder / "grey.png")
    (folder / "notes.txt").write_text("not a photo\n")
    return folder


@pytest.fixture(scope="module")
def studied(demo_data, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLEFTSCORE_DATA_DIR", str(demo_data))
        patch.delenv("CLEFTSCORE_REPEATS", raising=False)
        assert main(["repeatability", "--images", str(photos), "--repeats", "3", "--out", str(out), *ARGS]) == 0
    return out


@pytest.mark.slow
def test_repeatability_command_writes_statistics_that_an_independent_computation_reproduces(studied, photos):
    record = json.loads((studied / "repeatability.json").read_text())
    assert record["label"] == NON_CLINICAL_LABEL and record["non_clinical"] and NON_CLINICAL_LABEL in record["note"]
    assert (studied / "repeatability.md").read_text().startswith(f"**{NON_CLINICAL_LABEL}")
    assert (record["photos"], record["photos_listed"], record["repeats"], record["seeds"]) == (5, 6, 3, [303, 304, 305])
    assert [r["file"] for r in record["refused"]] == ["grey.png"] and record["refused"][0]["error"] == "NoFaceError"
    assert record["ignored_files"] == ["notes.txt"] and record["degrees_of_freedom"] == 10
    assert record["settings"]["inversion"]["steps"] == 5 and "repeats" not in record["settings"]
    assert {r["photo_sha256"] for r in record["scored"]} == {
        hashlib.sha256((photos / r["file"]).read_bytes()).hexdigest() for r in record["scored"]}
    with open(studied / "repeats.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    variants = record["variants"]
    assert len(variants) == 3 * 6 * 2 * 2 and PRIMARY_VARIANT.key in variants  # every Table 1 cell, both orders
    assert len(rows) == 5 * 3 * len(variants) and {r["seed"] for r in rows} == {"303", "304", "305"}
    for key, figures in variants.items():
        by_photo: dict[str, list[float]] = {}
        for row in rows:
            if row["variant"] == key:
                by_photo.setdefault(row["file"], []).append(float(row["score"]))
        ms_within, dof = anova_within(np.array(list(by_photo.values())))
        assert figures["within_sd"] == pytest.approx(np.sqrt(ms_within), rel=1e-9), key
        assert figures["repeatability_coefficient"] == pytest.approx(1.96 * np.sqrt(2 * ms_within), rel=1e-9), key
        interval = chi2_rc_interval(ms_within, dof)
        assert (figures["rc_ci_low"], figures["rc_ci_high"]) == pytest.approx(interval, rel=1e-9), key
    assert variants[PRIMARY_VARIANT.key]["within_sd"] > 0  # the seeds do move the score
    image = Image.open(studied / "spread_vs_mean.png")
    assert image.format == "PNG" and image.size[0] > 300
    with open(studied / "refused.csv", newline="") as handle:
        assert [r["file"] for r in csv.DictReader(handle)] == ["grey.png"]


@pytest.mark.slow
def test_the_study_is_stored_for_the_model_unless_told_not_to(studied, demo_data, photos, tmp_path, monkeypatch):
    from service.config.settings import load_config
    from service.runtime.database import open_repository

    record = json.loads((studied / "repeatability.json").read_text())
    config = load_config({"CLEFTSCORE_DATA_DIR": str(demo_data)})
    repository = open_repository(config, migrate=False)
    try:
        stored = repository.latest_repeatability(record["model"]["identity"])
    finally:
        repository.close()
    assert record["stored_as_study"] is not None
    assert (stored.photos, stored.repeats, stored.non_clinical) == (5, 3, True)
    assert stored.provenance["photo_sha256"] == [r["photo_sha256"] for r in record["scored"]]
    assert stored.provenance["seeds"] == [303, 304, 305] and stored.provenance["tool_version"] == record["tool_version"]
    assert stored.provenance["settings"] == record["settings"]
    primary = stored.for_variant(PRIMARY_VARIANT)
    assert primary.rc == record["variants"][PRIMARY_VARIANT.key]["repeatability_coefficient"]
    assert len(stored.variants) == len(record["variants"])

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(photos / "obama.jpg", one / "obama.jpg")
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(demo_data))
    assert main(["repeatability", "--images", str(one), "--repeats", "2", "--out", str(tmp_path / "out"), "--no-store",
                 *ARGS]) == 0
    assert json.loads((tmp_path / "out" / "repeatability.json").read_text())["stored_as_study"] is None
    repository = open_repository(config, migrate=False)
    try:
        assert repository.latest_repeatability(record["model"]["identity"]) == stored  # nothing new stored
    finally:
        repository.close()


@pytest.mark.parametrize("case", ["one repeat", "empty folder", "no photos", "unreadable", "not a folder"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path / "data"))
    images, repeats = tmp_path / "images", "3"
    images.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(images / "fine.png")
    expected = {"one repeat": "--repeats must be at least 2", "empty folder": "holds no photos",
                "no photos": "holds no photos", "unreadable": "1 photo(s) cannot be read: broken.jpg",
                "not a folder": "is not a folder"}[case]
    if case == "one repeat":
        repeats = "1"
    elif case == "empty folder":
        (images / "fine.png").unlink()
    elif case == "no photos":
        (images / "fine.png").rename(images / "fine.dat")
    elif case == "unreadable":
        (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    else:
        images = images / "fine.png"
    out = tmp_path / "out"
    assert main(["repeatability", "--images", str(images), "--repeats", repeats, "--out", str(out), *ARGS]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("cleftscore: ") and expected in captured.err and captured.err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(("extra", "env", "message"), [
    (["--steps", "0"], {}, "--steps: must be at least 1, got 0"),
    (["--bundle", "b"], {}, "Give either --bundle or --demo, not both."),
    ([], {"CLEFTSCORE_REPEATS": "0"}, "CLEFTSCORE_REPEATS: must be at least 1, got 0"),
])
def test_bad_options_are_refused_before_any_model_is_loaded(extra, env, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path / "data"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(images / "fine.png")
    out = tmp_path / "out"
    assert main(["repeatability", "--images", str(images), "--repeats", "2", "--out", str(out), *ARGS, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cleftscore: {message}") and err.count("\n") == 1, err
    assert not out.exists() and not (tmp_path / "data" / "cleftscore.db").exists()


def test_stored_study_says_why_none_is_available(tmp_path):
    from service.config.settings import load_config
    from service.research.repeatability import stored_study
    from service.runtime.database import open_repository

    config = load_config({"CLEFTSCORE_DATA_DIR": str(tmp_path / "data")})
    assert stored_study(config, "sha256:m") == (
        None, f"not available: there is no database at {tmp_path / 'data' / 'cleftscore.db'} (no study has been stored)")
    assert not (tmp_path / "data" / "cleftscore.db").exists()
    open_repository(config, migrate=True).close()
    study_none, why = stored_study(config, "sha256:m")
    assert study_none is None and why.startswith("not available: no repeatability study is stored for model sha256:m")
    repository = open_repository(config, migrate=False)
    try:
        repository.save_repeatability(study(0.18))
    finally:
        repository.close()
    assert stored_study(config, "sha256:m") == (study(0.18), "")
