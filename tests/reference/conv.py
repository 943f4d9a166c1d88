"""Naive references for kernels.conv, straight from the definitions.

Each function forms the exact sums in int64 NumPy with explicit loops over output positions and
taps (padding by explicit index checks: a tap outside the input is skipped), then requantizes
every element with ``tests.reference.requant.requantize_output`` (plain Python ints).  Transposed
convolutions are written as the adjoint: every input element scatters ``w * (x - zp)`` to the
output positions it reaches, positions cropped by the padding are dropped.  Nothing here shares
code or loop structure with the kernels.

Each returns ``(out, overflows, saturations)``: the codes as ``out_dtype`` and per-output-channel
int64 counts.  The int64 sums are exact because the callers keep
``|bias| + taps * 128 * 65535 < 2**62`` (checked).
"""

from __future__ import annotations

import numpy as np

from tests.reference.requant import requantize_output


def _check_exact(x, w, bias, taps):
    bound = int(np.max(np.abs(bias.astype(object)), initial=0)) + taps * 128 * 65535
    assert bound < 2**62, "reference sums could overflow int64"


def _requantize(acc, rq, out_dtype):
    """acc [N, C_out, ...] exact sums (bias included) -> (codes, overflows[C], saturations[C])."""
    c_out = acc.shape[1]
    out = np.empty(acc.shape, dtype=out_dtype)
    overflows = np.zeros(c_out, dtype=np.int64)
    saturations = np.zeros(c_out, dtype=np.int64)
    for index in np.ndindex(acc.shape):
        co = index[1]
        code, ovf, sat = requantize_output(int(acc[index]), co, rq)
        out[index] = code
        overflows[co] += ovf
        saturations[co] += sat
    return out, overflows, saturations


