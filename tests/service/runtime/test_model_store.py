"""Model bundles: demo bundle, install from files with checksums, verify, identity."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torchvision

from pipeline.errors import ModelError
from pipeline.models.bundle import load_bundle, read_manifest, verify_bundle
from service.cli.main import main
from service.runtime.model_store import install_bundle, list_bundles, make_demo_bundle


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    make_demo_bundle(store, resolution=32)
    return store


def test_demo_bundle_is_deterministic_and_non_clinical(demo_store, tmp_path):
    manifest = read_manifest(demo_store / "demo")
    assert manifest["non_clinical"] is True and manifest["lpips"]["file"] is None
    again = make_demo_bundle(tmp_path, resolution=32)
    assert read_manifest(again)["identity"] == manifest["identity"]
    other = make_demo_bundle(tmp_path, name="demo-seed1", resolution=32, seed=1)
    assert read_manifest(other)["identity"] != manifest["identity"]
    bundle = load_bundle(demo_store / "demo")
    assert bundle.identity.non_clinical and bundle.identity.label == "DEMO — NOT FOR CLINICAL USE"
    assert bundle.generator.img_resolution == 32 and bundle.lpips_spatial.spatial


def test_altered_files_are_detected(demo_store, tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(demo_store / "demo", copy)
    assert verify_bundle(copy) == []
    weights = copy / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert any("does not match" in p for p in verify_bundle(copy))
    with pytest.raises(ModelError, match="damaged"):
        load_bundle(copy)


@pytest.fixture()
def backbone_file(tmp_path):
    """A torchvision-format AlexNet state dict (random weights), named with its hash prefix
    the way torchvision names its releases."""
    import hashlib

    torch.manual_seed(0)
    scratch = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    named = tmp_path / f"alexnet-{digest[:8]}.pth"
    scratch.rename(named)
    return named, digest


def test_install_from_files_checks_hashes(sg2_fixture_dir, backbone_file, tmp_path):
    backbone, digest = backbone_file
    store = tmp_path / "store"
    folder = install_bundle(store, "tiny", str(sg2_fixture_dir / "sg2ada_tiny32.pkl"), str(backbone), lpips_net="alex")
    manifest = read_manifest(folder)
    assert manifest["lpips"]["sha256"] == digest
    # Not torchvision's released weights: labelled non-clinical.
    assert manifest["non_clinical"] is True and manifest["lpips"]["official_torchvision_release"] is False
    assert manifest["generator"]["config"]["img_resolution"] == 32
    bundle = load_bundle(folder)
    assert bundle.identity.identity == manifest["identity"]
    assert [b.name for b in list_bundles(store)] == ["tiny"]

    with pytest.raises(ModelError, match="not the expected"):
        install_bundle(store, "bad", str(sg2_fixture_dir / "sg2ada_tiny32.pkl"), str(backbone), lpips_net="alex",
                       generator_sha256="0" * 64)
    renamed = tmp_path / "alexnet-deadbeef.pth"
    shutil.copyfile(backbone, renamed)
    with pytest.raises(ModelError, match="does not start with deadbeef"):
        install_bundle(store, "bad", str(sg2_fixture_dir / "sg2ada_tiny32.pkl"), str(renamed), lpips_net="alex")
    assert not (store / "bad").exists() and not [p for p in store.iterdir() if "staging" in p.name]


def test_install_from_file_url(sg2_fixture_dir, backbone_file, tmp_path):
    backbone, _ = backbone_file
    folder = install_bundle(tmp_path / "store", "fromurl", (sg2_fixture_dir / "sg2ada_tiny32.pkl").as_uri(),
                            backbone.as_uri(), lpips_net="alex")
    assert read_manifest(folder)["generator"]["source"].startswith("file://")


def test_clinical_bundle_needs_a_backbone(sg2_fixture_dir, tmp_path):
    with pytest.raises(ModelError, match="needs --lpips-backbone"):
        install_bundle(tmp_path, "x", str(sg2_fixture_dir / "sg2ada_tiny32.pkl"), None)


def test_models_cli(tmp_path, capsys, sg2_fixture_dir):
    store = tmp_path / "store"
    assert main(["models", "make-demo", "--resolution", "32", "--store", str(store)]) == 0
    assert main(["models", "list", "--store", str(store)]) == 0
    assert "NON-CLINICAL" in capsys.readouterr().out
    assert main(["models", "verify", "--store", str(store)]) == 0
    assert "demo: OK" in capsys.readouterr().out
    (store / "demo" / "generator.json").write_text(json.dumps({"tampered": True}))
    assert main(["models", "verify", "--store", str(store)]) == 2
    out = tmp_path / "g.safetensors"
    assert main(["models", "export", str(sg2_fixture_dir / "sg2ada_tiny32.pkl"), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
