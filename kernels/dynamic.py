"""conv1d with a per-call (dynamic) input scale: FQSS's music encoder after a ``normalize=False`` splitter.

FQSS ConvTasNetMusicQ splits the audio with ``delta = max|x| / 128`` (SPEC §2.5), so the encoder
sees ``delta * k`` with int8 codes ``k`` and a delta that changes with every call.  The conv is
linear in its input: ``y_c = delta * d_c * acc_c + b_c`` with the exact integer accumulator
``acc_c = sum w * k``.  The op adapter (``intsim.ops.dynamic``) computes once per call and per
output channel the Q0.31 multiplier of ``r_c = double(delta) * double(d_c) / double(s_out)``
(``quantize_multiplier``: ``r = M * 2^(shift - 31)``) -- the model of a hardware per-call scale
register -- and this kernel does the rest in integers::

    acc  = sum_{i, k} w[c, i, k] * x[n, i, t*stride + k]                 int64, exact
    p    = acc * M                                                       exact (|acc| < 2^31, |M| < 2^31)
    t16  = round_half_away(p * 2^(shift - 15))                           p in 2^-16 output LSB
                                                                        (a left shift saturates at +-2^62)
    v    = t16 + bias16[c]                                                bias16 = round(2^16 (b - c_out) / s_out)
    q    = clamp(round_half_away(v / 2^16) + out_zp, act_min, act_max)    saturation counted vs int8

``bias16`` does not depend on delta: it is an integer constant of the model, in output LSB with
16 fraction bits.  Two roundings: the product to 2^-16 output LSB (|error| <= 2^-17 LSB), then the
sum to the output code.  With ``M = 0`` (delta = 0, silence) the output is the code of the bias
alone, i.e. the layer's output for an all-zero input.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from intsim.kernels.jit import serial_and_parallel

#: fraction bits of the bias and of the rescaled product, in output LSB
FRAC_BITS = 16
LIMIT = np.int64(2**62)


def _round_shift(p, n):
    """round_half_away(p / 2^n) for n >= 0 (int64), 0 once n >= 63."""
    if n == 0:
        return p
    if n >= 63:
        return np.int64(0)
    half = np.int64(1) << np.int64(n - 1)
    if p >= 0:
        return (p + half) >> np.int64(n)
    return -((-p + half) >> np.int64(n))


def _rescale(acc, mult, shift):
    """acc * M * 2^(shift - 31) in 2^-16 output LSB (round half away; saturating at +-2^62)."""
    p = acc * mult
    n = 31 - FRAC_BITS - shift
    if n >= 0:
        return _round_shift(p, n)
    m = -n
    if m >= 62:
        return LIMIT if p > 0 else (-LIMIT if p < 0 else np.int64(0))
    bound = LIMIT >> np.int64(m)
    if p > bound:
        return LIMIT
    if p < -bound:
        return -LIMIT
    return p << np.int64(m)


def _conv1d_dynamic(x, w, stride, mult, shift, bias16, out_zp, act_min, act_max, out, sat):
    n_batch, c_in, _ = x.shape
    c_out, _, k = w.shape
    t_out = out.shape[2]
    for c in prange(c_out):
        m = np.int64(mult[c])
        s = np.int64(shift[c])
        b = np.int64(bias16[c])
        for nb in range(n_batch):
            for t in range(t_out):
                acc = np.int64(0)
                base = t * stride
                for i in range(c_in):
                    for j in range(k):
                        acc += np.int64(w[c, i, j]) * np.int64(x[nb, i, base + j])
                v = _rescale(acc, m, s) + b
                q = _round_shift(v, FRAC_BITS) + out_zp
                if q < -128 or q > 127:
                    sat[c] += 1
                if q < act_min:
                    q = act_min
                elif q > act_max:
                    q = act_max
                out[nb, c, t] = q


_round_shift = serial_and_parallel(_round_shift)[0]
_rescale = serial_and_parallel(_rescale)[0]
conv1d_dynamic, conv1d_dynamic_parallel = serial_and_parallel(_conv1d_dynamic)


def conv1d_dynamic_reference(x, w, stride, mult, shift, bias16, out_zp, act_min, act_max):
    """Python-int reference of the kernel (tests)."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    n_batch, c_in, t_in = x.shape
    c_out, _, k = w.shape
    t_out = (t_in - k) // stride + 1
    out = np.empty((n_batch, c_out, t_out), dtype=np.int8)

    def rnd(v, n):
        if n <= 0:
            return v << -n
        h = 1 << (n - 1)
        return (v + h) >> n if v >= 0 else -((-v + h) >> n)

    for nb in range(n_batch):
        for c in range(c_out):
            for t in range(t_out):
                acc = int(np.sum(w[c] * x[nb, :, t * stride:t * stride + k]))
                n = 31 - FRAC_BITS - int(shift[c])
                p = acc * int(mult[c])
                t16 = rnd(p, n) if n >= 0 else max(-2**62, min(2**62, p << -n))
                q = rnd(t16 + int(bias16[c]), FRAC_BITS) + int(out_zp)
                out[nb, c, t] = min(max(q, act_min), act_max)
    return out
