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


# -- Faster equivalents (same function, different arithmetic order) ------------------------
# Used by pipeline.models.stylegan2.fast_synthesis. They keep the memory format of their input
# (channels_last stays channels_last) and agree with the reference forms above to
# float32 rounding (tests/test_performance.py).

#: How a modulated convolution is computed: "weight" modulates per-sample kernels (a
#: grouped convolution, plain when N == 1); "input" scales the input channels by the
#: styles and the output channels by the demodulation coefficients around one shared
#: kernel (a plain batched convolution for any N).
MODCONV_FORMS = ("weight", "input")


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """``rsqrt(sum_{i,k} (weight[o,i,k] * styles[n,i])^2 + 1e-8)`` as ``[N, O]``.

    Computed as ``styles^2 @ sum_k(weight^2)^T`` (no per-sample kernels), in float32 at least.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    energy = weight.to(dtype).square().sum(dim=[2, 3])  # [O, I]
    return (styles.to(dtype).square().matmul(energy.t()) + 1e-8).rsqrt()


def upsampling_kernel(weight: torch.Tensor, fir: torch.Tensor, gain: float) -> torch.Tensor:
    """``weight [O, I, k, k]`` fully convolved with ``fir * gain [f, f]`` -> ``[O, I, k+f-1, k+f-1]``.

    A transposed convolution with this kernel equals the transposed convolution with
    ``weight`` followed by the ``fir`` filter (both are convolutions of the upsampled input).
    """
    out_ch, in_ch, k, _ = weight.shape
    fk = fir.shape[-1]
    flat = F.pad(weight.reshape(out_ch * in_ch, 1, k, k), [fk - 1] * 4)
    kernel = (fir.to(weight.dtype) * gain).flip([0, 1])[None, None]
    return F.conv2d(flat, kernel).reshape(out_ch, in_ch, k + fk - 1, k + fk - 1)


def _window(z: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """``z[..., start:start+size, start:start+size]``, zero-padded where that leaves ``z``."""
    length = z.shape[-1]
    if start >= 0 and start + size <= length:
        return z[:, :, start : start + size, start : start + size]
    left, right = -start, start + size - length
    return F.pad(z, [left, right, left, right])


def fir_filter_depthwise(x: torch.Tensor, fir: torch.Tensor, pad0: int, pad1: int, gain: float) -> torch.Tensor:
    """``upfirdn2d(x, fir, padding=(pad0, pad1, pad0, pad1), gain=gain)`` as one depthwise conv."""
    channels = x.shape[1]
    fk = fir.shape[-1]
    kernel = (fir.to(x.dtype) * gain).flip([0, 1]).expand(channels, 1, fk, fk).contiguous()
    if pad0 == pad1 and pad0 >= 0:
        return F.conv2d(x, kernel, padding=pad0, groups=channels)
    return F.conv2d(F.pad(x, [pad0, pad1, pad0, pad1]), kernel, groups=channels)


def upsample2d_transposed(x: torch.Tensor, fir: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """:func:`upsample2d` as one depthwise transposed convolution (zero insertion and filter in one pass)."""
    channels, height = x.shape[1], x.shape[2]
    fk = fir.shape[-1]
    kernel = (fir.to(x.dtype) * float(factor * factor)).expand(channels, 1, fk, fk).contiguous()
    z = F.conv_transpose2d(x, kernel, stride=factor, groups=channels)
    return _window(z, fk - 1 - (fk + factor - 1) // 2, height * factor)


def modulated_conv2d_fast(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    fir: torch.Tensor | None = None,
    *,
    form: str = "weight",
    fuse_upsampling: bool = False,
) -> torch.Tensor:
    """:func:`modulated_conv2d` (same arguments and shapes) in the cheaper ``form`` (see MODCONV_FORMS).

    ``fuse_upsampling`` (``up == 2``): fold the FIR filter into the transposed-convolution
    kernel (:func:`upsampling_kernel`), one pass over the large output instead of two.
    Small factors (styles, coefficients) are cast to the activations' dtype, so bf16
    activations stay bf16 under autocast.
    """
    n, in_ch, h, w = x.shape
    out_ch, w_in, kh, kw = weight.shape
    if w_in != in_ch or kh != kw or kh % 2 == 0:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input {tuple(x.shape)} (odd square kernel)")
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [{n}, {in_ch}], got {tuple(styles.shape)}")
    if form not in MODCONV_FORMS:
        raise ValueError(f"form must be one of {MODCONV_FORMS}, got {form!r}")
    if up not in (1, 2) or (up == 2 and fir is None):
        raise ValueError(f"modulated_conv2d_fast supports up=1, or up=2 with a FIR filter; got up={up}")
    with torch.autocast(x.device.type, enabled=False):  # small weight-side work in full precision
        coefficients = demodulation_coefficients(weight, styles) if demodulate else None
        kernel = weight
        if up == 2 and fuse_upsampling:
            kernel = upsampling_kernel(weight, fir, gain=float(up * up))
        if form == "weight":
            kernel = kernel.unsqueeze(0) * styles.to(kernel.dtype).reshape(n, 1, in_ch, 1, 1)
            if coefficients is not None:
                kernel = kernel * coefficients.to(kernel.dtype).reshape(n, out_ch, 1, 1, 1)
        else:
            kernel = kernel.unsqueeze(0)
    if form == "weight":
        y = _shared_or_grouped_conv(x, kernel, up)
    else:
        y = _shared_or_grouped_conv(x * styles.to(x.dtype).reshape(n, in_ch, 1, 1), kernel, up)
    if up == 2:
        fk = fir.shape[-1]
        p0 = kh // 2 + (fk + up - 1) // 2 - (kw - 1)
        p1 = kh // 2 + (fk - up) // 2 - (kw - up)
        if fuse_upsampling:
            y = _window(y, fk - 1 - p0, h * up)
        else:
            y = fir_filter_depthwise(y, fir, p0, p1, gain=float(up * up))
    if coefficients is not None and form == "input":
        y = y * coefficients.to(y.dtype).reshape(n, out_ch, 1, 1)
    return y


def _shared_or_grouped_conv(x: torch.Tensor, kernels: torch.Tensor, up: int) -> torch.Tensor:
    """Convolve ``x [N, I, H, W]`` with ``kernels [1 or N, O, I, k, k]`` ('same' conv, or transposed when up == 2).

    One kernel set: a plain convolution over the batch. N sets: one grouped convolution.
    """
    n, in_ch, h, w = x.shape
    sets, out_ch, _, k, _ = kernels.shape
    if sets == 1:
        if up == 1:
            return F.conv2d(x, kernels[0], padding=k // 2)
        return F.conv_transpose2d(x, kernels[0].transpose(0, 1), stride=up)
    xg = x.reshape(1, n * in_ch, h, w)
    if up == 1:
        y = F.conv2d(xg, kernels.reshape(n * out_ch, in_ch, k, k), padding=k // 2, groups=n)
    else:
        y = F.conv_transpose2d(xg, kernels.transpose(1, 2).reshape(n * in_ch, out_ch, k, k), stride=up, groups=n)
    return y.reshape(n, out_ch, y.shape[2], y.shape[3])
