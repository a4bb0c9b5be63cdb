"""Latent inversion, Algorithm 1 (pipeline.normalize.inversion), on the real tiny StyleGAN2 fixture:
the one loop against the reference loop (tests/pipeline/normalize/oracles.py), batches against
single photos, the coarse stage and warm start, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.normalize.engine import PerformanceSettings
from pipeline.normalize.inversion import (
    InversionResult,
    InversionSettings,
    InversionStart,
    WStats,
    compute_w_stats,
    invert,
    invert_many,
    latent_jitter_scale,
    learning_rate,
    noise_regularization,
    renormalize_noise_,
)
from pipeline.normalize.perceptual import load_lpips, lpips_distance
from pipeline.progress import Progress
from tests.pipeline.normalize.oracles import (
    reference_invert,
    reference_noise_regularization,
    reference_renormalize_noise_,
)

W_STATS_SAMPLES = 1000
INVERSION_STEPS = 100
SEEDS = (21, 22, 23)


@pytest.fixture(scope="module")
def w_stats(G) -> WStats:
    return compute_w_stats(G, W_STATS_SAMPLES, seed=123)


@pytest.fixture(scope="module")
def known_face(G) -> tuple[torch.Tensor, torch.Tensor]:
    """A target the generator produced from a known broadcast w and known noise maps."""
    generator = torch.Generator().manual_seed(2024)
    with torch.no_grad():
        z = torch.randn(1, G.z_dim, generator=generator)
        w = G.mapping(z, psi=1.0)[:, :1].repeat(1, G.num_ws, 1)
        noise = {
            name: torch.randn(1, 1, height, width, generator=generator)
            for name, (height, width) in G.synthesis.noise_shapes.items()
        }
        image = G.synthesis(w, noise=noise).clamp(-1, 1)
    return image, w


@pytest.fixture(scope="module")
def main_run(G, lpips_alex, w_stats, known_face) -> tuple[InversionResult, list[Progress], dict[str, torch.Tensor]]:
    target, _ = known_face
    before = {name: value.clone() for name, value in G.state_dict().items()}
    calls: list[Progress] = []
    (result,) = invert(
        G,
        target,
        lpips_alex,
        InversionSettings(steps=INVERSION_STEPS, w_avg_samples=W_STATS_SAMPLES),
        w_stats=w_stats,
        device="cpu",
        progress=calls.append,
    )
    return result, calls, before


# --- pure functions -------------------------------------------------------------------------


def test_learning_rate_follows_the_reference_schedule() -> None:
    settings = InversionSettings(steps=1000)
    # t = 0: the ramp-up factor min(1, t/0.05) is 0.
    assert learning_rate(0, 1000, settings) == 0.0
    # t = 0.025: ramp-up 0.5, ramp-down min(1, 0.975/0.25) = 1 -> 0.5 - 0.5 cos(pi) = 1.
    assert learning_rate(25, 1000, settings) == pytest.approx(0.05, abs=1e-12)
    # Plateau.
    assert learning_rate(50, 1000, settings) == pytest.approx(0.1, abs=1e-12)
    assert learning_rate(500, 1000, settings) == pytest.approx(0.1, abs=1e-12)
    assert learning_rate(750, 1000, settings) == pytest.approx(0.1, abs=1e-12)
    # t = 0.9: ramp 0.4 -> 0.5 - 0.5 cos(0.4 pi) = 0.5 - 0.5 * 0.30901699 = 0.34549150.
    assert learning_rate(900, 1000, settings) == pytest.approx(0.034549150, abs=1e-9)
    # t = 0.999: ramp 0.004 -> 0.5 - 0.5 cos(0.004 pi) = sin^2(0.002 pi).
    assert learning_rate(999, 1000, settings) == pytest.approx(0.1 * math.sin(0.002 * math.pi) ** 2, rel=1e-9)
    # The paper's 2000 steps scale the same schedule.
    assert learning_rate(1800, 2000, InversionSettings()) == pytest.approx(0.034549150, abs=1e-9)


def test_latent_jitter_follows_the_reference_ramp() -> None:
    settings = InversionSettings(steps=1000)
    w_std = 2.0
    assert latent_jitter_scale(0, 1000, settings, w_std) == pytest.approx(0.1)  # 2 * 0.05 * 1^2
    assert latent_jitter_scale(375, 1000, settings, w_std) == pytest.approx(0.025)  # (1 - 0.5)^2 = 0.25
    assert latent_jitter_scale(600, 1000, settings, w_std) == pytest.approx(0.1 * 0.2**2)
    assert latent_jitter_scale(750, 1000, settings, w_std) == 0.0
    assert latent_jitter_scale(900, 1000, settings, w_std) == 0.0


def _hand_noise_regularization(maps: list[np.ndarray]) -> float:
    """Independent float64 computation with explicit neighbour sums and block means."""
    total = 0.0
    for values in maps:
        level = values.astype(np.float64)
        while True:
            height, width = level.shape
            along_w = sum(level[i, j] * level[i, (j - 1) % width] for i in range(height) for j in range(width))
            along_h = sum(level[i, j] * level[(i - 1) % height, j] for i in range(height) for j in range(width))
            total += (along_w / (height * width)) ** 2 + (along_h / (height * width)) ** 2
            if height <= 8:
                break
            level = level.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    return total


def test_noise_regularization_hand_values() -> None:
    checker4 = torch.tensor([[(-1.0) ** (i + j) for j in range(4)] for i in range(4)])[None, None]
    # Every neighbour product is -1: (-1)^2 + (-1)^2 = 2, and a 4x4 map is not pooled.
    assert float(noise_regularization({"a": checker4})) == pytest.approx(2.0)
    checker16 = torch.tensor([[(-1.0) ** (i + j) for j in range(16)] for i in range(16)])[None, None]
    # 16x16 contributes 2; its 2x2 average pool is all zeros and contributes 0.
    assert float(noise_regularization({"a": checker16})) == pytest.approx(2.0)
    assert float(noise_regularization({"a": checker4, "b": torch.ones(1, 1, 8, 8)})) == pytest.approx(4.0)


def test_noise_regularization_matches_independent_computation() -> None:
    rng = np.random.default_rng(5)
    maps = [rng.standard_normal((side, side)) for side in (4, 8, 16, 32)]
    maps[2] = maps[2] + np.roll(maps[2], 1, axis=1)  # correlated along W
    torch_maps = {f"m{index}": torch.from_numpy(m)[None, None] for index, m in enumerate(maps)}
    assert float(noise_regularization(torch_maps)) == pytest.approx(_hand_noise_regularization(maps), rel=1e-10)


def _maps(sides, count, seed):
    rng = torch.Generator().manual_seed(seed)
    return {f"m{i}": torch.randn(count, 1, side, side, generator=rng) for i, side in enumerate(sides)}


def test_noise_regularization_per_photo_equals_the_reference_per_photo() -> None:
    maps = _maps((4, 8, 8, 16, 16, 32, 64), count=3, seed=1)
    per_photo = noise_regularization(maps)
    grouped = noise_regularization(maps, group_by_size=True)
    assert per_photo.shape == grouped.shape == (3,)
    for i in range(3):
        expected = reference_noise_regularization({k: v[i : i + 1] for k, v in maps.items()})
        assert torch.equal(noise_regularization({k: v[i : i + 1] for k, v in maps.items()})[0], expected)
        torch.testing.assert_close(per_photo[i], expected, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(grouped[i], expected, rtol=1e-5, atol=1e-9)  # summed in another order


def test_noise_regularization_rejects_bad_maps() -> None:
    with pytest.raises(ValueError, match="at least one"):
        noise_regularization({})
    with pytest.raises(ValueError, match=r"'x' must be \[N, 1, H, W\]"):
        noise_regularization({"x": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="batch size"):
        noise_regularization({"a": torch.zeros(1, 1, 4, 4), "b": torch.zeros(2, 1, 4, 4)})
    with pytest.raises(ValueError, match="square"):
        noise_regularization({"bad": torch.zeros(1, 1, 4, 8)}, group_by_size=True)


def test_renormalize_noise_gives_zero_mean_unit_variance_per_photo() -> None:
    generator = torch.Generator().manual_seed(3)
    maps = {
        "a": torch.rand(2, 1, 8, 8, generator=generator) * 5 + 3,
        "b": torch.rand(2, 1, 16, 16, generator=generator),
    }
    reference = {name: values[1:].clone() for name, values in maps.items()}
    renormalize_noise_(maps)
    reference_renormalize_noise_(reference)
    for name, values in maps.items():
        array = values.reshape(2, -1).numpy().astype(np.float64)
        np.testing.assert_allclose(array.mean(axis=1), 0, atol=1e-6)
        np.testing.assert_allclose(array.var(axis=1), 1, atol=1e-5)
        assert torch.equal(values[1:], reference[name])


def test_settings_defaults_are_the_reference_projectors() -> None:
    settings = InversionSettings()
    assert (settings.steps, settings.w_avg_samples) == (2000, 10_000)
    assert (settings.initial_lr, settings.initial_noise_factor) == (0.1, 0.05)
    assert (settings.lr_rampdown_length, settings.lr_rampup_length, settings.noise_ramp_length) == (0.25, 0.05, 0.75)
    assert settings.regularize_noise_weight == 1e5
    assert settings.lpips_max_side == 256


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"steps": 0}, ValueError),
        ({"steps": 10.0}, TypeError),
        ({"steps": True}, TypeError),
        ({"w_avg_samples": 1}, ValueError),
        ({"initial_lr": 0.0}, ValueError),
        ({"initial_lr": float("nan")}, ValueError),
        ({"lr_rampup_length": 0.0}, ValueError),
        ({"noise_ramp_length": 1.5}, ValueError),
        ({"regularize_noise_weight": -1.0}, ValueError),
    ],
)
def test_settings_are_validated(changes: dict, error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(changes))):
        InversionSettings(**changes)


def test_w_stats_match_an_independent_computation(G, w_stats) -> None:
    z = np.random.RandomState(123).randn(W_STATS_SAMPLES, G.z_dim)
    with torch.no_grad():
        w = G.mapping(torch.from_numpy(z).float(), psi=1.0)[:, 0].double().numpy()
    w_avg = w.mean(axis=0)
    w_std = math.sqrt(((w - w_avg) ** 2).sum() / W_STATS_SAMPLES)
    assert w_stats.w_avg.shape == (1, 1, G.w_dim)
    np.testing.assert_allclose(w_stats.w_avg[0, 0].numpy(), w_avg, rtol=0, atol=1e-5)
    assert w_stats.w_std == pytest.approx(w_std, rel=1e-6)
    # Batching does not change the result.
    rebatched = compute_w_stats(G, W_STATS_SAMPLES, seed=123, batch_size=97)
    assert torch.allclose(rebatched.w_avg, w_stats.w_avg, atol=1e-6)
    assert rebatched.w_std == pytest.approx(w_stats.w_std, rel=1e-9)


# --- the optimisation -----------------------------------------------------------------------


def test_inversion_recovers_a_generated_image(G, lpips_alex, w_stats, known_face, main_run) -> None:
    target, _ = known_face
    result, _, _ = main_run
    # "Before": one step, whose learning rate is 0, leaves w at w_avg with the initial noise.
    (start,) = invert(G, target, lpips_alex, InversionSettings(steps=1), w_stats=w_stats, device="cpu")
    assert torch.equal(start.w, w_stats.w_avg.repeat(1, G.num_ws, 1))
    lpips_before = float(lpips_distance(lpips_alex, start.image, target))
    lpips_after = float(lpips_distance(lpips_alex, result.image, target))
    mse_before = float((start.image - target).square().mean())
    mse_after = float((result.image - target).square().mean())
    print(
        f"\ninversion {INVERSION_STEPS} steps: LPIPS {lpips_before:.4f} -> {lpips_after:.4f}, "
        f"MSE {mse_before:.4f} -> {mse_after:.4f}, total loss {result.losses[0].total:.1f} -> "
        f"{result.losses[-1].total:.4f}"
    )
    assert lpips_after < 0.3 * lpips_before
    assert mse_after < 0.5 * mse_before
    assert result.losses[-1].lpips < 0.3 * result.losses[0].lpips


def test_result_is_consistent(G, main_run) -> None:
    result, _, _ = main_run
    assert result.steps == INVERSION_STEPS == len(result.losses)
    assert result.w.shape == (1, G.num_ws, G.w_dim)
    assert torch.equal(result.w, result.w[:, :1].expand_as(result.w))  # one w broadcast to every layer
    assert list(result.noise) == list(G.synthesis.noise_shapes)
    for name, (height, width) in G.synthesis.noise_shapes.items():
        assert result.noise[name].shape == (1, 1, height, width)
        assert not result.noise[name].requires_grad
    assert result.image.shape == (1, 3, G.img_resolution, G.img_resolution)
    with torch.no_grad():
        assert torch.allclose(G.synthesis(result.w, noise=result.noise), result.image, atol=1e-6)
    for record in result.losses:
        assert record.total == pytest.approx(record.lpips + 1e5 * record.noise_reg, rel=1e-5)


def test_noise_maps_are_renormalised_after_every_step(G, lpips_alex, w_stats, known_face, main_run) -> None:
    target, _ = known_face
    runs = [main_run[0]] + [
        invert(G, target, lpips_alex, InversionSettings(steps=steps), w_stats=w_stats, device="cpu")[0]
        for steps in (1, 2, 3)
    ]
    for result in runs:
        for name, values in result.noise.items():
            array = values.numpy().astype(np.float64)
            assert abs(array.mean()) < 1e-5, (result.steps, name)
            assert array.var() == pytest.approx(1.0, abs=1e-4), (result.steps, name)


def test_progress_is_reported_every_step(main_run) -> None:
    result, calls, _ = main_run
    assert [call.step for call in calls] == list(range(1, INVERSION_STEPS + 1))
    assert {call.total for call in calls} == {INVERSION_STEPS}
    assert {call.stage for call in calls} == {"inversion"}
    assert [call.loss for call in calls] == [record.total for record in result.losses]


def test_generator_is_left_unchanged(G, main_run) -> None:
    _, _, before = main_run
    after = G.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert all(parameter.grad is None for parameter in G.parameters())


def test_inversion_is_deterministic_for_a_seed(G, lpips_alex, known_face) -> None:
    target, _ = known_face
    settings = InversionSettings(steps=6, w_avg_samples=200, seed=11)
    (first,) = invert(G, target, lpips_alex, settings, device="cpu")  # w_stats computed inside
    (second,) = invert(G, target, lpips_alex, settings, device="cpu")
    (explicit,) = invert(G, target, lpips_alex, settings, generators=[torch.Generator().manual_seed(11)], device="cpu")
    (other,) = invert(G, target, lpips_alex, settings, generators=[torch.Generator().manual_seed(12)], device="cpu")
    for run in (second, explicit):
        assert torch.equal(run.w, first.w)
        assert torch.equal(run.image, first.image)
        assert all(torch.equal(run.noise[name], first.noise[name]) for name in first.noise)
        assert run.losses == first.losses
    assert not torch.equal(other.image, first.image)


def test_default_settings_reproduce_the_reference_loop_bit_for_bit(G, lpips_alex, w_stats, known_face, main_run):
    """The one loop in its default (exact float32) settings against the reference projector's loop:
    every loss, w, noise map and the image are equal (tolerance 0) on the CPU."""
    target, _ = known_face
    result = main_run[0]
    reference = reference_invert(G, target, lpips_alex,
                                 InversionSettings(steps=INVERSION_STEPS, w_avg_samples=W_STATS_SAMPLES), w_stats)
    assert result.losses == reference.losses
    assert torch.equal(result.w, reference.w)
    assert torch.equal(result.image, reference.image)
    assert list(result.noise) == list(reference.noise)
    assert all(torch.equal(result.noise[name], reference.noise[name]) for name in reference.noise)


# --- batches: every photo keeps its own latents and RNG ----------------------------------------


@pytest.fixture(scope="module")
def problem(G):
    rng = torch.Generator().manual_seed(31)
    with torch.no_grad():
        targets = G(torch.randn(len(SEEDS), G.z_dim, generator=rng)).clamp(-1, 1)
    return targets, compute_w_stats(G, 300, seed=123)


def _generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.fixture(scope="module")
def singles_and_batches(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=15, w_avg_samples=300)
    singles = [invert(G, targets[i : i + 1], lpips_alex, settings, w_stats=stats, generators=_generators([seed]),
                      device="cpu")[0] for i, seed in enumerate(SEEDS)]
    pair = invert(G, targets[:2], lpips_alex, settings, w_stats=stats, generators=_generators(SEEDS[:2]), device="cpu")
    triple = invert(G, targets, lpips_alex, settings, w_stats=stats, generators=_generators(SEEDS), device="cpu")
    return singles, pair, triple


def _assert_same_photo(batched: InversionResult, single: InversionResult, latent_atol: float, lpips_rtol: float):
    torch.testing.assert_close(batched.w, single.w, rtol=0, atol=latent_atol)
    torch.testing.assert_close(batched.image, single.image, rtol=0, atol=latent_atol)
    assert list(batched.noise) == list(single.noise)
    for name in single.noise:
        torch.testing.assert_close(batched.noise[name], single.noise[name], rtol=0, atol=latent_atol)
    np.testing.assert_allclose([s.total for s in batched.losses], [s.total for s in single.losses], rtol=1e-5)
    np.testing.assert_allclose([s.lpips for s in batched.losses], [s.lpips for s in single.losses], rtol=lpips_rtol)


def test_batch_of_two_equals_two_single_runs(singles_and_batches):
    """Default settings, per-photo RNGs. Measured: w within 1.6e-6, images within 4.2e-6, noise maps
    and total losses equal, LPIPS within 1.6e-6 relative (the batched convolutions round differently)."""
    singles, pair, _ = singles_and_batches
    assert len(pair) == 2
    for batched, single in zip(pair, singles):
        _assert_same_photo(batched, single, latent_atol=1e-4, lpips_rtol=1e-5)
    # Different seeds and targets give different results: the photos did not share anything.
    assert float((pair[0].w - pair[1].w).abs().max()) > 0.1
    assert float((pair[0].image - pair[1].image).abs().max()) > 0.1


#: Batched kernels sum in another order; Adam's normalised step turns that rounding into
#: steps of up to ~lr in the few elements whose gradient is near zero, so single values of
#: w (|w| ~ 4) and of the image can differ by ~1e-3 after some steps (measured for the third
#: photo of three: w 6.8e-4, image 1.6e-3, LPIPS 3.7e-4 relative at one step), while every total
#: loss agrees to ~1e-7. Separate photos differ by far more than these tolerances.
LATENT_ATOL = 5e-3


def test_batch_of_three_equals_single_runs_to_adams_rounding(singles_and_batches):
    singles, _, triple = singles_and_batches
    assert len(triple) == 3
    for batched, single in zip(triple, singles):
        _assert_same_photo(batched, single, latent_atol=LATENT_ATOL, lpips_rtol=1e-3)


def test_invert_many_runs_the_chunks_of_its_batch_size(G, lpips_alex, problem, singles_and_batches):
    targets, stats = problem
    singles, pair, _ = singles_and_batches
    chunked = invert_many(G, targets, lpips_alex, InversionSettings(steps=15, w_avg_samples=300),
                          performance=PerformanceSettings(batch_size=2), w_stats=stats, device="cpu",
                          generators=_generators(SEEDS))
    for got, expected in zip(chunked, [*pair, singles[2]], strict=True):  # chunks [0, 1] and [2]
        assert torch.equal(got.w, expected.w) and torch.equal(got.image, expected.image)
        assert got.losses == expected.losses
    with pytest.raises(ValueError, match="generators"):
        invert_many(G, targets, lpips_alex, InversionSettings(steps=1, w_avg_samples=300), w_stats=stats,
                    device="cpu", generators=_generators(SEEDS[:2]))


def test_coarse_stage_keeps_the_unused_noise_maps_and_a_warm_start_continues(G, problem):
    lpips_vgg = load_lpips("vgg", allow_random_backbone=True)  # AlexNet needs images of 32 px or more
    targets, stats = problem
    settings = InversionSettings(steps=3, w_avg_samples=300)
    coarse = invert(G, targets[:2], lpips_vgg, settings, w_stats=stats, device="cpu", max_resolution=16)
    assert coarse[0].image.shape == (1, 3, 16, 16)
    # Maps above block 16 were drawn (same stream as a full-size run) but never optimised.
    full = invert(G, targets[:2], lpips_vgg, InversionSettings(steps=1, w_avg_samples=300), w_stats=stats,
                  device="cpu")
    draws = torch.Generator().manual_seed(settings.seed)
    initial = {name: torch.randn(1, 1, h, w, generator=draws) for name, (h, w) in G.synthesis.noise_shapes.items()}
    for name, (height, _) in G.synthesis.noise_shapes.items():
        if height > 16:
            assert torch.equal(coarse[0].noise[name], initial[name]), name
        else:
            assert not torch.equal(coarse[0].noise[name], initial[name]), name
    start = InversionStart.from_results(coarse)
    assert start.w.shape == (2, 1, G.w_dim)
    refined = invert(G, targets[:2], lpips_vgg, settings, w_stats=stats, device="cpu", start=start)
    assert refined[0].image.shape == (1, 3, 32, 32) and full[0].image.shape == (1, 3, 32, 32)
    # The warm start really starts there: with a zero learning rate nothing would move.
    frozen = invert(G, targets[:2], lpips_vgg, InversionSettings(steps=1, w_avg_samples=300, initial_noise_factor=0.0),
                    w_stats=stats, device="cpu", start=start)
    torch.testing.assert_close(frozen[0].w[:, :1], coarse[0].w[:, :1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least one result"):
        InversionStart.from_results([])


def test_invalid_targets_are_rejected(G, lpips_alex, w_stats) -> None:
    settings = InversionSettings(steps=1)
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        invert(G, torch.zeros(1, 3, 64, 64), lpips_alex, settings, w_stats=w_stats, device="cpu")
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\] with N >= 1"):
        invert(G, torch.zeros(0, 3, 32, 32), lpips_alex, settings, w_stats=w_stats, device="cpu")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        invert(G, torch.full((1, 3, 32, 32), 2.0), lpips_alex, settings, w_stats=w_stats, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        invert(G, torch.full((1, 3, 32, 32), float("nan")), lpips_alex, settings, w_stats=w_stats, device="cpu")
    with pytest.raises(TypeError, match="floating point"):
        invert(G, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), lpips_alex, settings, w_stats=w_stats, device="cpu")
    with pytest.raises(TypeError, match="torch.Tensor"):
        invert(G, np.zeros((1, 3, 32, 32), np.float32), lpips_alex, settings, w_stats=w_stats, device="cpu")
    with pytest.raises(ValueError, match="w_stats"):
        bad_stats = WStats(w_avg=torch.zeros(1, 1, 7), w_std=1.0, samples=2, seed=0)
        invert(G, torch.zeros(1, 3, 32, 32), lpips_alex, settings, w_stats=bad_stats, device="cpu")


def test_invalid_batches_and_settings_are_rejected(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=1, w_avg_samples=300)
    with pytest.raises(ValueError, match="generators"):
        invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu", generators=[torch.Generator()])
    with pytest.raises(ValueError, match="targets must be"):
        invert(G, targets[:, :, :16, :16], lpips_alex, settings, w_stats=stats, device="cpu")
    with pytest.raises(ValueError, match="start.w"):
        invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
               start=InversionStart(w=torch.zeros(1, 1, G.w_dim), noise={}))
    with pytest.raises(ValueError, match="start.noise"):
        invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu",
               start=InversionStart(w=torch.zeros(1, 1, G.w_dim), noise={}))
    with pytest.raises(TypeError, match="start must be an InversionStart"):
        invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu", start=(torch.zeros(1, 1, 32), {}))
    with pytest.raises(ValueError, match="max_resolution"):
        invert(G, targets[:1], lpips_alex, settings, w_stats=stats, device="cpu", max_resolution=12)
    with pytest.raises(ValueError, match="autocast"):
        invert(G, targets.double(), lpips_alex, settings, w_stats=stats, device="cpu", dtype=torch.float64,
               performance=PerformanceSettings(autocast="bf16"))
    with pytest.raises(TypeError, match="performance must be PerformanceSettings"):
        invert(G, targets, lpips_alex, settings, w_stats=stats, device="cpu", performance=None)
    with pytest.raises(ValueError, match="lpips_model is on"):
        invert(G, targets, lpips_alex, settings, w_stats=stats, device="meta")
