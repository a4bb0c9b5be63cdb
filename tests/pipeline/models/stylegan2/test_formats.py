"""Our safetensors export and rosinality checkpoints: round trips and strictness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import ModelError
from pipeline.models.stylegan2 import (
    GeneratorConfig,
    build_generator,
    load_generator,
    save_generator,
    to_rosinality_checkpoint,
    to_rosinality_state_dict,
)


@pytest.fixture(scope="module")
def fixture_G(sg2_fixture_dir):
    return load_generator(sg2_fixture_dir / "sg2ada_tiny32.pkl")


def _images(G, seed=0, psi=0.7):
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, psi=psi, noise="const")


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# -- our export ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".safetensors"])
def test_export_round_trip_is_exact(fixture_G, tmp_path, suffix):
    written = save_generator(fixture_G, tmp_path / f"gen{suffix}")
    assert written == tmp_path / "gen.safetensors" and (tmp_path / "gen.json").is_file()
    document = json.loads((tmp_path / "gen.json").read_text())
    assert document["format"] == "cleftscore-stylegan2" and document["config"]["channel_max"] == 32
    loaded = load_generator(written)
    assert loaded.config == fixture_G.config and not loaded.training
    _assert_same_state(loaded, fixture_G)
    assert torch.equal(_images(loaded), _images(fixture_G))


def test_export_round_trip_resnet_config(tmp_path):
    G = build_generator(GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
                                        architecture="resnet", conv_clamp=1.5, mapping_layers=2), seed=2)
    loaded = load_generator(save_generator(G, tmp_path / "g"))
    assert loaded.config == G.config
    assert torch.equal(_images(loaded), _images(G))


def test_export_loading_is_strict(fixture_G, tmp_path):
    path = save_generator(fixture_G, tmp_path / "g")
    tensors = load_file(str(path))
    del tensors["synthesis.b16.conv0.noise_strength"]
    save_file(tensors, str(path))
    with pytest.raises(ModelError, match=r"missing \['synthesis.b16.conv0.noise_strength'\]"):
        load_generator(path)
    tensors["synthesis.b16.conv0.noise_strength"] = torch.zeros(1)  # [] expected
    save_file(tensors, str(path))
    with pytest.raises(ModelError, match=r"'synthesis.b16.conv0.noise_strength' has shape \(1,\), expected \(\)"):
        load_generator(path)
    document = json.loads((tmp_path / "g.json").read_text())
    document["config"]["mystery"] = 1
    (tmp_path / "g.json").write_text(json.dumps(document))
    with pytest.raises(ModelError, match=r"unknown \['mystery'\]"):
        load_generator(path)
    (tmp_path / "g.json").unlink()
    with pytest.raises(ModelError, match="g.json' does not exist"):
        load_generator(path)
    with pytest.raises(ModelError, match="suffix must be one of"):
        load_generator(tmp_path / "g.onnx")


# -- rosinality ---------------------------------------------------------------------------


def test_rosinality_checkpoint_of_fixture_gives_same_images(fixture_G, tmp_path):
    sd = to_rosinality_state_dict(fixture_G, stock_channels=False)
    torch.save({"g_ema": sd, "latent_avg": fixture_G.mapping.w_avg.clone()}, tmp_path / "x.pt")
    loaded = load_generator(tmp_path / "x.pt")
    assert loaded.config.channel_max == 32 and loaded.config.mapping_layers == 8
    for psi in (1.0, 0.7):
        diff = (_images(loaded, psi=psi) - _images(fixture_G, psi=psi)).abs().max()
        assert float(diff) < 1e-4
    _assert_same_state(loaded, fixture_G)


def test_rosinality_converter_refuses_what_rosinality_cannot_express(fixture_G):
    with pytest.raises(ValueError, match="not rosinality's stock table"):
        to_rosinality_state_dict(fixture_G)
    clamped = build_generator(GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, channel_base=4096,
                                              conv_clamp=256, architecture="resnet", mapping_layers=1), seed=0)
    with pytest.raises(ValueError, match=r"conv_clamp=256.0; architecture='resnet'"):
        to_rosinality_state_dict(clamped)


def _expected_rosinality_shapes(style_dim, n_mlp, channels, size):
    """rosinality's Generator(size, style_dim, n_mlp) state_dict shapes, written out from its model."""
    shapes = {f"style.{i}.{p}": ([style_dim, style_dim] if p == "weight" else [style_dim])
              for i in range(1, n_mlp + 1) for p in ("weight", "bias")}
    c4 = channels[4]
    shapes.update({"input.input": [1, c4, 4, 4], "conv1.conv.weight": [1, c4, c4, 3, 3],
                   "conv1.conv.modulation.weight": [c4, style_dim], "conv1.conv.modulation.bias": [c4],
                   "conv1.noise.weight": [1], "conv1.activate.bias": [c4],
                   "to_rgb1.conv.weight": [1, 3, c4, 1, 1], "to_rgb1.conv.modulation.weight": [c4, style_dim],
                   "to_rgb1.conv.modulation.bias": [c4], "to_rgb1.bias": [1, 3, 1, 1],
                   "noises.noise_0": [1, 1, 4, 4]})
    res, layer, prev = 8, 1, c4
    while res <= size:
        n, c = (layer - 1) // 2, channels[res]
        for j, cin in ((layer - 1, prev), (layer, c)):
            shapes.update({f"convs.{j}.conv.weight": [1, c, cin, 3, 3], f"convs.{j}.conv.modulation.weight":
                           [cin, style_dim], f"convs.{j}.conv.modulation.bias": [cin],
                           f"convs.{j}.noise.weight": [1], f"convs.{j}.activate.bias": [c],
                           f"noises.noise_{j + 1}": [1, 1, res, res]})
        shapes[f"convs.{layer - 1}.conv.blur.kernel"] = [4, 4]
        shapes.update({f"to_rgbs.{n}.conv.weight": [1, 3, c, 1, 1], f"to_rgbs.{n}.conv.modulation.weight":
                       [c, style_dim], f"to_rgbs.{n}.conv.modulation.bias": [c], f"to_rgbs.{n}.bias": [1, 3, 1, 1],
                       f"to_rgbs.{n}.upsample.kernel": [4, 4]})
        res, layer, prev = res * 2, layer + 2, c
    return shapes


