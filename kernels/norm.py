"""Integer GroupNorm / LayerNorm: exact integer statistics and a fixed-point reciprocal square root.

The arithmetic is specified in ``docs/norm.md`` (with its error bound) and mirrored in plain Python
ints by ``tests/reference/norm.py``.  Summary, for one normalization group of ``n`` codes ``a``::

    S1 = sum a, S2 = sum a^2                     exact int64
    D  = n*S2 - S1^2                             = n^2 * biased variance of the codes (exact)
    V  = D + n^2 * E,  E = eps_mult * 2^(eps_shift - 31) = eps / s_in^2 (the eps in code units)
    (R, z) = norm_rsqrt(n, S1, S2, E):           1/sqrt(V) ~= R * 2^(z/2 - 61),  R in (2^30, 2^31]
    per channel c (gamma/s_out ~= mult[c] * 2^(shift[c] - 31)):
        M = round_half_up(R * mult[c] / 2^32),   k = 60 - shift[c] - z/2 - FRAC_BITS
    per element:
        h    = u * M / 2^k  (u = n*a - S1; rounded half up; left shift saturating at +-2^62 if k < 0)
        code = clamp(round_half_up((h + bias[c]) / 2^FRAC_BITS) + out_zp, act_min, act_max)

``bias[c] = round(beta[c] / s_out * 2^FRAC_BITS)``.  The input zero point never appears: it
cancels in ``n*a - S1`` and in ``D``.  No floats at run time; every shift is guarded so no step
overflows int64 for group sizes ``n <= MAX_GROUP_SIZE[dtype]``.

Kernels:

* ``group_norm(x [N, C, T], groups, ...)``: group g of sample b holds channels
  ``[g*C/G, (g+1)*C/G)`` times all T frames; saturations counted per (b, g).
* ``layer_norm(x [O, L, I], ...)``: statistics over the middle axis L for every (o, i); gamma/beta
  are indexed by l.  LayerNorm over the last axis is I = 1 (rows of L contiguous codes, a 2-D
  loop); channel-wise LayerNorm (cLN) on ``[N, C, T]`` is O = N, L = C, I = T (blocks of 64 frames
  per job).  It equals ``group_norm`` with one group on ``[O, L, 1]``.  Saturations per (o, i).
"""

import numpy as np
from numba import njit, prange

from .jit import serial_and_parallel

#: fractional bits of the per-channel bias and of the pre-rounding value h
FRAC_BITS = 16

#: largest group size per input dtype for which every int64 step is exact (see docs/norm.md)
MAX_GROUP_SIZE = {"int8": 1 << 24, "uint8": 1 << 23, "int16": 1 << 16}

#: |h| saturates here when k < 0 (output then clamps to the same extreme as the exact value)
H_LIMIT = np.int64(1) << np.int64(62)


@njit(cache=True, nogil=True, inline="always")
def bit_length(x):
    """Number of bits of non-negative int64 ``x`` (0 for 0)."""
    x = np.int64(x)
    n = np.int64(0)
    while x > 0:
        x >>= np.int64(1)
        n += np.int64(1)
    return n


@njit(cache=True, nogil=True, inline="always")
def shift_floor(x, s):
    """floor(x * 2^s) for non-negative ``x``; callers guarantee a left shift does not overflow."""
    if s >= 0:
        return np.int64(x) << np.int64(s)
    if s <= -63:
        return np.int64(0)
    return np.int64(x) >> np.int64(-s)


