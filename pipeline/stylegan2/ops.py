"""Functional core of the StyleGAN2 generator, in plain PyTorch (CPU and CUDA).

Semantics follow NVIDIA's StyleGAN2-ADA-PyTorch custom ops (``upfirdn2d``,
``bias_act``, ``conv2d_resample``, ``modulated_conv2d``) evaluated as the reference
does at inference in float32; no compiled extensions. Images are ``[N, C, H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through leaky ReLU
ACTIVATIONS = ("linear", "lrelu")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` so that its mean square along ``dim`` is 1."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def fir_filter(taps: Sequence[float], device: torch.device | str | None = None) -> torch.Tensor:
    """Separable 2-D low-pass filter ``[K, K]``: outer product of ``taps``, summing to 1."""
    t = torch.as_tensor([float(v) for v in taps], dtype=torch.float64)
    if t.ndim != 1 or t.numel() < 1 or float(t.sum()) == 0.0:
        raise ValueError(f"FIR taps must be a non-empty 1-D sequence with non-zero sum, got {list(taps)}")
    f = torch.outer(t, t)
    return (f / f.sum()).to(device=device, dtype=torch.float32)


def upfirdn2d(
    x: torch.Tensor,
    fir: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with ``fir * gain``, keep every ``down``-th pixel.

    ``padding`` is (left, right, top, bottom) on the upsampled image; negative values crop.
    The filter is applied as a true convolution (flipped), like scipy.signal.upfirdn.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d needs x [N, C, H, W], got shape {tuple(x.shape)}")
    if fir.ndim != 2:
        raise ValueError(f"upfirdn2d needs a 2-D filter, got shape {tuple(fir.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    left, right, top, bottom = padding
    x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    x = x[:, :, max(-top, 0) : x.shape[2] - max(-bottom, 0), max(-left, 0) : x.shape[3] - max(-right, 0)]
    kernel = (fir.to(x.dtype) * gain).flip([0, 1])[None, None]
    hp, wp = x.shape[2], x.shape[3]
    x = F.conv2d(x.reshape(n * c, 1, hp, wp), kernel)
    x = x.reshape(n, c, x.shape[2], x.shape[3])
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, fir: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsample ``[N, C, H, W]`` to ``[N, C, H*factor, W*factor]`` with the low-pass ``fir``."""
    k = fir.shape[-1]
    p0 = (k + factor - 1) // 2
    p1 = (k - factor) // 2
    return upfirdn2d(x, fir, up=factor, padding=(p0, p1, p0, p1), gain=float(factor * factor))


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + bias) * gain, ±clamp)``; ``bias`` [C] broadcasts over dim 1."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fully_connected(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lr_multiplier: float = 1.0,
    activation: str = "linear",
) -> torch.Tensor:
    """Equalised-learning-rate dense layer: ``x [N, I]``, ``weight [O, I]`` -> ``[N, O]``.

    Weights are scaled by ``lr_multiplier / sqrt(I)`` and the bias by ``lr_multiplier``;
    lrelu outputs are multiplied by sqrt(2).
    """
    w = weight.to(x.dtype) * (lr_multiplier / math.sqrt(weight.shape[1]))
    b = None
    if bias is not None:
        b = bias.to(x.dtype)
        if lr_multiplier != 1:
            b = b * lr_multiplier
    if activation == "linear" and b is not None:
        return torch.addmm(b.unsqueeze(0), x, w.t())
    x = x.matmul(w.t())
    return bias_act(x, b, activation, gain=LRELU_GAIN if activation == "lrelu" else 1.0)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    fir: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, per-sample weights as one grouped convolution.

    x ``[N, I, H, W]``, weight ``[O, I, k, k]`` (odd k), styles ``[N, I]`` ->
    ``[N, O, H*up, W*up]``. Per sample the kernel is ``weight * style`` over input
    channels, divided (if ``demodulate``) by its L2 norm per output channel (+1e-8).
    With ``up == 1`` the kernel is applied as cross-correlation with 'same' padding;
    with ``up == 2`` as a true convolution of the zero-upsampled input, followed by
    the low-pass ``fir`` (the reference's transposed-convolution path).
    """
    n, in_ch, h, w = x.shape
    out_ch, w_in, kh, kw = weight.shape
    if w_in != in_ch or kh != kw or kh % 2 == 0:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input {tuple(x.shape)} (odd square kernel)")
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [{n}, {in_ch}], got {tuple(styles.shape)}")
    wts = weight.to(x.dtype).unsqueeze(0) * styles.to(x.dtype).reshape(n, 1, in_ch, 1, 1)
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, out_ch, 1, 1, 1)
    xg = x.reshape(1, n * in_ch, h, w)
    if up == 1:
        y = F.conv2d(xg, wts.reshape(n * out_ch, in_ch, kh, kw), padding=kh // 2, groups=n)
        return y.reshape(n, out_ch, h, w)
    if up != 2 or fir is None:
        raise ValueError(f"modulated_conv2d supports up=1, or up=2 with a FIR filter; got up={up}")
    # conv_transpose2d wants [in, out/groups, k, k] and computes a true convolution
    # of the zero-upsampled input, "full" size up*(H-1)+k; the FIR stage then pads or
    # crops to up*H. Padding derived for 'same' conv + filter on the upsampled grid.
    wt = wts.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
    y = F.conv_transpose2d(xg, wt, stride=up, groups=n)
    y = y.reshape(n, out_ch, y.shape[2], y.shape[3])
    fk = fir.shape[-1]
    pad = kh // 2
    p0 = pad + (fk + up - 1) // 2 - (kw - 1)
    p1 = pad + (fk - up) // 2 - (kw - up)
    return upfirdn2d(y, fir, padding=(p0, p1, p0, p1), gain=float(up * up))


def upsampled_conv1x1(x: torch.Tensor, weight: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """Unmodulated 1x1 conv then 2x FIR upsampling (the 'resnet' shortcut), weight ``[O, I, 1, 1]``."""
    y = F.conv2d(x, weight.to(x.dtype))
    return upsample2d(y, fir)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None) -> torch.Tensor:
    """Move ``ws [N, L, D]`` towards ``w_avg [D]``: ``w_avg + psi (w - w_avg)`` for the first
    ``cutoff`` layers (all layers when None); differentiable, not in place."""
    if psi == 1:
        return ws
    pulled = w_avg.to(ws.dtype).lerp(ws, psi)
    if cutoff is None or cutoff >= ws.shape[1]:
        return pulled
    return torch.cat([pulled[:, :cutoff], ws[:, cutoff:]], dim=1)
