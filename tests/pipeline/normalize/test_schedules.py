"""The fast mode: low-resolution synthesis output, the coarse-to-fine schedule, appraise and service wiring."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from pipeline.appraise import AppraisalSettings, appraise
from pipeline.models.bundle import load_bundle
from pipeline.models.stylegan2 import Architecture, GeneratorConfig, SynthesisImpl, build_generator, load_generator
from pipeline.models.stylegan2.networks import Generator
from pipeline.normalize.adaptation import AdaptationSettings
from pipeline.normalize.engine import PerformanceSettings
from pipeline.normalize.inversion import InversionSettings, InversionStart, compute_w_stats, invert
from pipeline.normalize.perceptual import load_lpips
from pipeline.normalize.schedules import FastSchedule, NormalizationMode, invert_fast, invert_in_mode, score_agreement
from pipeline.preprocess.photo_io import load_photo
from service.config.appraisal import settings_from
from service.config.settings import ConfigError, load_config
from service.runtime.model_store import make_demo_bundle

TINY = AppraisalSettings(inversion=InversionSettings(steps=20, w_avg_samples=300), adaptation=AdaptationSettings(steps=4),
                         lpips_heatmaps=False)


@pytest.fixture(scope="module")
def G(sg2_fixture_dir: Path) -> torch.nn.Module:
    return load_generator(sg2_fixture_dir / "sg2ada_tiny32.pkl")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_demo_bundle(tmp_path_factory.mktemp("store"), resolution=64))


def _noise(G, count: int, seed: int) -> dict[str, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    return {name: torch.randn(count, 1, h, w, generator=rng) for name, (h, w) in G.synthesis.noise_shapes.items()}


# -- synthesis(..., max_resolution=R) ------------------------------------------------------------

@pytest.mark.parametrize("resolution", [4, 8, 16])
def test_low_resolution_output_equals_a_generator_built_for_that_size(G, resolution):
    """Block R's image equals the full output of a generator of side R holding the same weights."""
    small = Generator(GeneratorConfig(**{**G.config.to_json_dict(), "img_resolution": resolution,
                                          "architecture": Architecture.SKIP,
                                          "resample_filter": G.config.resample_filter}))
    state = {k: v for k, v in G.state_dict().items() if k in small.state_dict()}
    small.load_state_dict(state, strict=True)
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(resolution)))
    noise = _noise(G, 2, seed=resolution)
    with torch.no_grad():
        got = G.synthesis(ws, noise=noise, max_resolution=resolution)
        expected = small.synthesis(ws[:, : small.num_ws], noise={k: noise[k] for k in small.synthesis.noise_shapes})
        fast = SynthesisImpl(conv_form="input", fir="depthwise", fuse_upsampling=True, channels_last=True)
        got_fast = G.synthesis(ws, noise=noise, max_resolution=resolution, impl=fast)
    assert got.shape == (2, 3, resolution, resolution)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got_fast, expected, rtol=0, atol=1e-5)


def test_full_resolution_output_is_unchanged(G, sg2_fixture_dir):
    reference = np.load(sg2_fixture_dir / "sg2ada_tiny32.npz")
    ws = torch.from_numpy(reference["ws"])
    noise = {name: torch.from_numpy(reference[f"noise::{name}.noise_const"])[None, None]
             for name in G.synthesis.noise_shapes}
    with torch.no_grad():
        default = G.synthesis(ws, noise=noise)
        explicit = G.synthesis(ws, noise=noise, max_resolution=G.img_resolution)
        none = G.synthesis(ws, noise=noise, max_resolution=None)
    assert torch.equal(default, explicit) and torch.equal(default, none)
    np.testing.assert_allclose(default.numpy(), reference["img_given_noise"], rtol=0, atol=1e-4)


def test_low_resolution_output_is_validated(G):
    ws = G.mapping(torch.randn(1, G.z_dim))
    with pytest.raises(ValueError, match="max_resolution"):
        G.synthesis(ws, max_resolution=12)
    with pytest.raises(ValueError, match="max_resolution"):
        G.synthesis(ws, max_resolution=16.0)
    low = {k: v for k, v in _noise(G, 1, 0).items() if G.synthesis.noise_shapes[k][0] <= 8}
    assert G.synthesis(ws, noise=low, max_resolution=8).shape == (1, 3, 8, 8)  # higher maps not needed
    with pytest.raises(ValueError, match="missing"):
        G.synthesis(ws, noise=low, max_resolution=16)
    resnet = build_generator(GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, mapping_layers=1, channel_base=64,
                                             channel_max=8, architecture=Architecture.RESNET))
    with pytest.raises(ValueError, match="skip"):
        resnet.synthesis(resnet.mapping(torch.randn(1, 8)), max_resolution=8)


