"""Functional core of the StyleGAN2 generator, in plain PyTorch (CPU and CUDA).

Semantics follow NVIDIA's StyleGAN2-ADA-PyTorch custom ops (``upfirdn2d``,
``bias_act``, ``conv2d_resample``, ``modulated_conv2d``) evaluated as the reference
does at inference in float32; no compiled extensions. Images are ``[N, C, H, W]``.

Like the reference's ops take ``impl=``, the resampling and modulated-convolution ops
take the form of their arithmetic: the defaults ("reference") are the reference's
order of operations (the shared fixture reproduces the official outputs with them);
the other forms (FIR_IMPLS "depthwise", MODCONV_FORMS "weight"/"input", fused
upsampling) compute the same function with a different rounding, faster on GPUs.
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


#: How FIR resampling is computed. "reference": zero insertion, padding and one convolution
#: over [N*C, 1, H, W] (the reference's arithmetic); "depthwise": one depthwise (transposed)
#: convolution over [N, C, H, W] that keeps the input's memory format (channels_last stays
#: channels_last). Same function, different rounding.
FIR_IMPLS = ("reference", "depthwise")


def upfirdn2d(
    x: torch.Tensor,
    fir: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
    *,
    impl: str = "reference",
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with ``fir * gain``, keep every ``down``-th pixel.

    ``padding`` is (left, right, top, bottom) on the upsampled image; negative values crop.
    The filter ``[kh, kw]`` is applied as a true convolution (flipped), like scipy.signal.upfirdn.
    ``impl``: one of FIR_IMPLS.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d needs x [N, C, H, W], got shape {tuple(x.shape)}")
    if fir.ndim != 2:
        raise ValueError(f"upfirdn2d needs a 2-D filter, got shape {tuple(fir.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if impl not in FIR_IMPLS:
        raise ValueError(f"impl must be one of {FIR_IMPLS}, got {impl!r}")
    if impl == "depthwise":
        x = _upfirdn2d_depthwise(x, fir, up, padding, gain)
        return x[:, :, ::down, ::down] if down > 1 else x
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


def _upfirdn2d_depthwise(x: torch.Tensor, fir: torch.Tensor, up: int, padding: tuple[int, int, int, int],
                         gain: float) -> torch.Tensor:
    """:func:`upfirdn2d` before decimation, as one depthwise convolution (transposed when ``up > 1``)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    kh, kw = fir.shape
    left, right, top, bottom = padding
    kernel = (fir.to(x.dtype) * gain)
    if up == 1:
        flipped = kernel.flip([0, 1]).expand(channels, 1, kh, kw).contiguous()
        if left == right == top == bottom and left >= 0:
            return F.conv2d(x, flipped, padding=left, groups=channels)
        x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
        x = x[:, :, max(-top, 0) : x.shape[2] - max(-bottom, 0), max(-left, 0) : x.shape[3] - max(-right, 0)]
        return F.conv2d(x, flipped, groups=channels)
    # The transposed convolution is the full true convolution of the zero-inserted input
    # (without its trailing zeros); padding picks a window of it, zero where it runs off.
    full = F.conv_transpose2d(x, kernel.expand(channels, 1, kh, kw).contiguous(), stride=up, groups=channels)
    return _window(full, kh - 1 - top, height * up + top + bottom - kh + 1,
                   kw - 1 - left, width * up + left + right - kw + 1)


def _window(z: torch.Tensor, top: int, height: int, left: int, width: int) -> torch.Tensor:
    """``z[..., top:top+height, left:left+width]``, zero-padded where that leaves ``z``."""
    pads = [max(-left, 0), max(left + width - z.shape[3], 0), max(-top, 0), max(top + height - z.shape[2], 0)]
    if any(pads):
        z = F.pad(z, pads)
        top, left = top + pads[2], left + pads[0]
    return z[:, :, top : top + height, left : left + width]


def upsample2d(x: torch.Tensor, fir: torch.Tensor, factor: int = 2, *, impl: str = "reference") -> torch.Tensor:
    """Upsample ``[N, C, H, W]`` to ``[N, C, H*factor, W*factor]`` with the low-pass ``fir`` (``impl``: FIR_IMPLS)."""
    k = fir.shape[-1]
    p0 = (k + factor - 1) // 2
    p1 = (k - factor) // 2
    return upfirdn2d(x, fir, up=factor, padding=(p0, p1, p0, p1), gain=float(factor * factor), impl=impl)


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


