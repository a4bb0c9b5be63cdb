"""The `cleftscore heatmap` contract: every variant in scores.json, heatmap PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from service.cli.main import main


@pytest.fixture(scope="module")
def preprocessed(faces_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "obama"
    assert main(["preprocess", str(faces_dir / "obama.jpg"), "--size", "128", "--out", str(out)]) == 0
    aligned = np.asarray(Image.open(out / "aligned.png")).astype(np.int16)
    changed = aligned.copy()
    landmarks = np.asarray(json.loads((out / "landmarks.json").read_text())["aligned"])
    x, y = np.round(landmarks[51]).astype(int)  # upper lip
    changed[y - 6 : y + 2, x - 3 : x + 4] = 0  # a dark notch through the lip
    Image.fromarray(changed.astype(np.uint8)).save(out / "notched.png")
    return out


def test_scores_every_variant_without_lpips(preprocessed, tmp_path):
    out = tmp_path / "maps"
    assert main(["heatmap", str(preprocessed / "aligned.png"), str(preprocessed / "notched.png"),
                 "--landmarks", str(preprocessed / "landmarks.json"), "--out", str(out)]) == 0
    record = json.loads((out / "scores.json").read_text())
    assert record["lpips"].startswith("skipped")
    scores = record["scores"]
    # PSE and SSIM × 4 processings × 2 regions.
    assert len(scores) == 16
    assert {(s["method"], s["processing"]) for s in scores} == {
        (m, p) for m in ("pse", "ssim") for p in ("base", "ycbcr", "erosion", "ycbcr+erosion")}
    assert all(np.isfinite(s["score"]) for s in scores)
    assert all(s["adaptation"] is True for s in scores)  # NORMALIZED is taken as the adapted face by default
    # The notch is in the mouth/nose region: that region scores worse (lower) than an identical pair.
    pse = {(s["processing"], s["region"]): s["score"] for s in scores if s["method"] == "pse"}
    assert pse[("base", "mouth_nose")] < 27
    assert len(list((out / "heatmaps").glob("*.png"))) == 8


def test_lpips_variants_with_a_backbone_file(preprocessed, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weights)
    out = tmp_path / "maps"
    assert main(["heatmap", str(preprocessed / "aligned.png"), str(preprocessed / "notched.png"),
                 "--landmarks", str(preprocessed / "landmarks.json"), "--out", str(out),
                 "--lpips-weights", str(weights), "--lpips-net", "alex", "--both-erosion-orders",
                 "--not-adapted"]) == 0
    record = json.loads((out / "scores.json").read_text())
    assert record["lpips"] == "computed"
    methods = {s["method"] for s in record["scores"]}
    assert methods == {"pse", "lpips", "ssim"}
    orders = {s["erosion_order"] for s in record["scores"]}
    assert orders == {None, "diff_then_erode", "erode_then_diff"}
    assert {s["adaptation"] for s in record["scores"]} == {False}


def test_mismatched_images_are_refused(preprocessed, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small)
    code = main(["heatmap", str(preprocessed / "aligned.png"), str(small),
                 "--landmarks", str(preprocessed / "landmarks.json"), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "one size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
