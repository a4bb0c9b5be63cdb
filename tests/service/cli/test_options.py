"""Options of the appraising commands override the configuration and are checked with it: bad values end
the command with one line naming the option (exit code 2) before any model is loaded."""

from __future__ import annotations

import os

import pytest
import torch

from service.cli.main import main


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("CLEFTSCORE_") and k != "CLEFTSCORE_SHARED"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CLEFTSCORE_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


@pytest.mark.parametrize(("args", "message"), [
    (["score", "photo.jpg", "--out", "out", "--steps", "0"], "--steps: must be at least 1, got 0"),
    (["score", "photo.jpg", "--out", "out", "--adapt-steps", "0"], "--adapt-steps: must be at least 1, got 0"),
    (["score", "photo.jpg", "--out", "out", "--device", "tpu"], "--device: 'tpu' must be auto, cpu, cuda or cuda:N"),
    (["score", "photo.jpg", "--out", "out", "--bundle", "../x"], "--bundle: bundle name '../x' must be"),
    (["simulate", "--out", "out", "--steps", "-2"], "--steps: must be at least 1, got -2"),
    (["simulate", "--out", "out", "--demo", "--bundle", "b"], "Give either --bundle or --demo, not both."),
])
def test_bad_options_are_refused_in_one_line(clean_env, capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cleftscore: {message}") and err.count("\n") == 1, err


def test_the_environment_is_checked_for_every_appraising_command(clean_env, capsys, tmp_path):
    clean_env.setenv("CLEFTSCORE_MODE", "turbo")
    for args in (["score", "photo.jpg", "--out", "out"], ["simulate", "--out", "out"]):
        assert main(args) == 2
        assert capsys.readouterr().err == "cleftscore: CLEFTSCORE_MODE: 'turbo' must be 'paper' or 'fast'\n"


def test_missing_bundle_names_the_install_command(clean_env, capsys, tmp_path, faces_dir):
    assert main(["score", str(faces_dir / "obama.jpg"), "--out", str(tmp_path / "out"), "--bundle", "nosuch",
                 "--store", str(tmp_path / "store"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cleftscore: No clinical model bundle named 'nosuch' is installed in") and "--demo" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_absent_cuda_is_refused(clean_env, capsys, tmp_path, faces_dir):
    assert main(["score", str(faces_dir / "obama.jpg"), "--out", str(tmp_path / "out"), "--demo",
                 "--device", "cuda"]) == 2
    assert "'cuda' was asked for but no CUDA device is available" in capsys.readouterr().err
