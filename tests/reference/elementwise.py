"""Naive references of kernels.elementwise in plain Python ints (NumPy only for broadcasting/indexing).

Each function returns ``(codes int64 ndarray, overflows, saturations)`` with total counts.
"""

import numpy as np

from intsim import fixedpoint as fp
from tests.reference.requant import requantize_output


def requantize(x, x_zp, rq, axis=None):
    """out[idx] = requantize_output(x[idx] - x_zp, c) with c = idx[axis] (0 per tensor)."""
    out = np.zeros(x.shape, dtype=np.int64)
    n_ovf = n_sat = 0
    for idx in np.ndindex(*x.shape):
        c = 0 if axis is None else idx[axis]
        code, ovf, sat = requantize_output(int(x[idx]) - int(x_zp), c, rq)
        out[idx] = code
        n_ovf += ovf
        n_sat += sat
    return out, n_ovf, n_sat


def add(a, b, ap, sign=1):
    """TFLite ADD (sign=+1) / SUB (sign=-1) with a kernels.elementwise.pack_add_params tuple."""
    zp1, zp2, left_shift, mult, shift, scale, rounding, mult_bits, out_zp, act_min, act_max = ap
    rounding, mult_bits = int(rounding), int(mult_bits)
    A, B = np.broadcast_arrays(a, b)
    out = np.zeros(A.shape, dtype=np.int64)
    n_sat = 0
    for idx in np.ndindex(*A.shape):
        va = int(A[idx]) - int(zp1)
        vb = int(B[idx]) - int(zp2)
        if rounding == fp.ROUND_FLOAT32:
            fa = np.float32(va) * np.float32(scale[0])
            fb = np.float32(vb) * np.float32(scale[1])
            v = np.float32(fa + fb) if sign > 0 else np.float32(fa - fb)
            r = int(np.rint(np.float32(v / np.float32(scale[2]))))
        else:
            s1 = fp.requantize(va * 2 ** int(left_shift), int(mult[0]), int(shift[0]), 0.0, rounding, mult_bits)
            s2 = fp.requantize(vb * 2 ** int(left_shift), int(mult[1]), int(shift[1]), 0.0, rounding, mult_bits)
            raw = s1 + s2 if sign > 0 else s1 - s2
            r = fp.requantize(raw, int(mult[2]), int(shift[2]), 0.0, rounding, mult_bits)
        value = r + int(out_zp)
        code = max(int(act_min), min(int(act_max), value))
        out[idx] = code
        n_sat += code != value
    return out, 0, n_sat


def mul(a, b, zp1, zp2, rq):
    """TFLite MUL: requantize_output((a - zp1) * (b - zp2), 0, rq)."""
    A, B = np.broadcast_arrays(a, b)
    out = np.zeros(A.shape, dtype=np.int64)
    n_ovf = n_sat = 0
    for idx in np.ndindex(*A.shape):
        code, ovf, sat = requantize_output((int(A[idx]) - int(zp1)) * (int(B[idx]) - int(zp2)), 0, rq)
        out[idx] = code
        n_ovf += ovf
        n_sat += sat
    return out, n_ovf, n_sat


def prelu(x, alpha, x_zp, alpha_zp, rq):
    """TFLite PRELU: identity multiplier (channel 0) for x >= zp, alpha multiplier (channel 1) below."""
    X, A = np.broadcast_arrays(x, alpha)
    out = np.zeros(X.shape, dtype=np.int64)
    n_ovf = n_sat = 0
    for idx in np.ndindex(*X.shape):
        v = int(X[idx]) - int(x_zp)
        if v >= 0:
            code, ovf, sat = requantize_output(v, 0, rq)
        else:
            code, ovf, sat = requantize_output(v * (int(A[idx]) - int(alpha_zp)), 1, rq)
        out[idx] = code
        n_ovf += ovf
        n_sat += sat
    return out, n_ovf, n_sat


def clamp_codes(x, lo, hi):
    out = np.array([max(int(lo), min(int(hi), int(v))) for v in np.ravel(x)], dtype=np.int64)
    return out.reshape(np.shape(x))
