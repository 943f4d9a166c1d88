"""Fixed-point arithmetic in plain Python integers: the readable specification and test oracle.

Every function here works on unbounded Python ints and states its rounding explicitly. The Numba
kernels in ``intsim.kernels.fixedpoint`` implement the same functions on machine integers and are
tested for exact equality against these.

Notation: ``M`` is a signed multiplier with ``mult_bits`` fractional bits (Q0.31 by default), so a
real multiplier ``m`` is represented as ``M * 2**(shift - mult_bits)``.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# Rounding rules for the final right shift of a requantization.  The codes are shared with the
# Numba kernels (plain ints, so they can be passed to jitted functions).
ROUND_DOUBLE = 0  # gemmlowp/TFLM: SRDHM (ties up) then RDBP (ties away from zero)
ROUND_HALF_UP = 1  # single rounding, ties toward +inf (TFLITE_SINGLE_ROUNDING, CMSIS-NN single)
ROUND_HALF_EVEN = 2  # single rounding, ties to even
ROUND_HALF_AWAY = 3  # single rounding, ties away from zero
ROUND_FLOOR = 4  # arithmetic shift right, no rounding
ROUND_FLOAT32 = 5  # ONNX: round_half_even(float32(acc) * float32(scale))

ROUNDING_NAMES = {
    "double": ROUND_DOUBLE,
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "half_away": ROUND_HALF_AWAY,
    "floor": ROUND_FLOOR,
    "float32": ROUND_FLOAT32,
}


def wrap(x: int, bits: int) -> int:
    """Two's-complement wrap of ``x`` to a signed ``bits``-bit integer."""
    half = 1 << (bits - 1)
    return ((x + half) % (1 << bits)) - half


def saturate(x: int, bits: int) -> int:
    """Clamp ``x`` to the signed ``bits``-bit range."""
    half = 1 << (bits - 1)
    return max(-half, min(half - 1, x))


def fit_accumulator(x: int, bits: int, saturating: bool) -> tuple[int, bool]:
    """Model a ``bits``-wide accumulator register holding the exact sum ``x``.

    Returns ``(value, overflowed)``: the register's content (wrapped or saturated) and whether the
    exact sum did not fit.  ``bits >= 64`` models an accumulator that never overflows here.
    """
    if bits >= 64:
        return x, False
    fits = -(1 << (bits - 1)) <= x < (1 << (bits - 1))
    if fits:
        return x, False
    return (saturate(x, bits) if saturating else wrap(x, bits)), True


def round_half_away(v: float) -> int:
    """C ``std::round``: ties away from zero (what TFLite's ``TfLiteRound`` does on doubles)."""
    f = math.floor(abs(v) + 0.5)
    return int(f) if v >= 0 else -int(f)


def quantize_multiplier(real: float, mult_bits: int = 31) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real = M * 2**(shift - 31)`` with ``M`` in [2^30, 2^31).

    ``M = round_half_away(q * 2^31)`` where ``real = q * 2^shift``, ``q`` in [0.5, 1) (frexp).  If the
    rounding carries to 2^31, ``M`` is halved and ``shift`` incremented.  Multipliers whose shift is
    below -31 flush to (0, 0).  Negative reals give negative ``M``.  With ``mult_bits < 31`` the
    31-bit multiplier is then reduced as ``reduce_multiplier`` describes.
    """
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real):
        raise ValueError(f"multiplier must be finite, got {real!r}")
    q, shift = math.frexp(real)
    m = round_half_away(q * (1 << 31))
    if abs(m) == 1 << 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if mult_bits < 31:
        m = reduce_multiplier(m, mult_bits)
    return m, shift


def reduce_multiplier(m31: int, mult_bits: int) -> int:
    """Round a Q0.31 multiplier to ``mult_bits`` fractional bits, ties up, saturating.

    For ``mult_bits = 15`` this is TFLite's int16x8 "reduced multiplier"
    ``(M + 2^15) >> 16`` (saturated to 0x7FFF when ``M >= 0x7FFF0000``).
    """
    drop = 31 - mult_bits
    if drop <= 0:
        return m31
    top = (1 << mult_bits) - 1
    reduced = (m31 + (1 << (drop - 1))) >> drop
    return max(-top - 1, min(top, reduced))


def srdhm(a: int, b: int) -> int:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32: round(a*b / 2^31), ties toward +inf.

    The only overflowing case, ``INT32_MIN * INT32_MIN``, saturates to ``INT32_MAX``.
    """
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    # C++ integer division truncates toward zero.
    return _trunc_div(ab + nudge, 1 << 31)


def rdbp(x: int, exponent: int) -> int:
    """gemmlowp ``RoundingDivideByPOT``: round(x / 2^exponent), ties away from zero."""
    if exponent == 0:
        return x
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def shift_round(x: int, exponent: int, rounding: int) -> int:
    """Round ``x / 2^exponent`` by a single-rounding rule (``exponent >= 0``)."""
    if exponent <= 0:
        return x << (-exponent)
    floor = x >> exponent
    remainder = x - (floor << exponent)
    half = 1 << (exponent - 1)
    if rounding == ROUND_FLOOR:
        return floor
    if rounding == ROUND_HALF_UP:
        return floor + (1 if remainder >= half else 0)
    if rounding == ROUND_HALF_AWAY:
        if remainder > half or (remainder == half and x >= 0):
            return floor + 1
        return floor
    if rounding == ROUND_HALF_EVEN:
        if remainder > half or (remainder == half and (floor & 1)):
            return floor + 1
        return floor
    raise ValueError(f"shift_round does not implement rounding code {rounding}")


def mbqm_double(x: int, m: int, shift: int) -> int:
    """TFLite/TFLM ``MultiplyByQuantizedMultiplier`` (int32, default double-rounding build).

    ``RDBP(SRDHM(x * 2^max(shift,0), M), max(-shift,0))``.  ``x * 2^left`` is wrapped to int32
    (C leaves this overflow undefined; hardware wraps).
    """
    left = max(shift, 0)
    right = max(-shift, 0)
    return rdbp(srdhm(wrap(x << left, 32), m), right)


def mbqm_single(x: int, m: int, shift: int, mult_bits: int = 31, rounding: int = ROUND_HALF_UP) -> int:
    """Single-rounding requantization ``round(x * M / 2^(mult_bits - shift))``.

    With ``mult_bits = 31`` and ties up this is TFLITE_SINGLE_ROUNDING's
    ``(x*M + 2^(30-shift)) >> (31-shift)``; with ``mult_bits = 15`` and ``M`` the reduced multiplier
    it is TFLite's int64 (int16x8) ``MultiplyByQuantizedMultiplier``.  The product is exact.
    """
    return shift_round(x * m, mult_bits - shift, rounding)


def requant_float32(x: int, scale: float) -> int:
    """ONNX Runtime / onnx.reference requant: ``round_half_even(float32(x) * float32(scale))``."""
    product = np.float32(x) * np.float32(scale)
    return int(np.rint(product))


def requantize(x: int, m: int, shift: int, scale: float, rounding: int, mult_bits: int = 31) -> int:
    """Scale an accumulator by a stored multiplier with the given rounding rule (no zero point)."""
    if rounding == ROUND_DOUBLE:
        return mbqm_double(x, m, shift)
    if rounding == ROUND_FLOAT32:
        return requant_float32(x, scale)
    return mbqm_single(x, m, shift, mult_bits, rounding)


def _trunc_div(a: int, b: int) -> int:
    """C-style integer division (truncates toward zero); ``b > 0``."""
    q = abs(a) // b
    return q if a >= 0 else -q
