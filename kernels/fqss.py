"""FQSS splitter and combiner (SPEC §2.5, §2.6).

Splitter, float32 path (``split_float``): a literal float32 transcription of FQSS
``process.preprocess`` (every operation rounded to float32, in the same order, no contraction)::

    peak  = max |x|                      over the whole [N, C, T] tensor (exact)
    normalize:  v = x / peak,  thr = 1   (correctly rounded float32 division)
    else:       v = x,         thr = peak
    delta = thr / 2^(n_bits-1)           (exact: power of two)
    for j in 0..n_splitter-1:
        q_j = clip(floor(v / delta), -2^(n_bits-1), 2^(n_bits-1)-1)  -> out[n, j*C + c, t] (int8)
        v   = ((2 * (v - q_j*delta)) * thr) / delta - thr
    returns (delta, peak) as float32 (x is [N, C, T] float32, out int8 [N, n_splitter*C, T])

FQSS feeds ``q_j * delta`` (float32) to the encoder; the integer graph feeds the codes ``q_j`` with
scale ``delta`` and zero point 0.  For normalize=True ``delta = 2^-(n_bits-1)`` and
``q_j * delta`` is exact, so the codes carry exactly what FQSS computes.  With normalize=True,
n_splitter 2, n_bits 8 the codes are the signed hi/lo bytes of ``u = min(32767, floor(32768 *
fl(x / peak)))`` on random audio (SPEC §2.5), but not for every float: when ``v = fl(x / peak)``
lies within a float32 ulp below a nonzero multiple of 2^-15 and |v| < 2^-8, the stage-2 residual
needs 25 bits, float32 rounds it, and this path (FQSS's) gives the bytes of u + 1.

Silence (``peak == 0``: FQSS divides 0/0 and produces NaN) is defined as the codes of v = 0 with thr = 1,
``delta = 2^-(n_bits-1)``: q_0 = 0, q_j = -2^(n_bits-1) for j >= 1; the returned delta is 0 in the
dynamic mode (every real value is then 0) and ``2^-(n_bits-1)`` with normalize.  Dynamic peaks below
``MIN_DYNAMIC_PEAK`` (where delta would lose precision as a subnormal) are treated as silence too.
Inputs must be finite (the adapter checks).

Splitter, int16 PCM path (``split_pcm``, n_splitter 2, n_bits 8): integer semantics of intsim.
The sample is ``x = u / 32768``; ``P = max |u|`` over the whole tensor::

    w  = u                                     if P == 32768 (the normalization is the identity)
       = min(32767, floor(32768 * u / P))      if 0 < P < 32768 (exact integer normalization)
       = 0                                     if P == 0
    out[n, c, t]     = w >> 8                  (arithmetic shift: the signed high byte)
    out[n, C + c, t] = (w & 255) - 128         (the low byte, made signed)

``split_pcm(x, out)`` returns ``P``.  The codes do not depend on ``normalize``; only the returned
scale does: ``2^-7`` (normalize) or ``P / 2^22`` (dynamic: thr = P / 32768, delta = thr / 128; exact in float32).  When ``P == 32768``
(the tensor contains -32768, i.e. max |x| is exactly 1.0) this equals the float32 path on
``x = u / 32768`` for every int16 value (tested on all 65536), in both modes.  For other peaks:
dynamic mode, measured equal to the float path for every u at 404 peaks (13.5 M samples);
normalize, the float path rounds ``fl(u / P)`` and, for P > 1024, can cross a multiple of 2^-15,
so it differs from the exact integer normalization on about 5e-4 of the samples, by one step of
``w``.  An input of +1.0 in the float path (u = +32768, not an int16) also saturates to 32767.

Combiner (``combine_int``): ``y = s0*(a0 - z0) + s1/2^n_bits * (a1 - z1)`` (n_bits = 8: y0 + y1/256)
as one integer tensor with zero point 0 and scale ``s_out = s1 * 2^-(n_bits + frac_bits)``::

    d0 = a0 - z0,  d1 = a1 - z1                                   (exact, int64)
    code = clamp(requantize(d0, M, shift, scale, rounding, mult_bits) + (d1 << frac_bits), lo, hi)

where ``(M, shift, scale)`` represent ``r = s0 / s_out = 2^(n_bits + frac_bits) * s0 / s1``
(channel 0 of ``rq``).  The y1 branch is exact; the only rounding is the one requantization of the
y0 branch (|error| <= s_out / 2 plus the multiplier's own rounding, all defined bit for bit by the
profile path).  It is exact in real arithmetic whenever ``r`` is an integer (e.g. s1 = 256*s0/2^k).

Combiner (``combine_float``): FQSS's float32 ``postprocess`` on the dequantized codes::

    out = float32(s0) * float32(d0) + (float32(s1) * float32(d1)) * 2^-n_bits   (float32 ops)

Every kernel has a serial and a ``prange`` (over rows) twin with identical results.
"""

