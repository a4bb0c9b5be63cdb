"""Our generator from an official StyleGAN2-ADA-PyTorch / StyleGAN3 (``networks_stylegan2``) pickle.

The pickle is read by :mod:`pipeline.models.stylegan2.safe_unpickle` (no code runs). The
configuration comes from ``G_ema._init_kwargs``; tensors come from the nested
``_parameters`` / ``_buffers`` / ``_modules`` state and are loaded strictly. The
FIR ``resample_filter`` buffers are checked against the configured filter, and
per-layer attributes (``conv_clamp``, ``architecture``, ...) against the config.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.models.stylegan2.config import Architecture, GeneratorConfig
from pipeline.models.stylegan2.networks import Generator
from pipeline.models.stylegan2.safe_unpickle import PersistentRecord, read_network_pickle
from pipeline.models.stylegan2.state import load_state_strict

_TOP_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter",
                   "use_noise", "activation", "kernel_size", "fp16_channels_last", "fused_modconv_default"}


def load_official_pickle(path: str | Path) -> Generator:
    """``G_ema`` of an official network pickle as our :class:`Generator` (CPU, float32, eval)."""
    data = read_network_pickle(path)
    if isinstance(data, dict):
        if "G_ema" not in data:
            raise ModelError(f"network pickle {str(path)!r} has no 'G_ema' (keys: {sorted(map(str, data))})")
        record = data["G_ema"]
    else:
        record = data
    if not isinstance(record, PersistentRecord) or record.class_name != "Generator":
        raise ModelError(f"network pickle {str(path)!r}: G_ema is not a persistent Generator object")
    return generator_from_record(record, source=f"network pickle {str(path)!r}")


def generator_from_record(record: PersistentRecord, source: str) -> Generator:
    """Build and strictly fill a :class:`Generator` from an unpickled ``G_ema`` record."""
    init_kwargs = record.state.get("_init_kwargs")
    if not isinstance(init_kwargs, dict):
        raise ModelError(f"{source}: G_ema has no _init_kwargs")
    config = config_from_init_kwargs(init_kwargs, source)
    tensors, attrs = _flatten(record, "", source)
    beta = _plain(attrs.get("mapping", {}).get("w_avg_beta", config.w_avg_beta))
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool):
        raise ModelError(f"{source}: mapping.w_avg_beta is {beta!r}; a generator without w_avg is not supported")
    config = dataclasses.replace(config, w_avg_beta=float(beta))  # the module's value is authoritative
    _check_filters(tensors, config, source)
    _check_attributes(attrs, config, source)
    generator = Generator(config)
    load_state_strict(generator, tensors, source)
    return generator.eval()


def config_from_init_kwargs(init_kwargs: dict[str, Any], source: str) -> GeneratorConfig:
    """Map the reference ``Generator(**init_kwargs)`` onto :class:`GeneratorConfig`.

    StyleGAN2-ADA passes ``synthesis_kwargs={...}``; StyleGAN3's ``networks_stylegan2``
    passes them flattened, with ``conv_clamp`` defaulting to 256 instead of None.
    """
    kw = _plain(init_kwargs)
    if "synthesis_kwargs" in kw:
        unknown = sorted(set(kw) - _TOP_KEYS)
        synthesis = kw["synthesis_kwargs"]
        default_clamp: float | None = None
    else:
        unknown = []
        synthesis = {k: v for k, v in kw.items() if k not in _TOP_KEYS}
        default_clamp = 256.0
    mapping = kw.get("mapping_kwargs", {})
    if not isinstance(mapping, dict) or not isinstance(synthesis, dict):
        raise ModelError(f"{source}: mapping_kwargs / synthesis_kwargs are not dicts")
    unknown += [f"mapping_kwargs.{k}" for k in sorted(set(mapping) - _MAPPING_KEYS)]
    unknown += [f"synthesis_kwargs.{k}" for k in sorted(set(synthesis) - _SYNTHESIS_KEYS)]
    if unknown:
        raise ModelError(f"{source}: unsupported generator arguments {unknown}")
    if kw.get("c_dim", 0) not in (0, None):
        raise ModelError(f"{source}: conditional generators are not supported (c_dim={kw['c_dim']})")
    for key, value, allowed in (("mapping activation", mapping.get("activation", "lrelu"), "lrelu"),
                                ("synthesis activation", synthesis.get("activation", "lrelu"), "lrelu"),
                                ("kernel_size", synthesis.get("kernel_size", 3), 3)):
        if value != allowed:
            raise ModelError(f"{source}: unsupported {key} {value!r} (only {allowed!r})")
    if "w_avg_beta" in mapping and mapping["w_avg_beta"] is None:
        raise ModelError(f"{source}: generator has no w_avg (w_avg_beta=None); truncation impossible")
    try:
        return GeneratorConfig(
            z_dim=kw.get("z_dim"),
            w_dim=kw.get("w_dim"),
            img_resolution=kw.get("img_resolution"),
            img_channels=kw.get("img_channels"),
            mapping_layers=mapping.get("num_layers", 8),
            mapping_layer_features=mapping.get("layer_features"),
            mapping_lr_multiplier=mapping.get("lr_multiplier", 0.01),
            w_avg_beta=mapping.get("w_avg_beta", 0.995 if default_clamp is None else 0.998),
            channel_base=synthesis.get("channel_base", 32768),
            channel_max=synthesis.get("channel_max", 512),
            num_fp16_res=synthesis.get("num_fp16_res", 0 if default_clamp is None else 4),
            conv_clamp=synthesis.get("conv_clamp", default_clamp),
            architecture=synthesis.get("architecture", "skip"),
            resample_filter=tuple(synthesis.get("resample_filter", (1, 3, 3, 1))),
            use_noise=synthesis.get("use_noise", True),
        )
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{source}: unsupported generator configuration: {exc}") from exc


def _plain(value: Any) -> Any:
    """Dicts, lists and numpy scalars from the pickle as plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _flatten(record: PersistentRecord, prefix: str, source: str
             ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Dotted tensor names (like ``state_dict``) and each module's other attributes."""
    state = record.state
    tensors: dict[str, Any] = {}
    attrs: dict[str, dict[str, Any]] = {prefix.rstrip("."): state}
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = state.get(group, {})
        if not isinstance(entries, dict):
            raise ModelError(f"{source}: module {prefix.rstrip('.') or '<root>'} has malformed {group}")
        for name, value in entries.items():
            if value is not None and name not in skip:
                tensors[prefix + str(name)] = value
    modules = state.get("_modules", {})
    if not isinstance(modules, dict):
        raise ModelError(f"{source}: module {prefix.rstrip('.') or '<root>'} has malformed _modules")
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise ModelError(f"{source}: submodule {prefix + str(name)!r} is not a persistent network object")
        sub_tensors, sub_attrs = _flatten(child, f"{prefix}{name}.", source)
        tensors.update(sub_tensors)
        attrs.update(sub_attrs)
    return tensors, attrs


def _check_filters(tensors: dict[str, Any], config: GeneratorConfig, source: str) -> None:
    """Remove the reference's ``resample_filter`` buffers from ``tensors`` after checking them."""
    taps = torch.tensor(config.resample_filter, dtype=torch.float64)
    expected = taps / taps.sum() if taps.numel() >= 8 else torch.outer(taps, taps) / torch.outer(taps, taps).sum()
    names = []
    for res in config.block_resolutions:
        names.append(f"synthesis.b{res}.resample_filter")
        names += [f"synthesis.b{res}.conv1.resample_filter"]
        if res > 4:
            names.append(f"synthesis.b{res}.conv0.resample_filter")
            if config.architecture == Architecture.RESNET:
                names.append(f"synthesis.b{res}.skip.resample_filter")
    for name in names:
        if name not in tensors:
            raise ModelError(f"{source}: missing tensor {name!r}")
        value = tensors.pop(name)
        if (not isinstance(value, torch.Tensor) or value.shape != expected.shape
                or not torch.allclose(value.double(), expected, atol=1e-6)):
            raise ModelError(f"{source}: {name!r} is not the configured filter {list(config.resample_filter)}")


def _check_attributes(attrs: dict[str, dict[str, Any]], config: GeneratorConfig, source: str) -> None:
    """Cross-check attributes the reference stores per module against ``config``."""
    checks: list[tuple[str, str, Any]] = [("mapping", "num_layers", config.mapping_layers)]
    for idx in range(config.mapping_layers):
        checks += [(f"mapping.fc{idx}", "activation", "lrelu"),
                   (f"mapping.fc{idx}", "bias_gain", config.mapping_lr_multiplier)]
    for res in config.block_resolutions:
        block = f"synthesis.b{res}"
        checks.append((block, "architecture", config.architecture.value))
        for conv in ("conv0", "conv1") if res > 4 else ("conv1",):
            checks += [(f"{block}.{conv}", "conv_clamp", config.conv_clamp),
                       (f"{block}.{conv}", "use_noise", config.use_noise),
                       (f"{block}.{conv}", "activation", "lrelu"),
                       (f"{block}.{conv}", "up", 2 if conv == "conv0" else 1)]
        if res == config.img_resolution or config.architecture == Architecture.SKIP:
            checks.append((f"{block}.torgb", "conv_clamp", config.conv_clamp))
    for module, attr, expected in checks:
        state = attrs.get(module)
        if state is None:
            raise ModelError(f"{source}: missing submodule {module!r}")
        if attr not in state:
            continue
        actual = _plain(state[attr])
        same = (actual == expected if not isinstance(expected, numbers.Real) or isinstance(expected, bool)
                or not isinstance(actual, numbers.Real) else abs(float(actual) - float(expected)) <= 1e-9)
        if not same:
            raise ModelError(f"{source}: {module}.{attr} is {actual!r} but the init kwargs imply {expected!r}")
