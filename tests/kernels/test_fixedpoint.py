"""Numba fixed-point primitives == the plain-Python-int spec, exhaustively on edge cases."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from intsim import fixedpoint as fp
from intsim.kernels import fixedpoint as kfp

I32 = [fp.INT32_MIN, fp.INT32_MIN + 1, -(2**30) - 1, -(2**30), -(2**30) + 1, -65536, -32769, -32768, -257, -256,
       -255, -129, -128, -127, -2, -1, 0, 1, 2, 127, 128, 255, 256, 32767, 32768, 65535, 2**30 - 1, 2**30,
       2**30 + 1, fp.INT32_MAX - 1, fp.INT32_MAX]
MULTS = [0, 1, 2**15, 2**30 - 1, 2**30, 2**30 + 1, 1518500250, 2**31 - 2, fp.INT32_MAX, -(2**30), fp.INT32_MIN]
SHIFTS = list(range(-31, 8))
ROUNDINGS = [fp.ROUND_HALF_UP, fp.ROUND_HALF_EVEN, fp.ROUND_HALF_AWAY, fp.ROUND_FLOOR]


@njit
def _srdhm_all(a, b, out):
    for i in range(a.size):
        out[i] = kfp.srdhm(a[i], b[i])


@njit
def _rdbp_all(x, e, out):
    for i in range(x.size):
        out[i] = kfp.rdbp(x[i], e[i])


@njit
def _requantize_all(x, m, s, scale, rounding, mult_bits, out):
    for i in range(x.size):
        out[i] = kfp.requantize(x[i], m[i], s[i], scale[i], rounding, mult_bits)


@njit
def _fit_all(x, bits, saturating, out, flags):
    for i in range(x.size):
        v, f = kfp.fit_accumulator(x[i], bits, saturating)
        out[i] = v
        flags[i] = f


def test_srdhm_edge_cases_exhaustive():
    pairs = np.array(list(itertools.product(I32, I32 + MULTS)), dtype=np.int64)
    out = np.empty(len(pairs), dtype=np.int64)
    _srdhm_all(pairs[:, 0], pairs[:, 1], out)
    expected = [fp.srdhm(int(a), int(b)) for a, b in pairs]
    assert out.tolist() == expected
    assert fp.srdhm(fp.INT32_MIN, fp.INT32_MIN) == fp.INT32_MAX


def test_srdhm_ties_round_up():
    # a*b / 2^31 = k + 0.5 exactly: gemmlowp rounds toward +inf for positives, and for negatives
    # the nudge 1-2^30 with truncation also lands on the value nearer +inf.
    assert fp.srdhm(1, 2**30) == 1  # 0.5 -> 1
    assert fp.srdhm(-1, 2**30) == 0  # -0.5 -> 0
    assert fp.srdhm(3, 2**30) == 2  # 1.5 -> 2
    assert fp.srdhm(-3, 2**30) == -1  # -1.5 -> -1


def test_rdbp_edge_cases_exhaustive():
    cases = np.array(list(itertools.product(I32, range(0, 32))), dtype=np.int64)
    out = np.empty(len(cases), dtype=np.int64)
    _rdbp_all(cases[:, 0], cases[:, 1], out)
    assert out.tolist() == [fp.rdbp(int(x), int(e)) for x, e in cases]


def test_rdbp_matches_round_half_away_from_zero():
    for x in range(-1000, 1001):
        for e in range(0, 6):
            q = x / 2**e
            assert fp.rdbp(x, e) == (math.floor(q + 0.5) if q >= 0 else -math.floor(-q + 0.5))


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_shift_round_against_fractions(rounding):
    from fractions import Fraction

    for x in range(-300, 301):
        for e in range(1, 6):
            q = Fraction(x, 2**e)
            fl = math.floor(q)
            frac = q - fl
            if rounding == fp.ROUND_FLOOR:
                want = fl
            elif frac != Fraction(1, 2):
                want = fl + (1 if frac > Fraction(1, 2) else 0)
            elif rounding == fp.ROUND_HALF_UP:
                want = fl + 1
            elif rounding == fp.ROUND_HALF_EVEN:
                want = fl + (fl % 2)
            else:  # half away from zero
                want = fl + 1 if q > 0 else fl
            assert fp.shift_round(x, e, rounding) == want, (x, e, rounding)


def _requant_cases():
    rng = np.random.default_rng(1)
    xs, ms, ss = [], [], []
    for x, m, s in itertools.product(I32, MULTS, [-31, -20, -12, -8, -1, 0, 1, 3]):
        xs.append(x), ms.append(m), ss.append(s)
    n = 50_000
    xs += rng.integers(-(2**31), 2**31, n).tolist()
    ms += rng.integers(2**30, 2**31, n).tolist()
    ss += rng.integers(-31, 4, n).tolist()
    return np.array(xs, np.int64), np.array(ms, np.int64), np.array(ss, np.int64)


@pytest.mark.parametrize("rounding", [fp.ROUND_DOUBLE] + ROUNDINGS)
def test_requantize_matches_spec(rounding):
    x, m, s = _requant_cases()
    if rounding != fp.ROUND_DOUBLE:
        x = x >> 1  # single rounding needs |x*M| < 2^63: keep x within 31 bits
    scale = np.zeros(len(x), np.float32)
    out = np.empty(len(x), np.int64)
    _requantize_all(x, m, s, scale, rounding, 31, out)
    expected = [fp.requantize(int(a), int(b), int(c), 0.0, rounding) for a, b, c in zip(x, m, s)]
    assert out.tolist() == expected


def test_double_and_single_rounding_agree_except_on_ties():
    x, m, s = _requant_cases()
    x = x >> 8
    double = np.array([fp.mbqm_double(int(a), int(b), int(c)) for a, b, c in zip(x, m, s)])
    single = np.array([fp.mbqm_single(int(a), int(b), int(c)) for a, b, c in zip(x, m, s)])
    diff = np.abs(double - single)
    assert diff.max() <= 1
    assert 0 < np.count_nonzero(diff) < 0.1 * len(x)


def test_reduced_multiplier_path_matches_tflite_int64_formula():
    # TFLite MultiplyByQuantizedMultiplier(int64 x, M, shift) for the 16x8 path.
    rng = np.random.default_rng(2)
    for _ in range(20_000):
        x = int(rng.integers(-(2**47), 2**47))
        m = int(rng.integers(2**30, 2**31))
        shift = int(rng.integers(-31, 8))
        rm = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
        total = 15 - shift
        want = (x * rm + (1 << (total - 1))) >> total
        assert fp.mbqm_single(x, fp.reduce_multiplier(m, 15), shift, 15, fp.ROUND_HALF_UP) == want


def test_float32_requant_is_round_half_even_in_float32():
    x = np.array([5, -5, 7, -7, 3, 2**24 + 1, -(2**24) - 3], np.int64)
    scale = np.full(len(x), 0.5, np.float32)
    out = np.empty(len(x), np.int64)
    _requantize_all(x, np.zeros(len(x), np.int64), np.zeros(len(x), np.int64), scale, fp.ROUND_FLOAT32, 31, out)
    expected = [fp.requant_float32(int(v), 0.5) for v in x]
    assert out.tolist() == expected
    assert expected[:4] == [2, -2, 4, -4]  # 2.5 -> 2, 3.5 -> 4: ties to even
    # float32(2^24 + 1) == 2^24: the int-to-float conversion rounds before the multiply
    assert expected[5] == 2**23


@pytest.mark.parametrize("bits", [16, 20, 24, 32, 40, 64])
@pytest.mark.parametrize("saturating", [False, True])
def test_fit_accumulator(bits, saturating):
    edges = [-(2**63), -(2**40), -(2**bits) if bits < 63 else 0, -(2 ** (bits - 1)) - 1 if bits < 64 else 0,
             -(2 ** (bits - 1)) if bits < 64 else 0, -1, 0, 1, 2 ** (bits - 1) - 1 if bits < 64 else 0,
             2 ** (bits - 1) if bits < 64 else 0, 2**bits if bits < 63 else 0, 2**40, 2**63 - 1]
    x = np.array(edges + list(np.random.default_rng(bits).integers(-(2**45), 2**45, 2000)), np.int64)
    out = np.empty(len(x), np.int64)
    flags = np.empty(len(x), np.bool_)
    _fit_all(x, bits, saturating, out, flags)
    for v, o, f in zip(x.tolist(), out.tolist(), flags.tolist()):
        assert (o, f) == fp.fit_accumulator(v, bits, saturating)
        if f:
            assert o != v
        if bits < 64 and f and not saturating:
            assert (o - v) % (2**bits) == 0


def test_quantize_multiplier_rules():
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(0.5) == (2**30, 0)
    assert fp.quantize_multiplier(1.0) == (2**30, 1)
    assert fp.quantize_multiplier(0.25) == (2**30, -1)
    # q*2^31 rounds up to 2^31: M halves, shift increments
    assert fp.quantize_multiplier(1.0 - 2.0**-40) == (2**30, 1)
    # tiny multipliers flush to zero
    assert fp.quantize_multiplier(2.0**-40) == (0, 0)
    # ties round away from zero like std::round: 0.5 + 2^-32 -> q*2^31 = 2^30 + 0.5
    assert fp.quantize_multiplier(0.5 + 2.0**-32) == (2**30 + 1, 0)
    assert fp.quantize_multiplier(-0.5) == (-(2**30), 0)
    with pytest.raises(ValueError):
        fp.quantize_multiplier(float("nan"))


@settings(max_examples=2000, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e3, allow_nan=False))
def test_quantize_multiplier_reconstructs_real(real):
    m, shift = fp.quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0**-30


@settings(max_examples=300, deadline=None)
@given(st.integers(2**30, 2**31 - 1), st.integers(8, 30))
def test_reduce_multiplier_is_round_half_up(m, bits):
    r = fp.reduce_multiplier(m, bits)
    drop = 31 - bits
    exact = m / 2**drop
    assert r == min(math.floor(exact + 0.5), 2**bits - 1)


@njit
def _requantize_output_all(acc, ch, rq, codes, flags):
    for i in range(acc.size):
        code, ovf, sat = kfp.requantize_output(acc[i], ch[i], rq)
        codes[i] = code
        flags[i, 0] = ovf
        flags[i, 1] = sat


@pytest.mark.parametrize("path_name", ["tflm8", "single8", "onnx8", "tflm16", "acc24_sat_half_even", "acc20_wrap_floor"])
def test_requantize_output_with_sign_dependent_side(path_name):
    """PReLU-style negative multipliers and post-sign offsets: kernel == Python-int reference."""
    from tests.reference.requant import requantize_output as reference
    from tests.util import TEST_PATHS, random_requant

    rng = np.random.default_rng(5)
    path = TEST_PATHS[path_name]
    out_dtype = "int16" if path_name == "tflm16" else "int8"
    base = random_requant(rng, 6, path, out_dtype)
    neg = random_requant(rng, 6, path, out_dtype, scale_range=(1e-5, 0.01))
    offsets = rng.integers(-5000, 5000, (2, 6))
    rq = kfp.requant_params(*base[:10], neg_mult=neg[0], neg_shift=neg[1], neg_scale=neg[2],
                            pos_offset=offsets[0], neg_offset=offsets[1])
    acc = np.concatenate([rng.integers(-(2**33), 2**33, 3000), rng.integers(-3000, 3000, 3000), [0, -1, 1]]).astype(np.int64)
    ch = rng.integers(0, 6, acc.size).astype(np.int64)
    codes = np.empty(acc.size, np.int64)
    flags = np.empty((acc.size, 2), np.bool_)
    _requantize_output_all(acc, ch, rq, codes, flags)
    for a, c, code, (ovf, sat) in zip(acc.tolist(), ch.tolist(), codes.tolist(), flags.tolist()):
        assert (code, ovf, sat) == reference(a, c, rq)
