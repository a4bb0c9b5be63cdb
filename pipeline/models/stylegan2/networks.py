"""Thin ``nn.Module`` wrappers over :mod:`pipeline.models.stylegan2.ops`.

Parameter and buffer names mirror NVIDIA's StyleGAN2-ADA-PyTorch ``Generator``
(``mapping.fc0.weight``, ``synthesis.b8.conv0.affine.bias``, ...) so official state
maps one to one. The FIR filters are derived from the config and are not state.
Modules are created with uninitialised storage: use :func:`build_generator` or a loader.

The synthesis computes one function; :class:`SynthesisImpl` (an argument of every
synthesis module's ``forward``, like the reference's ``impl=``) chooses how: its default is
the reference's arithmetic, its other settings are faster forms with a different rounding
(see :mod:`pipeline.models.stylegan2.ops`), NHWC activations, and under autocast styles,
demodulation coefficients and the RGB image kept in float32.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.stylegan2 import ops
from pipeline.models.stylegan2.config import Architecture, GeneratorConfig

NoiseSpec = str | Mapping[str, torch.Tensor]
NOISE_MODES = ("const", "none")
#: Modulated-convolution forms of :class:`SynthesisImpl`: ops.MODCONV_FORMS, or "auto"
#: ("weight" for one sample, "input" for several: the cheaper exact rewrite for the batch).
CONV_FORMS = ops.MODCONV_FORMS + ("auto",)


@dataclass(frozen=True)
class SynthesisImpl:
    """How the synthesis computes its function (the default is the reference's arithmetic).

    Attributes:
        conv_form: modulated-convolution form, one of CONV_FORMS.
        fir: FIR resampling implementation, one of ops.FIR_IMPLS.
        fuse_upsampling: fold the FIR filter into the up-convolutions' kernels
            (needs a conv_form other than "reference").
        channels_last: NHWC activations (what cuDNN's fastest kernels want; kept through the
            "weight"/"input" forms and depthwise FIR, lost at a "reference" grouped convolution).
    """

    conv_form: str = "reference"
    fir: str = "reference"
    fuse_upsampling: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.conv_form not in CONV_FORMS:
            raise ValueError(f"SynthesisImpl.conv_form must be one of {CONV_FORMS}, got {self.conv_form!r}")
        if self.fir not in ops.FIR_IMPLS:
            raise ValueError(f"SynthesisImpl.fir must be one of {ops.FIR_IMPLS}, got {self.fir!r}")
        for name in ("fuse_upsampling", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SynthesisImpl.{name} must be a bool, got {getattr(self, name)!r}")
        if self.fuse_upsampling and self.conv_form == "reference":
            raise ValueError("SynthesisImpl.fuse_upsampling needs a conv_form other than 'reference'")

    def for_batch(self, batch: int) -> SynthesisImpl:
        """This impl with "auto" resolved for ``batch`` samples (itself when nothing to resolve)."""
        if self.conv_form != "auto":
            return self
        return SynthesisImpl(conv_form="weight" if batch == 1 else "input", fir=self.fir,
                             fuse_upsampling=self.fuse_upsampling, channels_last=self.channels_last)


#: The reference's arithmetic: what every synthesis module computes unless told otherwise.
REFERENCE_IMPL = SynthesisImpl()


class FullyConnected(nn.Module):
    """Equalised-lr dense layer; ``weight [out, in]``, ``bias [out]``."""

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0,
                 activation: str = "linear") -> None:
        super().__init__()
        self.lr_multiplier = lr_multiplier
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.fully_connected(x, self.weight, self.bias, self.lr_multiplier, self.activation)


class MappingNetwork(nn.Module):
    """z ``[N, z_dim]`` -> ws ``[N, num_ws, w_dim]`` (normalise, MLP, broadcast, truncate)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = config.z_dim, config.w_dim, config.num_ws
        self.num_layers = config.mapping_layers
        features = [config.z_dim] + [config.mapping_features] * (config.mapping_layers - 1) + [config.w_dim]
        for idx in range(config.mapping_layers):
            layer = FullyConnected(features[idx], features[idx + 1], config.mapping_lr_multiplier, "lrelu")
            self.add_module(f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.empty(config.w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be a tensor [N, {self.z_dim}], got {_describe(z)}")
        if not isinstance(psi, numbers.Real) or isinstance(psi, bool) or not math.isfinite(psi):
            raise ValueError(f"psi must be a finite number, got {psi!r}")
        if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 0):
            raise ValueError(f"cutoff must be None or an int >= 0, got {cutoff!r}")
        x = ops.normalize_2nd_moment(z.to(self.w_avg.dtype))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        return ops.truncate(ws, self.w_avg, float(psi), cutoff)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up), noise, bias, lrelu*sqrt(2), clamp."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, up: int,
                 config: GeneratorConfig) -> None:
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, config.use_noise
        self.conv_clamp = config.conv_clamp
        self.affine = FullyConnected(config.w_dim, in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.empty(out_channels))
        if config.use_noise:
            self.register_buffer("noise_const", torch.empty(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.empty([]))
        if up > 1:
            self.register_buffer("resample_filter", ops.fir_filter(config.resample_filter), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
                gain: float = 1.0, impl: SynthesisImpl = REFERENCE_IMPL) -> torch.Tensor:
        """``noise``: unscaled map broadcastable to ``[N, 1, R, R]``, or None for no noise.

        ``impl.conv_form`` must be resolved (not "auto"): see :meth:`SynthesisImpl.for_batch`.
        """
        styles = _styles(self.affine, w)
        fir = self.resample_filter if self.up > 1 else None
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up, fir=fir, form=impl.conv_form,
                                 fir_impl=impl.fir, fuse_upsampling=impl.fuse_upsampling)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return ops.bias_act(x, self.bias, "lrelu", gain=ops.LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, bias, clamp."""

    def __init__(self, in_channels: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.conv_clamp = config.conv_clamp
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.affine = FullyConnected(config.w_dim, in_channels)
        self.weight = nn.Parameter(torch.empty(config.img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(config.img_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, impl: SynthesisImpl = REFERENCE_IMPL) -> torch.Tensor:
        styles = _styles(self.affine, w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, form=impl.conv_form)
        # The RGB image is small and accumulates over blocks: float32 or wider even under autocast.
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        return ops.bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


class ResidualShortcut(nn.Module):
    """'resnet' shortcut: 1x1 conv (no bias) then 2x FIR upsampling, times sqrt(1/2)."""

    def __init__(self, in_channels: int, out_channels: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.register_buffer("resample_filter", ops.fir_filter(config.resample_filter), persistent=False)

    def forward(self, x: torch.Tensor, impl: SynthesisImpl = REFERENCE_IMPL) -> torch.Tensor:
        w = self.weight * (math.sqrt(0.5) / math.sqrt(self.weight.shape[1]))
        return ops.upsampled_conv1x1(x, w, self.resample_filter, impl=impl.fir)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> optional ToRGB (+ upsampled image)."""

    def __init__(self, resolution: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.resolution = resolution
        self.architecture = config.architecture
        is_last = resolution == config.img_resolution
        out_ch = config.channels(resolution)
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.empty(out_ch, 4, 4))
        else:
            in_ch = config.channels(resolution // 2)
            self.conv0 = SynthesisLayer(in_ch, out_ch, resolution, 2, config)
        self.conv1 = SynthesisLayer(out_ch, out_ch, resolution, 1, config)
        self.has_torgb = is_last or config.architecture == Architecture.SKIP
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_ch, config)
        if not self.is_first and config.architecture == Architecture.RESNET:
            self.skip = ResidualShortcut(in_ch, out_ch, config)
        if not self.is_first and config.architecture == Architecture.SKIP:
            self.register_buffer("resample_filter", ops.fir_filter(config.resample_filter), persistent=False)
        self.num_conv = 1 if self.is_first else 2
        self.num_torgb = 1 if self.has_torgb else 0

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise: Mapping[str, torch.Tensor | None], impl: SynthesisImpl = REFERENCE_IMPL
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ws ``[N, num_conv + num_torgb, w_dim]``; ``noise`` keyed 'conv0'/'conv1'; ``impl`` resolved."""
        if self.is_first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            if impl.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, ws[:, 0], noise.get("conv1"), impl=impl)
        elif self.architecture == Architecture.RESNET:
            shortcut = self.skip(x, impl)
            x = self.conv0(x, ws[:, 0], noise.get("conv0"), impl=impl)
            x = self.conv1(x, ws[:, 1], noise.get("conv1"), gain=math.sqrt(0.5), impl=impl)
            x = shortcut + x
        else:
            x = self.conv0(x, ws[:, 0], noise.get("conv0"), impl=impl)
            x = self.conv1(x, ws[:, 1], noise.get("conv1"), impl=impl)
        if img is not None:
            with torch.autocast(img.device.type, enabled=False):  # the RGB image stays float32
                img = ops.upsample2d(img, self.resample_filter, impl=impl.fir)
        if self.has_torgb:
            y = self.torgb(x, ws[:, self.num_conv], impl)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` (roughly [-1, 1])."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.w_dim, self.num_ws = config.w_dim, config.num_ws
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.block_resolutions = config.block_resolutions
        self.architecture = config.architecture
        for res in self.block_resolutions:
            self.add_module(f"b{res}", SynthesisBlock(res, config))
        shapes: dict[str, tuple[int, int]] = {}
        if config.use_noise:
            for res in self.block_resolutions:
                for name in (("conv1",) if res == 4 else ("conv0", "conv1")):
                    shapes[f"b{res}.{name}"] = (res, res)
        self._noise_shapes = shapes

    @property
    def noise_shapes(self) -> dict[str, tuple[int, int]]:
        """Per-layer noise map names ('b4.conv1', 'b8.conv0', ...) and (H, W), in layer order."""
        return dict(self._noise_shapes)

    def block_resolutions_up_to(self, max_resolution: int | None) -> tuple[int, ...]:
        """The blocks that run for ``max_resolution`` (None: all); checks that its image exists.

        Below the full resolution only the 'skip' architecture has an image (the ToRGB
        outputs accumulated so far); other architectures raise ValueError.
        """
        if max_resolution is None or max_resolution == self.img_resolution:
            return tuple(self.block_resolutions)
        if (isinstance(max_resolution, bool) or not isinstance(max_resolution, int)
                or max_resolution not in self.block_resolutions):
            raise ValueError(f"max_resolution must be None or one of {list(self.block_resolutions)}, "
                             f"got {max_resolution!r}")
        if self.architecture != Architecture.SKIP:
            raise ValueError(f"max_resolution below {self.img_resolution} needs the 'skip' architecture "
                             f"(an image at every block), this network is {self.architecture.value!r}")
        return tuple(r for r in self.block_resolutions if r <= max_resolution)

    def forward(self, ws: torch.Tensor, noise: NoiseSpec = "const", *,
                max_resolution: int | None = None, impl: SynthesisImpl = REFERENCE_IMPL) -> torch.Tensor:
        """``noise``: 'const' (stored maps), 'none', or {name: map} for every layer that runs, each
        map [N or 1, 1, H, W] or [H, W] (the shape of the stored ``noise_const`` buffers).
        ``max_resolution`` R: stop after block R and return its image ``[N, img_channels, R, R]``
        (the 'skip' sum of ToRGB outputs up to R); None: full size. ``impl``: how to compute it
        (:class:`SynthesisImpl`; the default is the reference's arithmetic).
        """
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be a tensor [N, {self.num_ws}, {self.w_dim}], got {_describe(ws)}")
        if not isinstance(impl, SynthesisImpl):
            raise TypeError(f"impl must be a SynthesisImpl, got {type(impl).__name__}")
        resolutions = self.block_resolutions_up_to(max_resolution)
        maps = self.checked_noise_maps(noise, ws.shape[0], resolutions[-1])
        impl = impl.for_batch(ws.shape[0])
        ws = ws.to(self.b4.const.dtype)
        x = img = None
        w_idx = 0
        for res in resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws[:, w_idx : w_idx + block.num_conv + block.num_torgb]
            block_noise = {k: maps.get(f"b{res}.{k}") for k in ("conv0", "conv1")}
            x, img = block(x, img, block_ws, block_noise, impl)
            w_idx += block.num_conv
        return img

    def checked_noise_maps(self, noise: NoiseSpec, batch: int,
                           max_resolution: int | None = None) -> dict[str, torch.Tensor]:
        """``noise`` as a dict of maps, validated for a batch of ``batch`` (see :meth:`forward`).

        With ``max_resolution`` only the layers up to it must have maps; maps for
        higher layers are allowed (and unused). Maps given as [H, W] come back as [1, 1, H, W] views.
        """
        limit = self.img_resolution if max_resolution is None else max_resolution
        needed = {name: shape for name, shape in self._noise_shapes.items() if shape[0] <= limit}
        if isinstance(noise, str):
            if noise not in NOISE_MODES:
                raise ValueError(f"noise must be one of {NOISE_MODES} or a dict of maps, got {noise!r}")
            if noise == "none":
                return {}
            return {name: self.get_submodule(name).noise_const for name in self._noise_shapes}
        if not isinstance(noise, Mapping):
            raise ValueError(f"noise must be one of {NOISE_MODES} or a dict of maps, got {type(noise).__name__}")
        missing = [n for n in needed if n not in noise]
        extra = sorted(str(n) for n in noise if n not in self._noise_shapes)
        if missing or extra:
            raise ValueError(f"noise maps wrong: missing {missing}, unexpected {extra}")
        maps = {}
        for name, (h, w) in self._noise_shapes.items():
            if name not in noise:
                continue
            t = noise[name]
            if isinstance(t, torch.Tensor) and t.ndim == 2 and t.shape == (h, w) and t.is_floating_point():
                t = t[None, None]
            if (not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[0] not in (1, batch)
                    or t.shape[1:] != (1, h, w) or not t.is_floating_point()):
                raise ValueError(f"noise map {name!r} must be a float tensor [{batch} or 1, 1, {h}, {w}] "
                                 f"or [{h}, {w}], got {_describe(noise[name])}")
            maps[name] = t
        return maps


class Generator(nn.Module):
    """StyleGAN2 generator: ``G(z) = synthesis(mapping(z))``; eval-only semantics."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.z_dim, self.w_dim, self.num_ws = config.z_dim, config.w_dim, config.num_ws
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.mapping = MappingNetwork(config)

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None,
                noise: NoiseSpec = "const") -> torch.Tensor:
        """z ``[N, z_dim]`` -> image ``[N, img_channels, R, R]``."""
        return self.synthesis(self.mapping(z, psi=psi, cutoff=cutoff), noise=noise)


def _styles(affine: FullyConnected, w: torch.Tensor) -> torch.Tensor:
    """Styles [N, I] from w, outside autocast: a tiny matmul, kept in the parameters' precision."""
    with torch.autocast(w.device.type, enabled=False):
        return affine(w)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
