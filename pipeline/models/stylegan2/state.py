"""Strict copying of named tensors into a :class:`Generator`, and its deterministic random init."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pipeline.errors import ModelError
from pipeline.models.stylegan2.networks import Generator

_MAX_NAMES = 12


def load_state_strict(generator: Generator, tensors: Mapping[str, object], source: str) -> None:
    """Copy ``tensors`` into every parameter and buffer of ``generator``.

    Every state entry must be present, no extra names are allowed, shapes must be
    equal and values finite floats; otherwise :class:`ModelError` naming the keys.
    ``source`` says where the tensors came from, for the message.
    """
    expected = generator.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in expected)
    if missing or unexpected:
        raise ModelError(
            f"{source}: tensors do not match the generator: missing {_names(missing)}, "
            f"unexpected {_names(unexpected)}"
        )
    for key, target in expected.items():
        value = tensors[key]
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(target.shape):
            raise ModelError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
            )
        if not (value.is_floating_point()):
            raise ModelError(f"{source}: {key!r} has dtype {value.dtype}, expected a floating type")
        if not bool(torch.isfinite(value).all()):
            raise ModelError(f"{source}: {key!r} contains NaN or infinite values")
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[key])


def randomize_(generator: Generator, seed: int, w_avg_samples: int = 2048) -> None:
    """Fill ``generator`` deterministically from ``torch.Generator().manual_seed(seed)``.

    Weights, ``const`` and ``noise_const`` ~ N(0, 1) as in the reference (mapping weights
    divided by the lr multiplier); unlike the reference, biases (~0.1·N, affine biases
    1 + 0.1·N) and noise strengths (~0.1·N) are random too, so every parameter affects
    the image. ``w_avg`` is then the mean mapping output of ``w_avg_samples`` seeded z.
    """
    rng = torch.Generator(device="cpu").manual_seed(int(seed))
    lr = generator.config.mapping_lr_multiplier
    with torch.no_grad():
        for key, target in generator.state_dict().items():
            draw = torch.randn(target.shape, generator=rng, dtype=torch.float64)
            if key == "mapping.w_avg":
                continue
            if key.startswith("mapping.fc") and key.endswith(".weight"):
                value = draw / lr
            elif key.endswith("affine.bias"):
                value = 1.0 + 0.1 * draw
            elif key.endswith(".bias") or key.endswith("noise_strength"):
                value = 0.1 * draw
            else:
                value = draw
            target.copy_(value)
        generator.mapping.w_avg.copy_(mean_w(generator, w_avg_samples, rng))


def mean_w(generator: Generator, num_samples: int, rng: torch.Generator) -> torch.Tensor:
    """Mean mapping output ``[w_dim]`` over ``num_samples`` z ~ N(0, I) drawn from ``rng``.

    Computed in float64 on a copy and rounded to float32, so that the mean of many
    samples does not depend on the order float32 sums are taken in.
    """
    import copy

    device = generator.mapping.w_avg.device
    z = torch.randn([num_samples, generator.z_dim], generator=rng, dtype=torch.float64).to(device)
    mapping = copy.deepcopy(generator.mapping).double()
    with torch.no_grad():
        return mapping(z)[:, 0].mean(dim=0).float()


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_NAMES])
    more = f" and {len(keys) - _MAX_NAMES} more" if len(keys) > _MAX_NAMES else ""
    return f"[{shown}{more}]"
