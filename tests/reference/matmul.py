"""Reference fully-connected and batched matmul: exact int64 NumPy sums, Python-int requantization."""

from __future__ import annotations

import numpy as np

from intsim import fixedpoint as fp
from tests.reference.requant import requantize_output


def linear_acc(x, x_zp, w, bias):
    """acc[m, n] = bias[n] + sum_k w[n, k] * (x[m, k] - x_zp), exact (int64, far from overflow here)."""
    xs = x.astype(np.int64) - int(x_zp)
    return xs @ w.astype(np.int64).T + bias.astype(np.int64)[None, :]


def linear(x, x_zp, w, bias, rq, out_dtype):
    """x [M, K] -> (out [M, N], overflows [N], saturations [N])."""
    acc = linear_acc(x, x_zp, w, bias)
    m_rows, n_out = acc.shape
    out = np.empty((m_rows, n_out), dtype=out_dtype)
    ovf = np.zeros(n_out, dtype=np.int64)
    sat = np.zeros(n_out, dtype=np.int64)
    for m in range(m_rows):
        for n in range(n_out):
            code, o, s = requantize_output(int(acc[m, n]), n, rq)
            out[m, n] = code
            ovf[n] += o
            sat[n] += s
    return out, ovf, sat


def batch_acc(a, a_zp, b, b_zp):
    """a [B, M, K], b [B, K, N] (NOT transposed) -> exact acc [B, M, N] as int64."""
    return np.matmul(a.astype(np.int64) - int(a_zp), b.astype(np.int64) - int(b_zp))


def batch_matmul(a, a_zp, b, b_zp, rq, out_dtype):
    """Requantized per tensor (rq channel 0) -> (out, overflows [B*M], saturations [B*M])."""
    acc = batch_acc(a, a_zp, b, b_zp)
    n_batch, m_rows, n_cols = acc.shape
    out = np.empty(acc.shape, dtype=out_dtype)
    ovf = np.zeros(n_batch * m_rows, dtype=np.int64)
    sat = np.zeros(n_batch * m_rows, dtype=np.int64)
    for bi in range(n_batch):
        for m in range(m_rows):
            for n in range(n_cols):
                code, o, s = requantize_output(int(acc[bi, m, n]), 0, rq)
                out[bi, m, n] = code
                ovf[bi * m_rows + m] += o
                sat[bi * m_rows + m] += s
    return out, ovf, sat


def batch_matmul_acc(a, a_zp, b, b_zp, acc_bits, acc_saturating, out_dtype):
    """Raw accumulator register of ``min(acc_bits, width of out_dtype)`` bits -> (out, overflows)."""
    acc = batch_acc(a, a_zp, b, b_zp)
    bits = min(int(acc_bits), np.dtype(out_dtype).itemsize * 8)
    n_batch, m_rows, n_cols = acc.shape
    out = np.empty(acc.shape, dtype=out_dtype)
    ovf = np.zeros(n_batch * m_rows, dtype=np.int64)
    for bi in range(n_batch):
        for m in range(m_rows):
            for n in range(n_cols):
                v, o = fp.fit_accumulator(int(acc[bi, m, n]), bits, bool(acc_saturating))
                out[bi, m, n] = v
                ovf[bi * m_rows + m] += o
    return out, ovf
