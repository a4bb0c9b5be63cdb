"""LPIPS loading from local files (pipeline.normalize.perceptual)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torchvision

from pipeline.errors import ModelError
from pipeline.normalize.perceptual import (
    LpipsModel,
    area_downsample,
    load_lpips,
    lpips_distance,
    lpips_map,
    torchvision_checkpoint_path,
)

# torchvision alexnet.features index -> LPIPS slice holding it (lpips 0.1.4 layout).
ALEX_SLICE_OF_LAYER = {"0": 1, "3": 2, "6": 3, "8": 4, "10": 5}




@pytest.fixture(scope="module")
def alexnet_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real torchvision-format AlexNet state dict (random weights, fixed seed), saved to disk."""
    torch.manual_seed(1234)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path_factory.mktemp("torch_home") / "alexnet-random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def alex_lpips(alexnet_state: tuple[Path, dict[str, torch.Tensor]]) -> LpipsModel:
    return load_lpips("alex", alexnet_state[0])


@pytest.fixture(scope="module")
def random_alex_lpips() -> LpipsModel:
    return load_lpips("alex", allow_random_backbone=True)


def test_backbone_from_torchvision_state_dict_is_copied_exactly(alex_lpips, alexnet_state, random_alex_lpips) -> None:
    path, state = alexnet_state
    backbone = dict(alex_lpips.metric.net.named_parameters())
    feature_keys = sorted(key for key in state if key.startswith("features."))
    assert len(backbone) == len(feature_keys) == 10
    for key in feature_keys:
        _, layer, kind = key.split(".")
        lpips_key = f"slice{ALEX_SLICE_OF_LAYER[layer]}.{layer}.{kind}"
        assert torch.equal(backbone[lpips_key], state[key]), key
    # The copy is the file's, not torchvision's default initialisation.
    assert not torch.equal(backbone["slice1.0.weight"], random_alex_lpips.metric.net.slice1[0].weight)


def test_identity_records_file_hash_and_non_clinical_status(alex_lpips, alexnet_state) -> None:
    path, _ = alexnet_state
    identity = alex_lpips.identity
    assert identity.net == alex_lpips.net == "alex"
    assert identity.random_backbone is False and alex_lpips.random_backbone is False
    assert identity.backbone_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # A random AlexNet is not torchvision's release (alexnet-owt-7be5be79.pth).
    assert identity.backbone_is_torchvision_release is False
    assert identity.clinical is False
    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    assert identity.heads_sha256 == hashlib.sha256(heads_file.read_bytes()).hexdigest()


def test_linear_heads_equal_the_lpips_package_file(alex_lpips) -> None:
    heads_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    assert len(heads) == 5
    for index in range(5):
        assert torch.equal(alex_lpips.metric.lins[index].model[1].weight, heads[f"lin{index}.model.1.weight"])


def test_model_is_frozen_and_in_eval_mode(alex_lpips) -> None:
    assert not alex_lpips.training
    assert all(not module.training for module in alex_lpips.modules())
    assert all(not parameter.requires_grad for parameter in alex_lpips.parameters())
    with pytest.raises(ValueError, match="training mode"):
        alex_lpips.train()


def test_missing_tensor_is_named(tmp_path: Path, alexnet_state) -> None:
    _, state = alexnet_state
    features_only = {key: value for key, value in state.items() if key.startswith("features.")}
    path = tmp_path / "features_only.pth"
    torch.save(features_only, path)
    with pytest.raises(ModelError, match=r"missing tensor 'classifier\.1\.weight'"):
        load_lpips("alex", path)


def test_mismatched_shape_is_named(tmp_path: Path, alexnet_state) -> None:
    _, state = alexnet_state
    bad = dict(state)
    bad["features.8.weight"] = torch.zeros(256, 384, 5, 5)
    # Classifier tensors as stride-0 views keep the file small; their shapes are right.
    for key in [key for key in bad if key.startswith("classifier.")]:
        bad[key] = torch.zeros(1).expand(bad[key].shape)
    path = tmp_path / "bad_shape.pth"
    torch.save(bad, path)
    with pytest.raises(ModelError, match=r"'features\.8\.weight' has shape \(256, 384, 5, 5\)"):
        load_lpips("alex", path)


