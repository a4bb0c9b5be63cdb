"""The hyper-parameters that fix a StyleGAN2 generator's shapes and arithmetic.

Field names follow NVIDIA's StyleGAN2-ADA-PyTorch ``Generator`` keyword arguments
(``mapping_kwargs`` and ``synthesis_kwargs`` flattened, ``mapping_`` prefixed).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
from typing import Any


class Architecture(str, enum.Enum):
    """How the synthesis blocks produce the RGB image (StyleGAN2 paper, figure 7)."""

    ORIG = "orig"  # a single ToRGB after the last block
    SKIP = "skip"  # ToRGB in every block, upsampled and summed (the official default)
    RESNET = "resnet"  # residual blocks, ToRGB only after the last block


_REFERENCE_FILTER = (1.0, 3.0, 3.0, 1.0)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Shapes and constants of a StyleGAN2 generator (conditional models are not supported).

    ``num_fp16_res`` is recorded for fidelity only: the reference runs the N highest
    resolutions in float16 on CUDA for speed; we always compute in the parameters'
    dtype (float32), which equals the reference run with ``force_fp32``.
    """

    z_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int = 3
    c_dim: int = 0
    mapping_layers: int = 8
    mapping_layer_features: int | None = None  # None: w_dim
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995  # kept for provenance; inference never updates w_avg
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    architecture: Architecture = Architecture.SKIP
    resample_filter: tuple[float, ...] = _REFERENCE_FILTER
    use_noise: bool = True

    def __post_init__(self) -> None:
        for name in ("z_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers",
                     "channel_base", "channel_max"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("c_dim", self.c_dim, minimum=0)
        _require_int("num_fp16_res", self.num_fp16_res, minimum=0)
        if self.c_dim != 0:
            raise ValueError(f"conditional generators are not supported (c_dim={self.c_dim}, need 0)")
        res = self.img_resolution
        if res < 4 or res & (res - 1):
            raise ValueError(f"img_resolution must be a power of 2 >= 4, got {res}")
        if self.mapping_layer_features is not None:
            _require_int("mapping_layer_features", self.mapping_layer_features, minimum=1)
        if not isinstance(self.mapping_lr_multiplier, numbers.Real) or not self.mapping_lr_multiplier > 0:
            raise ValueError(f"mapping_lr_multiplier must be > 0, got {self.mapping_lr_multiplier!r}")
        if not isinstance(self.w_avg_beta, numbers.Real) or not 0 <= self.w_avg_beta <= 1:
            raise ValueError(f"w_avg_beta must be in [0, 1], got {self.w_avg_beta!r}")
        if self.conv_clamp is not None and (
            not isinstance(self.conv_clamp, numbers.Real) or not self.conv_clamp >= 0
        ):
            raise ValueError(f"conv_clamp must be None or >= 0, got {self.conv_clamp!r}")
        if not isinstance(self.architecture, Architecture):
            try:
                object.__setattr__(self, "architecture", Architecture(self.architecture))
            except ValueError:
                raise ValueError(
                    f"architecture must be one of {[a.value for a in Architecture]}, got {self.architecture!r}"
                ) from None
        taps = tuple(float(t) for t in self.resample_filter)
        if len(taps) < 2 or len(taps) % 2 or not all(math.isfinite(t) for t in taps) or sum(taps) == 0:
            raise ValueError(f"resample_filter must be an even number (>= 2) of finite taps, got {taps}")
        object.__setattr__(self, "resample_filter", taps)
        if not isinstance(self.use_noise, bool):
            raise ValueError(f"use_noise must be a bool, got {self.use_noise!r}")
        if self.conv_clamp is not None:
            object.__setattr__(self, "conv_clamp", float(self.conv_clamp))
        object.__setattr__(self, "mapping_lr_multiplier", float(self.mapping_lr_multiplier))
        object.__setattr__(self, "w_avg_beta", float(self.w_avg_beta))

    # -- derived shapes ---------------------------------------------------------------

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """4, 8, ..., img_resolution."""
        return tuple(2**i for i in range(2, int(math.log2(self.img_resolution)) + 1))

    def channels(self, resolution: int) -> int:
        """Feature channels of the block at ``resolution``: min(channel_base // res, channel_max)."""
        return min(self.channel_base // resolution, self.channel_max)

    @property
    def num_ws(self) -> int:
        """How many w vectors synthesis consumes: one per conv layer plus the final ToRGB."""
        return 2 * len(self.block_resolutions)

    @property
    def mapping_features(self) -> int:
        return self.w_dim if self.mapping_layer_features is None else self.mapping_layer_features

    # -- JSON -------------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict; :meth:`from_json_dict` inverts it exactly."""
        out = dataclasses.asdict(self)
        out["architecture"] = self.architecture.value
        out["resample_filter"] = list(self.resample_filter)
        return out

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Build from :meth:`to_json_dict` output; unknown or missing keys raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"generator config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            raise ValueError(f"generator config keys wrong: unknown {unknown}, missing {missing}")
        kwargs = dict(data)
        kwargs["resample_filter"] = tuple(kwargs["resample_filter"])
        return cls(**kwargs)


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