@njit(cache=True, nogil=True)
def isqrt(w):
    """floor(sqrt(w)) for 0 <= w < 2^63: integer Newton iteration from above (exact)."""
    w = np.int64(w)
    if w <= 0:
        return np.int64(0)
    x = np.int64(1) << ((bit_length(w) + np.int64(1)) >> np.int64(1))  # 2^ceil(bits/2) > sqrt(w)
    while True:
        y = (x + w // x) >> np.int64(1)
        if y >= x:
            return x
        x = y


@njit(cache=True, nogil=True)
def norm_rsqrt(n, s1, s2, eps_mult, eps_shift):
    """(R, z) with 1/sqrt(V) ~= R * 2^(z/2 - 61) for V = n*s2 - s1^2 + n^2 * E.

    E = eps_mult * 2^(eps_shift - 31).  z is even; R in (2^30, 2^31].  V == 0 (constant group and
    eps 0) gives (0, 0): the normalized value 0/0 is defined as 0.
    """
    n = np.int64(n)
    d = n * np.int64(s2) - np.int64(s1) * np.int64(s1)
    # eps term n^2 * E ~= tm * 2^te, tm < 2^62 (truncation of n*eps_mult only when it is >= 2^38)
    tm = np.int64(0)
    te = np.int64(0)
    if eps_mult > 0:
        p1 = n * np.int64(eps_mult)
        r1 = bit_length(p1) + bit_length(n) - np.int64(62)
        if r1 < 0:
            r1 = np.int64(0)
        tm = (p1 >> r1) * n
        te = r1 + np.int64(eps_shift) - np.int64(31)
    if d == 0 and tm == 0:
        return np.int64(0), np.int64(0)
    # top bit position p of V, then an even z with p + z in {60, 61}
    p = np.int64(-(1 << 62))
    if d > 0:
        p = bit_length(d) - np.int64(1)
    if tm > 0:
        pt = bit_length(tm) - np.int64(1) + te
        if pt > p:
            p = pt
    z = np.int64(60) - p
    if z & np.int64(1):
        z += np.int64(1)
    w = np.int64(0)
    if d > 0:
        w += shift_floor(d, z)
    if tm > 0:
        w += shift_floor(tm, te + z)
    if w >= np.int64(1) << np.int64(62):
        w >>= np.int64(2)
        z -= np.int64(2)
    s = isqrt(w)  # in [2^30, 2^31)
    r = ((np.int64(1) << np.int64(61)) + (s >> np.int64(1))) // s
    return r, z


@njit(cache=True, nogil=True, inline="always")
def norm_channel(r, z, mult, shift):
    """Per (group, channel): M = round_half_up(R * mult / 2^32) and the element shift k."""
    m = (np.int64(r) * np.int64(mult) + (np.int64(1) << np.int64(31))) >> np.int64(32)
    k = np.int64(60) - np.int64(shift) - (np.int64(z) >> np.int64(1)) - np.int64(FRAC_BITS)
    return m, k


@njit(cache=True, nogil=True, inline="always")
def norm_value(u, m, k):
    """h = u * M / 2^k rounded half up (k > 0), or u * M * 2^-k saturated to +-2^62 (k <= 0)."""
    p = np.int64(u) * np.int64(m)
    if k > 0:
        if k >= 63:
            return np.int64(0)
        return (p + (np.int64(1) << (k - np.int64(1)))) >> k
    left = -k
    lim = np.int64(0)
    if left <= 62:
        lim = H_LIMIT >> left
    if p > lim:
        return H_LIMIT
    if p < -lim:
        return -H_LIMIT
    return p << left


@njit(cache=True, nogil=True, inline="always")
def norm_code(h, bias, out_zp, act_min, act_max):
    """Output code and whether it saturated: clamp(round_half_up((h + bias)/2^FRAC) + zp)."""
    v = ((h + np.int64(bias) + np.int64(1 << (FRAC_BITS - 1))) >> np.int64(FRAC_BITS)) + np.int64(out_zp)
    if v < act_min:
        return np.int64(act_min), 1
    if v > act_max:
        return np.int64(act_max), 1
    return v, 0


def _group_norm(x, groups, eps_mult, eps_shift, mult, shift, bias, out_zp, act_min, act_max, out, saturations):
    """x [N, C, T] int8/uint8/int16 (C-contiguous); out [N, C, T]; saturations [N * groups]."""
    n_batch, n_chan, n_time = x.shape
    cpg = n_chan // groups
    n = np.int64(cpg) * np.int64(n_time)
    for job in prange(n_batch * groups):
        b = job // groups
        c0 = (job - b * groups) * cpg
        s1 = np.int64(0)
        s2 = np.int64(0)
        for c in range(c0, c0 + cpg):
            for t in range(n_time):
                v = np.int64(x[b, c, t])
                s1 += v
                s2 += v * v
        r, z = norm_rsqrt(n, s1, s2, eps_mult, eps_shift)
        n_sat = 0
        for c in range(c0, c0 + cpg):
            m, k = norm_channel(r, z, mult[c], shift[c])
            bc = np.int64(bias[c])
            for t in range(n_time):
                h = norm_value(n * np.int64(x[b, c, t]) - s1, m, k)
                code, sat = norm_code(h, bc, out_zp, act_min, act_max)
                out[b, c, t] = code
                n_sat += sat
        saturations[job] = n_sat


group_norm, group_norm_parallel = serial_and_parallel(_group_norm)

#: frames per layer_norm job (statistics for a block of frames are gathered in one contiguous sweep)
_BLOCK = 64


def _layer_norm(x, eps_mult, eps_shift, mult, shift, bias, out_zp, act_min, act_max, out, saturations):
    """x [O, L, I] (C-contiguous) normalized over L for each (o, i); out [O, L, I]; saturations [O * I]."""
    n_outer, n_len, n_inner = x.shape
    n = np.int64(n_len)
    if n_inner == 1:
        # rows of L contiguous values (LayerNorm over the last axis): 2-D views keep the inner
        # loops unit-stride, so they vectorize
        x2 = x.reshape((n_outer, n_len))
        out2 = out.reshape((n_outer, n_len))
        for o in prange(n_outer):
            row = x2[o]
            orow = out2[o]
            s1 = np.int64(0)
            s2 = np.int64(0)
            for ln in range(n_len):
                v = np.int64(row[ln])
                s1 += v
                s2 += v * v
            r, z = norm_rsqrt(n, s1, s2, eps_mult, eps_shift)
            n_sat = 0
            for ln in range(n_len):
                m, k = norm_channel(r, z, mult[ln], shift[ln])
                h = norm_value(n * np.int64(row[ln]) - s1, m, k)
                code, sat = norm_code(h, bias[ln], out_zp, act_min, act_max)
                orow[ln] = code
                n_sat += sat
            saturations[o] = n_sat
        return
    n_blocks = (n_inner + _BLOCK - 1) // _BLOCK
    for job in prange(n_outer * n_blocks):
        o = job // n_blocks
        i0 = (job - o * n_blocks) * _BLOCK
        width = min(_BLOCK, n_inner - i0)
        s1 = np.zeros(width, dtype=np.int64)
        s2 = np.zeros(width, dtype=np.int64)
        for ln in range(n_len):
            row = x[o, ln, i0:i0 + width]
            for j in range(width):
                v = np.int64(row[j])
                s1[j] += v
                s2[j] += v * v
        rs = np.empty(width, dtype=np.int64)
        zs = np.empty(width, dtype=np.int64)
        for j in range(width):
            rs[j], zs[j] = norm_rsqrt(n, s1[j], s2[j], eps_mult, eps_shift)
        n_sat = np.zeros(width, dtype=np.int64)
        for ln in range(n_len):
            row = x[o, ln, i0:i0 + width]
            orow = out[o, ln, i0:i0 + width]
            g_mult = mult[ln]
            g_shift = shift[ln]
            bc = np.int64(bias[ln])
            for j in range(width):
                m, k = norm_channel(rs[j], zs[j], g_mult, g_shift)
                h = norm_value(n * np.int64(row[j]) - s1[j], m, k)
                code, sat = norm_code(h, bc, out_zp, act_min, act_max)
                orow[j] = code
                n_sat[j] += sat
        for j in range(width):
            saturations[o * n_inner + i0 + j] = n_sat[j]


layer_norm, layer_norm_parallel = serial_and_parallel(_layer_norm)
