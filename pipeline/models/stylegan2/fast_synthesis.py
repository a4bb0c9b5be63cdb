"""The synthesis network's function, computed with the faster forms of :mod:`pipeline.models.stylegan2.ops`.

:class:`FastSynthesis` wraps a :class:`~pipeline.models.stylegan2.networks.SynthesisNetwork`
and shares its parameters (tuning one tunes the other). It computes the same image to
float32 rounding, but

* modulated convolutions take the cheaper exact form for the batch: per-sample kernels
  when N == 1 (a plain convolution), scaled activations around one shared kernel when
  N > 1 (a plain batched convolution instead of a grouped one), or as forced by ``conv_form``;
* FIR resampling runs as depthwise (transposed) convolutions that keep the memory
  format, and with ``fuse_upsampling`` the up-convolution's FIR filter is folded into
  its kernel (one pass over the large output instead of two);
* with ``channels_last`` the activations are NHWC in memory (what cuDNN's fastest
  kernels and Tensor Cores want);
* the per-layer tail (noise, bias, leaky ReLU, gain, clamp) is written as plain
  elementwise tensor code that ``torch.compile`` fuses into one pass;
* under autocast only the convolutions and activations drop to bf16/fp16: styles,
  demodulation coefficients, kernels and the RGB image stay float32.

Shapes as in the reference: ws ``[N, num_ws, w_dim]``, noise ``{name: [N or 1, 1, H, W]}``,
image ``[N, img_channels, R, R]`` with R = ``max_resolution`` or the full size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.stylegan2 import ops
from pipeline.models.stylegan2.config import Architecture
from pipeline.models.stylegan2.networks import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer

#: "auto" picks "weight" for one sample and "input" for several.
CONV_FORMS = ("auto",) + ops.MODCONV_FORMS


class FastSynthesis(nn.Module):
    """Same function as ``synthesis`` (whose parameters it uses), computed faster; see the module text."""

    def __init__(self, synthesis: SynthesisNetwork, *, conv_form: str = "auto", fuse_upsampling: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__()
        if not isinstance(synthesis, SynthesisNetwork):
            raise TypeError(f"synthesis must be a SynthesisNetwork, got {type(synthesis).__name__}")
        if conv_form not in CONV_FORMS:
            raise ValueError(f"conv_form must be one of {CONV_FORMS}, got {conv_form!r}")
        self.synthesis = synthesis
        self.conv_form = conv_form
        self.fuse_upsampling = bool(fuse_upsampling)
        self.channels_last = bool(channels_last)

    def forward(self, ws: torch.Tensor, noise: Mapping[str, torch.Tensor], max_resolution: int | None = None
                ) -> torch.Tensor:
        synthesis = self.synthesis
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[1:] != (synthesis.num_ws, synthesis.w_dim):
            raise ValueError(f"ws must be a tensor [N, {synthesis.num_ws}, {synthesis.w_dim}], "
                             f"got {getattr(ws, 'shape', type(ws).__name__)}")
        resolutions = synthesis.block_resolutions_up_to(max_resolution)
        maps = synthesis.checked_noise_maps(noise, ws.shape[0], resolutions[-1])
        form = self.conv_form
        if form == "auto":
            form = "weight" if ws.shape[0] == 1 else "input"
        ws = ws.to(synthesis.b4.const.dtype)
        x = img = None
        w_idx = 0
        for res in resolutions:
            block: SynthesisBlock = getattr(synthesis, f"b{res}")
            block_ws = ws[:, w_idx : w_idx + block.num_conv + block.num_torgb]
            x, img = self._block(block, x, img, block_ws, maps, form)
            w_idx += block.num_conv
        return img

    def _block(self, block: SynthesisBlock, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
               maps: Mapping[str, torch.Tensor], form: str) -> tuple[torch.Tensor, torch.Tensor]:
        res = block.resolution
        noise0, noise1 = maps.get(f"b{res}.conv0"), maps.get(f"b{res}.conv1")
        if block.is_first:
            x = block.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self._memory_format(x)
            x = self._layer(block.conv1, x, ws[:, 0], noise1, 1.0, form)
        elif block.architecture == Architecture.RESNET:
            shortcut = self._shortcut(block, x)
            x = self._layer(block.conv0, x, ws[:, 0], noise0, 1.0, form)
            x = self._layer(block.conv1, x, ws[:, 1], noise1, math.sqrt(0.5), form)
            x = shortcut + x
        else:
            x = self._layer(block.conv0, x, ws[:, 0], noise0, 1.0, form)
            x = self._layer(block.conv1, x, ws[:, 1], noise1, 1.0, form)
        if img is not None:
            with torch.autocast(img.device.type, enabled=False):  # the RGB image stays float32
                img = ops.upsample2d_transposed(img, block.resample_filter)
        if block.has_torgb:
            y = self._torgb(block.torgb, x, ws[:, block.num_conv], form)
            img = y if img is None else img + y
        return x, img

    def _layer(self, layer: SynthesisLayer, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
               gain: float, form: str) -> torch.Tensor:
        styles = _full_precision(layer.affine, w)
        fir = layer.resample_filter if layer.up > 1 else None
        x = ops.modulated_conv2d_fast(x, layer.weight, styles, demodulate=True, up=layer.up, fir=fir, form=form,
                                      fuse_upsampling=self.fuse_upsampling)
        if noise is not None:
            x = x + noise.to(x.dtype) * layer.noise_strength.to(x.dtype)
        x = F.leaky_relu(x + layer.bias.to(x.dtype).reshape(1, -1, 1, 1), ops.LRELU_SLOPE)
        x = x * (ops.LRELU_GAIN * gain)
        if layer.conv_clamp is not None:
            x = x.clamp(-layer.conv_clamp * gain, layer.conv_clamp * gain)
        return x

    def _torgb(self, layer: ToRGBLayer, x: torch.Tensor, w: torch.Tensor, form: str) -> torch.Tensor:
        styles = _full_precision(layer.affine, w) * layer.weight_gain
        y = ops.modulated_conv2d_fast(x, layer.weight, styles, demodulate=False, form=form)
        # The RGB image is small and accumulates over blocks: keep it in float32 or wider.
        y = y.to(torch.promote_types(y.dtype, torch.float32))
        y = y + layer.bias.to(y.dtype).reshape(1, -1, 1, 1)
        if layer.conv_clamp is not None:
            y = y.clamp(-layer.conv_clamp, layer.conv_clamp)
        return y

    def _shortcut(self, block: SynthesisBlock, x: torch.Tensor) -> torch.Tensor:
        weight = block.skip.weight
        weight = weight * (math.sqrt(0.5) / math.sqrt(weight.shape[1]))
        return ops.upsample2d_transposed(F.conv2d(x, weight.to(x.dtype)), block.skip.resample_filter)

    def _memory_format(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def _full_precision(affine: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Styles [N, I] from w outside autocast: a tiny matmul, kept in the parameters' precision."""
    with torch.autocast(w.device.type, enabled=False):
        return affine(w)
