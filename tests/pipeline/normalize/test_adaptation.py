"""Model adaptation, Algorithm 2 (pipeline.normalize.adaptation), on the real tiny StyleGAN2 fixture:
the one loop against the reference loop (tests/pipeline/normalize/oracles.py), batches, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.normalize.adaptation import AdaptationResult, AdaptationSettings, adapt
from pipeline.normalize.perceptual import lpips_distance
from pipeline.progress import Progress
from tests.pipeline.normalize.oracles import reference_adapt

ADAPTATION_STEPS = 20


@pytest.fixture(scope="module")
def problem(G) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A target from one latent, and a different pivot w plus noise maps to adapt from."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, G.z_dim, generator=generator), psi=1.0)
        target = G.synthesis(ws[1:2], noise="const").clamp(-1, 1)
    w = ws[:1, :1].repeat(1, G.num_ws, 1)
    noise = {
        name: torch.randn(1, 1, height, width, generator=generator)
        for name, (height, width) in G.synthesis.noise_shapes.items()
    }
    return target, w, noise


@pytest.fixture(scope="module")
def main_run(G, lpips_alex, problem):
    target, w, noise = problem
    snapshot = {
        "G": {name: value.clone() for name, value in G.state_dict().items()},
        "requires_grad": [parameter.requires_grad for parameter in G.parameters()],
        "w": w.clone(),
        "noise": {name: value.clone() for name, value in noise.items()},
    }
    calls: list[Progress] = []
    (result,) = adapt(
        G,
        target,
        w,
        noise,
        lpips_alex,
        AdaptationSettings(steps=ADAPTATION_STEPS),
        device="cpu",
        progress=calls.append,
        keep_synthesis=True,
    )
    return result, calls, snapshot


def test_adaptation_lowers_the_loss(G, lpips_alex, problem, main_run) -> None:
    target, w, noise = problem
    result: AdaptationResult = main_run[0]
    with torch.no_grad():
        before = G.synthesis(w, noise=noise)
    lpips_before = float(lpips_distance(lpips_alex, before, target))
    mse_before = float((before - target).square().mean())
    lpips_after = float(lpips_distance(lpips_alex, result.image, target))
    mse_after = float((result.image - target).square().mean())
    print(
        f"\nadaptation {ADAPTATION_STEPS} steps: loss {result.losses[0].total:.4f} -> {result.losses[-1].total:.4f} "
        f"(final {result.final_loss.total:.4f}); LPIPS {lpips_before:.4f} -> {lpips_after:.4f}, "
        f"MSE {mse_before:.4f} -> {mse_after:.4f}"
    )
    # The first recorded loss is the unadapted generator's.
    assert result.losses[0].lpips == pytest.approx(lpips_before, rel=1e-5)
    assert result.losses[0].l2 == pytest.approx(mse_before, rel=1e-5)
    assert result.losses[-1].total < result.losses[0].total
    assert result.final_loss.total < 0.6 * result.losses[0].total
    assert result.final_loss.lpips == pytest.approx(lpips_after, rel=1e-5)
    assert result.final_loss.l2 == pytest.approx(mse_after, rel=1e-5)
    for record in result.losses:
        assert record.total == pytest.approx(record.lpips + record.l2, rel=1e-6)


def test_callers_generator_is_unchanged(G, main_run) -> None:
    _, _, snapshot = main_run
    after = G.state_dict()
    assert list(after) == list(snapshot["G"])
    for name, value in snapshot["G"].items():
        assert torch.equal(after[name], value), name
    assert [parameter.requires_grad for parameter in G.parameters()] == snapshot["requires_grad"]
    assert all(parameter.grad is None for parameter in G.parameters())


def test_w_and_noise_are_never_changed(problem, main_run) -> None:
    _, w, noise = problem
    _, _, snapshot = main_run
    assert torch.equal(w, snapshot["w"]) and w.grad is None and not w.requires_grad
    for name, value in noise.items():
        assert torch.equal(value, snapshot["noise"][name]), name
        assert value.grad is None and not value.requires_grad


def test_the_tuned_copy_is_separate_and_gives_the_image(G, problem, main_run) -> None:
    _, w, noise = problem
    result = main_run[0]
    tuned = result.synthesis
    assert tuned is not None and tuned is not G.synthesis
    changed = [
        name
        for (name, mine), (_, theirs) in zip(tuned.named_parameters(), G.synthesis.named_parameters(), strict=True)
        if not torch.equal(mine, theirs)
    ]
    assert changed  # the copy was tuned
    assert all(not parameter.requires_grad for parameter in tuned.parameters())
    with torch.no_grad():
        assert torch.allclose(tuned(w, noise=noise), result.image, atol=1e-6)
    assert result.image.shape == (1, 3, G.img_resolution, G.img_resolution)


def test_copy_is_discarded_by_default(G, lpips_alex, problem) -> None:
    target, w, noise = problem
    (result,) = adapt(G, target, w, noise, lpips_alex, AdaptationSettings(steps=2), device="cpu")
    assert result.synthesis is None
    assert result.steps == len(result.losses) == 2


def test_progress_is_reported_every_step(main_run) -> None:
    result, calls, _ = main_run
    assert [call.step for call in calls] == list(range(1, ADAPTATION_STEPS + 1))
    assert {call.total for call in calls} == {ADAPTATION_STEPS}
    assert {call.stage for call in calls} == {"adaptation"}
    assert [call.loss for call in calls] == [record.total for record in result.losses]


def test_settings_defaults_and_validation() -> None:
    settings = AdaptationSettings()
    assert (settings.steps, settings.lr, settings.lpips_weight, settings.l2_weight) == (50, 3e-4, 1.0, 1.0)
    with pytest.raises(ValueError, match="steps"):
        AdaptationSettings(steps=0)
    with pytest.raises(TypeError, match="steps"):
        AdaptationSettings(steps=2.5)
    with pytest.raises(ValueError, match="lr"):
        AdaptationSettings(lr=-1e-4)
    with pytest.raises(ValueError, match="both be 0"):
        AdaptationSettings(lpips_weight=0.0, l2_weight=0.0)


def test_default_settings_reproduce_the_reference_loop_bit_for_bit(G, lpips_alex, problem, main_run) -> None:
    """The one loop in its default (exact float32) settings against Pivotal Tuning's loop:
    every loss, the final loss, the image and the tuned weights are equal (tolerance 0) on the CPU."""
    target, w, noise = problem
    result = main_run[0]
    reference = reference_adapt(G, target, w, noise, lpips_alex, AdaptationSettings(steps=ADAPTATION_STEPS))
    assert result.losses == reference.losses
    assert result.final_loss == reference.final_loss
    assert torch.equal(result.image, reference.image)
    for (name, mine), (_, theirs) in zip(result.synthesis.named_parameters(), reference.synthesis.named_parameters(),
                                         strict=True):
        assert torch.equal(mine, theirs), name


def test_a_batch_adapts_each_photo_from_the_generator(G, lpips_alex) -> None:
    """N photos in one call equal N calls: each starts from G's weights (bitwise, one working copy reset)."""
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        targets = G(torch.randn(3, G.z_dim, generator=generator)).clamp(-1, 1)
        ws = G.mapping(torch.randn(3, G.z_dim, generator=generator))[:, :1].repeat(1, G.num_ws, 1)
    noise = {name: torch.randn(3, 1, h, w, generator=generator) for name, (h, w) in G.synthesis.noise_shapes.items()}
    settings = AdaptationSettings(steps=4)
    expected = [adapt(G, targets[i : i + 1], ws[i : i + 1], {k: v[i : i + 1] for k, v in noise.items()}, lpips_alex,
                      settings, device="cpu")[0] for i in range(3)]
    calls = []
    got = adapt(G, targets, ws, noise, lpips_alex, settings, device="cpu", progress=calls.append, keep_synthesis=True)
    assert len(got) == 3
    for a, b in zip(got, expected):
        assert torch.equal(a.image, b.image)
        assert a.losses == b.losses and a.final_loss == b.final_loss
    first, second = (dict(r.synthesis.named_parameters()) for r in got[:2])
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert len(calls) == 3 * 4 and [c.step for c in calls[:4]] == [1, 2, 3, 4] and {c.total for c in calls} == {4}
    np.testing.assert_array_equal([c.loss for c in calls], [s.total for r in got for s in r.losses])


