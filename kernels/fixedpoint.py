"""Fixed-point primitives as Numba functions on int64 values.

Each function equals its twin in ``intsim.fixedpoint`` (plain Python ints) for every input in its
documented domain; tests check that exhaustively on edge cases and on random cases.  Values are
carried in int64; every narrowing is explicit.  ``//`` is never used on possibly negative values
(Numba floors, C truncates); shifts are arithmetic.
"""

import numpy as np
from numba import njit

# Rounding codes: identical to intsim.fixedpoint.ROUND_*.
ROUND_DOUBLE = 0
ROUND_HALF_UP = 1
ROUND_HALF_EVEN = 2
ROUND_HALF_AWAY = 3
ROUND_FLOOR = 4
ROUND_FLOAT32 = 5

INT32_MIN = -2147483648
INT32_MAX = 2147483647


@njit(cache=True, nogil=True, inline="always")
def wrap_bits(x, bits):
    """Two's-complement wrap of int64 ``x`` to ``bits`` bits (1 <= bits <= 64)."""
    if bits >= 64:
        return np.int64(x)
    half = np.int64(1) << np.int64(bits - 1)
    mask = (np.int64(1) << np.int64(bits)) - np.int64(1)
    return ((np.int64(x) + half) & mask) - half


@njit(cache=True, nogil=True, inline="always")
def fit_accumulator(x, bits, saturating):
    """Accumulator register of ``bits`` bits holding exact int64 sum ``x``: (value, overflowed)."""
    if bits >= 64:
        return np.int64(x), False
    half = np.int64(1) << np.int64(bits - 1)
    if x >= -half and x < half:
        return np.int64(x), False
    if saturating:
        if x < 0:
            return -half, True
        return half - np.int64(1), True
    return wrap_bits(x, bits), True


@njit(cache=True, nogil=True, inline="always")
def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul: round(a*b/2^31) ties up; MIN*MIN saturates."""
    if a == INT32_MIN and b == INT32_MIN:
        return np.int64(INT32_MAX)
    ab = np.int64(a) * np.int64(b)
    if ab >= 0:
        t = ab + np.int64(1073741824)
    else:
        t = ab + np.int64(1 - 1073741824)
    # C truncating division by 2^31.
    if t >= 0:
        return t >> np.int64(31)
    return -((-t) >> np.int64(31))


@njit(cache=True, nogil=True, inline="always")
def rdbp(x, exponent):
    """gemmlowp RoundingDivideByPOT: round(x / 2^exponent), ties away from zero."""
    if exponent == 0:
        return np.int64(x)
    mask = (np.int64(1) << np.int64(exponent)) - np.int64(1)
    remainder = np.int64(x) & mask
    threshold = (mask >> np.int64(1)) + (np.int64(1) if x < 0 else np.int64(0))
    result = np.int64(x) >> np.int64(exponent)
    if remainder > threshold:
        result += np.int64(1)
    return result


@njit(cache=True, nogil=True, inline="always")
def shift_round(x, exponent, rounding):
    """round(x / 2^exponent) by a single-rounding rule; exponent <= 0 shifts left (wrapping)."""
    if exponent <= 0:
        return np.int64(x) << np.int64(-exponent)
    e = np.int64(exponent)
    floor = np.int64(x) >> e
    remainder = np.int64(x) - (floor << e)
    half = np.int64(1) << (e - np.int64(1))
    if rounding == ROUND_HALF_UP:
        if remainder >= half:
            floor += np.int64(1)
    elif rounding == ROUND_HALF_EVEN:
        if remainder > half or (remainder == half and (floor & np.int64(1)) != 0):
            floor += np.int64(1)
    elif rounding == ROUND_HALF_AWAY:
        if remainder > half or (remainder == half and x >= 0):
            floor += np.int64(1)
    return floor


@njit(cache=True, nogil=True, inline="always")
def mbqm_double(x, m, shift):
    """TFLM MultiplyByQuantizedMultiplier: RDBP(SRDHM(wrap32(x << left), M), right)."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    shifted = wrap_bits(np.int64(x) << np.int64(left), 32)
    return rdbp(srdhm(shifted, m), right)


@njit(cache=True, nogil=True, inline="always")
def requantize(x, m, shift, scale, rounding, mult_bits):
    """Scale accumulator ``x`` by multiplier ``(m, shift)`` (or float32 ``scale``); no zero point.

    ROUND_DOUBLE: TFLM double rounding (x must be int32).  ROUND_FLOAT32: ONNX
    round_half_even(float32(x) * float32(scale)).  Otherwise single rounding of
    x * m / 2^(mult_bits - shift) with the given tie rule (|x * m| < 2^63 required).
    """
    if rounding == ROUND_DOUBLE:
        return mbqm_double(x, m, shift)
    if rounding == ROUND_FLOAT32:
        return np.int64(np.rint(np.float32(x) * np.float32(scale)))
    return shift_round(np.int64(x) * np.int64(m), mult_bits - shift, rounding)


