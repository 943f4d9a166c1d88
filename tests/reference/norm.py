"""Reference integer GroupNorm / LayerNorm in plain Python ints (the spec of docs/norm.md).

Written from the spec, not from the kernel: big ints, ``math.isqrt``, ``int.bit_length``; no
int64 reasoning is needed here because Python ints do not overflow.  The only place where the
spec itself saturates (``h`` when the element shift is negative) is written as a clamp.
"""

from __future__ import annotations

import fractions
import math

import numpy as np

FRAC_BITS = 16
H_LIMIT = 1 << 62


def rsqrt(n: int, s1: int, s2: int, eps_mult: int, eps_shift: int) -> tuple[int, int]:
    """(R, z): 1/sqrt(n*s2 - s1^2 + n^2 * eps_mult * 2^(eps_shift-31)) ~= R * 2^(z/2 - 61)."""
    d = n * s2 - s1 * s1
    assert d >= 0
    tm, te = 0, 0
    if eps_mult > 0:
        p1 = n * eps_mult
        r1 = max(0, p1.bit_length() + n.bit_length() - 62)
        tm = (p1 >> r1) * n
        te = r1 + eps_shift - 31
    if d == 0 and tm == 0:
        return 0, 0
    tops = []
    if d > 0:
        tops.append(d.bit_length() - 1)
    if tm > 0:
        tops.append(tm.bit_length() - 1 + te)
    p = max(tops)
    z = 60 - p if (60 - p) % 2 == 0 else 61 - p

    def floor_scale(x, s):  # floor(x * 2^s), x >= 0
        return x << s if s >= 0 else x >> -s

    w = floor_scale(d, z) + floor_scale(tm, te + z)
    if w >= 1 << 62:
        w >>= 2
        z -= 2
    assert (1 << 60) <= w < (1 << 62)
    s = math.isqrt(w)
    r = ((1 << 61) + s // 2) // s
    assert (1 << 30) < r <= (1 << 31) and z % 2 == 0
    return r, z


def channel(r: int, z: int, mult: int, shift: int) -> tuple[int, int]:
    """(M, k): M = round_half_up(R * mult / 2^32), k = 60 - shift - z/2 - FRAC_BITS."""
    m = (r * mult + (1 << 31)) >> 32
    return m, 60 - shift - z // 2 - FRAC_BITS


def element(a: int, n: int, s1: int, m: int, k: int, bias: int, out_zp: int, act_min: int, act_max: int):
    """(code, saturated) for one code ``a``."""
    p = (n * a - s1) * m
    if k > 0:
        h = (p + (1 << (k - 1))) >> k
    else:
        h = max(-H_LIMIT, min(H_LIMIT, p << -k))
    v = ((h + bias + (1 << (FRAC_BITS - 1))) >> FRAC_BITS) + out_zp
    code = max(act_min, min(act_max, v))
    return code, code != v


def normalize_group(codes, chans, eps_mult, eps_shift, mult, shift, bias, out_zp, act_min, act_max):
    """Normalize one group: ``codes`` (flat ints) with the channel index of each in ``chans``."""
    codes = [int(a) for a in codes]
    n = len(codes)
    s1 = sum(codes)
    s2 = sum(a * a for a in codes)
    r, z = rsqrt(n, s1, s2, int(eps_mult), int(eps_shift))
    out, sats = [], 0
    cache = {}
    for a, c in zip(codes, chans):
        c = int(c)
        if c not in cache:
            cache[c] = channel(r, z, int(mult[c]), int(shift[c]))
        m, k = cache[c]
        code, sat = element(a, n, s1, m, k, int(bias[c]), int(out_zp), int(act_min), int(act_max))
        out.append(code)
        sats += sat
    return out, sats


def group_norm(x, groups, eps_mult, eps_shift, mult, shift, bias, out_zp, act_min, act_max, out_dtype):
    """x [N, C, T] -> (out [N, C, T], saturations [N * groups])."""
    n_batch, n_chan, n_time = x.shape
    cpg = n_chan // groups
    out = np.empty(x.shape, dtype=out_dtype)
    sats = np.zeros(n_batch * groups, dtype=np.int64)
    for b in range(n_batch):
        for g in range(groups):
            block = x[b, g * cpg:(g + 1) * cpg, :]
            chans = np.repeat(np.arange(g * cpg, (g + 1) * cpg), n_time)
            codes, s = normalize_group(block.reshape(-1).tolist(), chans, eps_mult, eps_shift, mult, shift, bias,
                                       out_zp, act_min, act_max)
            out[b, g * cpg:(g + 1) * cpg, :] = np.array(codes).reshape(cpg, n_time)
            sats[b * groups + g] = s
    return out, sats


def layer_norm(x, eps_mult, eps_shift, mult, shift, bias, out_zp, act_min, act_max, out_dtype):
    """x [O, L, I] normalized over L -> (out [O, L, I], saturations [O * I])."""
    n_outer, n_len, n_inner = x.shape
    out = np.empty(x.shape, dtype=out_dtype)
    sats = np.zeros(n_outer * n_inner, dtype=np.int64)
    for o in range(n_outer):
        for i in range(n_inner):
            codes, s = normalize_group(x[o, :, i].tolist(), range(n_len), eps_mult, eps_shift, mult, shift, bias,
                                       out_zp, act_min, act_max)
            out[o, :, i] = codes
            sats[o * n_inner + i] = s
    return out, sats


def group_norm_fast(x, groups, eps_mult, eps_shift, mult, shift, bias, out_zp, act_min, act_max, out_dtype,
                    prevalues=False):
    """Same as ``group_norm`` for large groups: per-group Python ints, elements as object arrays.

    With ``prevalues`` also returns float64 ``(h + bias) / 2^FRAC_BITS + out_zp``: the value that
    the final rounding and clamp act on (for error measurements against float).
    """
    n_batch, n_chan, n_time = x.shape
    cpg = n_chan // groups
    out = np.empty(x.shape, dtype=out_dtype)
    pre = np.empty(x.shape, dtype=np.float64)
    for b in range(n_batch):
        for g in range(groups):
            block = x[b, g * cpg:(g + 1) * cpg, :].astype(np.int64)
            n = block.size
            s1 = int(block.sum())
            s2 = int((block * block).sum())  # |a|^2 * n < 2^63 for the sizes this is used on
            r, z = rsqrt(n, s1, s2, int(eps_mult), int(eps_shift))
            for j in range(cpg):
                c = g * cpg + j
                m, k = channel(r, z, int(mult[c]), int(shift[c]))
                p = (block[j].astype(object) * n - s1) * m
                if k > 0:
                    h = (p + (1 << (k - 1))) >> k
                else:
                    h = np.clip(p * (1 << -k), -H_LIMIT, H_LIMIT)
                hb = h + int(bias[c])
                v = ((hb + (1 << (FRAC_BITS - 1))) >> FRAC_BITS) + int(out_zp)
                out[b, c] = np.clip(v, int(act_min), int(act_max)).astype(out_dtype)
                if prevalues:
                    pre[b, c] = np.array([float(fractions.Fraction(int(t), 1 << FRAC_BITS)) for t in hb]) + out_zp
    return (out, pre) if prevalues else out


def float_norm(x_codes, s_in, zp_in, gamma, beta, eps, s_out, zp_out, act_min, act_max, axes, chan_axis):
    """float64 ``round(Q(gamma*(x-mean)/sqrt(var+eps)+beta))``: biased variance over ``axes``.

    gamma/beta are laid along ``chan_axis`` (an axis or a tuple of axes of ``x_codes``).

    Returns (codes, unclamped real-valued output in code units).
    """
    x = s_in * (x_codes.astype(np.float64) - zp_in)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = [1] * x.ndim
    for ax in np.atleast_1d(chan_axis):  # gamma/beta may span several axes (groups, channels)
        shape[ax] = x.shape[ax]
    g = np.asarray(gamma, dtype=np.float64).reshape(shape)
    bt = np.asarray(beta, dtype=np.float64).reshape(shape)
    denom = np.sqrt(var + eps)
    # 0/0 (constant group, eps 0) is defined as 0, as in the integer spec
    normalized = np.divide(x - mean, denom, out=np.zeros_like(x), where=denom > 0)
    y = g * normalized + bt
    real = y / s_out + zp_out
    return np.clip(np.rint(real), act_min, act_max), real