# -- schedule and agreement ------------------------------------------------------------------------

def test_fast_schedule_maps_sizes_and_steps():
    schedule = FastSchedule()
    assert [schedule.coarse_resolution(r) for r in (1024, 512, 256, 128, 64, 32)] == [256, 128, 64, 32, 32, 32]
    assert (schedule.coarse_steps(2000), schedule.refine_steps(2000)) == (600, 100)
    assert (schedule.coarse_steps(3), schedule.refine_steps(3)) == (1, 1)
    assert FastSchedule(coarse_min_resolution=16, coarse_divisor=2).coarse_resolution(32) == 16
    for bad in ({"coarse_fraction": 0}, {"refine_lr": 0}, {"coarse_min_resolution": 512}, {"coarse_divisor": 0}):
        with pytest.raises(ValueError):
            FastSchedule(**bad)


def test_score_agreement_matches_scipy():
    rng = np.random.default_rng(4)
    a = rng.normal(size=16)
    b = a + rng.normal(scale=0.3, size=16)
    agreement = score_agreement(a, b)
    assert agreement.count == 16
    assert agreement.pearson_r == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-12)
    assert agreement.max_abs_difference == pytest.approx(np.abs(a - b).max())
    assert agreement.mean_abs_difference == pytest.approx(np.abs(a - b).mean())
    assert score_agreement(a, a).pearson_r == pytest.approx(1.0) and score_agreement(a, a).max_abs_difference == 0
    assert np.isnan(score_agreement([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).pearson_r)
    with pytest.raises(ValueError):
        score_agreement([1.0], [1.0])
    with pytest.raises(ValueError):
        score_agreement([1.0, np.nan], [1.0, 2.0])


def test_invert_fast_runs_both_stages(G):
    lpips_vgg = load_lpips("vgg", allow_random_backbone=True)  # AlexNet needs 32 px, the coarse stage is 16
    stats = compute_w_stats(G, 300, seed=123)
    with torch.no_grad():
        targets = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(8))).clamp(-1, 1)
    schedule = FastSchedule(coarse_divisor=2, coarse_min_resolution=16, coarse_fraction=0.5, refine_fraction=0.25)
    calls = []
    results = invert_fast(G, targets, lpips_vgg, InversionSettings(steps=8, w_avg_samples=300), schedule,
                          w_stats=stats, device="cpu", progress=calls.append)
    assert len(results) == 2
    for result in results:
        assert result.image.shape == (1, 3, 32, 32) and result.w.shape == (1, G.num_ws, G.w_dim)
        assert result.steps == 6 and len(result.losses) == 6
        assert all(np.isfinite(step.total) for step in result.losses)
    assert [c.step for c in calls] == [1, 2, 3, 4, 5, 6] and {c.total for c in calls} == {6}
    # The coarse stage compares 16-px images, the refinement 32-px ones: LPIPS values change between them.
    assert results[0].losses[3].lpips != results[0].losses[4].lpips


