"""``CLEFTSCORE_MODE=fast`` means the same in every command that appraises: score, evaluate and simulate
record mode "fast" in what they write (serve: tests/service/runtime/test_ipv6_and_mode.py), the calibrate
path scores photo files with the same settings, and command-line flags override the configuration.

Tiny settings throughout: the 64² demo bundle, a few steps, CPU."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from service.cli.main import main
from service.config.settings import load_config
from service.runtime.database import open_repository
from service.runtime.model_store import make_demo_bundle

pytestmark = pytest.mark.slow

TINY = ["--steps", "4", "--adapt-steps", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    make_demo_bundle(folder, resolution=64)
    return folder


@pytest.fixture()
def fast_env(monkeypatch, tmp_path):
    """Only these CLEFTSCORE_ variables: fast mode, and step counts the flags must override."""
    for key in [k for k in os.environ if k.startswith("CLEFTSCORE_") and k != "CLEFTSCORE_SHARED"]:
        monkeypatch.delenv(key)
    env = {"CLEFTSCORE_MODE": "fast", "CLEFTSCORE_DATA_DIR": str(tmp_path / "data"),
           "CLEFTSCORE_INVERSION_STEPS": "3000", "CLEFTSCORE_ADAPTATION_STEPS": "70"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _strict_json(path):
    def refuse(text: str):
        raise ValueError(f"non-standard JSON constant {text}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_score_records_fast_mode_and_the_flags(store, fast_env, faces_dir, tmp_path):
    out = tmp_path / "score"
    assert main(["score", str(faces_dir / "obama.jpg"), "--out", str(out), "--demo", "--store", str(store), *TINY,
                 "--no-lpips-heatmaps"]) == 0
    settings = _strict_json(out / "scores.json")["settings"]
    assert settings["mode"] == "fast" and settings["fast_schedule"]
    assert (settings["inversion"]["steps"], settings["adaptation"]["steps"], settings["device"]) == (4, 1, "cpu")


def test_evaluate_records_fast_mode(store, fast_env, faces_dir, grace_hopper_path, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for source in (faces_dir / "obama.jpg", faces_dir / "biden.jpg", grace_hopper_path):
        shutil.copy(source, images / source.name)
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("file,rating\nobama.jpg,6\nbiden.jpg,4.5\ngrace_hopper.jpg,2\n")
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--images", str(images), "--ratings", str(ratings), "--out", str(out), "--demo",
                 "--store", str(store), *TINY, "--journal-order-only", "--bootstrap", "20"]) == 0
    settings = _strict_json(out / "evaluation.json")["settings"]
    assert settings["mode"] == "fast" and (settings["inversion"]["steps"], settings["adaptation"]["steps"]) == (4, 1)


def test_simulate_records_fast_mode(store, fast_env, tmp_path):
    out = tmp_path / "simulation"
    assert main(["simulate", "--demo", "--store", str(store), "--faces", "1", "--levels", "2", "--out", str(out),
                 *TINY]) == 0
    settings = _strict_json(out / "summary.json")["settings"]["appraisal"]
    assert settings["mode"] == "fast" and (settings["inversion"]["steps"], settings["adaptation"]["steps"]) == (4, 1)


def test_calibrate_scores_photo_files_like_score_does(store, fast_env, faces_dir, grace_hopper_path, tmp_path,
                                                      monkeypatch, capsys):
    """calibrate scores photo files through the same configuration, settings and bundle as ``score``
    (same fast-mode score for the same photo), without the service's runtime."""
    monkeypatch.setenv("CLEFTSCORE_INVERSION_STEPS", "4")
    monkeypatch.setenv("CLEFTSCORE_ADAPTATION_STEPS", "1")
    monkeypatch.setenv("CLEFTSCORE_DEVICE", "cpu")
    config = load_config(os.environ)
    shutil.copytree(store / "demo", config.models_dir / "demo")
    open_repository(config).close()  # an initialised database, as `serve` leaves it
    photos = tmp_path / "rated"
    photos.mkdir()
    for source in (faces_dir / "obama.jpg", faces_dir / "biden.jpg", grace_hopper_path):
        shutil.copy(source, photos / source.name)
    ratings = photos / "ratings.csv"
    ratings.write_text("photo,rating\nobama.jpg,6\nbiden.jpg,4.5\ngrace_hopper.jpg,2\n")
    assert main(["calibrate", str(ratings), "--demo"]) == 0, capsys.readouterr().err
    assert "n = 3" in capsys.readouterr().out
    repository = open_repository(config, migrate=False)
    try:
        rows = {row["photo"]: row["score"] for row in repository.latest_calibration().provenance["rows"]}
    finally:
        repository.close()
    out = tmp_path / "score"
    assert main(["score", str(photos / "obama.jpg"), "--out", str(out), "--demo", "--no-lpips-heatmaps"]) == 0
    record = _strict_json(out / "scores.json")
    assert record["settings"]["mode"] == "fast"
    assert rows["obama.jpg"] == pytest.approx(record["primary"]["score"], abs=1e-9)
