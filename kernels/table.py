"""Table-based nonlinearities: 256-entry int8 tables, TFLite's interpolated int16 LUT, and TFLite
Micro's LOGISTIC / TANH integer kernels (int8: gemmlowp fixed point; int16: interpolated
``sigmoid_table_uint16``).

All kernels work on flat 1-D arrays (the caller ravels contiguous inputs) and write a preallocated
``out`` of the same length.  Each has a ``_parallel`` twin compiled from the same source; the work
is split into independent chunks of ``chunk`` elements (``prange`` over chunks).

lut8(x, table, offset, chunk, out)
    ``out[i] = table[x[i] + offset]``: ``offset = 128`` for int8 codes (``table[0]`` is the output
    for code -128), ``0`` for uint8 codes.  (TFLite stores its int8 tables in uint8-cast order
    [0..127, -128..-1]; ours are in code order.)

lut16(x, table, chunk, out)
    TFLite's generic int16 interpolated lookup (``LUTLookup(int16_t, const int16_t*)``) on a
    513-entry table: ``index = 256 + (v >> 7)``, ``offset = v & 0x7f``,
    ``slope = int16(table[index+1] - table[index])``,
    ``out = int16(table[index] + ((slope * offset + 64) >> 7))`` (arithmetic shift = floor, so the
    delta rounds half up; both int16 narrowings wrap as the C casts do).

tflm_logistic_int16(x, input_multiplier, input_left_shift, chunk, out)
tflm_tanh_int16(x, input_multiplier, input_left_shift, chunk, out)
    TFLM ``reference_integer_ops::Logistic/Tanh`` for int16 with the parameters TFLM's Prepare
    derives (``intsim.quantize.tflm_logistic_int16_params`` / ``tflm_tanh_int16_params``);
    ``input_multiplier == 0`` selects the power-of-two case (multiplier ``3 << input_left_shift``,
    shift 0).  Input zero point 0, output scale 2^-15, zero point 0.

tflm_logistic_int8(x, input_zero_point, input_range_radius, input_multiplier, input_left_shift, chunk, out)
tflm_tanh_int8(...same...)
    TFLM ``reference_integer_ops::Logistic/Tanh`` for int8: inputs outside the range radius
    saturate; otherwise ``MultiplyByQuantizedMultiplier(x - zp, M, shift)`` gives a Q4.27 value,
    gemmlowp's fixed-point ``logistic`` / ``tanh`` gives Q0.31, and ``RoundingDivideByPOT`` by 23
    (logistic, then -128) or 24 (tanh) gives the int8 code, clamped.  Output (1/256, -128) for
    logistic and (1/128, 0) for tanh.  ``input_left_shift >= 0`` (as TFLM's radius computation
    requires); then single and double rounding of the input rescale agree, so no rounding argument.
    The op adapter evaluates this once on all 256 codes (``tflm_int8_table(kind, zp, radius,
    multiplier, left_shift)`` -> int8[256] in code order) and runs ``lut8``.

Arithmetic: every value is carried in int64; C's int32/uint32/int16 narrowings are reproduced
explicitly (``_wrap32``, ``_wrap16``) where the C code could wrap.
"""

import numpy as np
from numba import njit, prange

from .fixedpoint import mbqm_double, rdbp, srdhm
from .jit import serial_and_parallel

CHUNK = 16384

def _sigmoid_table_uint16():
    """sigmoid(i/24) in Q0.16 for i = 0..255, the table of TFLite's int16 logistic and tanh.

    Each entry is midpoint-corrected for linear interpolation: f(i) + e(i)/2, where
    e(i) = f(i + 1/2) - (f(i) + f(i+1))/2 is the interpolation error at the interval's midpoint,
    rounded to nearest in float64; the last entry is the saturated value 65535.  This formula
    reproduces TFLite's ``sigmoid_table_uint16`` entry for entry (tests pin its checksum).
    """
    i = np.arange(256, dtype=np.float64)

    def f(x):
        return 65536.0 / (1.0 + np.exp(-x / 24.0))

    corrected = f(i) + (f(i + 0.5) - (f(i) + f(i + 1.0)) / 2.0) / 2.0
    table = np.round(corrected).astype(np.int64)
    table[255] = 65535
    return table


