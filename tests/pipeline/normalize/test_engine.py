"""The settings of the one loop (pipeline.normalize.engine) on the CPU: each against the default exact path.

The synthesis forms themselves are checked against the naive equations in tests/pipeline/models/stylegan2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.engine import EXACT, PerformanceSettings, autocast, grad_scaler, numerics, tf32_flags
from pipeline.normalize.inversion import InversionSettings, compute_w_stats, invert
from pipeline.normalize.perceptual import (
    load_lpips,
    lpips_distance,
    lpips_distance_to_features,
    lpips_target_features,
)

#: The rewrites of the old batch engine's defaults plus NHWC and fused upsampling: same function, other rounding.
REWRITES = PerformanceSettings(conv_form="auto", fir_impl="depthwise", group_noise_maps=True, channels_last=True,
                               fuse_upsampling=True)


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
    ({"conv_form": "grouped"}, ValueError), ({"fir_impl": "fft"}, ValueError), ({"fuse_upsampling": True}, ValueError),
    ({"compile_mode": "fast"}, ValueError), ({"tf32": 1}, TypeError), ({"group_noise_maps": "yes"}, TypeError),
])
def test_settings_are_validated(changes, error):
    with pytest.raises(error, match=next(iter(changes))):
        PerformanceSettings(**changes)


def test_the_defaults_are_the_exact_float32_path():
    assert EXACT == PerformanceSettings()
    assert (EXACT.tf32, EXACT.autocast, EXACT.compile, EXACT.fused_adam) == (False, None, False, False)
    assert (EXACT.conv_form, EXACT.fir_impl, EXACT.fuse_upsampling, EXACT.channels_last) == (
        "reference", "reference", False, False)
    assert not EXACT.group_noise_maps and not EXACT.cudnn_benchmark
    impl = EXACT.synthesis_impl(3)
    assert (impl.conv_form, impl.fir, impl.fuse_upsampling, impl.channels_last) == ("reference", "reference", False,
                                                                                      False)
    assert PerformanceSettings(conv_form="auto").synthesis_impl(1).conv_form == "weight"
    assert PerformanceSettings(conv_form="auto").synthesis_impl(2).conv_form == "input"


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
    with numerics(PerformanceSettings(tf32=True, cudnn_benchmark=not benchmark), torch.device("cpu")):
        assert tf32_flags() == before and torch.backends.cudnn.benchmark is benchmark  # CUDA flags only on CUDA
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


# -- the loops' settings against the default exact path ------------------------------------------

def test_cached_target_features_are_exact_in_the_loops(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=6, w_avg_samples=300)
    uncached = PerformanceSettings(cache_target_features=False)
    (cached_run,) = invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu")
    (plain_run,) = invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu", performance=uncached)
    assert cached_run.losses == plain_run.losses and torch.equal(cached_run.w, plain_run.w)
    ws, noise = _latents(G, 1, seed=8)
    (a,) = adapt(G, targets[:1], ws, noise, lpips_alex, AdaptationSettings(steps=3), device="cpu")
    (b,) = adapt(G, targets[:1], ws, noise, lpips_alex, AdaptationSettings(steps=3), device="cpu", performance=uncached)
    assert a.losses == b.losses and a.final_loss == b.final_loss and torch.equal(a.image, b.image)


def test_rewrites_give_the_default_inversion_to_rounding(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=12, w_avg_samples=300)
    (plain,) = invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu")
    calls = []
    (rewritten,) = invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu", performance=REWRITES,
                          progress=calls.append)
    # Adam can turn rounding into ~1e-3 steps where a gradient is near zero
    # (tests/pipeline/normalize/test_inversion.py).
    torch.testing.assert_close(rewritten.w, plain.w, rtol=0, atol=1e-3)
    torch.testing.assert_close(rewritten.image, plain.image, rtol=0, atol=1e-3)
    for name in plain.noise:
        torch.testing.assert_close(rewritten.noise[name], plain.noise[name], rtol=0, atol=1e-3)
    np.testing.assert_allclose([s.total for s in rewritten.losses], [s.total for s in plain.losses], rtol=1e-5)
    np.testing.assert_allclose([s.lpips for s in rewritten.losses], [s.lpips for s in plain.losses], rtol=1e-5)
    assert [c.step for c in calls] == list(range(1, 13))
    assert calls[-1].loss == pytest.approx(rewritten.losses[-1].total, rel=1e-6)
    assert rewritten.losses != plain.losses  # the settings did change the arithmetic


def test_rewrites_give_the_default_adaptation_to_rounding(G, lpips_alex, problem):
    targets, _ = problem
    ws, noise = _latents(G, 1, seed=8)
    ws = ws[:, :1].repeat(1, G.num_ws, 1)
    settings = AdaptationSettings(steps=4)
    (plain,) = adapt(G, targets[:1], ws, noise, lpips_alex, settings, device="cpu")
    (rewritten,) = adapt(G, targets[:1], ws, noise, lpips_alex, settings, device="cpu", performance=REWRITES)
    torch.testing.assert_close(rewritten.image, plain.image, rtol=0, atol=1e-5)
    np.testing.assert_allclose([s.total for s in rewritten.losses], [s.total for s in plain.losses], rtol=1e-5)
    assert rewritten.final_loss.total == pytest.approx(plain.final_loss.total, rel=1e-5)
    assert rewritten.final_loss.total < rewritten.losses[0].total


def test_bf16_inversion_runs_on_the_cpu_and_stays_close(G, lpips_alex, problem):
    """Few steps of the whole engine under bf16: final LPIPS within 5 % of float32 (same seeds)."""
    targets, stats = problem
    settings = InversionSettings(steps=5, w_avg_samples=300)
    exact = invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu")
    bf16 = invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                  performance=PerformanceSettings(autocast="bf16", conv_form="auto", fir_impl="depthwise",
                                                  channels_last=True, fuse_upsampling=True))
    for a, b in zip(exact, bf16):
        assert math.isfinite(b.losses[-1].total)
        assert b.losses[-1].lpips == pytest.approx(a.losses[-1].lpips, rel=0.05)
        assert float((a.image - b.image).abs().max()) < 0.1


def test_compiled_objective_equals_eager(G, lpips_alex, problem):
    """torch.compile traced through dynamo and AOTAutograd (aot_eager: no C++ compiler needed)."""
    targets, stats = problem
    settings = InversionSettings(steps=4, w_avg_samples=300)
    eager = invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu")
    compiled = invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                      performance=PerformanceSettings(compile=True, compile_backend="aot_eager"))
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b.w, a.w, rtol=0, atol=1e-5)
        np.testing.assert_allclose([s.total for s in b.losses], [s.total for s in a.losses], rtol=1e-5)


@pytest.mark.skip(reason="inductor on the CPU compiles every graph with a C++ compiler (minutes here); "
                         "benchmarks/normalize_gpu.py exercises inductor on CUDA")
def test_inductor_compiled_objective_equals_eager(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=3, w_avg_samples=300)
    eager = invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu")
    compiled = invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
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
