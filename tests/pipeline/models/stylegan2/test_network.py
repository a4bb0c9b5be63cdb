"""Our generator against a naive float64 per-sample re-implementation, in every SynthesisImpl, plus API behaviour."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from pipeline.models.stylegan2 import Architecture, GeneratorConfig, SynthesisImpl, build_generator, load_generator, ops
from pipeline.models.stylegan2.networks import CONV_FORMS
from tests.pipeline.models.stylegan2.oracles import naive_modconv, numpy_upfirdn2d

SQRT2 = math.sqrt(2.0)


def _lrelu(x):
    return np.where(x >= 0, x, 0.2 * x)


def _state(G):
    return {k: v.detach().double().numpy() for k, v in G.state_dict().items()}


def naive_mapping(G, z, psi=1.0, cutoff=None):
    """z [N, z_dim] -> ws [N, num_ws, w_dim] from the equations (float64)."""
    cfg, sd = G.config, _state(G)
    x = z / np.sqrt((z**2).mean(axis=1, keepdims=True) + 1e-8)
    lr = cfg.mapping_lr_multiplier
    for i in range(cfg.mapping_layers):
        wt, b = sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"]
        x = _lrelu(x @ (wt * lr / math.sqrt(wt.shape[1])).T + b * lr) * SQRT2
    avg = sd["mapping.w_avg"]
    return np.stack([avg + psi * (x - avg) if cutoff is None or l < cutoff else x for l in range(cfg.num_ws)], 1)


def naive_synthesis(G, ws, noise="const"):
    """Straight from the StyleGAN2 equations: loops over samples, explicit kernel scaling."""
    cfg, sd = G.config, _state(G)
    taps = np.asarray(cfg.resample_filter)
    fir = np.outer(taps, taps) / taps.sum() ** 2

    def affine(prefix, w):
        a, ab = sd[prefix + ".affine.weight"], sd[prefix + ".affine.bias"]
        return w @ (a / math.sqrt(a.shape[1])).T + ab

    def upsample(img):
        k = len(taps)
        pad = ((k + 1) // 2, (k - 2) // 2) * 2
        return np.stack([numpy_upfirdn2d(c, fir, 2, 1, pad, 4.0) for c in img])

    clamp = cfg.conv_clamp
    images = []
    for s in range(ws.shape[0]):
        feat, img, w_idx = None, None, 0
        for res in cfg.block_resolutions:
            p = f"synthesis.b{res}"
            names = ["conv1"] if res == 4 else ["conv0", "conv1"]
            resnet = cfg.architecture.value == "resnet" and res > 4
            if res == 4:
                feat = sd[p + ".const"]
            shortcut = None
            if resnet:
                sw = sd[p + ".skip.weight"][:, :, 0, 0] / math.sqrt(feat.shape[0])
                shortcut = upsample(np.einsum("oi,ihw->ohw", sw, feat)) * math.sqrt(0.5)
            for j, name in enumerate(names):
                gain = math.sqrt(0.5) if resnet and name == "conv1" else 1.0
                style = affine(f"{p}.{name}", ws[s, w_idx + j])
                y = naive_modconv(feat[None], sd[f"{p}.{name}.weight"], style[None], True,
                                   2 if name == "conv0" else 1, fir)[0]
                if noise == "const":
                    y = y + sd[f"{p}.{name}.noise_const"] * sd[f"{p}.{name}.noise_strength"]
                elif isinstance(noise, dict):
                    y = y + noise[f"b{res}.{name}"][min(s, len(noise[f"b{res}.{name}"]) - 1), 0] * sd[
                        f"{p}.{name}.noise_strength"]
                y = _lrelu(y + sd[f"{p}.{name}.bias"][:, None, None]) * SQRT2 * gain
                feat = y if clamp is None else np.clip(y, -clamp * gain, clamp * gain)
            if resnet:
                feat = shortcut + feat
            if img is not None:
                img = upsample(img)
            if res == cfg.img_resolution or cfg.architecture.value == "skip":
                style = affine(f"{p}.torgb", ws[s, w_idx + len(names)]) / math.sqrt(feat.shape[0])
                rgb = np.einsum("oi,ihw->ohw", sd[f"{p}.torgb.weight"][:, :, 0, 0] * style[None], feat)
                rgb = rgb + sd[f"{p}.torgb.bias"][:, None, None]
                rgb = rgb if clamp is None else np.clip(rgb, -clamp, clamp)
                img = rgb if img is None else img + rgb
            w_idx += len(names)
        images.append(img)
    return np.stack(images)


CONFIGS = {
    "res64_clamp_narrow": GeneratorConfig(z_dim=16, w_dim=16, img_resolution=64, channel_base=512, channel_max=16,
                                          conv_clamp=0.4, mapping_layers=4),
    "resnet16": GeneratorConfig(z_dim=8, w_dim=12, img_resolution=16, channel_base=128, channel_max=16,
                                architecture="resnet", mapping_layers=2, mapping_layer_features=10,
                                mapping_lr_multiplier=0.1),
    "orig8": GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8,
                             architecture="orig", mapping_layers=1, conv_clamp=2.0),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_generator_matches_naive_equations(name):
    G = build_generator(CONFIGS[name], seed=11)
    z = np.random.default_rng(0).normal(size=(2, G.z_dim))
    for psi, cutoff, noise in [(1.0, None, "const"), (0.7, 3, "none")]:
        with torch.no_grad():
            ws = G.mapping(torch.from_numpy(z).float(), psi=psi, cutoff=cutoff)
            img = G.synthesis(ws, noise=noise)
        want_ws = naive_mapping(G, z, psi, cutoff)
        want_img = naive_synthesis(G, ws.double().numpy(), noise)
        assert img.shape == (2, 3, G.img_resolution, G.img_resolution)
        np.testing.assert_allclose(ws.numpy(), want_ws, atol=2e-5)
        assert np.abs(img.numpy() - want_img).max() < 1e-4
    if G.config.conv_clamp is not None:  # the clamp really limits the final image
        assert np.abs(want_img).max() <= G.config.conv_clamp * (1 if name == "orig8" else 5) + 1e-6


def test_channel_table_and_layer_shapes():
    G = build_generator(CONFIGS["res64_clamp_narrow"], seed=0)
    sd = G.state_dict()
    assert sd["synthesis.b4.const"].shape == (16, 4, 4)  # channel_max caps 512 // 4
    assert sd["synthesis.b64.conv0.weight"].shape == (8, 16, 3, 3)  # 512 // 64
    assert sd["synthesis.b64.torgb.weight"].shape == (3, 8, 1, 1)
    assert sd["synthesis.b32.conv0.noise_const"].shape == (32, 32)
    assert G.num_ws == 10 and G.mapping.num_ws == 10  # 9 convs + final ToRGB
    assert list(G.synthesis.noise_shapes) == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1",
                                             "b32.conv0", "b32.conv1", "b64.conv0", "b64.conv1"]
    assert G.synthesis.noise_shapes["b16.conv0"] == (16, 16)


def test_build_is_deterministic_and_seed_dependent():
    cfg = CONFIGS["orig8"]
    a, b, c = build_generator(cfg, seed=3), build_generator(cfg, seed=3), build_generator(cfg, seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.state_dict()["synthesis.b8.conv0.weight"], c.state_dict()["synthesis.b8.conv0.weight"])
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in a.state_dict().values())
    assert not a.training and all(p.requires_grad for p in a.parameters())
    # w_avg is the mean mapping output, so truncation with psi=0 lands near typical ws
    with torch.no_grad():
        ws = a.mapping(torch.randn(4096, cfg.z_dim, generator=torch.Generator().manual_seed(99)))
    standard_error = ws[:, 0].std(0) * math.sqrt(1 / 4096 + 1 / 2048)
    assert ((ws[:, 0].mean(0) - a.mapping.w_avg).abs() < 5 * standard_error).all()


def test_noise_dict_and_gradients():
    G = build_generator(CONFIGS["orig8"], seed=1)
    ws = G.mapping(torch.randn(2, 8, generator=torch.Generator().manual_seed(0))).detach().requires_grad_(True)
    noise = {name: torch.randn(2 if name == "b8.conv0" else 1, 1, h, w, requires_grad=True)
             for name, (h, w) in G.synthesis.noise_shapes.items()}
    img = G.synthesis(ws, noise=noise)
    want = naive_synthesis(G, ws.detach().double().numpy(), {k: v.detach().double().numpy() for k, v in noise.items()})
    assert np.abs(img.detach().numpy() - want).max() < 1e-4
    img.square().sum().backward()
    assert ws.grad is not None and float(ws.grad.abs().sum()) > 0
    for name, t in noise.items():
        assert t.grad is not None and float(t.grad.abs().sum()) > 0, name


def test_noise_modes_differ_and_validate():
    G = build_generator(CONFIGS["orig8"], seed=1)
    ws = G.mapping(torch.randn(1, 8, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        const, none = G.synthesis(ws, noise="const"), G.synthesis(ws, noise="none")
        zeros = G.synthesis(ws, noise={n: torch.zeros(1, 1, *s) for n, s in G.synthesis.noise_shapes.items()})
    assert not torch.allclose(const, none)
    assert torch.allclose(zeros, none, atol=1e-6)
    good = {n: torch.zeros(1, 1, *s) for n, s in G.synthesis.noise_shapes.items()}
    with pytest.raises(ValueError, match=r"missing \['b4.conv1'\]"):
        G.synthesis(ws, noise={k: v for k, v in good.items() if k != "b4.conv1"})
    with pytest.raises(ValueError, match="unexpected.*b16.conv0"):
        G.synthesis(ws, noise={**good, "b16.conv0": torch.zeros(1, 1, 16, 16)})
    with pytest.raises(ValueError, match="b8.conv1"):
        G.synthesis(ws, noise={**good, "b8.conv1": torch.zeros(1, 1, 4, 4)})
    with pytest.raises(ValueError, match="noise must be"):
        G.synthesis(ws, noise="random")


def test_input_validation():
    G = build_generator(CONFIGS["orig8"], seed=1)
    with pytest.raises(ValueError, match=r"z must be a tensor \[N, 8\]"):
        G.mapping(torch.zeros(2, 9))
    with pytest.raises(ValueError, match=r"ws must be a tensor \[N, 4, 8\]"):
        G.synthesis(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="cutoff"):
        G(torch.zeros(1, 8), psi=0.5, cutoff=-1)
    with pytest.raises(ValueError, match="psi"):
        G(torch.zeros(1, 8), psi=float("nan"))
    with pytest.raises(ValueError, match="c_dim"):
        GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, c_dim=10)
    with pytest.raises(ValueError, match="power of 2"):
        GeneratorConfig(z_dim=8, w_dim=8, img_resolution=48)
    with pytest.raises(ValueError, match="architecture"):
        GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, architecture="unet")


def test_noise_maps_in_the_shape_of_the_stored_buffers():
    """{name: layer.noise_const} ([H, W], as the reference stores them) gives the image of noise='const'."""
    G = build_generator(CONFIGS["res64_clamp_narrow"], seed=3)
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)))
    buffers = {name: G.synthesis.get_submodule(name).noise_const for name in G.synthesis.noise_shapes}
    assert all(tuple(map_.shape) == G.synthesis.noise_shapes[name] for name, map_ in buffers.items())
    with torch.no_grad():
        const = G.synthesis(ws, noise="const")
        assert torch.equal(G.synthesis(ws, noise=buffers), const)
        mixed = {**buffers, "b8.conv0": buffers["b8.conv0"][None, None]}  # shapes may be mixed
        assert torch.equal(G.synthesis(ws, noise=mixed), const)
    for bad, shape in [({**buffers, "b8.conv1": torch.zeros(8, 9)}, r"\(8, 9\)"),
                       ({**buffers, "b8.conv1": torch.zeros(1, 8, 8)}, r"\(1, 8, 8\)"),
                       ({**buffers, "b8.conv1": torch.zeros(8, 8, dtype=torch.int64)}, "int64"),
                       ({**buffers, "b8.conv1": torch.zeros(3, 1, 8, 8)}, r"\(3, 1, 8, 8\)")]:
        with pytest.raises(ValueError, match=r"noise map 'b8.conv1' must be a float tensor \[2 or 1, 1, 8, 8\] "
                                             r"or \[8, 8\], got .*" + shape):
            G.synthesis(ws, noise=bad)


# -- SynthesisImpl: the same function in other arithmetic forms --------------------------------------

#: Every conv form with every FIR implementation, fused upsampling and NHWC with the factored forms.
IMPLS = ([SynthesisImpl(conv_form=form, fir=fir) for form, fir in itertools.product(CONV_FORMS, ops.FIR_IMPLS)]
         + [SynthesisImpl(conv_form=form, fir="depthwise", fuse_upsampling=True, channels_last=channels_last)
            for form, channels_last in itertools.product(("weight", "input", "auto"), (False, True))]
         + [SynthesisImpl(channels_last=True)])


@pytest.fixture(scope="module")
def fixture_G(sg2_fixture_dir):
    return load_generator(sg2_fixture_dir / "sg2ada_tiny32.pkl")


def _latents(G, count: int, dtype=torch.float32, seed: int = 0):
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn(count, G.z_dim, generator=rng).to(dtype))
    noise = {k: torch.randn(count, 1, *s, generator=rng, dtype=dtype) for k, s in G.synthesis.noise_shapes.items()}
    return ws, noise


def test_synthesis_impl_is_validated():
    assert SynthesisImpl() == SynthesisImpl(conv_form="reference", fir="reference")
    assert SynthesisImpl(conv_form="auto").for_batch(1).conv_form == "weight"
    assert SynthesisImpl(conv_form="auto", channels_last=True).for_batch(2) == SynthesisImpl(conv_form="input",
                                                                                             channels_last=True)
    impl = SynthesisImpl(conv_form="input")
    assert impl.for_batch(1) is impl
    with pytest.raises(ValueError, match="conv_form"):
        SynthesisImpl(conv_form="grouped")
    with pytest.raises(ValueError, match="fir"):
        SynthesisImpl(fir="fft")
    with pytest.raises(ValueError, match="fuse_upsampling"):
        SynthesisImpl(fuse_upsampling=True)
    with pytest.raises(TypeError, match="channels_last"):
        SynthesisImpl(channels_last=1)
    G = build_generator(CONFIGS["orig8"], seed=1)
    with pytest.raises(TypeError, match="impl must be a SynthesisImpl"):
        G.synthesis(G.mapping(torch.zeros(1, 8)), impl="fast")


@pytest.mark.parametrize("architecture", list(Architecture))
def test_every_synthesis_impl_computes_the_reference_image(architecture):
    config = GeneratorConfig(z_dim=16, w_dim=16, img_resolution=32, mapping_layers=2, channel_base=256, channel_max=16,
                             architecture=architecture, conv_clamp=0.7)
    G = build_generator(config, seed=2).double()
    for count in (1, 3):
        ws, noise = _latents(G, count, torch.float64, seed=count)
        expected = G.synthesis(ws, noise=noise)
        for impl in IMPLS:
            torch.testing.assert_close(G.synthesis(ws, noise=noise, impl=impl), expected, rtol=0, atol=1e-10,
                                       msg=f"N={count} {impl}")


def test_synthesis_impl_gradients_equal_the_reference(fixture_G):
    G64 = copy.deepcopy(fixture_G).double()
    ws, noise = _latents(G64, 2, torch.float64, seed=5)
    probe = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def gradients(impl):
        w = ws.clone().requires_grad_(True)
        maps = {k: v.clone().requires_grad_(True) for k, v in noise.items()}
        G64.zero_grad(set_to_none=True)
        (G64.synthesis(w, noise=maps, impl=impl) * probe).sum().backward()
        return [w.grad, *(maps[k].grad for k in maps), *(p.grad for p in G64.synthesis.parameters())]

    G64.synthesis.requires_grad_(True)
    expected = gradients(SynthesisImpl())
    got = gradients(SynthesisImpl(conv_form="auto", fir="depthwise", fuse_upsampling=True, channels_last=True))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_faster_forms_give_the_float32_image_to_rounding(fixture_G):
    ws, noise = _latents(fixture_G, 2, seed=3)
    with torch.no_grad():
        reference = fixture_G.synthesis(ws, noise=noise)
        contiguous = fixture_G.synthesis(ws, noise=noise, impl=SynthesisImpl(conv_form="input", fir="depthwise"))
        nhwc = fixture_G.synthesis(ws, noise=noise, impl=SynthesisImpl(conv_form="input", fir="depthwise",
                                                                       channels_last=True))
    torch.testing.assert_close(nhwc, contiguous, rtol=0, atol=1e-5)
    torch.testing.assert_close(nhwc, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("precision", "tolerance"), [(torch.bfloat16, 0.04), (torch.float16, 0.01)])
def test_autocast_synthesis_stays_close_to_float32(fixture_G, precision, tolerance):
    """bf16 keeps 8 mantissa bits: images within 4 % of their range; fp16 (11 bits) within 1 %."""
    ws, noise = _latents(fixture_G, 2, seed=4)
    with torch.no_grad():
        expected = fixture_G.synthesis(ws, noise=noise)
        with torch.autocast("cpu", dtype=precision):
            got = fixture_G.synthesis(ws, noise=noise, impl=SynthesisImpl(conv_form="auto", fir="depthwise",
                                                                          channels_last=True))
    assert got.dtype == torch.float32  # the RGB image is accumulated in float32
    error = float((got - expected).abs().max())
    assert 0 < error <= tolerance * float(expected.abs().max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    G = build_generator(CONFIGS["res64_clamp_narrow"], seed=2)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = G(z, psi=0.8)
        gpu = G.cuda()(z.cuda(), psi=0.8).cpu()
    assert (cpu - gpu).abs().max() < 1e-4
