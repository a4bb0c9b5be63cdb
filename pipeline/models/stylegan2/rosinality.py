"""rosinality/stylegan2-pytorch checkpoints (``{"g_ema": state_dict, "latent_avg": w}``).

Key layout of rosinality's ``Generator`` (``n`` = 0..num_blocks-2 for 8x8 upwards):

=================================  ===========================================
ours                               rosinality (shape differences)
=================================  ===========================================
mapping.fc{i}.weight/bias          style.{i+1}.weight/bias (index 0 is PixelNorm)
synthesis.b4.const [C,4,4]         input.input [1,C,4,4]
synthesis.b4.conv1.*               conv1.*
synthesis.b{R}.conv0.*             convs.{2n}.*   (+ buffer conv.blur.kernel)
synthesis.b{R}.conv1.*             convs.{2n+1}.*
  .weight [O,I,3,3]                  .conv.weight [1,O,I,3,3]
  .affine.weight/bias                .conv.modulation.weight/bias
  .noise_strength []                 .noise.weight [1]
  .bias [O]                          .activate.bias [O]
  .noise_const [R,R]                 noises.noise_{k} [1,1,R,R], k in layer order
synthesis.b4.torgb.*               to_rgb1.*
synthesis.b{R}.torgb.*             to_rgbs.{n}.*  (+ buffer upsample.kernel)
  .weight [3,C,1,1]                  .conv.weight [1,3,C,1,1]
  .bias [3]                          .bias [1,3,1,1]
=================================  ===========================================

Both implementations apply the 2x-upsampling conv kernel un-flipped through a
transposed convolution, so kernels are copied as they are. rosinality stores no
mapping lr multiplier (its default, 0.01, is assumed) and no conv_clamp (None).
Its stock channel table is 512 up to 32x32, then ``16384 * channel_multiplier / R``;
the loader accepts any table of the form ``min(base // R, max)`` inferred from shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import ModelError
from pipeline.models.stylegan2.config import Architecture, GeneratorConfig
from pipeline.models.stylegan2.networks import Generator
from pipeline.models.stylegan2.state import load_state_strict, mean_w

_STOCK_FILTER = (1.0, 3.0, 3.0, 1.0)
_ROSINALITY_LR_MLP = 0.01
W_AVG_SAMPLES = 4096  # when a checkpoint has no latent_avg, as rosinality's mean_latent(4096)
W_AVG_SEED = 0


def load_rosinality(path: str | Path) -> Generator:
    """Our :class:`Generator` from a rosinality ``.pt`` checkpoint (CPU, float32, eval).

    ``latent_avg`` becomes ``mapping.w_avg``; without it, ``w_avg`` is the mean mapping
    output of 4096 z drawn from ``torch.Generator().manual_seed(0)``.
    """
    source = f"rosinality checkpoint {str(path)!r}"
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ModelError(f"{source} does not exist") from None
    except Exception as exc:
        raise ModelError(f"{source} cannot be read as plain tensors (weights_only): {exc}") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise ModelError(f"{source} has no 'g_ema' state dict")
    state = ckpt["g_ema"]
    config = _infer_config(state, source)
    generator = Generator(config)
    key_map = _key_map(config)
    del key_map["mapping.w_avg"]
    missing = [theirs for theirs in [*key_map.values(), *_kernel_buffers(config)] if theirs not in state]
    unexpected = sorted(str(k) for k in state if k not in set(key_map.values()) | set(_kernel_buffers(config)))
    if missing or unexpected:
        raise ModelError(f"{source}: g_ema does not match rosinality's layout: missing {missing[:12]}, "
                         f"unexpected {unexpected[:12]}")
    ours_shapes = {k: v.shape for k, v in generator.state_dict().items()}
    ours: dict[str, object] = {}
    for ours_key, theirs in key_map.items():
        value = state[theirs]
        want = _rosinality_shape(theirs, torch.empty(ours_shapes[ours_key], device="meta"))
        if not isinstance(value, torch.Tensor) or list(value.shape) != want:
            raise ModelError(f"{source}: {theirs!r} has shape {_shape(value)}, expected {tuple(want)}")
        ours[ours_key] = value.reshape(ours_shapes[ours_key])
    _check_kernels(state, config, source)
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != config.w_dim:
            raise ModelError(f"{source}: latent_avg must hold {config.w_dim} values")
        ours["mapping.w_avg"] = latent_avg.reshape(config.w_dim)
    else:
        ours["mapping.w_avg"] = torch.zeros(config.w_dim)
    load_state_strict(generator, ours, source)
    if latent_avg is None:
        with torch.no_grad():
            rng = torch.Generator().manual_seed(W_AVG_SEED)
            generator.mapping.w_avg.copy_(mean_w(generator, W_AVG_SAMPLES, rng))
    return generator.eval()


def to_rosinality_state_dict(generator: Generator, *, stock_channels: bool = True) -> dict[str, torch.Tensor]:
    """``g_ema`` state dict in rosinality's exact key layout and tensor shapes (CPU copies).

    Refuses (ValueError) what rosinality cannot express: conv_clamp, non-'skip'
    architectures, other filters, img_channels != 3, z_dim != w_dim, a mapping lr
    multiplier other than 0.01, no noise inputs, and - with ``stock_channels`` - channel
    counts outside rosinality's table (pass False for forks with their own table).
    """
    config = generator.config
    _require_expressible(config, stock_channels)
    ours = generator.state_dict()
    out: dict[str, torch.Tensor] = {}
    for ours_key, theirs in _key_map(config).items():
        if ours_key == "mapping.w_avg":
            continue
        value = ours[ours_key].detach().to("cpu", torch.float32).clone()
        out[theirs] = value.reshape(_rosinality_shape(theirs, value))
    kernel = torch.outer(torch.tensor(_STOCK_FILTER), torch.tensor(_STOCK_FILTER))
    kernel = kernel / kernel.sum() * 4.0
    for key in _kernel_buffers(config):
        out[key] = kernel.clone()
    return out


def to_rosinality_checkpoint(generator: Generator, *, stock_channels: bool = True) -> dict[str, torch.Tensor | dict]:
    """``{"g_ema": to_rosinality_state_dict(G), "latent_avg": w_avg}`` for ``torch.save``."""
    return {"g_ema": to_rosinality_state_dict(generator, stock_channels=stock_channels),
            "latent_avg": generator.mapping.w_avg.detach().to("cpu", torch.float32).clone()}


# -- layout ---------------------------------------------------------------------------


def _key_map(config: GeneratorConfig) -> dict[str, str]:
    """Our state_dict key -> rosinality key (mapping.w_avg -> 'latent_avg')."""
    m = {"mapping.w_avg": "latent_avg", "synthesis.b4.const": "input.input"}
    for i in range(config.mapping_layers):
        m[f"mapping.fc{i}.weight"] = f"style.{i + 1}.weight"
        m[f"mapping.fc{i}.bias"] = f"style.{i + 1}.bias"
    noise_idx = 0
    for n, res in enumerate(config.block_resolutions):
        convs = [("conv1", "conv1")] if res == 4 else [("conv0", f"convs.{2 * n - 2}"),
                                                       ("conv1", f"convs.{2 * n - 1}")]
        for ours_name, theirs in convs:
            ours = f"synthesis.b{res}.{ours_name}"
            m[f"{ours}.weight"] = f"{theirs}.conv.weight"
            m[f"{ours}.affine.weight"] = f"{theirs}.conv.modulation.weight"
            m[f"{ours}.affine.bias"] = f"{theirs}.conv.modulation.bias"
            m[f"{ours}.noise_strength"] = f"{theirs}.noise.weight"
            m[f"{ours}.bias"] = f"{theirs}.activate.bias"
            m[f"{ours}.noise_const"] = f"noises.noise_{noise_idx}"
            noise_idx += 1
        rgb = "to_rgb1" if res == 4 else f"to_rgbs.{n - 1}"
        m[f"synthesis.b{res}.torgb.weight"] = f"{rgb}.conv.weight"
        m[f"synthesis.b{res}.torgb.affine.weight"] = f"{rgb}.conv.modulation.weight"
        m[f"synthesis.b{res}.torgb.affine.bias"] = f"{rgb}.conv.modulation.bias"
        m[f"synthesis.b{res}.torgb.bias"] = f"{rgb}.bias"
    return m


def _kernel_buffers(config: GeneratorConfig) -> list[str]:
    keys = []
    for n in range(len(config.block_resolutions) - 1):
        keys += [f"convs.{2 * n}.conv.blur.kernel", f"to_rgbs.{n}.upsample.kernel"]
    return keys


def _rosinality_shape(key: str, value: torch.Tensor) -> list[int]:
    if key == "input.input" or key.endswith("conv.weight") and value.ndim == 4:
        return [1, *value.shape]
    if key.endswith("noise.weight"):
        return [1]
    if key.startswith("noises."):
        return [1, 1, *value.shape]
    if key.startswith("to_rgb") and key.endswith(".bias") and "modulation" not in key:
        return [1, value.shape[0], 1, 1]
    return list(value.shape)


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


# -- config inference -----------------------------------------------------------------


def _infer_config(state: dict, source: str) -> GeneratorConfig:
    def shape(key: str) -> tuple[int, ...]:
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{source}: missing tensor {key!r}")
        return tuple(value.shape)

    style_dim = shape("style.1.weight")[1]
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    num_up_blocks = 0
    while f"to_rgbs.{num_up_blocks}.conv.weight" in state:
        num_up_blocks += 1
    resolution = 4 * 2**num_up_blocks
    channels = {4: shape("input.input")[1]}
    for n in range(num_up_blocks):
        channels[8 * 2**n] = shape(f"convs.{2 * n}.conv.weight")[1]
    base, cmax = _base_and_max(channels)
    if base is None:
        raise ModelError(f"{source}: channel counts {channels} are not min(base // R, max) for any base, max")
    try:
        return GeneratorConfig(z_dim=style_dim, w_dim=style_dim, img_resolution=resolution,
                               mapping_layers=n_mlp, mapping_lr_multiplier=_ROSINALITY_LR_MLP,
                               channel_base=base, channel_max=cmax)
    except ValueError as exc:
        raise ModelError(f"{source}: unsupported configuration: {exc}") from exc


def _base_and_max(channels: dict[int, int]) -> tuple[int | None, int]:
    """Smallest (channel_base, channel_max) reproducing ``channels`` {res: C}, or (None, _)."""
    cmax = channels[4]
    below = [r for r in sorted(channels) if channels[r] < cmax]
    base = channels[below[0]] * below[0] if below else cmax * max(channels)
    if all(min(base // r, cmax) == c for r, c in channels.items()):
        return base, cmax
    return None, cmax


def _stock_channels(resolution: int, multiplier: int) -> int:
    return 512 if resolution <= 32 else 16384 * multiplier // resolution


def _require_expressible(config: GeneratorConfig, stock_channels: bool) -> None:
    problems = []
    if config.conv_clamp is not None:
        problems.append(f"conv_clamp={config.conv_clamp}")
    if config.architecture != Architecture.SKIP:
        problems.append(f"architecture={config.architecture.value!r}")
    if config.resample_filter != _STOCK_FILTER:
        problems.append(f"resample_filter={list(config.resample_filter)}")
    if config.img_channels != 3:
        problems.append(f"img_channels={config.img_channels}")
    if config.z_dim != config.w_dim or config.mapping_features != config.w_dim:
        problems.append("z_dim / mapping features differ from w_dim")
    if abs(config.mapping_lr_multiplier - _ROSINALITY_LR_MLP) > 1e-12:
        problems.append(f"mapping_lr_multiplier={config.mapping_lr_multiplier}")
    if not config.use_noise:
        problems.append("use_noise=False")
    if stock_channels:
        res = config.block_resolutions
        ours = [config.channels(r) for r in res]
        fits = [m for m in (1, 2, 4, 8) if [_stock_channels(r, m) for r in res] == ours]
        if config.img_resolution > 1024 or not fits:
            problems.append(f"channels {dict(zip(res, ours))} are not rosinality's stock table")
    if problems:
        raise ValueError("rosinality's Generator cannot express this generator: " + "; ".join(problems))


def _check_kernels(state: dict, config: GeneratorConfig, source: str) -> None:
    kernel = torch.outer(torch.tensor(_STOCK_FILTER), torch.tensor(_STOCK_FILTER))
    kernel = kernel / kernel.sum() * 4.0
    for key in _kernel_buffers(config):
        value = state.get(key)
        if not isinstance(value, torch.Tensor) or value.shape != kernel.shape or not torch.allclose(
                value.float(), kernel, atol=1e-6):
            raise ModelError(f"{source}: {key!r} is missing or not the [1, 3, 3, 1] blur kernel x4")
