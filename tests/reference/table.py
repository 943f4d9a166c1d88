"""Naive references of kernels.table in plain Python ints, transcribed line by line from the C code
(TFLite ``LUTLookup``, TFLM ``reference_integer_ops::Logistic/Tanh``, gemmlowp ``fixedpoint.h``).

C integer types are modelled explicitly: ``i32`` / ``i16`` wrap like two's-complement narrowing,
``u32`` masks to 32 bits; ``>>`` on Python ints is arithmetic like the C shifts used here.
"""

from intsim import fixedpoint as fp
from intsim.kernels.table import SIGMOID_TABLE_UINT16

SIGMOID = [int(v) for v in SIGMOID_TABLE_UINT16]
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def i32(x):
    return fp.wrap(x, 32)


def i16(x):
    return fp.wrap(x, 16)


def u32(x):
    return x & 0xFFFFFFFF


def lut8(x, table, offset):
    return [int(table[int(v) + offset]) for v in x]


def lut16(value, table):
    """TFLite LUTLookup(int16_t value, const int16_t* lut)."""
    index = 256 + (value >> 7)
    assert 0 <= index < 512
    offset = value & 0x7F
    base = int(table[index])
    slope = i16(int(table[index + 1]) - int(table[index]))
    delta = (slope * offset + 64) >> 7
    return i16(base + delta)


def _pot(input_multiplier, input_left_shift):
    if input_multiplier == 0:
        return 3 << input_left_shift, 0
    return input_multiplier, input_left_shift


def tflm_logistic_int16(x, input_multiplier, input_left_shift):
    mult, shift = _pot(input_multiplier, input_left_shift)
    rnd = (1 << (shift - 1)) if shift > 0 else 0
    input_data = i32(x * mult + rnd) >> shift
    abs_input = u32(abs(input_data))
    uh = abs_input >> 9
    if uh >= 255:
        result = u32(0x7FFF << 10)
    else:
        ua, ub = SIGMOID[uh], SIGMOID[uh + 1]
        ut = abs_input & 0x1FF
        result = u32((ua << 9) + ut * u32(ub - ua))
    if input_data >= 0:
        result = u32(result + (1 << 9))
    else:
        result = u32((1 << (16 + 9)) - result + (1 << 9) - 1)
    result >>= 10
    return i16(result)


def tflm_tanh_int16(x, input_multiplier, input_left_shift):
    mult, shift = _pot(input_multiplier, input_left_shift)
    rnd = (1 << (shift - 1)) if shift > 0 else 0
    input_data = i32(x * mult + rnd) >> shift
    abs_input = u32(abs(input_data))
    uh = abs_input >> 8
    if uh >= 255:
        result = i32(0xFFFF << 8)
    else:
        ua, ub = SIGMOID[uh], SIGMOID[uh + 1]
        ut = abs_input & 0xFF
        result = i32(u32((ua << 8) + ut * u32(ub - ua)))
    if input_data >= 0:
        result = i32(result - (1 << (14 + 9)) + (1 << (9 - 2)))
    else:
        result = i32(-result + (1 << (14 + 9)) + (1 << (9 - 2)) - 1)
    result >>= 9 - 1
    return i16(result)


# ---------------------------------------------------------------- gemmlowp FixedPoint<int32, IntegerBits>


class FP:
    """A gemmlowp FixedPoint<int32_t, ibits> value: raw int32 with 31 - ibits fractional bits."""

    def __init__(self, raw, ibits):
        self.raw = i32(raw)
        self.ibits = ibits

    @property
    def frac(self):
        return 31 - self.ibits

    def __add__(self, o):
        assert o.ibits == self.ibits
        return FP(self.raw + o.raw, self.ibits)

    def __sub__(self, o):
        assert o.ibits == self.ibits
        return FP(self.raw - o.raw, self.ibits)

    def __neg__(self):
        return FP(-self.raw, self.ibits)

    def __mul__(self, o):  # integer bits add up
        return FP(fp.srdhm(self.raw, o.raw), self.ibits + o.ibits)


