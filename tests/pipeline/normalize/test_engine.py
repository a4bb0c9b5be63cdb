"""The optimisations of pipeline.normalize.engine on the CPU: each one against the plain code (correctness only)."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

from pipeline.models.stylegan2 import Architecture, GeneratorConfig, build_generator, ops
from pipeline.models.stylegan2.fast_synthesis import FastSynthesis
from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.batch_inversion import invert_batch
from pipeline.normalize.engine import PerformanceSettings, autocast, grad_scaler, numerics, tf32_flags
from pipeline.normalize.inversion import InversionSettings, compute_w_stats, invert
from pipeline.normalize.perceptual import (
    load_lpips,
    lpips_distance,
    lpips_distance_to_features,
    lpips_target_features,
)
from tests.pipeline.models.stylegan2.test_ops import _naive_modconv


@pytest.fixture(scope="module")
def problem(G):
    """Two generated targets, and w statistics."""
    rng = torch.Generator().manual_seed(11)
    with torch.no_grad():
        targets = G(torch.randn(2, G.z_dim, generator=rng)).clamp(-1, 1)
    return targets, compute_w_stats(G, 300, seed=123)


def _latents(G, count: int, dtype=torch.float32, seed: int = 0):
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn(count, G.z_dim, generator=rng).to(dtype))
    noise = {k: torch.randn(count, 1, *s, generator=rng, dtype=dtype) for k, s in G.synthesis.noise_shapes.items()}
    return ws, noise


# -- settings and process-wide flags -----------------------------------------------------------

@pytest.mark.parametrize(("changes", "error"), [
    ({"autocast": "fp8"}, ValueError), ({"batch_size": 0}, ValueError), ({"batch_size": True}, ValueError),
    ({"conv_form": "grouped"}, ValueError), ({"compile_mode": "fast"}, ValueError), ({"tf32": 1}, TypeError),
])
def test_settings_are_validated(changes, error):
    with pytest.raises(error):
        PerformanceSettings(**changes)


def test_numerics_sets_tf32_and_restores_the_previous_flags():
    before, benchmark = tf32_flags(), torch.backends.cudnn.benchmark
    with numerics(PerformanceSettings(tf32=True, cudnn_benchmark=not benchmark)):
        inside = tf32_flags()
        assert inside["matmul"] in ("tf32", True) and inside["cudnn_conv"] in ("tf32", True)
        assert torch.backends.cudnn.benchmark is (not benchmark)
        with numerics(PerformanceSettings(tf32=False)):
            assert tf32_flags()["matmul"] in ("ieee", False) and tf32_flags()["cudnn_conv"] in ("ieee", False)
        assert tf32_flags() == inside
    assert tf32_flags() == before and torch.backends.cudnn.benchmark is benchmark
    with pytest.raises(RuntimeError, match="inside"):
        with numerics(PerformanceSettings(tf32=True)):
            raise RuntimeError("inside")
    assert tf32_flags() == before


def test_autocast_contexts_and_loss_scaling():
    device = torch.device("cpu")
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with autocast(PerformanceSettings(autocast="bf16"), device):
        assert torch.nn.functional.conv2d(x, w).dtype == torch.bfloat16
    with autocast(PerformanceSettings(), device):
        assert torch.nn.functional.conv2d(x, w).dtype == torch.float32
    assert grad_scaler(PerformanceSettings(autocast="bf16"), device) is None
    assert grad_scaler(PerformanceSettings(autocast="fp16"), device).is_enabled()


# -- LPIPS target features ---------------------------------------------------------------------

@pytest.mark.parametrize(("net", "max_side"), [("alex", None), ("alex", 32), ("vgg", 32)])
def test_cached_target_features_give_the_same_loss_and_gradient(net, max_side):
    model = load_lpips(net, allow_random_backbone=True)
    rng = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 3, 64, 64, generator=rng) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 64, 64, generator=rng) * 2 - 1
    plain = lpips_distance(model, x, y, max_side=max_side)
    (grad_plain,) = torch.autograd.grad(plain.sum(), x)
    features = lpips_target_features(model, y, max_side=max_side)
    cached = lpips_distance_to_features(model, x, features)
    (grad_cached,) = torch.autograd.grad(cached.sum(), x)
    assert plain.shape == cached.shape == (2,) and bool((plain > 0).all())
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-6)  # bitwise equal on this machine
    torch.testing.assert_close(grad_cached, grad_plain, rtol=0, atol=1e-6)
    assert all(not f.requires_grad for f in features.features)


def test_cached_features_refuse_mismatched_images(lpips_alex):
    features = lpips_target_features(lpips_alex, torch.zeros(1, 3, 64, 64), max_side=32)
    with pytest.raises(ValueError, match="match the target"):
        lpips_distance_to_features(lpips_alex, torch.zeros(2, 3, 64, 64), features)
    with pytest.raises(ValueError, match="match the target"):
        lpips_distance_to_features(lpips_alex, torch.zeros(1, 3, 16, 16), features)
    spatial = load_lpips("alex", allow_random_backbone=True, spatial=True)
    with pytest.raises(ValueError, match="spatial=False"):
        lpips_target_features(spatial, torch.zeros(1, 3, 64, 64))


# -- the faster synthesis forms ----------------------------------------------------------------

@pytest.mark.parametrize(("up", "demodulate", "k"), [(1, True, 3), (1, False, 1), (2, True, 3)])
def test_fast_modulated_conv_forms_match_the_naive_equations(up, demodulate, k):
    rng = np.random.default_rng(7 + up + k)
    x, weight, styles = rng.normal(size=(3, 4, 5, 5)), rng.normal(size=(2, 4, k, k)), rng.normal(size=(3, 4))
    taps = np.array([1.0, 2.0, 5.0, 1.0])  # asymmetric: catches a flipped filter
    fir = np.outer(taps, taps) / taps.sum() ** 2
    expected = _naive_modconv(x, weight, styles, demodulate, up, fir)
    args = [torch.from_numpy(a) for a in (x, weight, styles)]
    for form, fuse, channels_last in itertools.product(("weight", "input"), (False, True), (False, True)):
        xx = args[0].contiguous(memory_format=torch.channels_last) if channels_last else args[0]
        y = ops.modulated_conv2d_fast(xx, args[1], args[2], demodulate, up, torch.from_numpy(fir), form=form,
                                      fuse_upsampling=fuse)
        np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-10, err_msg=f"{form} fuse={fuse}")


def test_resampling_helpers_match_scipy():
    rng = np.random.default_rng(1)
    taps = np.array([1.0, 2.0, 5.0, 1.0])
    fir = torch.from_numpy(np.outer(taps, taps) / taps.sum() ** 2)
    x = torch.from_numpy(rng.normal(size=(2, 3, 6, 6)))
    torch.testing.assert_close(ops.upsample2d_transposed(x, fir), ops.upsample2d(x, fir), rtol=0, atol=1e-12)
    weight = torch.from_numpy(rng.normal(size=(2, 3, 3, 3)))
    merged = ops.upsampling_kernel(weight, fir, gain=4.0)
    for o, i in itertools.product(range(2), range(3)):
        full = scipy.signal.convolve2d(weight[o, i].numpy(), fir.numpy() * 4.0, mode="full")
        np.testing.assert_allclose(merged[o, i].numpy(), full, rtol=0, atol=1e-12)
    styles = torch.from_numpy(rng.normal(size=(4, 3)))
    explicit = (weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
    torch.testing.assert_close(ops.demodulation_coefficients(weight, styles), explicit, rtol=1e-12, atol=0)


@pytest.mark.parametrize("architecture", list(Architecture))
def test_fast_synthesis_equals_the_reference_network(architecture):
    config = GeneratorConfig(z_dim=16, w_dim=16, img_resolution=32, mapping_layers=2, channel_base=256, channel_max=16,
                             architecture=architecture, conv_clamp=0.7)
    G = build_generator(config, seed=2).double()
    for count in (1, 3):
        ws, noise = _latents(G, count, torch.float64, seed=count)
        expected = G.synthesis(ws, noise=noise)
        for form, fuse, channels_last in itertools.product(("auto", "weight", "input"), (False, True), (False, True)):
            fast = FastSynthesis(G.synthesis, conv_form=form, fuse_upsampling=fuse, channels_last=channels_last)
            torch.testing.assert_close(fast(ws, noise), expected, rtol=0, atol=1e-10,
                                       msg=f"N={count} {form} fuse={fuse} channels_last={channels_last}")


def test_fast_synthesis_gradients_equal_the_reference(G):
    G64 = copy.deepcopy(G).double()
    ws, noise = _latents(G64, 2, torch.float64, seed=5)
    probe = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def gradients(run):
        w = ws.clone().requires_grad_(True)
        maps = {k: v.clone().requires_grad_(True) for k, v in noise.items()}
        G64.zero_grad(set_to_none=True)
        (run(w, maps) * probe).sum().backward()
        return [w.grad, *(maps[k].grad for k in maps), *(p.grad for p in G64.synthesis.parameters())]

    G64.synthesis.requires_grad_(True)
    expected = gradients(lambda w, maps: G64.synthesis(w, noise=maps))
    got = gradients(lambda w, maps: FastSynthesis(G64.synthesis, fuse_upsampling=True, channels_last=True)(w, maps))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_channels_last_gives_the_same_float32_images(G):
    ws, noise = _latents(G, 2, seed=3)
    with torch.no_grad():
        contiguous = FastSynthesis(G.synthesis, conv_form="input")(ws, noise)
        nhwc = FastSynthesis(G.synthesis, conv_form="input", channels_last=True)(ws, noise)
    torch.testing.assert_close(nhwc, contiguous, rtol=0, atol=1e-5)
    torch.testing.assert_close(nhwc, G.synthesis(ws, noise=noise), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("precision", "tolerance"), [("bf16", 0.04), ("fp16", 0.01)])
def test_autocast_synthesis_stays_close_to_float32(G, precision, tolerance):
    """bf16 keeps 8 mantissa bits: images within 4 % of their range; fp16 (11 bits) within 1 %."""
    ws, noise = _latents(G, 2, seed=4)
    with torch.no_grad():
        expected = G.synthesis(ws, noise=noise)
        with autocast(PerformanceSettings(autocast=precision), torch.device("cpu")):
            got = FastSynthesis(G.synthesis, channels_last=True)(ws, noise)
    assert got.dtype == torch.float32  # the RGB image is accumulated in float32
    error = float((got - expected).abs().max())
    assert 0 < error <= tolerance * float(expected.abs().max())


# -- the engine against the reference loops ----------------------------------------------------

def test_engine_with_exact_settings_equals_the_reference_inversion(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=12, w_avg_samples=300)
    plain = invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu")
    calls = []
    engine = invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu",
                    performance=PerformanceSettings(), progress=calls.append)
    torch.testing.assert_close(engine.w, plain.w, rtol=0, atol=1e-3)
    # Adam can turn rounding into ~1e-3 steps where a gradient is near zero (tests/test_batch_inversion.py).
    torch.testing.assert_close(engine.image, plain.image, rtol=0, atol=1e-3)
    for name in plain.noise:
        torch.testing.assert_close(engine.noise[name], plain.noise[name], rtol=0, atol=1e-3)
    np.testing.assert_allclose([s.total for s in engine.losses], [s.total for s in plain.losses], rtol=1e-5)
    np.testing.assert_allclose([s.lpips for s in engine.losses], [s.lpips for s in plain.losses], rtol=1e-5)
    assert [c.step for c in calls] == list(range(1, 13))
    assert calls[-1].loss == pytest.approx(engine.losses[-1].total, rel=1e-6)


def test_engine_with_exact_settings_equals_the_reference_adaptation(G, lpips_alex, problem):
    targets, _ = problem
    ws, noise = _latents(G, 1, seed=8)
    ws = ws[:, :1].repeat(1, G.num_ws, 1)
    settings = AdaptationSettings(steps=4)
    plain = adapt(G, targets[:1], ws, noise, lpips_alex, settings, device="cpu")
    engine = adapt(G, targets[:1], ws, noise, lpips_alex, settings, device="cpu",
                   performance=PerformanceSettings(channels_last=True, fuse_upsampling=True))
    torch.testing.assert_close(engine.image, plain.image, rtol=0, atol=1e-5)
    np.testing.assert_allclose([s.total for s in engine.losses], [s.total for s in plain.losses], rtol=1e-5)
    assert engine.final_loss.total == pytest.approx(plain.final_loss.total, rel=1e-5)
    assert engine.final_loss.total < engine.losses[0].total


def test_bf16_inversion_runs_on_the_cpu_and_stays_close(G, lpips_alex, problem):
    """Few steps of the whole engine under bf16: final LPIPS within 5 % of float32 (same seeds)."""
    targets, stats = problem
    settings = InversionSettings(steps=5, w_avg_samples=300)
    exact = invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu")
    bf16 = invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                        performance=PerformanceSettings(autocast="bf16", channels_last=True, fuse_upsampling=True))
    for a, b in zip(exact, bf16):
        assert math.isfinite(b.losses[-1].total)
        assert b.losses[-1].lpips == pytest.approx(a.losses[-1].lpips, rel=0.05)
        assert float((a.image - b.image).abs().max()) < 0.1


def test_compiled_objective_equals_eager(G, lpips_alex, problem):
    """torch.compile traced through dynamo and AOTAutograd (aot_eager: no C++ compiler needed)."""
    targets, stats = problem
    settings = InversionSettings(steps=4, w_avg_samples=300)
    eager = invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu")
    compiled = invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                            performance=PerformanceSettings(compile=True, compile_backend="aot_eager"))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b.w, a.w, rtol=0, atol=1e-5)
        np.testing.assert_allclose([s.total for s in b.losses], [s.total for s in a.losses], rtol=1e-5)


@pytest.mark.skip(reason="inductor on the CPU compiles every graph with a C++ compiler (minutes here); "
                         "benchmarks/normalize_gpu.py exercises inductor on CUDA")
def test_inductor_compiled_objective_equals_eager(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=3, w_avg_samples=300)
    eager = invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu")
    compiled = invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                            performance=PerformanceSettings(compile=True))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b.w, a.w, rtol=0, atol=1e-4)


# -- benchmarks/normalize_gpu.py ---------------------------------------------------------------

def test_gpu_benchmark_refuses_to_run_without_cuda(capsys, tmp_path):
    from benchmarks import normalize_gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert normalize_gpu.main(["--out", str(tmp_path / "x.json")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_writes_its_json(tmp_path):
    """The whole script on the CPU with a tiny generator (correctness of the script only; no timings asserted)."""
    import json

    from benchmarks import normalize_gpu

    out = tmp_path / "smoke.json"
    assert normalize_gpu.main(["--smoke", "--variants", "reference,exact,bf16", "--batch-sizes", "1,2",
                               "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["smoke"] is True and record["command"].startswith("python -m benchmarks.normalize_gpu --smoke")
    assert record["environment"]["torch"] == torch.__version__ and record["date"]
    timing = record["timing"]
    assert set(timing["variants"]) == {"reference", "exact", "bf16"}
    for row in timing["variants"].values():
        assert "error" not in row and row["inversion_ms_per_step"] > 0 and row["seconds_per_photo"] > 0
    assert set(timing["throughput"]["by_batch_size"]) == {"1", "2"} and "error" not in timing["fast_mode"]
    guard = record["guard"]
    assert guard["targets"] == 16 and len(guard["reference"]["score_normalized"]) == 16
    assert guard["reference_loop_vs_exact_engine"]["final_loss_relative_difference"] < 1e-4
    for name in ("tf32", "bf16"):
        candidate = guard["candidates"][name]
        assert "error" not in candidate and candidate["scores_with_adaptation"]["count"] == 16
        assert candidate["passed"] is True  # CPU: no TF32; bf16 over 4 + 2 steps stays close
    fast = record["fast"]
    assert "error" not in fast and fast["scores_with_adaptation"]["count"] == 16
    assert isinstance(fast["goal_r_0_98_met"], bool)
