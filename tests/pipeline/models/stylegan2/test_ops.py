"""The StyleGAN2 functional core against independent numpy / scipy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from pipeline.models.stylegan2 import ops


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _numpy_upfirdn2d(x, f, up, down, pad, gain):
    """Zero insertion, zero pad / crop, true 2-D convolution (scipy), decimation: one image."""
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    left, right, top, bottom = pad
    u = np.pad(u, ((max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))))
    u = u[max(-top, 0): u.shape[0] - max(-bottom, 0), max(-left, 0): u.shape[1] - max(-right, 0)]
    y = scipy.signal.convolve2d(u, f * gain, mode="valid")
    return y[::down, ::down]


@pytest.mark.parametrize(
    ("up", "down", "pad", "gain"),
    [(1, 1, (1, 2, 0, 1), 1.0), (2, 1, (2, 1, 2, 1), 4.0), (1, 2, (1, 1, 1, 1), 1.0),
     (2, 2, (-1, 3, 2, -1), 2.5), (3, 1, (0, 0, 0, 0), 1.0)],
)
def test_upfirdn2d_matches_numpy_scipy_with_asymmetric_filter(up, down, pad, gain):
    rng = _rng(up * 10 + down)
    x = rng.normal(size=(2, 3, 7, 6))
    f = rng.normal(size=(4, 3))  # asymmetric, non-square: catches flips and axis swaps
    got = ops.upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), up=up, down=down, padding=pad, gain=gain)
    for n in range(2):
        for c in range(3):
            want = _numpy_upfirdn2d(x[n, c], f, up, down, pad, gain)
            assert got.shape[2:] == want.shape
            np.testing.assert_allclose(got[n, c].numpy(), want, rtol=1e-12, atol=1e-12)


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


def _naive_modconv(x, weight, styles, demodulate, up, fir):
    """Loop over samples; explicit per-sample kernel; scipy correlation/convolution per channel pair."""
    n, i_ch, h, w = x.shape
    o_ch, _, k, _ = weight.shape
    out = []
    for s in range(n):
        wk = weight * styles[s][None, :, None, None]
        if demodulate:
            wk = wk / np.sqrt((wk**2).sum(axis=(1, 2, 3)) + 1e-8)[:, None, None, None]
        if up == 1:
            xp = np.pad(x[s], ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
            y = np.stack([sum(scipy.signal.correlate2d(xp[i], wk[o, i], mode="valid") for i in range(i_ch))
                          for o in range(o_ch)])
        else:
            # Filtered 2x upsampling on the grid of upsample2d extended by k//2 pixels per side,
            # then a 'valid' true convolution with the kernel (the reference's semantics).
            u = np.zeros((i_ch, 2 * h, 2 * w))
            u[:, ::2, ::2] = x[s]
            fk = fir.shape[0]
            full = np.stack([scipy.signal.convolve2d(u[i], fir * 4, mode="full") for i in range(i_ch)])
            start = (fk - 1) - (fk + 1) // 2 - k // 2  # full index of upsample2d pixel -k//2
            size = 2 * h + 2 * (k // 2)
            grid = np.pad(full, ((0, 0), (max(-start, 0),) * 2, (max(-start, 0),) * 2))
            grid = grid[:, max(start, 0): max(start, 0) + size, max(start, 0): max(start, 0) + size]
            y = np.stack([sum(scipy.signal.convolve2d(grid[i], wk[o, i], mode="valid") for i in range(i_ch))
                          for o in range(o_ch)])
        out.append(y)
    return np.stack(out)


@pytest.mark.parametrize(("up", "demodulate", "k"), [(1, True, 3), (1, False, 1), (2, True, 3), (1, True, 3)])
def test_modulated_conv2d_matches_naive_per_sample(up, demodulate, k):
    rng = _rng(6 + up + k)
    x = rng.normal(size=(3, 4, 5, 5))
    weight = rng.normal(size=(6, 4, k, k))  # random, asymmetric kernels: a flip would show
    styles = rng.normal(size=(3, 4)) + 1.0
    fir = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    got = ops.modulated_conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(styles),
                               demodulate=demodulate, up=up, fir=torch.from_numpy(fir) if up > 1 else None)
    want = _naive_modconv(x, weight, styles, demodulate, up, fir)
    assert got.shape == want.shape == (3, 6, 5 * up, 5 * up)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


def test_modulated_conv2d_rejects_bad_shapes():
    with pytest.raises(ValueError, match="styles"):
        ops.modulated_conv2d(torch.zeros(2, 4, 5, 5), torch.zeros(3, 4, 3, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="does not fit"):
        ops.modulated_conv2d(torch.zeros(2, 4, 5, 5), torch.zeros(3, 5, 3, 3), torch.zeros(2, 4))


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