def test_rosinality_stock_layout_round_trip(tmp_path):
    # rosinality's table: 512 channels up to 32x32 (channel_multiplier 2 -> base 32768)
    G = build_generator(GeneratorConfig(z_dim=16, w_dim=16, img_resolution=8, mapping_layers=2), seed=4)
    ckpt = to_rosinality_checkpoint(G)
    want = _expected_rosinality_shapes(16, 2, {4: 512, 8: 512}, 8)
    assert {k: list(v.shape) for k, v in ckpt["g_ema"].items()} == want
    blur = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64 * 4
    np.testing.assert_allclose(ckpt["g_ema"]["convs.0.conv.blur.kernel"].numpy(), blur, rtol=1e-6)
    # tensor conventions: kernels unflipped, noise strength [1], bias [1, 3, 1, 1], mapping offset by PixelNorm
    assert torch.equal(ckpt["g_ema"]["convs.0.conv.weight"][0], G.synthesis.b8.conv0.weight)
    assert torch.equal(ckpt["g_ema"]["convs.1.noise.weight"], G.synthesis.b8.conv1.noise_strength.reshape(1))
    assert torch.equal(ckpt["g_ema"]["to_rgbs.0.bias"].flatten(), G.synthesis.b8.torgb.bias)
    assert torch.equal(ckpt["g_ema"]["style.2.weight"], G.mapping.fc1.weight)
    assert torch.equal(ckpt["g_ema"]["noises.noise_2"][0, 0], G.synthesis.b8.conv1.noise_const)
    torch.save(ckpt, tmp_path / "stock.pt")
    loaded = load_generator(tmp_path / "stock.pt")
    assert (loaded.config.channel_base, loaded.config.channel_max) == (4096, 512)
    assert torch.equal(_images(loaded), _images(G))


def test_rosinality_loading_is_strict_and_fills_missing_latent_avg(fixture_G, tmp_path):
    sd = to_rosinality_state_dict(fixture_G, stock_channels=False)
    torch.save({"g_ema": sd}, tmp_path / "no_avg.pt")
    a, b = load_generator(tmp_path / "no_avg.pt"), load_generator(tmp_path / "no_avg.pt")
    assert torch.equal(a.mapping.w_avg, b.mapping.w_avg)  # deterministic estimate
    with torch.no_grad():
        ws = a.mapping(torch.randn(4096, 32, generator=torch.Generator().manual_seed(7)))[:, 0]
    standard_error = ws.std(0) * (2 / 4096) ** 0.5  # two independent means of 4096 samples
    assert ((ws.mean(0) - a.mapping.w_avg).abs() < 5 * standard_error).all()
    torch.save({"g_ema": {**sd, "convs.9.conv.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(ModelError, match=r"unexpected \['convs.9.conv.weight'\]"):
        load_generator(tmp_path / "extra.pt")
    torch.save({"g_ema": {k: v for k, v in sd.items() if k != "to_rgbs.1.conv.modulation.bias"}},
               tmp_path / "missing.pt")
    with pytest.raises(ModelError, match=r"missing \['to_rgbs.1.conv.modulation.bias'\]"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"g_ema": {**sd, "convs.2.noise.weight": torch.zeros([])}}, tmp_path / "shape.pt")
    with pytest.raises(ModelError, match=r"'convs.2.noise.weight' has shape \(\), expected \(1,\)"):
        load_generator(tmp_path / "shape.pt")
    torch.save({"g_ema": sd, "args": {"size": 32}, "opt": object}, tmp_path / "code.pt")
    with pytest.raises(ModelError, match="weights_only"):
        load_generator(tmp_path / "code.pt")
