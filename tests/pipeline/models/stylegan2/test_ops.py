"""The StyleGAN2 functional core, in every form of its arithmetic, against independent numpy / scipy computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

from pipeline.models.stylegan2 import ops
from tests.pipeline.models.stylegan2.oracles import naive_modconv, numpy_upfirdn2d


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("up", "down", "pad", "gain"),
    [(1, 1, (1, 2, 0, 1), 1.0), (2, 1, (2, 1, 2, 1), 4.0), (1, 2, (1, 1, 1, 1), 1.0),
     (2, 2, (-1, 3, 2, -1), 2.5), (3, 1, (0, 0, 0, 0), 1.0)],
)
@pytest.mark.parametrize("impl", ops.FIR_IMPLS)
def test_upfirdn2d_matches_numpy_scipy_with_asymmetric_filter(up, down, pad, gain, impl):
    rng = _rng(up * 10 + down)
    x = rng.normal(size=(2, 3, 7, 6))
    f = rng.normal(size=(4, 3))  # asymmetric, non-square: catches flips and axis swaps
    got = ops.upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), up=up, down=down, padding=pad, gain=gain, impl=impl)
    for n in range(2):
        for c in range(3):
            want = numpy_upfirdn2d(x[n, c], f, up, down, pad, gain)
            assert got.shape[2:] == want.shape
            np.testing.assert_allclose(got[n, c].numpy(), want, rtol=1e-12, atol=1e-12)


def test_depthwise_fir_keeps_channels_last_and_matches_the_reference():
    taps = np.array([1.0, 2.0, 5.0, 1.0])
    fir = torch.from_numpy(np.outer(taps, taps) / taps.sum() ** 2)
    x = torch.from_numpy(_rng(1).normal(size=(2, 3, 6, 6))).contiguous(memory_format=torch.channels_last)
    depthwise = ops.upsample2d(x, fir, impl="depthwise")
    assert depthwise.stride(1) == 1  # NHWC strides (a window of a channels_last tensor)
    torch.testing.assert_close(depthwise, ops.upsample2d(x, fir), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="impl"):
        ops.upfirdn2d(x, fir, impl="fft")


def test_upsample2d_matches_scipy_upfirdn_separably():
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    x = _rng(1).normal(size=(1, 1, 5, 6))
    got = ops.upsample2d(torch.from_numpy(x), ops.fir_filter(taps).double())
    h = taps / taps.sum() * 2  # per axis: unit DC gain after 2x zero insertion
    rows = scipy.signal.upfirdn(h, x[0, 0], up=2, axis=1)
    full = scipy.signal.upfirdn(h, rows, up=2, axis=0)
    # upsample2d pads (2, 1): output j is scipy's "full" sample j + 1
    want = full[1: 1 + 10, 1: 1 + 12]
    assert got.shape == (1, 1, 10, 12)
    np.testing.assert_allclose(got[0, 0].numpy(), want, rtol=1e-6, atol=1e-6)


def test_fir_filter_is_normalised_outer_product():
    f = ops.fir_filter([1, 3, 3, 1])
    want = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    np.testing.assert_allclose(f.numpy(), want, rtol=1e-7)
    assert f.dtype == torch.float32
    with pytest.raises(ValueError, match="non-zero sum"):
        ops.fir_filter([1, -1])


def test_bias_act_formula_and_clamp():
    x = _rng(2).normal(size=(2, 4, 3, 3)) * 3
    b = _rng(3).normal(size=4)
    got = ops.bias_act(torch.from_numpy(x), torch.from_numpy(b), "lrelu", gain=math.sqrt(2) * 0.7, clamp=1.1)
    y = x + b[None, :, None, None]
    y = np.where(y >= 0, y, 0.2 * y) * math.sqrt(2) * 0.7
    want = np.clip(y, -1.1, 1.1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert np.any(np.abs(want) == 1.1)  # the clamp really acted
    with pytest.raises(ValueError, match="activation"):
        ops.bias_act(torch.zeros(1, 1), None, "tanh")


def test_fully_connected_equalised_lr():
    rng = _rng(4)
    x, w, b = rng.normal(size=(5, 6)), rng.normal(size=(3, 6)), rng.normal(size=3)
    lr = 0.01
    got = ops.fully_connected(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), lr, "lrelu")
    y = x @ (w * lr / math.sqrt(6)).T + b * lr
    want = np.where(y >= 0, y, 0.2 * y) * math.sqrt(2)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    lin = ops.fully_connected(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))
    np.testing.assert_allclose(lin.numpy(), x @ (w / math.sqrt(6)).T + b, rtol=1e-12)


def test_normalize_2nd_moment():
    z = _rng(5).normal(size=(4, 7)) * 5
    got = ops.normalize_2nd_moment(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose((got**2).mean(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(got * np.sqrt((z**2).mean(axis=1, keepdims=True) + 1e-8), z, rtol=1e-12)


@pytest.mark.parametrize(("up", "demodulate", "k"), [(1, True, 3), (1, False, 1), (2, True, 3), (1, True, 3)])
def test_modulated_conv2d_matches_naive_per_sample(up, demodulate, k):
    rng = _rng(6 + up + k)
    x = rng.normal(size=(3, 4, 5, 5))
    weight = rng.normal(size=(6, 4, k, k))  # random, asymmetric kernels: a flip would show
    styles = rng.normal(size=(3, 4)) + 1.0
    fir = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    got = ops.modulated_conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(styles),
                               demodulate=demodulate, up=up, fir=torch.from_numpy(fir) if up > 1 else None)
    want = naive_modconv(x, weight, styles, demodulate, up, fir)
    assert got.shape == want.shape == (3, 6, 5 * up, 5 * up)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("up", "demodulate", "k"), [(1, True, 3), (1, False, 1), (2, True, 3)])
@pytest.mark.parametrize("count", [1, 3])
def test_every_modulated_conv_form_matches_the_naive_equations(up, demodulate, k, count):
    rng = _rng(7 + up + k)
    x, weight, styles = rng.normal(size=(count, 4, 5, 5)), rng.normal(size=(2, 4, k, k)), rng.normal(size=(count, 4))
    taps = np.array([1.0, 2.0, 5.0, 1.0])  # asymmetric: catches a flipped filter
    fir = np.outer(taps, taps) / taps.sum() ** 2
    expected = naive_modconv(x, weight, styles, demodulate, up, fir)
    args = [torch.from_numpy(a) for a in (x, weight, styles)]
    for form, fir_impl, fuse, channels_last in itertools.product(ops.MODCONV_FORMS, ops.FIR_IMPLS, (False, True),
                                                                  (False, True)):
        if fuse and form == "reference":
            continue
        xx = args[0].contiguous(memory_format=torch.channels_last) if channels_last else args[0]
        y = ops.modulated_conv2d(xx, args[1], args[2], demodulate, up, torch.from_numpy(fir), form=form,
                                 fir_impl=fir_impl, fuse_upsampling=fuse)
        np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-10,
                                   err_msg=f"{form} {fir_impl} fuse={fuse} channels_last={channels_last}")


def test_factored_forms_helpers_match_scipy():
    rng = _rng(1)
    taps = np.array([1.0, 2.0, 5.0, 1.0])
    fir = torch.from_numpy(np.outer(taps, taps) / taps.sum() ** 2)
    weight = torch.from_numpy(rng.normal(size=(2, 3, 3, 3)))
    merged = ops.upsampling_kernel(weight, fir, gain=4.0)
    for o, i in itertools.product(range(2), range(3)):
        full = scipy.signal.convolve2d(weight[o, i].numpy(), fir.numpy() * 4.0, mode="full")
        np.testing.assert_allclose(merged[o, i].numpy(), full, rtol=0, atol=1e-12)
    styles = torch.from_numpy(rng.normal(size=(4, 3)))
    explicit = (weight[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
    torch.testing.assert_close(ops.demodulation_coefficients(weight, styles), explicit, rtol=1e-12, atol=0)


def test_modulated_conv2d_rejects_bad_shapes_and_forms():
    with pytest.raises(ValueError, match="styles"):
        ops.modulated_conv2d(torch.zeros(2, 4, 5, 5), torch.zeros(3, 4, 3, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="does not fit"):
        ops.modulated_conv2d(torch.zeros(2, 4, 5, 5), torch.zeros(3, 5, 3, 3), torch.zeros(2, 4))
    args = (torch.zeros(2, 4, 5, 5), torch.zeros(3, 4, 3, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="form must be one of"):
        ops.modulated_conv2d(*args, form="grouped")
    with pytest.raises(ValueError, match="fir_impl"):
        ops.modulated_conv2d(*args, fir_impl="fft")
    with pytest.raises(ValueError, match="up=2 with a FIR filter"):
        ops.modulated_conv2d(*args, up=2)
    with pytest.raises(ValueError, match="fuse_upsampling needs form"):
        ops.modulated_conv2d(*args, up=2, fir=ops.fir_filter([1, 3, 3, 1]), fuse_upsampling=True)


def test_truncate_with_and_without_cutoff():
    rng = _rng(7)
    ws = rng.normal(size=(2, 6, 3))
    avg = rng.normal(size=3)
    got = ops.truncate(torch.from_numpy(ws), torch.from_numpy(avg), 0.6, cutoff=2).numpy()
    np.testing.assert_allclose(got[:, :2], avg + 0.6 * (ws[:, :2] - avg), rtol=1e-12)
    np.testing.assert_array_equal(got[:, 2:], ws[:, 2:])
    full = ops.truncate(torch.from_numpy(ws), torch.from_numpy(avg), 0.6, cutoff=None).numpy()
    np.testing.assert_allclose(full, avg + 0.6 * (ws - avg), rtol=1e-12)
    np.testing.assert_array_equal(ops.truncate(torch.from_numpy(ws), torch.from_numpy(avg), 1.0, None).numpy(), ws)