SIGMOID_TABLE_UINT16 = _sigmoid_table_uint16()

# gemmlowp exp_on_negative_values barrel-shifter constants: exp(-2^k) in Q0.31 for k = -2..4.
_EXP_BARREL = np.array([1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242], dtype=np.int64)

INT32_MIN = -2147483648
INT32_MAX = 2147483647


def n_chunks(n, chunk=CHUNK):
    """Number of work items a flat kernel splits ``n`` elements into."""
    return (n + chunk - 1) // chunk


@njit(cache=True, nogil=True, inline="always")
def _wrap32(x):
    return ((np.int64(x) + np.int64(2147483648)) & np.int64(0xFFFFFFFF)) - np.int64(2147483648)


@njit(cache=True, nogil=True, inline="always")
def _wrap16(x):
    return ((np.int64(x) + np.int64(32768)) & np.int64(0xFFFF)) - np.int64(32768)


# ---------------------------------------------------------------- plain tables


def _lut8(x, table, offset, chunk, out):
    n = x.size
    for k in prange((n + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            out[i] = table[np.int64(x[i]) + offset]


lut8, lut8_parallel = serial_and_parallel(_lut8)


@njit(cache=True, nogil=True, inline="always")
def lut16_value(v, table):
    """TFLite LUTLookup(int16) for one int16 value ``v`` on a 513-entry table."""
    v = np.int64(v)
    index = np.int64(256) + (v >> np.int64(7))
    offset = v & np.int64(0x7F)
    base = np.int64(table[index])
    slope = _wrap16(np.int64(table[index + 1]) - base)
    delta = (slope * offset + np.int64(64)) >> np.int64(7)
    return _wrap16(base + delta)


def _lut16(x, table, chunk, out):
    n = x.size
    for k in prange((n + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            out[i] = lut16_value(x[i], table)


lut16, lut16_parallel = serial_and_parallel(_lut16)


# ---------------------------------------------------------------- TFLM int16 logistic / tanh


@njit(cache=True, nogil=True, inline="always")
def _pot_params(input_multiplier, input_left_shift):
    """TFLM: multiplier 0 means the power-of-two case, multiplier 3 << shift and shift 0."""
    mult = np.int64(input_multiplier)
    shift = np.int64(input_left_shift)
    if mult == 0:
        mult = np.int64(3) << shift
        shift = np.int64(0)
    rnd = (np.int64(1) << (shift - np.int64(1))) if shift > 0 else np.int64(0)
    return mult, shift, rnd


@njit(cache=True, nogil=True, inline="always")
def tflm_logistic_int16_value(x, mult, shift, rnd):
    """One int16 input; ``mult, shift, rnd`` from ``_pot_params``."""
    v = _wrap32(np.int64(x) * mult + rnd) >> shift  # int32 input_data
    a = -v if v < 0 else v  # uint32 abs
    uh = a >> np.int64(9)
    if uh >= 255:
        r = np.int64(0x7FFF) << np.int64(10)
    else:
        ua = SIGMOID_TABLE_UINT16[uh]
        ub = SIGMOID_TABLE_UINT16[uh + 1]
        ut = a & np.int64(0x1FF)
        r = (ua << np.int64(9)) + ut * (ub - ua)
    if v >= 0:
        r = r + np.int64(1 << 9)
    else:
        r = (np.int64(1) << np.int64(25)) - r + np.int64(1 << 9) - np.int64(1)
    r = (r & np.int64(0xFFFFFFFF)) >> np.int64(10)  # uint32 logical shift
    return _wrap16(r)


@njit(cache=True, nogil=True, inline="always")
def tflm_tanh_int16_value(x, mult, shift, rnd):
    """One int16 input; ``mult, shift, rnd`` from ``_pot_params``."""
    v = _wrap32(np.int64(x) * mult + rnd) >> shift
    a = -v if v < 0 else v
    uh = a >> np.int64(8)
    if uh >= 255:
        r = np.int64(0xFFFF) << np.int64(8)
    else:
        ua = SIGMOID_TABLE_UINT16[uh]
        ub = SIGMOID_TABLE_UINT16[uh + 1]
        ut = a & np.int64(0xFF)
        r = (ua << np.int64(8)) + ut * (ub - ua)
    if v >= 0:
        r = r - np.int64(1 << 23) + np.int64(1 << 7)
    else:
        r = -r + np.int64(1 << 23) + np.int64(1 << 7) - np.int64(1)
    r = _wrap32(r) >> np.int64(8)  # int32 arithmetic shift
    return _wrap16(r)


def _tflm_logistic_int16(x, input_multiplier, input_left_shift, chunk, out):
    mult, shift, rnd = _pot_params(input_multiplier, input_left_shift)
    n = x.size
    for k in prange((n + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            out[i] = tflm_logistic_int16_value(x[i], mult, shift, rnd)


def _tflm_tanh_int16(x, input_multiplier, input_left_shift, chunk, out):
    mult, shift, rnd = _pot_params(input_multiplier, input_left_shift)
    n = x.size
    for k in prange((n + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            out[i] = tflm_tanh_int16_value(x[i], mult, shift, rnd)


tflm_logistic_int16, tflm_logistic_int16_parallel = serial_and_parallel(_tflm_logistic_int16)
tflm_tanh_int16, tflm_tanh_int16_parallel = serial_and_parallel(_tflm_tanh_int16)


# ---------------------------------------------------------------- gemmlowp fixed point (int32 raw)


@njit(cache=True, nogil=True, inline="always")
def _sat_shl(x, e):
    """gemmlowp SaturatingRoundingMultiplyByPOT<e> for e > 0 on int32: saturating left shift."""
    threshold = (np.int64(1) << np.int64(31 - e)) - np.int64(1)
    if x > threshold:
        return np.int64(INT32_MAX)
    if x < -threshold:
        return np.int64(INT32_MIN)
    return np.int64(x) << np.int64(e)


@njit(cache=True, nogil=True, inline="always")
def _rounding_half_sum(a, b):
    """gemmlowp RoundingHalfSum on int32: (a + b + sign) / 2 with C truncating division."""
    s = np.int64(a) + np.int64(b)
    s = s + (np.int64(1) if s >= 0 else np.int64(-1))
    q = (-s) >> np.int64(1) if s < 0 else s >> np.int64(1)
    return -q if s < 0 else q


@njit(cache=True, nogil=True, inline="always")
def _exp_on_interval(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (gemmlowp Taylor expansion around -1/8)."""
    constant_term = np.int64(1895147668)  # exp(-1/8)
    one_third = np.int64(715827883)
    x = _wrap32(a + np.int64(1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbp(x4, 2)
    poly = rdbp(_wrap32(srdhm(_wrap32(x4_over_4 + x3), one_third) + x2), 1)
    return _wrap32(constant_term + srdhm(constant_term, _wrap32(x + poly)))


@njit(cache=True, nogil=True, inline="always")
def gemmlowp_exp_on_negative_values(a, int_bits):
    """exp(a) for a <= 0 given as raw int32 with ``int_bits`` integer bits (1..5); Q0.31 result."""
    frac_bits = 31 - int_bits
    quarter = np.int64(1) << np.int64(frac_bits - 2)
    mask = quarter - np.int64(1)
    a_mod = _wrap32((np.int64(a) & mask) - quarter)
    result = _exp_on_interval(_sat_shl(a_mod, int_bits))
    remainder = _wrap32(a_mod - a)
    for k in range(7):
        exponent = k - 2
        if int_bits > exponent:
            if (remainder & (np.int64(1) << np.int64(frac_bits + exponent))) != 0:
                result = srdhm(result, _EXP_BARREL[k])
    # (gemmlowp clamps to 0 below -32 only for more than 5 integer bits.)
    if a == 0:
        result = np.int64(INT32_MAX)
    return result


@njit(cache=True, nogil=True, inline="always")
def _newton_reciprocal_f2(a):
    """Shared Newton-Raphson of gemmlowp's one_over_one_plus_x / one_minus_x_over_one_plus_x.

    Returns x ~ 1 / half_denominator in Q2.29, half_denominator = (1 + a) / 2."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    x = _wrap32(np.int64(1515870810) + srdhm(half_denominator, np.int64(-1010580540)))
    one_f2 = np.int64(1 << 29)
    for _ in range(3):
        hdx = srdhm(half_denominator, x)
        one_minus = _wrap32(one_f2 - hdx)
        x = _wrap32(x + _sat_shl(srdhm(x, one_minus), 2))
    return x


@njit(cache=True, nogil=True, inline="always")
def gemmlowp_logistic(a, int_bits):
    """gemmlowp logistic of a raw int32 with ``int_bits`` integer bits; Q0.31 result."""
    if a == 0:
        return np.int64(1 << 30)
    abs_a = np.int64(a) if a > 0 else _wrap32(-np.int64(a))
    e = gemmlowp_exp_on_negative_values(_wrap32(-abs_a), int_bits)
    positive = _sat_shl(_newton_reciprocal_f2(e), 1)  # Rescale<0>(ExactMulByPot<-1>(x)): F1 -> F0
    if a > 0:
        return positive
    return _wrap32(np.int64(INT32_MAX) - positive)


@njit(cache=True, nogil=True, inline="always")
def gemmlowp_tanh(a, int_bits):
    """gemmlowp tanh of a raw int32 with ``int_bits`` integer bits (<= 4); Q0.31 result."""
    if a == 0:
        return np.int64(0)
    n = np.int64(a) if a < 0 else _wrap32(-np.int64(a))
    # neg_tanh_on_negative_values: exp of 2n (ExactMulByPot<1>: same raw, one more integer bit)
    e = gemmlowp_exp_on_negative_values(n, int_bits + 1)
    x = _newton_reciprocal_f2(e)
    t = _sat_shl(_wrap32(x - np.int64(1 << 29)), 2)  # Rescale<0>(x - 1): F2 -> F0
    if a < 0:
        return _wrap32(-t)
    return t


@njit(cache=True, nogil=True, inline="always")
def tflm_logistic_int8_value(x, zero_point, radius, multiplier, left_shift):
    v = np.int64(x) - zero_point
    if v <= -radius:
        return np.int64(-128)
    if v >= radius:
        return np.int64(127)
    q4 = mbqm_double(v, multiplier, left_shift)
    r = rdbp(gemmlowp_logistic(q4, 4), 23) - np.int64(128)
    return min(max(r, np.int64(-128)), np.int64(127))


@njit(cache=True, nogil=True, inline="always")
def tflm_tanh_int8_value(x, zero_point, radius, multiplier, left_shift):
    v = np.int64(x) - zero_point
    if v <= -radius:
        return np.int64(-128)
    if v >= radius:
        return np.int64(127)
    q4 = mbqm_double(v, multiplier, left_shift)
    r = rdbp(gemmlowp_tanh(q4, 4), 24)
    return min(max(r, np.int64(-128)), np.int64(127))


def _tflm_logistic_int8(x, input_zero_point, input_range_radius, input_multiplier, input_left_shift, chunk, out):
    n = x.size
    for k in prange((n + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            out[i] = tflm_logistic_int8_value(x[i], input_zero_point, input_range_radius, input_multiplier,
                                              input_left_shift)


def _tflm_tanh_int8(x, input_zero_point, input_range_radius, input_multiplier, input_left_shift, chunk, out):
    n = x.size
    for k in prange((n + chunk - 1) // chunk):
        lo = k * chunk
        hi = min(lo + chunk, n)
        for i in range(lo, hi):
            out[i] = tflm_tanh_int8_value(x[i], input_zero_point, input_range_radius, input_multiplier,
                                          input_left_shift)


tflm_logistic_int8, tflm_logistic_int8_parallel = serial_and_parallel(_tflm_logistic_int8)
tflm_tanh_int8, tflm_tanh_int8_parallel = serial_and_parallel(_tflm_tanh_int8)


def tflm_int8_table(kind, input_zero_point, input_range_radius, input_multiplier, input_left_shift):
    """The 256-entry int8 table (code order, index = code + 128) of TFLM's int8 logistic or tanh."""
    kernels = {"logistic": tflm_logistic_int8, "tanh": tflm_tanh_int8}
    codes = np.arange(-128, 128, dtype=np.int8)
    out = np.empty(256, dtype=np.int8)
    kernels[kind](codes, np.int64(input_zero_point), np.int64(input_range_radius), np.int64(input_multiplier),
                  np.int64(input_left_shift), CHUNK, out)
    return out