import numpy as np
from numba import njit, prange

from .fixedpoint import clamp, requantize
from .jit import serial_and_parallel

#: Dynamic-splitter peaks below this are silence (delta = peak / 128 would be subnormal).
MIN_DYNAMIC_PEAK = np.float32(2.0**-100)


@njit(cache=True, nogil=True)
def peak_abs(x):
    """max |x| over a float32 array of any shape (exact; 0 for an empty array)."""
    flat = x.ravel()
    peak = np.float32(0.0)
    for i in range(flat.size):
        a = abs(flat[i])
        if a > peak:
            peak = a
    return peak


@njit(cache=True, nogil=True)
def peak_abs_int(x):
    """max |u| over an integer array as int64 (exact)."""
    flat = x.ravel()
    peak = np.int64(0)
    for i in range(flat.size):
        a = abs(np.int64(flat[i]))
        if a > peak:
            peak = a
    return peak


def _split_float(x, normalize, n_splitter, n_bits, out):
    n_batch, n_chan, t_len = x.shape
    peak = peak_abs(x)
    half = np.float32(2.0 ** (n_bits - 1))
    lo = np.float32(-(2.0 ** (n_bits - 1)))
    hi = np.float32(2.0 ** (n_bits - 1) - 1.0)
    two = np.float32(2.0)
    zero = np.float32(0.0)
    silent = peak == zero or (not normalize and peak < MIN_DYNAMIC_PEAK)
    if normalize or silent:
        thr = np.float32(1.0)
    else:
        thr = peak
    delta = thr / half
    for r in prange(n_batch * n_chan):
        n = r // n_chan
        c = r - n * n_chan
        for t in range(t_len):
            if silent:
                v = zero
            elif normalize:
                v = x[n, c, t] / peak
            else:
                v = x[n, c, t]
            for j in range(n_splitter):
                q = np.floor(v / delta)
                if q < lo:
                    q = lo
                elif q > hi:
                    q = hi
                out[n, j * n_chan + c, t] = np.int64(q)
                xq = q * delta
                v = two * (v - xq) * thr / delta - thr
    if silent and not normalize:
        return zero, peak
    return delta, peak


split_float, split_float_parallel = serial_and_parallel(_split_float)


def _split_pcm(x, out):
    n_batch, n_chan, t_len = x.shape
    p = peak_abs_int(x)
    for r in prange(n_batch * n_chan):
        n = r // n_chan
        c = r - n * n_chan
        for t in range(t_len):
            u = np.int64(x[n, c, t])
            if p == 32768:
                w = u
            elif p == 0:
                w = np.int64(0)
            else:
                w = (np.int64(32768) * u) // p  # Numba's // floors (Python semantics)
                if w > 32767:
                    w = np.int64(32767)
            out[n, c, t] = w >> np.int64(8)
            out[n, n_chan + c, t] = (w & np.int64(255)) - np.int64(128)
    return p


split_pcm, split_pcm_parallel = serial_and_parallel(_split_pcm)


def _combine_int(y0, z0, y1, z1, frac_bits, rq, out, saturations):
    # Only the leading fields of the requant tuple (kernels.fixedpoint.requant_params) are used:
    # channel 0's multiplier, the rounding rule and the output rules.
    mult, shift, scale, rounding, mult_bits = rq[0], rq[1], rq[2], rq[3], rq[4]
    out_zp, act_min, act_max = rq[7], rq[8], rq[9]
    n_rows, t_len = out.shape
    for m in prange(n_rows):
        n_sat = 0
        for t in range(t_len):
            d0 = np.int64(y0[m, t]) - z0
            d1 = np.int64(y1[m, t]) - z1
            t0 = requantize(d0, mult[0], shift[0], scale[0], rounding, mult_bits)
            code, sat = clamp(t0 + (d1 << np.int64(frac_bits)) + out_zp, act_min, act_max)
            out[m, t] = code
            n_sat += sat
        saturations[m] = n_sat


combine_int, combine_int_parallel = serial_and_parallel(_combine_int)


def _combine_float(y0, z0, s0, y1, z1, s1, n_bits, out):
    n_rows, t_len = out.shape
    f0 = np.float32(s0)
    f1 = np.float32(s1)
    fine = np.float32(2.0 ** (-n_bits))
    for m in prange(n_rows):
        for t in range(t_len):
            d0 = np.float32(np.int64(y0[m, t]) - z0)
            d1 = np.float32(np.int64(y1[m, t]) - z1)
            out[m, t] = f0 * d0 + (f1 * d1) * fine


combine_float, combine_float_parallel = serial_and_parallel(_combine_float)