#: How a modulated convolution is computed (same function, different arithmetic order):
#: "reference" builds per-sample kernels, demodulates them by their own L2 norms and runs
#: one grouped convolution (the reference's arithmetic); "weight" builds per-sample kernels
#: with the demodulation coefficients from ``styles^2 @ sum_k(weight^2)^T`` (a plain
#: convolution when N == 1); "input" scales the input channels by the styles and the output
#: channels by the coefficients around one shared kernel (a plain batched convolution).
MODCONV_FORMS = ("reference", "weight", "input")


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    fir: torch.Tensor | None = None,
    *,
    form: str = "reference",
    fir_impl: str = "reference",
    fuse_upsampling: bool = False,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x ``[N, I, H, W]``, weight ``[O, I, k, k]`` (odd k), styles ``[N, I]`` ->
    ``[N, O, H*up, W*up]``. Per sample the kernel is ``weight * style`` over input
    channels, divided (if ``demodulate``) by its L2 norm per output channel (+1e-8).
    With ``up == 1`` the kernel is applied as cross-correlation with 'same' padding;
    with ``up == 2`` as a true convolution of the zero-upsampled input, followed by
    the low-pass ``fir`` (the reference's transposed-convolution path).

    ``form`` (MODCONV_FORMS) and ``fir_impl`` (FIR_IMPLS) choose the arithmetic; the
    defaults are the reference's. ``fuse_upsampling`` (``up == 2``, forms "weight" and
    "input"): fold the FIR filter into the transposed-convolution kernel
    (:func:`upsampling_kernel`), one pass over the large output instead of two. The
    "weight" and "input" forms keep the input's memory format and compute their small
    weight-side factors in float32 or wider even under autocast.
    """
    n, in_ch, h, w = x.shape
    out_ch, w_in, kh, kw = weight.shape
    if w_in != in_ch or kh != kw or kh % 2 == 0:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input {tuple(x.shape)} (odd square kernel)")
    if styles.shape != (n, in_ch):
        raise ValueError(f"styles must be [{n}, {in_ch}], got {tuple(styles.shape)}")
    if form not in MODCONV_FORMS:
        raise ValueError(f"form must be one of {MODCONV_FORMS}, got {form!r}")
    if fir_impl not in FIR_IMPLS:
        raise ValueError(f"fir_impl must be one of {FIR_IMPLS}, got {fir_impl!r}")
    if up not in (1, 2) or (up == 2 and fir is None):
        raise ValueError(f"modulated_conv2d supports up=1, or up=2 with a FIR filter; got up={up}")
    if fuse_upsampling and form == "reference":
        raise ValueError("fuse_upsampling needs form 'weight' or 'input' (the reference form filters separately)")
    coefficients = None
    if form == "reference":
        y = _reference_modconv(x, weight, styles, demodulate, up)
    else:
        y, coefficients = _factored_modconv(x, weight, styles, demodulate, up, fir, form, fuse_upsampling)
    if up == 2:
        # The transposed convolution gives the "full" size up*(H-1)+k; the FIR stage then
        # pads or crops to up*H. Padding derived for 'same' conv + filter on the upsampled grid.
        fk = fir.shape[-1]
        p0 = kh // 2 + (fk + up - 1) // 2 - (kw - 1)
        p1 = kh // 2 + (fk - up) // 2 - (kw - up)
        if fuse_upsampling:
            y = _window(y, fk - 1 - p0, h * up, fk - 1 - p0, w * up)
        else:
            y = upfirdn2d(y, fir, padding=(p0, p1, p0, p1), gain=float(up * up), impl=fir_impl)
    if coefficients is not None:
        y = y * coefficients.to(y.dtype).reshape(n, out_ch, 1, 1)
    return y


def _reference_modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                       up: int) -> torch.Tensor:
    """Per-sample kernels, demodulated by their own norms, as one grouped (transposed) convolution."""
    n, in_ch, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    wts = weight.to(x.dtype).unsqueeze(0) * styles.to(x.dtype).reshape(n, 1, in_ch, 1, 1)
    if demodulate:
        wts = wts * (wts.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, out_ch, 1, 1, 1)
    xg = x.reshape(1, n * in_ch, h, w)
    if up == 1:
        y = F.conv2d(xg, wts.reshape(n * out_ch, in_ch, kh, kw), padding=kh // 2, groups=n)
        return y.reshape(n, out_ch, h, w)
    # conv_transpose2d wants [in, out/groups, k, k] and computes a true convolution
    # of the zero-upsampled input.
    wt = wts.transpose(1, 2).reshape(n * in_ch, out_ch, kh, kw)
    y = F.conv_transpose2d(xg, wt, stride=up, groups=n)
    return y.reshape(n, out_ch, y.shape[2], y.shape[3])


def _factored_modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: int,
                      fir: torch.Tensor | None, form: str, fuse_upsampling: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The "weight" and "input" forms before the FIR stage; returns the output and, for
    "input", the demodulation coefficients [N, O] still to apply (else None)."""
    n, in_ch = x.shape[:2]
    out_ch = weight.shape[0]
    with torch.autocast(x.device.type, enabled=False):  # small weight-side work in full precision
        coefficients = demodulation_coefficients(weight, styles) if demodulate else None
        kernel = weight
        if up == 2 and fuse_upsampling:
            kernel = upsampling_kernel(weight, fir, gain=float(up * up))
        if form == "weight":
            kernel = kernel.unsqueeze(0) * styles.to(kernel.dtype).reshape(n, 1, in_ch, 1, 1)
            if coefficients is not None:
                kernel = kernel * coefficients.to(kernel.dtype).reshape(n, out_ch, 1, 1, 1)
            coefficients = None
        else:
            kernel = kernel.unsqueeze(0)
    if form == "input":
        x = x * styles.to(x.dtype).reshape(n, in_ch, 1, 1)
    return _shared_or_grouped_conv(x, kernel, up), coefficients


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


def upsampled_conv1x1(x: torch.Tensor, weight: torch.Tensor, fir: torch.Tensor, *, impl: str = "reference"
                      ) -> torch.Tensor:
    """Unmodulated 1x1 conv then 2x FIR upsampling (the 'resnet' shortcut), weight ``[O, I, 1, 1]``."""
    y = F.conv2d(x, weight.to(x.dtype))
    return upsample2d(y, fir, impl=impl)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None) -> torch.Tensor:
    """Move ``ws [N, L, D]`` towards ``w_avg [D]``: ``w_avg + psi (w - w_avg)`` for the first
    ``cutoff`` layers (all layers when None); differentiable, not in place."""
    if psi == 1:
        return ws
    pulled = w_avg.to(ws.dtype).lerp(ws, psi)
    if cutoff is None or cutoff >= ws.shape[1]:
        return pulled
    return torch.cat([pulled[:, :cutoff], ws[:, cutoff:]], dim=1)