def test_unexpected_tensor_is_named(tmp_path: Path, alexnet_state) -> None:
    _, state = alexnet_state
    extra = {key: torch.zeros(1).expand(value.shape) for key, value in state.items()}
    extra["features.99.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(extra, path)
    with pytest.raises(ModelError, match=r"unexpected tensor 'features\.99\.weight'"):
        load_lpips("alex", path)


def test_truncated_file_is_a_model_error(tmp_path: Path, alexnet_state) -> None:
    source, _ = alexnet_state
    path = tmp_path / "truncated.pth"
    with open(source, "rb") as handle:
        path.write_bytes(handle.read(1_000_000))
    with pytest.raises(ModelError, match="cannot be read"):
        load_lpips("alex", path)


def test_missing_file_and_no_weights_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_lpips("alex", tmp_path / "absent.pth")
    with pytest.raises(ModelError, match=r"needs torchvision's ImageNet vgg weights.*vgg16-397923af\.pth"):
        load_lpips("vgg")
    with pytest.raises(ValueError, match="net must be one of"):
        load_lpips("squeeze", allow_random_backbone=True)


def test_random_backbone_is_labelled_and_reproducible(random_alex_lpips) -> None:
    identity = random_alex_lpips.identity
    assert identity.random_backbone is True
    assert identity.backbone_sha256 is None
    assert identity.clinical is False
    again = load_lpips("alex", allow_random_backbone=True)
    for (name, a), (_, b) in zip(random_alex_lpips.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_loading_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_lpips("alex", allow_random_backbone=True)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_path_follows_torchvision_layout(tmp_path: Path) -> None:
    assert torchvision_checkpoint_path("vgg", tmp_path) == tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert torchvision_checkpoint_path("alex", tmp_path).name == "alexnet-owt-7be5be79.pth"


def test_distance_is_zero_for_equal_images_and_positive_otherwise(alex_lpips) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    same = lpips_distance(alex_lpips, x, x)
    assert same.shape == (2,)
    assert torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert bool((lpips_distance(alex_lpips, x, y) > 0.01).all())
    # At or below 256 px nothing is resampled: the package's own output.
    assert torch.equal(lpips_distance(alex_lpips, x, y), alex_lpips.metric(x, y).reshape(2))


def test_large_images_are_area_downsampled_to_256(alex_lpips) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 512, 512, generator=generator) * 2 - 1
    y = torch.rand(1, 3, 512, 512, generator=generator) * 2 - 1
    # Area downsampling by 2 is the mean of each 2x2 block (independent numpy computation).
    def block_mean(images: torch.Tensor) -> torch.Tensor:
        array = images.numpy().reshape(1, 3, 256, 2, 256, 2).mean(axis=(3, 5))
        return torch.from_numpy(np.ascontiguousarray(array))

    assert torch.allclose(area_downsample(x), block_mean(x), atol=1e-6)
    expected = alex_lpips.metric(block_mean(x), block_mean(y)).reshape(1)
    assert torch.allclose(lpips_distance(alex_lpips, x, y), expected, atol=1e-5)


def test_distance_has_gradients_for_the_images(random_alex_lpips) -> None:
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    y = torch.full((1, 3, 32, 32), 0.5)
    lpips_distance(random_alex_lpips, x, y).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_distance_rejects_bad_inputs(random_alex_lpips) -> None:
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        lpips_distance(random_alex_lpips, torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        lpips_distance(random_alex_lpips, torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 16))
    with pytest.raises(TypeError, match="floating point"):
        lpips_distance(random_alex_lpips, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="square"):
        area_downsample(torch.zeros(1, 3, 300, 280))


def test_spatial_model_gives_maps_of_the_input_size() -> None:
    model = load_lpips("alex", allow_random_backbone=True, spatial=True)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    maps = lpips_map(model, x, -x)
    assert maps.shape == (1, 1, 64, 64)
    assert float(maps.min()) >= 0 and float(maps.mean()) > 0
    with pytest.raises(ValueError, match="spatial=False"):
        lpips_distance(model, x, x)