@njit(cache=True, nogil=True, inline="always")
def clamp(x, lo, hi):
    """Clamp int64 ``x`` to [lo, hi]; returns (value, saturated)."""
    if x < lo:
        return np.int64(lo), True
    if x > hi:
        return np.int64(hi), True
    return np.int64(x), False


def requant_params(mult, shift, scale, rounding, mult_bits, acc_bits, acc_saturating, out_zp, act_min, act_max,
                   neg_mult=None, neg_shift=None, neg_scale=None, pos_offset=None, neg_offset=None,
                   range_min=None, range_max=None):
    """Pack per-channel requantization data and output rules into the tuple kernels take.

    Layout ``rq = (mult int32[C], shift int32[C], scale float32[C], rounding, mult_bits, acc_bits,
    acc_saturating, out_zp, act_min, act_max, neg_mult int32[C], neg_shift int32[C],
    neg_scale float32[C], pos_offset int64[C], neg_offset int64[C], range_min, range_max)`` with
    the scalars as int64.  ``mult`` must already have ``mult_bits`` fractional bits.

    ``[act_min, act_max]`` is where outputs are clamped (a fused ReLU narrows it); a clamped value
    counts as *saturated* only if it lies outside ``[range_min, range_max]``, the range the output
    dtype can represent (default: the clamp range itself).

    The ``neg_*`` multipliers apply to negative accumulators: a PReLU (slope ``a``) fused into the
    requantization stage uses ``neg_mult ~ a * mult``.  ``pos_offset`` / ``neg_offset`` are added to
    the accumulator after the sign test (in accumulator units); they let a converter place a
    constant after the activation.  By default the negative side equals the positive side and the
    offsets are zero, which is plain TFLite requantization.
    """
    mult = np.ascontiguousarray(mult, dtype=np.int32)
    shift = np.ascontiguousarray(shift, dtype=np.int32)
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    n = mult.shape[0]
    zeros = np.zeros(n, dtype=np.int64)
    return (
        mult,
        shift,
        scale,
        np.int64(rounding),
        np.int64(mult_bits),
        np.int64(acc_bits),
        np.int64(1 if acc_saturating else 0),
        np.int64(out_zp),
        np.int64(act_min),
        np.int64(act_max),
        mult if neg_mult is None else np.ascontiguousarray(neg_mult, dtype=np.int32),
        shift if neg_shift is None else np.ascontiguousarray(neg_shift, dtype=np.int32),
        scale if neg_scale is None else np.ascontiguousarray(neg_scale, dtype=np.float32),
        zeros if pos_offset is None else np.ascontiguousarray(pos_offset, dtype=np.int64),
        zeros if neg_offset is None else np.ascontiguousarray(neg_offset, dtype=np.int64),
        np.int64(act_min if range_min is None else range_min),
        np.int64(act_max if range_max is None else range_max),
    )


@njit(cache=True, nogil=True, inline="always")
def requantize_output(acc, c, rq):
    """Exact sum ``acc`` (bias included) for channel ``c`` -> stored output code.

    reg = accumulator register (acc wrapped or saturated to acc_bits); then, by the sign of reg,
    v = requantize(reg + pos_offset[c], mult[c], shift[c])      if reg >= 0
    v = requantize(reg + neg_offset[c], neg_mult[c], neg_shift[c]) if reg < 0
    code = clamp(v + out_zp, act_min, act_max).
    Returns (code, accumulator_overflowed, output_saturated), where saturated means v + out_zp lay
    outside [range_min, range_max] (the output dtype's range), not merely a fused ReLU's clamp.
    """
    (mult, shift, scale, rounding, mult_bits, acc_bits, acc_saturating, out_zp, act_min, act_max,
     neg_mult, neg_shift, neg_scale, pos_offset, neg_offset, range_min, range_max) = rq
    reg, overflowed = fit_accumulator(acc, acc_bits, acc_saturating != 0)
    if reg >= 0:
        scaled = requantize(reg + pos_offset[c], mult[c], shift[c], scale[c], rounding, mult_bits)
    else:
        scaled = requantize(reg + neg_offset[c], neg_mult[c], neg_shift[c], neg_scale[c], rounding, mult_bits)
    value = scaled + out_zp
    code, _ = clamp(value, act_min, act_max)
    return code, overflowed, value < range_min or value > range_max