def test_bad_latents_are_rejected(G, lpips_alex, problem) -> None:
    target, w, noise = problem
    settings = AdaptationSettings(steps=1)
    with pytest.raises(ValueError, match=r"ws must be \[1, 8, 32\]"):
        adapt(G, target, w[:, :1], noise, lpips_alex, settings, device="cpu")
    with pytest.raises(ValueError, match=r"ws must be \[2, 8, 32\]"):
        adapt(G, target.repeat(2, 1, 1, 1), w, noise, lpips_alex, settings, device="cpu")
    with pytest.raises(ValueError, match=r"noise map 'b4.conv1' must be \[1, 1, 4, 4\], got \(4, 4\)"):
        adapt(G, target, w, {**noise, "b4.conv1": noise["b4.conv1"][0, 0]}, lpips_alex, settings, device="cpu")
    with pytest.raises(TypeError, match="ws must be a floating-point"):
        adapt(G, target, w.numpy(), noise, lpips_alex, settings, device="cpu")
    with pytest.raises(TypeError, match="performance"):
        adapt(G, target, w, noise, lpips_alex, settings, device="cpu", performance="fast")
    partial = dict(noise)
    partial.pop("b32.conv1")
    with pytest.raises(ValueError, match="missing \\['b32.conv1'\\]"):
        adapt(G, target, w, partial, lpips_alex, settings, device="cpu")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        adapt(G, target * 3, w, noise, lpips_alex, settings, device="cpu")
