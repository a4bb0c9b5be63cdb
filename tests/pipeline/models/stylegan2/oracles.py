"""Independent numpy / scipy oracles of the StyleGAN2 ops, shared by the model and engine tests.

Written from the equations, one image and one sample at a time, in float64; they share
no code with pipeline.models.stylegan2.
"""

from __future__ import annotations

import numpy as np
import scipy.signal


def numpy_upfirdn2d(x, f, up, down, pad, gain):
    """Zero insertion, zero pad / crop, true 2-D convolution (scipy), decimation: one image [H, W]."""
    h, w = x.shape
    u = np.zeros((h * up, w * up))
    u[::up, ::up] = x
    left, right, top, bottom = pad
    u = np.pad(u, ((max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))))
    u = u[max(-top, 0): u.shape[0] - max(-bottom, 0), max(-left, 0): u.shape[1] - max(-right, 0)]
    y = scipy.signal.convolve2d(u, f * gain, mode="valid")
    return y[::down, ::down]


def naive_modconv(x, weight, styles, demodulate, up, fir):
    """Loop over samples; explicit per-sample kernel; scipy correlation/convolution per channel pair.

    x [N, I, H, W], weight [O, I, k, k], styles [N, I], fir [f, f] (used when up == 2).
    """
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
