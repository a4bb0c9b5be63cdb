"""The `cleftscore preprocess` contract: files, JSON keys, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from service.cli.main import main
from tests.conftest import REPO_ROOT

CLI = [sys.executable, "-c", "import sys; from service.cli.main import main; sys.exit(main())"]


def test_preprocess_writes_the_contract(faces_dir, tmp_path):
    out = tmp_path / "pre"
    assert main(["preprocess", str(faces_dir / "obama.jpg"), "--size", "128", "--out", str(out)]) == 0
    aligned = np.asarray(Image.open(out / "aligned.png"))
    assert aligned.shape == (128, 128, 3)
    record = json.loads((out / "landmarks.json").read_text())
    assert {"original", "aligned", "detector_score", "faces_found", "pose"} <= set(record)
    assert np.asarray(record["original"]).shape == (68, 2) and np.asarray(record["aligned"]).shape == (68, 2)
    assert record["faces_found"] == 1 and record["detector_score"] > 1.0
    assert set(record["pose"]) == {"yaw", "pitch", "roll"}
    for name in ("mouth_nose", "face_without_eyes"):
        mask = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        assert mask.shape == (128, 128) and set(np.unique(mask)) == {0, 255}
    overlay = np.asarray(Image.open(out / "overlay.png"))
    original = np.asarray(Image.open(faces_dir / "obama.jpg"))
    assert overlay.shape == original.shape and not np.array_equal(overlay, original)
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    out = tmp_path / "out"
    result = run_cli("preprocess", str(not_an_image), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not a readable image" in result.stderr
    assert not out.exists()
    faceless = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(faceless)
    result = run_cli("preprocess", str(faceless), "--out", str(out))
    assert result.returncode == 2 and "No face was found" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_every_command_has_help():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("preprocess", "heatmap"):
        assert command in result.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and "--out" in sub.stdout