def test_a_mode_is_only_a_schedule_over_the_one_loop(G):
    """FAST is two runs of invert (coarse, then a warm start at full size); PAPER is one; both take the same
    performance settings (here a rewrite, to show they are passed on)."""
    lpips_vgg = load_lpips("vgg", allow_random_backbone=True)
    stats = compute_w_stats(G, 300, seed=123)
    with torch.no_grad():
        targets = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(9))).clamp(-1, 1)
    settings = InversionSettings(steps=8, w_avg_samples=300)
    performance = PerformanceSettings(conv_form="auto", fir_impl="depthwise")
    common = {"w_stats": stats, "device": "cpu", "performance": performance}
    fast = invert_in_mode(NormalizationMode.FAST, G, targets, lpips_vgg, settings, **common)
    schedule = FastSchedule()
    generators = [torch.Generator().manual_seed(settings.seed) for _ in range(2)]
    coarse = invert(G, targets, lpips_vgg, replace(settings, steps=schedule.coarse_steps(8)), generators=generators,
                    max_resolution=schedule.coarse_resolution(32) if schedule.coarse_resolution(32) < 32 else None,
                    **common)
    refined = invert(G, targets, lpips_vgg, replace(settings, steps=schedule.refine_steps(8),
                                                    initial_lr=schedule.refine_lr,
                                                    initial_noise_factor=schedule.refine_noise_factor),
                     generators=generators, start=InversionStart.from_results(coarse), **common)
    for got, first, second in zip(fast, coarse, refined, strict=True):
        assert torch.equal(got.w, second.w) and torch.equal(got.image, second.image)
        assert got.losses == first.losses + second.losses
    paper = invert_in_mode("paper", G, targets, lpips_vgg, settings, **common)
    direct = invert(G, targets, lpips_vgg, settings, **common)
    assert all(a.losses == b.losses and torch.equal(a.w, b.w) for a, b in zip(paper, direct, strict=True))
    with pytest.raises(ValueError):
        invert_in_mode("quick", G, targets, lpips_vgg, settings, **common)


# -- appraise and the service ----------------------------------------------------------------------

def test_fast_mode_runs_through_appraise(bundle, faces_dir):
    photo = load_photo(faces_dir / "obama.jpg")
    settings = replace(TINY, mode=NormalizationMode.FAST)
    steps = []
    result = appraise(photo, bundle, settings, progress=steps.append)
    assert np.isfinite(result.primary_score) and all(np.isfinite(s.score) for s in result.scores)
    schedule = FastSchedule()
    expected = schedule.coarse_steps(20) + schedule.refine_steps(20)
    assert [s.stage for s in steps].count("inversion") == expected == len(result.inversion_losses)
    assert [s.stage for s in steps].count("adaptation") == 4  # adaptation is the same in both modes
    assert result.normalized.shape == (64, 64, 3)
    record = result.settings.to_dict()
    assert record["mode"] == "fast" and record["fast_schedule"] == schedule.to_dict()
    again = appraise(photo, bundle, settings)
    assert again.primary_score == result.primary_score


def test_default_settings_record_is_unchanged():
    record = AppraisalSettings().to_dict()
    assert set(record) == {"inversion", "adaptation", "erosion_orders", "lpips_heatmaps", "pose_limits", "detector",
                           "device", "dtype"}
    assert AppraisalSettings(mode="fast").mode is NormalizationMode.FAST
    assert AppraisalSettings(performance=PerformanceSettings(tf32=True)).to_dict()["performance"]["tf32"] is True
    assert "performance" not in AppraisalSettings(performance=PerformanceSettings()).to_dict()  # the default
    with pytest.raises(TypeError, match="performance"):
        AppraisalSettings(performance=None)
    with pytest.raises(ValueError, match="mode"):
        AppraisalSettings(mode="quick")


def test_fast_and_paper_scores_agree_on_tiny_settings(bundle, faces_dir, grace_hopper_path, astronaut_rgb):
    """The agreement measure on four photos; random weights and 20 steps say nothing about r on real models."""
    photos = [load_photo(faces_dir / "obama.jpg"), load_photo(faces_dir / "biden.jpg"), load_photo(grace_hopper_path),
              astronaut_rgb]
    paper, fast = [], []
    for photo in photos:
        paper.append(appraise(photo, bundle, TINY).primary_score)
        fast.append(appraise(photo, bundle, replace(TINY, mode="fast")).primary_score)
    agreement = score_agreement(paper, fast)
    print(f"\nfast vs paper on 4 photos, 20 steps, demo weights: {agreement}")
    assert agreement.count == 4 and np.isfinite(agreement.max_abs_difference) and agreement.max_abs_difference > 0
    assert -1 <= agreement.pearson_r <= 1


def test_service_mode_setting(tmp_path):
    assert load_config({}).mode == "paper"
    config = load_config({"CLEFTSCORE_MODE": "FAST"})
    assert config.mode == "fast" and settings_from(config).mode is NormalizationMode.FAST
    assert settings_from(load_config({})).mode is NormalizationMode.PAPER
    with pytest.raises(ConfigError, match="CLEFTSCORE_MODE"):
        load_config({"CLEFTSCORE_MODE": "turbo"})