def one(ibits):
    return FP(I32_MAX if ibits == 0 else 1 << (31 - ibits), ibits)


def constant_pot(exponent, ibits):
    return FP(1 << (31 - ibits + exponent), ibits)


def srm_pot(raw, exponent):
    """SaturatingRoundingMultiplyByPOT<exponent> on an int32 raw value."""
    if exponent == 0:
        return raw
    if exponent < 0:
        return fp.rdbp(raw, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if raw > threshold:
        return I32_MAX
    if raw < -threshold:
        return I32_MIN
    return raw * 2**exponent


def rescale(x, dst_ibits):
    return FP(srm_pot(x.raw, x.ibits - dst_ibits), dst_ibits)


def exact_mul_by_pot(x, exponent):
    return FP(x.raw, x.ibits + exponent)


def rounding_half_sum(a, b):
    s = a.raw + b.raw
    sign = 1 if s >= 0 else -1
    q = abs(s + sign) // 2
    return FP(q if s + sign >= 0 else -q, a.ibits)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    constant_term = FP(1895147668, 0)
    constant_1_over_3 = FP(715827883, 0)
    x = a + constant_pot(-3, 0)
    x2 = x * x
    x3 = x2 * x
    x4 = x2 * x2
    x4_over_4 = FP(srm_pot(x4.raw, -2), 0)
    poly = FP(srm_pot((((x4_over_4 + x3) * constant_1_over_3) + x2).raw, -1), 0)
    return constant_term + constant_term * (x + poly)


BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242)]


def exp_on_negative_values(a):
    ibits, frac = a.ibits, a.frac
    one_quarter = constant_pot(-2, ibits)
    mask = one_quarter - FP(1, ibits)
    a_mod = FP(a.raw & mask.raw, ibits) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(a_mod, 0))
    remainder = (a_mod - a).raw
    for exponent, multiplier in BARREL:
        if ibits > exponent and remainder & (1 << (frac + exponent)):
            result = result * FP(multiplier, 0)
    if ibits > 5:
        clamp = FP(-(1 << (36 - ibits)), ibits)
        if a.raw < clamp.raw:
            result = FP(0, 0)
    if a.raw == 0:
        result = one(0)
    return result


def _newton(a):
    half_denominator = rounding_half_sum(a, one(0))
    x = FP(1515870810, 2) + half_denominator * FP(-1010580540, 2)
    for _ in range(3):
        half_denominator_times_x = half_denominator * x
        one_minus_half_denominator_times_x = one(2) - half_denominator_times_x
        x = x + rescale(x * one_minus_half_denominator_times_x, 2)
    return x


def one_over_one_plus_x_for_x_in_0_1(a):
    return rescale(exact_mul_by_pot(_newton(a), -1), 0)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a):
    return rescale(_newton(a) - one(2), 0)


def logistic(a):
    abs_input = a if a.raw > 0 else -a
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs_input))
    result_if_negative = one(0) - result_if_positive
    if a.raw == 0:
        return FP(1 << 30, 0)
    return result_if_positive if a.raw > 0 else result_if_negative


def tanh(a):
    n = a if a.raw < 0 else -a
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(exact_mul_by_pot(n, 1)))
    if a.raw == 0:
        return FP(0, 0)
    return -t if a.raw < 0 else t


def tflm_logistic_int8(x, zero_point, radius, multiplier, left_shift):
    v = x - zero_point
    if v <= -radius:
        return -128
    if v >= radius:
        return 127
    q4 = fp.mbqm_double(v, multiplier, left_shift)
    out = fp.rdbp(logistic(FP(q4, 4)).raw, 31 - 8) - 128
    return max(-128, min(127, out))


def tflm_tanh_int8(x, zero_point, radius, multiplier, left_shift):
    v = x - zero_point
    if v <= -radius:
        return -128
    if v >= radius:
        return 127
    q4 = fp.mbqm_double(v, multiplier, left_shift)
    out = fp.rdbp(tanh(FP(q4, 4)).raw, 31 - 7)
    return max(-128, min(127, out))
