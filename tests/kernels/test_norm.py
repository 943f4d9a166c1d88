"""Integer GroupNorm / LayerNorm: kernels == Python-int reference, parallel == serial, within 1 LSB
of float64, op adapters and errors.  Arithmetic: docs/norm.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from intsim.executor import Model
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import norm as kn
from intsim.ops import OpError
from intsim.ops.norm import norm_constants, quantize_positive
from tests.reference import norm as rn

RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def codes(rng, shape, dtype, mode):
    lo, hi = RANGES[dtype]
    if mode == "constant":
        return np.full(shape, rng.integers(lo, hi + 1), dtype=dtype)
    if mode == "two":  # two adjacent codes: tiny variance, eps matters
        base = rng.integers(lo, hi)
        return (base + rng.integers(0, 2, size=shape)).astype(dtype)
    if mode == "extremes":
        return rng.choice(np.array([lo, hi], dtype=dtype), size=shape)
    if mode == "outlier":  # constant but one code: |normalized| = sqrt(n - 1)
        x = np.full(shape, lo, dtype=dtype)
        x.reshape(-1)[rng.integers(0, x.size)] = hi
        return x
    if mode == "narrow":
        c = rng.integers(lo + 8, hi - 8)
        return rng.integers(c - 6, c + 7, size=shape).astype(dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


MODES = st.sampled_from(["uniform", "uniform", "constant", "two", "extremes", "outlier", "narrow"])


def random_constants(rng, c, kind):
    """(eps_mult, eps_shift, mult, shift, bias): realistic (from floats) or raw extreme integers."""
    if kind == "realistic":
        k = norm_constants(float(np.exp(rng.uniform(-8, 0))), rng.normal(1, 0.5, c), rng.normal(0, 1, c),
                           float(10.0 ** rng.uniform(-10, -3)), float(np.exp(rng.uniform(-6, -1))))
        return k.eps_mult, k.eps_shift, k.multiplier, k.shift, k.bias
    mult = rng.choice(np.array([0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30) - 7], dtype=np.int64), size=c)
    mult = np.where(rng.random(c) < 0.5, rng.integers(-(2**31), 2**31, size=c), mult).astype(np.int32)
    shift = rng.choice(np.array([-62, -31, -20, 0, 5, 20, 30]), size=c).astype(np.int32)
    bias = rng.choice(np.array([0, 1, -1, 2**55, -(2**55), 12345678]), size=c).astype(np.int64)
    eps_mult = int(rng.choice([0, 2**30, 2**31 - 1, int(rng.integers(2**30, 2**31))]))
    eps_shift = int(rng.choice([-1100, -200, -40, 0, 31, 60, 200, 1100]))
    return eps_mult, eps_shift, mult, shift, bias


def run_group_norm(parallel, x, groups, consts, out_zp, act, out_dtype):
    out = np.empty(x.shape, dtype=out_dtype)
    sat = np.zeros(x.shape[0] * groups, dtype=np.int64)
    (kn.group_norm_parallel if parallel else kn.group_norm)(x, groups, *consts, out_zp, *act, out, sat)
    return out, sat


def run_layer_norm(parallel, x, consts, out_zp, act, out_dtype):
    out = np.empty(x.shape, dtype=out_dtype)
    sat = np.zeros(x.shape[0] * x.shape[2], dtype=np.int64)
    (kn.layer_norm_parallel if parallel else kn.layer_norm)(x, *consts, out_zp, *act, out, sat)
    return out, sat


# --- primitives --------------------------------------------------------------------------------

@njit
def _isqrt_all(w, out):
    for i in range(w.size):
        out[i] = kn.isqrt(w[i])


def test_isqrt_exact():
    rng = np.random.default_rng(0)
    edges = [0, 1, 2, 3, 4, 8, 15, 16, 17, 2**60 - 1, 2**60, 2**61 + 5, 2**62 - 1, 2**62, 2**63 - 1]
    squares = [s * s + d for s in [1, 2**15, 2**30, 2**31 - 1, 3037000499] for d in (-1, 0, 1) if s * s + d < 2**63]
    w = np.array(edges + squares + list(range(5000)) + rng.integers(0, 2**63 - 1, 20000, dtype=np.int64).tolist()
                 + rng.integers(2**60, 2**62, 20000, dtype=np.int64).tolist(), dtype=np.int64)
    out = np.empty_like(w)
    _isqrt_all(w, out)
    assert out.tolist() == [math.isqrt(int(v)) for v in w]


def stats(counts, values):
    n = sum(counts)
    return n, sum(c * v for c, v in zip(counts, values)), sum(c * v * v for c, v in zip(counts, values))


@settings(max_examples=300, deadline=None)
@given(dtype=st.sampled_from(sorted(RANGES)), data=st.data(),
       eps=st.one_of(st.just((0, 0)), st.tuples(st.integers(2**30, 2**31 - 1), st.integers(-1100, 1100))))
def test_rsqrt_matches_reference_and_is_accurate(dtype, data, eps):
    lo, hi = RANGES[dtype]
    nmax = kn.MAX_GROUP_SIZE[dtype]
    n = data.draw(st.one_of(st.integers(1, 64), st.integers(1, nmax), st.just(nmax)))
    v1, v2 = data.draw(st.integers(lo, hi)), data.draw(st.integers(lo, hi))
    c1 = data.draw(st.integers(0, n))
    n, s1, s2 = stats([c1, n - c1], [v1, v2])
    r, z = kn.norm_rsqrt(n, s1, s2, *eps)
    assert (int(r), int(z)) == rn.rsqrt(n, s1, s2, *eps)
    # exact V = num / 2^den (Python ints), so log2 V is accurate at any magnitude
    den = max(0, 31 - eps[1])
    num = ((n * s2 - s1 * s1) << den) + ((n * n * eps[0]) << max(0, eps[1] - 31))
    if r == 0:
        assert num == 0
    else:
        # relative error of 1/sqrt(V) ~= R * 2^(z/2 - 61): below 2^-29 (docs/norm.md)
        log2_v = math.log2(num) - den
        assert abs(math.log2(r) + (z / 2 - 61) + 0.5 * log2_v) < 2**-29 / math.log(2)


@njit
def _elements(u, m, k, bias, zp, lo, hi, out, sat):
    for i in range(u.size):
        h = kn.norm_value(u[i], m[i], k[i])
        out[i], sat[i] = kn.norm_code(h, bias[i], zp, lo, hi)


def test_element_step_extreme_shifts():
    rng = np.random.default_rng(1)
    size = 20000
    u = rng.choice(np.array([0, 1, -1, 2**32 - 1, -(2**32) + 1, 3, -12345]), size=size).astype(np.int64)
    u = np.where(rng.random(size) < 0.5, rng.integers(-(2**32) + 1, 2**32, size=size), u)
    m = rng.choice(np.array([0, 1, -1, 2**30, -(2**30), 2**28 + 3]), size=size).astype(np.int64)
    k = rng.choice(np.arange(-70, 80), size=size).astype(np.int64)
    bias = rng.choice(np.array([0, 2**55, -(2**55), 2**15, -(2**15), 99]), size=size).astype(np.int64)
    out = np.empty(size, dtype=np.int64)
    sat = np.empty(size, dtype=np.int64)
    _elements(u, m, k, bias, 5, -32768, 32767, out, sat)
    for i in range(size):
        code, s = rn.element(int(u[i]), 1, 0, int(m[i]), int(k[i]), int(bias[i]), 5, -32768, 32767)
        assert (out[i], bool(sat[i])) == (code, s), (u[i], m[i], k[i], bias[i])


# --- kernels == reference ----------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(in_dtype=st.sampled_from(sorted(RANGES)), out_dtype=st.sampled_from(sorted(RANGES)), nb=st.integers(1, 2),
       cpg=st.integers(1, 4), groups=st.integers(1, 3), t=st.integers(1, 40), mode=MODES,
       kind=st.sampled_from(["realistic", "realistic", "raw"]), seed=st.integers(0, 2**32 - 1))
def test_group_norm_matches_reference(in_dtype, out_dtype, nb, cpg, groups, t, mode, kind, seed):
    rng = np.random.default_rng(seed)
    c = cpg * groups
    x = codes(rng, (nb, c, t), in_dtype, mode)
    consts = random_constants(rng, c, kind)
    lo, hi = RANGES[out_dtype]
    out_zp = int(rng.integers(lo, hi + 1)) if out_dtype != "int16" else 0
    act = (lo, hi) if rng.random() < 0.7 else (lo + 3, hi - 5)
    want = rn.group_norm(x, groups, *consts, out_zp, *act, out_dtype)
    for parallel in (False, True):
        got = run_group_norm(parallel, x, groups, consts, out_zp, act, out_dtype)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@settings(max_examples=60, deadline=None)
@given(in_dtype=st.sampled_from(sorted(RANGES)), out_dtype=st.sampled_from(["int8", "int16"]), outer=st.integers(1, 2),
       length=st.integers(1, 12), inner=st.sampled_from([1, 2, 63, 64, 65, 130]), mode=MODES,
       kind=st.sampled_from(["realistic", "realistic", "raw"]), seed=st.integers(0, 2**32 - 1))
def test_layer_norm_matches_reference(in_dtype, out_dtype, outer, length, inner, mode, kind, seed):
    rng = np.random.default_rng(seed)
    x = codes(rng, (outer, length, inner), in_dtype, mode)
    consts = random_constants(rng, length, kind)
    lo, hi = RANGES[out_dtype]
    out_zp = int(rng.integers(-20, 20)) if out_dtype == "int8" else 0
    want = rn.layer_norm(x, *consts, out_zp, lo, hi, out_dtype)
    for parallel in (False, True):
        got = run_layer_norm(parallel, x, consts, out_zp, (lo, hi), out_dtype)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_group_norm_largest_groups_exact():
    # every dtype at its largest allowed group size, extreme codes: no int64 step overflows
    rng = np.random.default_rng(2)
    for dtype, shape in [("int8", (1, 4, 2**22)), ("uint8", (1, 2, 2**22)), ("int16", (1, 2, 2**15))]:
        lo, hi = RANGES[dtype]
        x = rng.choice(np.array([lo, hi], dtype=dtype), size=shape)
        assert x[0].size == kn.MAX_GROUP_SIZE[dtype]
        c = shape[1]
        consts = (2**31 - 1, -40, np.array([2**31 - 1, -(2**31)] * (c // 2), dtype=np.int32),
                  np.array([30, 29] * (c // 2), dtype=np.int32), np.zeros(c, dtype=np.int64))
        got, _ = run_group_norm(True, x, 1, consts, 0, (-32768, 32767), np.int16)
        # spot check a few positions of every channel against the reference elementwise step
        s1 = int(x.astype(np.int64).sum())
        s2 = int((x.astype(np.int64) ** 2).sum())
        n = x.size
        r, z = rn.rsqrt(n, s1, s2, consts[0], consts[1])
        for ch in range(c):
            m, k = rn.channel(r, z, int(consts[2][ch]), int(consts[3][ch]))
            for pos in [0, 1, shape[2] - 1]:
                code, _ = rn.element(int(x[0, ch, pos]), n, s1, m, k, 0, 0, -32768, 32767)
                assert got[0, ch, pos] == code


# --- float64 accuracy ----------------------------------------------------------------------------

def float_check(x, groups_axes, chan_axis, s_in, zp_in, gamma, beta, eps, s_out, zp_out, out_dtype, kernel_out,
                pre=None):
    """|kernel - round(float)| <= 1 everywhere; returns (max code diff, max |pre - real| unclamped)."""
    lo, hi = RANGES[out_dtype]
    want, real = rn.float_norm(x, s_in, zp_in, gamma, beta, eps, s_out, zp_out, lo, hi, groups_axes, chan_axis)
    diff = np.abs(kernel_out.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1
    if pre is None:
        return int(diff.max()), None
    inside = (real > lo - 1) & (real < hi + 1)
    return int(diff.max()), float(np.max(np.abs(pre - real)[inside])) if inside.any() else 0.0


CASES = {
    # name: (codes mode, s_in, zp_in, gamma spread, eps, s_out, out dtype)
    "typical": ("uniform", 0.05, 7, 0.3, 1e-8, 4 / 127, "int8"),
    "narrow_eps_matters": ("two", 1e-3, -20, 0.3, 1e-6, 2 / 127, "int8"),
    "constant_eps_only": ("constant", 0.02, 3, 0.3, 1e-8, 0.05, "int8"),
    "constant_eps_zero": ("constant", 0.02, 3, 0.3, 0.0, 0.05, "int8"),
    "outlier": ("outlier", 0.1, 0, 0.3, 1e-5, 0.5, "int8"),
    "int16_out_fine": ("uniform", 0.05, -5, 0.5, 1e-8, 1e-4, "int16"),
    "negative_and_zero_gamma": ("uniform", 0.05, 0, -1.0, 1e-8, 4 / 127, "int8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_group_norm_within_one_lsb_of_float(case):
    mode, s_in, zp_in, spread, eps, s_out, out_dtype = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    c, groups = 24, 3 if case != "typical" else 1
    x = codes(rng, (2, c, 150), "int8", mode)
    gamma = rng.normal(1.0, abs(spread), c) * np.sign(spread)
    if spread < 0:
        gamma[::4] = 0.0
    beta = rng.normal(0, 0.3, c)
    k = norm_constants(s_in, gamma, beta, eps, s_out)
    consts = (k.eps_mult, k.eps_shift, k.multiplier, k.shift, k.bias)
    lo, hi = RANGES[out_dtype]
    zp_out = 0 if out_dtype == "int16" else -9
    got, _ = run_group_norm(True, x, groups, consts, zp_out, (lo, hi), out_dtype)
    exact, pre = rn.group_norm_fast(x, groups, *consts, zp_out, lo, hi, out_dtype, prevalues=True)
    np.testing.assert_array_equal(got, exact)
    xg = x.reshape(2, groups, c // groups, 150)
    diff, err = float_check(xg, (2, 3), (1, 2), s_in, zp_in, gamma.reshape(groups, c // groups), beta.reshape(groups, -1),
                            eps, s_out, zp_out, out_dtype, got.reshape(xg.shape), pre.reshape(xg.shape))
    assert err < 2**-10  # docs/norm.md: |pre - exact| <= |y| 2^-26.9 + 2^-16 (+ float64 noise)
    if mode == "constant":
        assert (got == np.clip(np.rint(beta / s_out) + zp_out, lo, hi)[None, :, None]).all()


def test_group_norm_huge_group_within_one_lsb_and_exact():
    # ConvTasNet bottleneck: GroupNorm(1, 512) over T = 4000 frames (n = 2,048,000)
    rng = np.random.default_rng(11)
    c, t = 512, 4000
    x = np.clip(np.rint(rng.normal(-10, 30, (1, c, t))), -128, 127).astype(np.int8)
    gamma, beta = rng.normal(1, 0.2, c), rng.normal(0, 0.2, c)
    s_in, s_out, eps = 0.03, 5 / 127, 1e-8
    k = norm_constants(s_in, gamma, beta, eps, s_out)
    consts = (k.eps_mult, k.eps_shift, k.multiplier, k.shift, k.bias)
    got, _ = run_group_norm(True, x, 1, consts, 4, (-128, 127), np.int8)
    serial, _ = run_group_norm(False, x, 1, consts, 4, (-128, 127), np.int8)
    np.testing.assert_array_equal(got, serial)
    exact = rn.group_norm_fast(x, 1, *consts, 4, -128, 127, np.int8)
    np.testing.assert_array_equal(got, exact)
    float_check(x, (1, 2), 1, s_in, -3, gamma, beta, eps, s_out, 4, "int8", got)


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_within_one_lsb_of_float(axis):
    rng = np.random.default_rng(12)
    shape = (2, 40, 300) if axis == 1 else (2, 30, 256)
    c = shape[axis]
    x = codes(rng, shape, "int8", "uniform")
    x[0, ..., :3] = 5  # some constant groups (axis -1: rows; axis 1: frames)
    x[0, :3, ...] = 5
    gamma, beta = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)
    s_in, s_out, eps = 0.04, 4 / 127, 1e-5
    k = norm_constants(s_in, gamma, beta, eps, s_out)
    consts = (k.eps_mult, k.eps_shift, k.multiplier, k.shift, k.bias)
    x3 = x.reshape(-1, c, 1) if axis == -1 else x
    got, _ = run_layer_norm(True, x3, consts, -2, (-128, 127), np.int8)
    got = got.reshape(shape)
    if axis == -1:  # the adapter uses group_norm(groups=1) on [O, C, 1] for the last axis: same result
        np.testing.assert_array_equal(run_group_norm(False, x3, 1, consts, -2, (-128, 127), np.int8)[0].reshape(shape),
                                      got)
    float_check(x, (axis,), axis, s_in, 11, gamma, beta, eps, s_out, -2, "int8", got)


# --- conversion-time builder --------------------------------------------------------------------

def test_norm_constants_values_and_errors():
    k = norm_constants(0.05, [1.0, -0.5, 0.0], [0.1, 0.0, -0.2], 1e-8, 0.02)
    assert k.multiplier.dtype == np.int32 and k.shift.dtype == np.int32 and k.bias.dtype == np.int64
    assert (int(k.multiplier[0]), int(k.shift[0])) == quantize_multiplier(50.0)
    assert (int(k.multiplier[1]), int(k.shift[1])) == quantize_multiplier(-25.0)
    assert (int(k.multiplier[2]), int(k.shift[2])) == (0, 0)
    assert k.bias.tolist() == [round(5 * 65536), 0, round(-10 * 65536)]
    e = 1e-8 / 0.05**2
    assert abs(k.eps_mult * 2.0 ** (k.eps_shift - 31) / e - 1) <= 2**-31
    assert k.attrs() == {"eps_mult": k.eps_mult, "eps_shift": k.eps_shift}
    assert quantize_positive(0.0) == (0, 0)
    assert quantize_positive(1e-300)[0] >= 2**30  # no flush of tiny eps
    with pytest.raises(ValueError, match="s_in must be a positive finite scale"):
        norm_constants(0.0, [1.0], [0.0], 1e-5, 0.1)
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        norm_constants(0.1, [1.0], [0.0], -1.0, 0.1)
    with pytest.raises(ValueError, match="equal length"):
        norm_constants(0.1, [1.0, 2.0], [0.0], 1e-5, 0.1)
    with pytest.raises(ValueError, match="gamma / s_out"):
        norm_constants(0.1, [1e6], [0.0], 1e-5, 1e-3)


# --- op adapters -------------------------------------------------------------------------------

def norm_model(op, x_spec, y_spec, k, attrs, parallel=True):
    consts = {"m": k.multiplier, "s": k.shift, "b": k.bias}
    specs = [x_spec] + [TensorSpec(n, str(v.dtype), list(v.shape)) for n, v in consts.items()]
    tensors = {s.name: s for s in specs + [y_spec]}
    node = Node("n", op, [s.name for s in specs], [y_spec.name], {**k.attrs(), **attrs})
    return Model(Graph(tensors, [node], [x_spec.name], [y_spec.name], consts), parallel=parallel)


def q(name, dtype, shape, scale, zp):
    return TensorSpec(name, dtype, list(shape), Quant([scale], [zp]))


def test_group_norm_op_matches_reference_and_float():
    rng = np.random.default_rng(20)
    c, groups = 16, 4
    x = codes(rng, (2, c, 5, 7), "int8", "uniform")  # trailing dims flatten to T = 35
    gamma, beta = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)
    k = norm_constants(0.05, gamma, beta, 1e-8, 0.03)
    model = norm_model("group_norm", q("x", "int8", [None, c, 5, 7], 0.05, 12), q("y", "int8", [None, c, 5, 7], 0.03, 6),
                       k, {"num_groups": groups, "act_min": -100})
    serial = norm_model("group_norm", q("x", "int8", [None, c, 5, 7], 0.05, 12),
                        q("y", "int8", [None, c, 5, 7], 0.03, 6), k, {"num_groups": groups, "act_min": -100}, False)
    y = model.run(x)["y"]
    np.testing.assert_array_equal(serial.run(x)["y"], y)
    want, sats = rn.group_norm(x.reshape(2, c, 35), groups, k.eps_mult, k.eps_shift, k.multiplier, k.shift, k.bias, 6,
                               -100, 127, np.int8)
    np.testing.assert_array_equal(y.reshape(2, c, 35), want)
    assert model.counts["n"].saturations == int(sats.sum()) and model.counts["n"].acc_overflows == 0
    xg = x.reshape(2, groups, c // groups, 35)
    lo_hi = rn.float_norm(xg, 0.05, 12, gamma.reshape(groups, -1), beta.reshape(groups, -1), 1e-8, 0.03, 6, -100, 127,
                          (2, 3), (1, 2))[0]
    assert np.abs(lo_hi - y.reshape(xg.shape)).max() <= 1


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_layer_norm_op_axes(axis):
    rng = np.random.default_rng(21)
    shape = (2, 12, 70)
    c = shape[axis]
    x = codes(rng, shape, "uint8", "uniform")
    gamma, beta = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)
    k = norm_constants(0.05, gamma, beta, 1e-5, 1e-3)
    model = norm_model("layer_norm", q("x", "uint8", [None, 12, None], 0.05, 128), q("y", "int16", [None, 12, None], 1e-3, 0),
                       k, {"axis": axis})
    y = model.run(x)["y"]
    assert y.dtype == np.int16 and y.shape == shape
    moved = np.moveaxis(x, axis, 1)
    want, _ = rn.layer_norm(np.ascontiguousarray(moved), k.eps_mult, k.eps_shift, k.multiplier, k.shift, k.bias, 0,
                            -32768, 32767, np.int16)
    np.testing.assert_array_equal(np.moveaxis(y, axis, 1), want)
    f = rn.float_norm(x, 0.05, 128, gamma, beta, 1e-5, 1e-3, 0, -32768, 32767, (axis,), axis)[0]
    assert np.abs(f - y).max() <= 1


def test_norm_op_errors():
    k = norm_constants(0.05, np.ones(6), np.zeros(6), 1e-8, 0.03)
    x = q("x", "int8", [None, 6, None], 0.05, 0)
    y = q("y", "int8", [None, 6, None], 0.03, 0)
    with pytest.raises(OpError, match="'num_groups' 4 must be >= 1 and divide the 6 channels"):
        norm_model("group_norm", x, y, k, {"num_groups": 4})
    with pytest.raises(OpError, match="attribute 'num_groups' is missing"):
        norm_model("group_norm", x, y, k, {})
    with pytest.raises(OpError, match="input 'x' has dtype int32"):
        norm_model("group_norm", q("x", "int32", [None, 6, None], 0.05, 0), y, k, {"num_groups": 1})
    with pytest.raises(OpError, match="input shape \\[None, 5, None\\] must be \\[N, 6, ...\\]"):
        norm_model("group_norm", q("x", "int8", [None, 5, None], 0.05, 0), y, k, {"num_groups": 1})
    bad = type(k)(k.multiplier, k.shift, k.bias, 12345, 0)
    with pytest.raises(OpError, match="'eps_mult' must be 0 or in \\[2\\^30, 2\\^31\\), got 12345"):
        norm_model("group_norm", x, y, bad, {"num_groups": 1})
    bad = type(k)(k.multiplier, np.full(6, 31, dtype=np.int32), k.bias, k.eps_mult, k.eps_shift)
    with pytest.raises(OpError, match="shift must be in \\[-62, 30\\]"):
        norm_model("group_norm", x, y, bad, {"num_groups": 1})
    with pytest.raises(OpError, match="'axis' 3 is out of range for input rank 3"):
        norm_model("layer_norm", x, y, k, {"axis": 3})
    with pytest.raises(OpError, match="has 70 entries on axis 2, expected 6"):
        norm_model("layer_norm", q("x", "int8", [None, 6, 70], 0.05, 0), q("y", "int8", [None, 6, 70], 0.05, 0), k,
                   {"axis": 2})
    model = norm_model("group_norm", q("x", "int8", [None] * 3, 0.05, 0), q("y", "int8", [None] * 3, 0.05, 0), k,
                       {"num_groups": 1})
    with pytest.raises(OpError, match=r"node 'n' \(group_norm\): input has shape \[1, 5, 3\], expected \[N, 6, ...\]"):
        model.run(np.zeros((1, 5, 3), dtype=np.int8))
    model16 = norm_model("group_norm", q("x", "int16", [None, 6, None], 0.05, 0), q("y", "int16", [None, 6, None], 0.03, 0),
                         k, {"num_groups": 2})
    with pytest.raises(OpError, match="normalization group of 65538 values; int16 input allows 1 to 65536"):
        model16.run(np.zeros((1, 6, 65538 // 3), dtype=np.int16))
    with pytest.raises(OpError, match="normalization group of 0 values"):
        model16.run(np.zeros((1, 6, 0), dtype=np.int16))