def conv1d(x, x_zp, w, bias, stride, padding, dilation, groups, rq, out_dtype=None):
    """x [N, C_in, T], w [C_out, C_in/groups, K], padding (left, right).

    acc[n, co, t] = bias[co] + sum_{ci, k} w[co, ci, k] * (x[n, g*C_in/groups + ci, t*stride + k*dilation - left] - zp)
    """
    n_batch, c_in, t_in = x.shape
    c_out, c_in_group, kernel = w.shape
    left, right = padding
    assert c_in == c_in_group * groups and c_out % groups == 0
    t_out = (t_in + left + right - dilation * (kernel - 1) - 1) // stride + 1
    _check_exact(x, w, bias, c_in_group * kernel)
    xs = x.astype(np.int64) - int(x_zp)
    wl = w.astype(np.int64)
    acc = np.zeros((n_batch, c_out, t_out), dtype=np.int64)
    c_out_group = c_out // groups
    for co in range(c_out):
        first = (co // c_out_group) * c_in_group
        for t in range(t_out):
            total = np.full(n_batch, int(bias[co]), dtype=np.int64)
            for k in range(kernel):
                pos = t * stride + k * dilation - left
                if 0 <= pos < t_in:
                    total += xs[:, first:first + c_in_group, pos] @ wl[co, :, k]
            acc[:, co, t] = total
    return _requantize(acc, rq, out_dtype or x.dtype)


def conv2d(x, x_zp, w, bias, stride, padding, dilation, groups, rq, out_dtype=None):
    """x [N, C_in, H, W], w [C_out, C_in/groups, KH, KW]; stride (sh, sw),
    padding (top, bottom, left, right), dilation (dh, dw)."""
    n_batch, c_in, h_in, w_in = x.shape
    c_out, c_in_group, kh_n, kw_n = w.shape
    sh, sw = stride
    top, bottom, left, right = padding
    dh, dw = dilation
    assert c_in == c_in_group * groups and c_out % groups == 0
    oh_n = (h_in + top + bottom - dh * (kh_n - 1) - 1) // sh + 1
    ow_n = (w_in + left + right - dw * (kw_n - 1) - 1) // sw + 1
    _check_exact(x, w, bias, c_in_group * kh_n * kw_n)
    xs = x.astype(np.int64) - int(x_zp)
    wl = w.astype(np.int64)
    acc = np.zeros((n_batch, c_out, oh_n, ow_n), dtype=np.int64)
    c_out_group = c_out // groups
    for co in range(c_out):
        first = (co // c_out_group) * c_in_group
        for oh in range(oh_n):
            for ow in range(ow_n):
                total = np.full(n_batch, int(bias[co]), dtype=np.int64)
                for kh in range(kh_n):
                    ih = oh * sh + kh * dh - top
                    if not 0 <= ih < h_in:
                        continue
                    for kw in range(kw_n):
                        iw = ow * sw + kw * dw - left
                        if 0 <= iw < w_in:
                            total += xs[:, first:first + c_in_group, ih, iw] @ wl[co, :, kh, kw]
                acc[:, co, oh, ow] = total
    return _requantize(acc, rq, out_dtype or x.dtype)


def conv_transpose1d(x, x_zp, w, bias, stride, padding, output_padding, dilation, groups, rq, out_dtype=None):
    """x [N, C_in, T], w [C_in, C_out/groups, K] (PyTorch ConvTranspose1d).

    Scatter: x[n, ci, t] adds w[ci, j, k] * (x - zp) to out[n, g*C_out/groups + j, t*stride + k*dilation - padding];
    T_out = (T-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1.
    """
    n_batch, c_in, t_in = x.shape
    _, c_out_group, kernel = w.shape
    assert c_in % groups == 0 and w.shape[0] == c_in
    c_out = c_out_group * groups
    c_in_group = c_in // groups
    t_out = (t_in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    _check_exact(x, w, bias, c_in_group * kernel)
    xs = x.astype(np.int64) - int(x_zp)
    wl = w.astype(np.int64)
    acc = np.zeros((n_batch, c_out, t_out), dtype=np.int64)
    acc += bias.astype(np.int64)[None, :, None]
    for ci in range(c_in):
        g = ci // c_in_group
        for t in range(t_in):
            for k in range(kernel):
                o = t * stride + k * dilation - padding
                if 0 <= o < t_out:
                    acc[:, g * c_out_group:(g + 1) * c_out_group, o] += np.outer(xs[:, ci, t], wl[ci, :, k])
    return _requantize(acc, rq, out_dtype or x.dtype)


def conv_transpose2d(x, x_zp, w, bias, stride, padding, output_padding, dilation, groups, rq, out_dtype=None):
    """x [N, C_in, H, W], w [C_in, C_out/groups, KH, KW] (PyTorch ConvTranspose2d); stride,
    padding, output_padding, dilation are (h, w) pairs."""
    n_batch, c_in, h_in, w_in = x.shape
    _, c_out_group, kh_n, kw_n = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    assert c_in % groups == 0 and w.shape[0] == c_in
    c_out = c_out_group * groups
    c_in_group = c_in // groups
    oh_n = (h_in - 1) * sh - 2 * ph + dh * (kh_n - 1) + output_padding[0] + 1
    ow_n = (w_in - 1) * sw - 2 * pw + dw * (kw_n - 1) + output_padding[1] + 1
    _check_exact(x, w, bias, c_in_group * kh_n * kw_n)
    xs = x.astype(np.int64) - int(x_zp)
    wl = w.astype(np.int64)
    acc = np.zeros((n_batch, c_out, oh_n, ow_n), dtype=np.int64)
    acc += bias.astype(np.int64)[None, :, None, None]
    for ci in range(c_in):
        g = ci // c_in_group
        for ih in range(h_in):
            for iw in range(w_in):
                for kh in range(kh_n):
                    oh = ih * sh + kh * dh - ph
                    if not 0 <= oh < oh_n:
                        continue
                    for kw in range(kw_n):
                        ow = iw * sw + kw * dw - pw
                        if 0 <= ow < ow_n:
                            contribution = np.outer(xs[:, ci, ih, iw], wl[ci, :, kh, kw])
                            acc[:, g * c_out_group:(g + 1) * c_out_group, oh, ow] += contribution
    return _requantize(acc, rq, out_dtype or x.dtype)
