"""Several photos at once (pipeline.normalize.batch_inversion, pipeline.normalize.batch_adaptation) equal separate runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.normalize.adaptation import AdaptationSettings, adapt
from pipeline.normalize.batch_adaptation import adapt_batch
from pipeline.normalize.batch_inversion import (
    InversionStart,
    invert_batch,
    invert_many,
    noise_regularization_per_sample,
    renormalize_noise_per_sample_,
)
from pipeline.normalize.engine import PerformanceSettings
from pipeline.normalize.inversion import InversionSettings, compute_w_stats, invert, noise_regularization
from pipeline.normalize.perceptual import load_lpips

SEEDS = (21, 22, 23)





@pytest.fixture(scope="module")
def problem(G):
    rng = torch.Generator().manual_seed(31)
    with torch.no_grad():
        targets = G(torch.randn(len(SEEDS), G.z_dim, generator=rng)).clamp(-1, 1)
    return targets, compute_w_stats(G, 300, seed=123)


@pytest.fixture(scope="module")
def singles_and_batch(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=15, w_avg_samples=300)
    singles = [invert(G, targets[i : i + 1], lpips_alex, settings, w_stats=stats,
                      generator=torch.Generator().manual_seed(seed), device="cpu") for i, seed in enumerate(SEEDS)]
    batch = invert_batch(G, targets, lpips_alex, settings, w_stats=stats,
                         generators=[torch.Generator().manual_seed(seed) for seed in SEEDS], device="cpu")
    return singles, batch


def _maps(sides, count, seed):
    rng = torch.Generator().manual_seed(seed)
    return {f"m{i}": torch.randn(count, 1, side, side, generator=rng) for i, side in enumerate(sides)}


def test_noise_regularization_per_sample_equals_the_reference_per_photo():
    maps = _maps((4, 8, 8, 16, 16, 32, 64), count=3, seed=1)
    per_sample = noise_regularization_per_sample(maps)
    assert per_sample.shape == (3,)
    for i in range(3):
        expected = noise_regularization({k: v[i : i + 1] for k, v in maps.items()})
        torch.testing.assert_close(per_sample[i], expected, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="square"):
        noise_regularization_per_sample({"bad": torch.zeros(1, 1, 4, 8)})
    with pytest.raises(ValueError, match="batch size"):
        noise_regularization_per_sample({"a": torch.zeros(1, 1, 4, 4), "b": torch.zeros(2, 1, 4, 4)})


def test_renormalize_per_sample_gives_zero_mean_unit_variance_per_photo():
    maps = {k: v * 3 + 2 for k, v in _maps((8, 16), count=2, seed=2).items()}
    renormalize_noise_per_sample_(maps)
    for values in maps.values():
        flat = values.reshape(2, -1).double()
        np.testing.assert_allclose(flat.mean(dim=1), 0, atol=1e-6)
        np.testing.assert_allclose(flat.square().mean(dim=1), 1, rtol=1e-5)


#: Batched kernels sum in another order; Adam's normalised step turns that rounding into
#: steps of up to ~lr in the few elements whose gradient is near zero, so single values of
#: w (|w| ~ 4) and of the image can differ by ~1e-3 after some steps, while every loss agrees
#: to ~1e-7. Separate photos differ by far more than these tolerances.
LATENT_ATOL = 5e-3


def test_batched_inversion_equals_single_inversions(singles_and_batch):
    singles, batch = singles_and_batch
    assert len(batch) == len(singles)
    for single, batched in zip(singles, batch):
        torch.testing.assert_close(batched.w, single.w, rtol=0, atol=LATENT_ATOL)
        torch.testing.assert_close(batched.image, single.image, rtol=0, atol=LATENT_ATOL)
        assert set(batched.noise) == set(single.noise)
        for name in single.noise:
            torch.testing.assert_close(batched.noise[name], single.noise[name], rtol=0, atol=LATENT_ATOL)
        np.testing.assert_allclose([s.total for s in batched.losses], [s.total for s in single.losses], rtol=1e-5)
        np.testing.assert_allclose([s.lpips for s in batched.losses], [s.lpips for s in single.losses], rtol=1e-5)
    # Different seeds and targets give different results: the photos did not share anything.
    assert float((batch[0].w - batch[1].w).abs().max()) > 0.1
    assert float((batch[0].image - batch[1].image).abs().max()) > 0.1


def test_invert_many_chunks_equal_one_batch(G, lpips_alex, problem, singles_and_batch):
    targets, stats = problem
    _, batch = singles_and_batch
    chunked = invert_many(G, targets, lpips_alex, InversionSettings(steps=15, w_avg_samples=300),
                          performance=PerformanceSettings(batch_size=2), w_stats=stats, device="cpu",
                          generators=[torch.Generator().manual_seed(seed) for seed in SEEDS])
    for a, b in zip(chunked, batch):
        torch.testing.assert_close(a.w, b.w, rtol=0, atol=LATENT_ATOL)
        np.testing.assert_allclose([s.total for s in a.losses], [s.total for s in b.losses], rtol=1e-5)


def test_batched_adaptation_equals_single_adaptations(G, lpips_alex, problem, singles_and_batch):
    targets, _ = problem
    singles, _ = singles_and_batch
    settings = AdaptationSettings(steps=4)
    expected = [adapt(G, targets[i : i + 1], r.w, r.noise, lpips_alex, settings, device="cpu")
                for i, r in enumerate(singles)]
    ws = torch.cat([r.w for r in singles])
    noise = {name: torch.cat([r.noise[name] for r in singles]) for name in singles[0].noise}
    calls = []
    got = adapt_batch(G, targets, ws, noise, lpips_alex, settings, device="cpu", progress=calls.append,
                      keep_synthesis=True)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-5)
        np.testing.assert_allclose([s.total for s in a.losses], [s.total for s in b.losses], rtol=1e-5)
        assert a.final_loss.total == pytest.approx(b.final_loss.total, rel=1e-5)
    # Each photo starts from G's weights: its tuned copy differs from the others and from G.
    first, second = (dict(r.synthesis.named_parameters()) for r in got[:2])
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert len(calls) == 3 * 4 and [c.step for c in calls[:4]] == [1, 2, 3, 4]


def test_coarse_stage_keeps_the_unused_noise_maps_and_a_warm_start_continues(G, problem):
    lpips_vgg = load_lpips("vgg", allow_random_backbone=True)  # AlexNet needs images of 32 px or more
    targets, stats = problem
    settings = InversionSettings(steps=3, w_avg_samples=300)
    coarse = invert_batch(G, targets[:2], lpips_vgg, settings, w_stats=stats, device="cpu", max_resolution=16)
    assert coarse[0].image.shape == (1, 3, 16, 16)
    # Maps above block 16 were drawn (same stream as a full-size run) but never optimised.
    full = invert_batch(G, targets[:2], lpips_vgg, InversionSettings(steps=1, w_avg_samples=300), w_stats=stats,
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
    refined = invert_batch(G, targets[:2], lpips_vgg, settings, w_stats=stats, device="cpu", start=start)
    assert refined[0].image.shape == (1, 3, 32, 32) and full[0].image.shape == (1, 3, 32, 32)
    # The warm start really starts there: with a zero learning rate nothing would move.
    frozen = invert_batch(G, targets[:2], lpips_vgg, InversionSettings(steps=1, w_avg_samples=300,
                                                                        initial_noise_factor=0.0),
                          w_stats=stats, device="cpu", start=start)
    torch.testing.assert_close(frozen[0].w[:, :1], coarse[0].w[:, :1], rtol=0, atol=0)


def test_invalid_batches_are_rejected(G, lpips_alex, problem):
    targets, stats = problem
    settings = InversionSettings(steps=1, w_avg_samples=300)
    with pytest.raises(ValueError, match="generators"):
        invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                     generators=[torch.Generator()])
    with pytest.raises(ValueError, match="target must be"):
        invert_batch(G, targets[:, :, :16, :16], lpips_alex, settings, w_stats=stats, device="cpu")
    with pytest.raises(ValueError, match="start.w"):
        invert_batch(G, targets, lpips_alex, settings, w_stats=stats, device="cpu",
                     start=InversionStart(w=torch.zeros(1, 1, G.w_dim), noise={}))
    with pytest.raises(ValueError, match="autocast"):
        invert_batch(G, targets.double(), lpips_alex, settings, w_stats=stats, device="cpu", dtype=torch.float64,
                     performance=PerformanceSettings(autocast="bf16"))
