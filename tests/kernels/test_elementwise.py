"""kernels.elementwise == tests.reference.elementwise exactly; serial == parallel; op adapters."""

import hashlib
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intsim import fixedpoint as fp
from intsim import quantize as Q
from intsim.executor import Model
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import elementwise as E
from intsim.kernels.fixedpoint import requant_params
from intsim.ops import OpError
from intsim.profile import ArithPath
from tests.reference import elementwise as R
from tests.util import TEST_PATHS, random_requant

PATHS = list(TEST_PATHS)
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def data_dtype(path_name):
    """int8 paths run int8 data; the 16x8 path runs int16 data."""
    return np.int16 if path_name == "tflm16" else np.int8


def rand_codes(rng, shape, dtype, extremes=0.2):
    """Random codes with a share of dtype extremes."""
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, size=shape, dtype=np.int64)
    pick = rng.random(size=shape) < extremes
    x[pick] = rng.choice([info.min, info.min + 1, info.max - 1, info.max], size=int(pick.sum()))
    return x.astype(dtype)


def rand_scale(rng, lo=1e-3, hi=0.5):
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def reduced(mult, path):
    return np.array([fp.reduce_multiplier(int(m), path.mult_bits) for m in mult], dtype=np.int64)


def rq_for(params, path, out_dtype, out_zp, act_min=None, act_max=None):
    """Kernel requant tuple from intsim.quantize RequantParams on a profile path."""
    info = np.iinfo(out_dtype)
    return requant_params(reduced(params.multiplier, path), params.shift, params.scale, path.rounding_code,
                          path.mult_bits, path.acc_bits, path.acc_saturating, out_zp,
                          info.min if act_min is None else act_min, info.max if act_max is None else act_max)


def zps(rng, dtype, n):
    if dtype == np.int16:
        return [0] * n
    return [int(v) for v in rng.integers(-128, 128, n)]


# ---------------------------------------------------------------- broadcast plan


@pytest.mark.parametrize("s1,s2", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((1,), (5, 6)),
                                   ((4, 1, 6), (1, 5, 1)), ((2, 1), (1, 3)), ((3, 0, 2), (1, 2)), ((), ()),
                                   ((7,), ()), ((1, 1, 1), (1,))])
def test_broadcast_plan_indices(s1, s2):
    out_shape, dims, st1, st2, n_items = E.broadcast_plan(s1, s2, chunk=3)
    assert out_shape == np.broadcast_shapes(s1, s2)
    ref1 = np.broadcast_to(np.arange(int(np.prod(s1))).reshape(s1), out_shape).reshape(-1)
    ref2 = np.broadcast_to(np.arange(int(np.prod(s2))).reshape(s2), out_shape).reshape(-1)
    got1, got2 = [], []
    for flat in range(int(np.prod(out_shape))):
        idx = np.unravel_index(flat, tuple(int(d) for d in dims))
        got1.append(int(np.dot(idx, st1)))
        got2.append(int(np.dot(idx, st2)))
    assert got1 == ref1.tolist() and got2 == ref2.tolist()
    assert int(np.prod(dims)) == int(np.prod(out_shape))
    rows = int(np.prod(dims[:-1])) if len(dims) > 1 else 1
    assert n_items == rows * -(-int(dims[-1]) // 3)


def test_broadcast_plan_collapses_contiguous_dims():
    _, dims, st1, st2, _ = E.broadcast_plan((2, 3, 4, 5), (2, 3, 4, 5))
    assert dims.tolist() == [120] and st1.tolist() == [1] and st2.tolist() == [1]
    _, dims, st1, st2, _ = E.broadcast_plan((2, 3, 4, 5), (3, 1, 1))
    assert dims.tolist() == [2, 3, 20] and st1.tolist() == [60, 20, 1] and st2.tolist() == [0, 1, 0]


def test_broadcast_plan_rejects_incompatible_shapes():
    with pytest.raises(ValueError):
        E.broadcast_plan((2, 3), (4,))


# ---------------------------------------------------------------- requantize


def run_requantize(x, x_zp, rq, axis, out_dtype, parallel=False, chunk=5):
    x = np.ascontiguousarray(x)
    if axis is None:
        x3 = x.reshape(1, 1, -1)
    else:
        x3 = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), x.shape[axis],
                       int(np.prod(x.shape[axis + 1:], dtype=np.int64)))
    out = np.empty(x.shape, dtype=out_dtype)
    n = E.requantize_items(*x3.shape, chunk)
    ovf, sat = np.zeros(n, np.int64), np.zeros(n, np.int64)
    kernel = E.requantize_parallel if parallel else E.requantize
    kernel(x3, np.int64(x_zp), rq, chunk, out.reshape(x3.shape), ovf, sat)
    return out, int(ovf.sum()), int(sat.sum())


@HYP
@given(path_name=st.sampled_from(PATHS), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       in_kind=st.sampled_from(["act", "int32"]), out_dtype=st.sampled_from(["int8", "int16"]),
       per_channel=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_requantize_matches_reference(path_name, shape, in_kind, out_dtype, per_channel, seed):
    rng = np.random.default_rng(seed)
    path = TEST_PATHS[path_name]
    if in_kind == "int32":
        in_dtype = np.int32
        x = rng.integers(-(2**20), 2**20, size=shape).astype(np.int32)
        x.flat[0] = np.iinfo(np.int32).min
        x.flat[-1] = np.iinfo(np.int32).max
        x_zp = int(rng.integers(-1000, 1000))
        scale_range = (1e-7, 1e-3)
    else:
        in_dtype = data_dtype(path_name)
        x = rand_codes(rng, shape, in_dtype)
        x_zp = zps(rng, in_dtype, 1)[0]
        scale_range = (0.05, 4.0)
    axis = int(rng.integers(0, len(shape))) if per_channel else None
    channels = shape[axis] if per_channel else 1
    out_zp = int(rng.integers(-100, 100)) if out_dtype == "int8" else 0
    rq = random_requant(rng, channels, path, out_dtype, scale_range, out_zp=out_zp)
    got, ovf, sat = run_requantize(x, x_zp, rq, axis, out_dtype)
    ref, rovf, rsat = R.requantize(x, x_zp, rq, axis)
    assert got.astype(np.int64).tolist() == ref.tolist()
    assert (ovf, sat) == (rovf, rsat)
    par, povf, psat = run_requantize(x, x_zp, rq, axis, out_dtype, parallel=True)
    assert np.array_equal(par, got) and (povf, psat) == (ovf, sat)


def test_requantize_int32_wraps_in_tflm_accumulator():
    # x - zp leaves int32: the tflm int8 path's 32-bit wrapping register wraps it (C int32 arithmetic).
    path = TEST_PATHS["tflm8"]
    rq = random_requant(np.random.default_rng(0), 1, path, "int8", (0.5, 0.5), out_zp=0)
    x = np.array([2**31 - 1, -(2**31)], dtype=np.int32)
    got, ovf, sat = run_requantize(x, -10, rq, None, "int8")
    ref, rovf, rsat = R.requantize(x, -10, rq)
    assert got.tolist() == ref.tolist() and ovf == rovf == 1 and sat == rsat


def test_requantize_fused_relu_and_large_arrays_serial_equals_parallel():
    rng = np.random.default_rng(3)
    path = TEST_PATHS["tflm8"]
    x = rng.integers(-2**24, 2**24, size=(3, 8, 20000)).astype(np.int32)
    rq = random_requant(rng, 8, path, "int8", (1e-6, 1e-5), out_zp=-5, act_min=-5, act_max=127)
    a = run_requantize(x, 0, rq, 1, "int8", chunk=E.CHUNK)
    b = run_requantize(x, 0, rq, 1, "int8", parallel=True, chunk=E.CHUNK)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert a[0].min() >= -5
    sample = x[:, :, :50]
    ref, _, _ = R.requantize(sample, 0, rq, 1)
    assert np.array_equal(a[0][:, :, :50], ref)


# ---------------------------------------------------------------- binary helpers


@st.composite
def broadcast_shapes(draw):
    out = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))

    def operand():
        dims = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in out]
        drop = draw(st.integers(0, len(dims)))
        return tuple(dims[drop:])

    a, b = operand(), operand()
    if draw(st.booleans()):
        a, b = b, a
    return a, b


BROADCAST_PATTERNS = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (1,)), ((1,), (2, 3, 4)), ((2, 3, 4), (3, 1)),
                      ((2, 1, 4), (1, 3, 1)), ((5,), (4, 1)), ((1, 1), (1, 1)), ((2, 3, 7), (2, 1, 7)),
                      ((6, 1, 1), (1, 1, 9))]


def run_binary(name, a, b, *args, parallel=False, chunk=4):
    out_shape, dims, st1, st2, n = E.broadcast_plan(a.shape, b.shape, chunk)
    dtype = a.dtype
    out = np.empty(out_shape, dtype=dtype)
    ovf, sat = np.zeros(n, np.int64), np.zeros(n, np.int64)
    kernel = getattr(E, name + ("_parallel" if parallel else ""))
    kernel(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), dims, st1, st2, chunk, *args,
           out.reshape(-1), ovf, sat)
    return out, int(ovf.sum()), int(sat.sum())


def add_case(rng, path, dtype, sub=False, act=None):
    bits = np.iinfo(dtype).bits
    sa, sb, so = rand_scale(rng), rand_scale(rng), rand_scale(rng)
    za, zb, zo = zps(rng, dtype, 3)
    prm = (Q.sub_params if sub else Q.add_params)(sa, sb, so, bits)
    info = np.iinfo(dtype)
    lo, hi = act if act is not None else (info.min, info.max)
    return E.pack_add_params(za, zb, prm.left_shift, reduced(prm.multiplier, path), prm.shift, prm.scale,
                             path.rounding_code, path.mult_bits, zo, lo, hi)


def check_binary(name, ref_fn, a, b, kargs, rargs):
    got, ovf, sat = run_binary(name, a, b, *kargs)
    ref, rovf, rsat = ref_fn(a, b, *rargs)
    assert got.shape == ref.shape
    assert got.astype(np.int64).tolist() == ref.tolist()
    assert (ovf, sat) == (rovf, rsat)
    par = run_binary(name, a, b, *kargs, parallel=True, chunk=3)
    assert np.array_equal(par[0], got) and par[1:] == (ovf, sat)


# ---------------------------------------------------------------- add / sub


@HYP
@given(path_name=st.sampled_from(PATHS), shapes=broadcast_shapes(), sub=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_add_sub_match_reference(path_name, shapes, sub, seed):
    rng = np.random.default_rng(seed)
    path = TEST_PATHS[path_name]
    dtype = data_dtype(path_name)
    a, b = rand_codes(rng, shapes[0], dtype), rand_codes(rng, shapes[1], dtype)
    ap = add_case(rng, path, dtype, sub)
    sign = -1 if sub else 1
    check_binary("add", lambda a, b, s, p: R.add(a, b, p, s), a, b, (sign, ap), (sign, ap))


@pytest.mark.parametrize("s1,s2", BROADCAST_PATTERNS)
@pytest.mark.parametrize("path_name", PATHS)
def test_add_broadcast_patterns_all_paths(path_name, s1, s2):
    rng = np.random.default_rng(hash((path_name, s1, s2)) % 2**32)
    path = TEST_PATHS[path_name]
    dtype = data_dtype(path_name)
    a, b = rand_codes(rng, s1, dtype), rand_codes(rng, s2, dtype)
    for sign in (1, -1):
        ap = add_case(rng, path, dtype, sign < 0, act=(-20, 100) if dtype == np.int8 else None)
        check_binary("add", lambda a, b, s, p: R.add(a, b, p, s), a, b, (sign, ap), (sign, ap))


def test_add_every_int8_pair_and_extremes():
    # all 65536 (a, b) code pairs, both zero points at the range ends, for each int8 path
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)
    b = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)
    for path_name in ("tflm8", "single8", "onnx8"):
        path = TEST_PATHS[path_name]
        for zps_ in ((-128, 127, 0), (127, -128, -128)):
            prm = Q.add_params(0.0123, 0.5, 0.25)
            ap = E.pack_add_params(*zps_[:2], prm.left_shift, prm.multiplier, prm.shift, prm.scale, path.rounding_code,
                                   path.mult_bits, zps_[2], -128, 127)
            got, _, sat = run_binary("add", a, b, 1, ap, chunk=E.CHUNK)
            sub_a, sub_b = a[::17, ::13], b[::17, ::13]
            ref, _, _ = R.add(sub_a, sub_b, ap, 1)
            assert np.array_equal(got[::17, ::13], ref)
            par, _, psat = run_binary("add", a, b, 1, ap, parallel=True, chunk=1000)
            assert np.array_equal(par, got) and psat == sat


def test_sub_is_not_add_with_negated_multiplier():
    # SRDHM rounds ties up, so rescale(-x) != -rescale(x) on ties: SUB must subtract rounded terms.
    path = TEST_PATHS["tflm8"]
    prm = Q.sub_params(0.02, 0.02, 0.02)
    a = np.arange(-128, 128, dtype=np.int8)
    b = np.arange(127, -129, -1, dtype=np.int8)
    ap = E.pack_add_params(0, 0, prm.left_shift, prm.multiplier, prm.shift, prm.scale, path.rounding_code, 31, 0,
                           -128, 127)
    got, _, _ = run_binary("add", a, b, -1, ap)
    ref, _, _ = R.add(a, b, ap, -1)
    assert got.tolist() == ref.tolist()


def test_add_float32_rounding_is_qdq_half_even():
    # (a - za) * 0.5 + (b - zb) * 0.5 over s_out = 1: exact halves round to even.
    onnx = TEST_PATHS["onnx8"]
    ap = E.pack_add_params(0, 0, 20, [0, 0, 0], [0, 0, 0], [0.5, 0.5, 1.0], onnx.rounding_code, 31, 0, -128, 127)
    a = np.array([1, 3, 5, -1, -3, 127, -128], dtype=np.int8)
    b = np.zeros_like(a)
    got, _, _ = run_binary("add", a, b, 1, ap)
    assert got.tolist() == [0, 2, 2, 0, -2, 64, -64]


# ---------------------------------------------------------------- mul


@HYP
@given(path_name=st.sampled_from(PATHS), shapes=broadcast_shapes(), seed=st.integers(0, 2**32 - 1))
def test_mul_matches_reference(path_name, shapes, seed):
    rng = np.random.default_rng(seed)
    path = TEST_PATHS[path_name]
    dtype = data_dtype(path_name)
    a, b = rand_codes(rng, shapes[0], dtype), rand_codes(rng, shapes[1], dtype)
    za, zb, zo = zps(rng, dtype, 3)
    if dtype == np.int16:
        prm = Q.mul_params(rand_scale(rng, 1e-4, 1e-3), rand_scale(rng, 1e-4, 1e-3), rand_scale(rng, 1e-6, 1e-4))
    else:
        prm = Q.mul_params(rand_scale(rng), rand_scale(rng), rand_scale(rng))
    rq = rq_for(prm, path, dtype, zo)
    check_binary("mul", R.mul, a, b, (np.int64(za), np.int64(zb), rq), (za, zb, rq))


def test_mul_counts_accumulator_overflow_on_narrow_register():
    path = ArithPath(acc_bits=16, acc_overflow="saturate", mult_bits=31, rounding="half_up")
    rq = rq_for(Q.mul_params(0.1, 0.1, 0.2), path, np.int8, 0)
    a = np.array([-128, -128, 127, 100], dtype=np.int8)  # - 127: -255, -255, 0, -27
    b = np.array([127, 100, 127, 127], dtype=np.int8)  # + 128: 255, 228, 255, 255
    check_binary("mul", R.mul, a, b, (np.int64(127), np.int64(-128), rq), (127, -128, rq))
    _, ovf, _ = run_binary("mul", a, b, np.int64(127), np.int64(-128), rq)
    assert ovf == 2  # -65025 and -58140 do not fit a 16-bit register


@pytest.mark.parametrize("s1,s2", BROADCAST_PATTERNS)
def test_mul_broadcast_patterns(s1, s2):
    rng = np.random.default_rng(7)
    for path_name in PATHS:
        path = TEST_PATHS[path_name]
        dtype = data_dtype(path_name)
        a, b = rand_codes(rng, s1, dtype), rand_codes(rng, s2, dtype)
        za, zb, zo = zps(rng, dtype, 3)
        rq = rq_for(Q.mul_params(0.03, 0.07, 0.02 if dtype == np.int8 else 1e-5), path, dtype, zo)
        check_binary("mul", R.mul, a, b, (np.int64(za), np.int64(zb), rq), (za, zb, rq))


# ---------------------------------------------------------------- prelu


@HYP
@given(path_name=st.sampled_from(PATHS), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       slopes=st.sampled_from(["one", "last", "channel", "full"]), seed=st.integers(0, 2**32 - 1))
def test_prelu_matches_reference(path_name, shape, slopes, seed):
    rng = np.random.default_rng(seed)
    path = TEST_PATHS[path_name]
    dtype = data_dtype(path_name)
    x = rand_codes(rng, shape, dtype)
    ashape = {"one": (1,), "last": (shape[-1],), "full": tuple(shape),
              "channel": (shape[0],) + (1,) * (len(shape) - 1)}[slopes]
    alpha = rand_codes(rng, ashape, np.int8)
    x_zp, out_zp = zps(rng, dtype, 2)
    a_zp = int(rng.integers(-128, 128))
    prm = Q.prelu_params(rand_scale(rng), rand_scale(rng, 1e-3, 0.02), rand_scale(rng))
    rq = rq_for(prm, path, dtype, out_zp)
    check_binary("prelu", R.prelu, x, alpha, (np.int64(x_zp), np.int64(a_zp), rq), (x_zp, a_zp, rq))


# ---------------------------------------------------------------- clamp


@HYP
@given(dtype=st.sampled_from([np.int8, np.uint8, np.int16]), n=st.integers(0, 70), seed=st.integers(0, 2**32 - 1))
def test_clamp_codes_matches_reference(dtype, n, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rand_codes(rng, (n,), dtype)
    lo, hi = sorted(int(v) for v in rng.integers(info.min, info.max + 1, 2))
    for kernel in (E.clamp_codes, E.clamp_codes_parallel):
        out = np.empty_like(x)
        kernel(x, np.int64(lo), np.int64(hi), 8, out)
        assert out.astype(np.int64).tolist() == R.clamp_codes(x, lo, hi).tolist()


# ---------------------------------------------------------------- TFLM golden vectors


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def test_tflm_golden_add_sub_mul_int8_all_pairs():
    """Hashes of tflite-micro 0.dev20261023182759 outputs (ADD/SUB/MUL int8, every code pair)."""
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)
    b = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(256, 256)
    path = TEST_PATHS["tflm8"]
    for name, golden in (("add", "9f84e8cd7e577c3b"), ("sub", "f57a3677fbfdd3c6")):
        prm = (Q.add_params if name == "add" else Q.sub_params)(0.02, 0.035, 0.05)
        ap = E.pack_add_params(5, -7, prm.left_shift, prm.multiplier, prm.shift, prm.scale, path.rounding_code, 31, 3,
                               -128, 127)
        got, _, _ = run_binary("add", a, b, 1 if name == "add" else -1, ap, chunk=E.CHUNK)
        assert _sha(got) == golden, name
    rq = rq_for(Q.mul_params(0.02, 0.035, 0.011), path, np.int8, 3)
    got, _, _ = run_binary("mul", a, b, np.int64(5), np.int64(-7), rq, chunk=E.CHUNK)
    assert _sha(got) == "e497507659bdef45"


def test_tflm_golden_add_mul_int16():
    rng = np.random.default_rng(123)
    a = rng.integers(-32768, 32768, (64, 128)).astype(np.int16)
    b = rng.integers(-32768, 32768, (64, 128)).astype(np.int16)
    path = TEST_PATHS["tflm8"]  # TFLM's int16 ADD/MUL use the 32-bit MultiplyByQuantizedMultiplier
    prm = Q.add_params(3e-4, 1.7e-4, 4.1e-4, bits=16)
    ap = E.pack_add_params(0, 0, prm.left_shift, prm.multiplier, prm.shift, prm.scale, path.rounding_code, 31, 0,
                           -32768, 32767)
    assert _sha(run_binary("add", a, b, 1, ap, chunk=E.CHUNK)[0]) == "600160d18422547c"
    rq = rq_for(Q.mul_params(3e-4, 1.7e-4, 2e-4), path, np.int16, 0)
    assert _sha(run_binary("mul", a, b, np.int64(0), np.int64(0), rq, chunk=E.CHUNK)[0]) == "9dd56ee129f01c48"


# ---------------------------------------------------------------- conversion helpers


def test_add_params_follow_tflite_double_arithmetic():
    prm = Q.add_params(0.02, 0.035, 0.05)
    assert prm.left_shift == 20
    twice = 2 * float(np.float32(0.035))
    for i, real in enumerate([float(np.float32(0.02)) / twice, float(np.float32(0.035)) / twice,
                              twice / (2**20 * float(np.float32(0.05)))]):
        assert (int(prm.multiplier[i]), int(prm.shift[i])) == fp.quantize_multiplier(real)
    assert prm.shift[1] == 0 and prm.multiplier[1] == 2**30  # exactly 0.5
    assert Q.add_params(0.02, 0.035, 0.05, bits=16).left_shift == 15
    assert prm.scale.dtype == np.float32 and prm.scale.tolist() == np.float32([0.02, 0.035, 0.05]).tolist()


def test_sub_params_default_like_add_and_float32_variant():
    # the pinned tflite-micro wheel computes SUB's multipliers like ADD's (double); the float32-ratio
    # form of TFLM's sub_common.cc source is available as an option.
    s1, s2, so = np.float32(0.0123), np.float32(0.077), np.float32(0.031)
    assert [p.tolist() for p in Q.sub_params(s1, s2, so)[1:]] == [p.tolist() for p in Q.add_params(s1, s2, so)[1:]]
    prm = Q.sub_params(s1, s2, so, float32_ratios=True)
    twice = np.float32(2) * s2
    assert (int(prm.multiplier[0]), int(prm.shift[0])) == fp.quantize_multiplier(float(np.float32(s1 / twice)))
    out_real = float(np.float32(twice / (np.float32(2**20) * so)))
    assert (int(prm.multiplier[2]), int(prm.shift[2])) == fp.quantize_multiplier(out_real)
    assert prm.multiplier[0] != Q.add_params(s1, s2, so).multiplier[0]


def test_params_reject_what_tflite_rejects():
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        Q.add_params(0.5, 0.5, 1e-9)
    with pytest.raises(ValueError, match="bits"):
        Q.add_params(0.5, 0.5, 0.1, bits=12)
    with pytest.raises(ValueError, match="positive"):
        Q.mul_params(0.5, -0.5, 0.1)


def test_mul_prelu_requantize_params():
    prm = Q.mul_params(0.02, 0.035, 0.011)
    real = float(np.float32(0.02)) * float(np.float32(0.035)) / float(np.float32(0.011))
    assert (int(prm.multiplier[0]), int(prm.shift[0])) == fp.quantize_multiplier(real)
    assert prm.scale[0] == np.float32(np.float32(np.float32(0.02) * np.float32(0.035)) / np.float32(0.011))
    p = Q.prelu_params(0.1, 0.01, 0.05)
    assert p.multiplier.shape == (2,) and (int(p.multiplier[0]), int(p.shift[0])) == fp.quantize_multiplier(
        float(np.float32(0.1)) / float(np.float32(0.05)))
    r = Q.requantize_params([0.1, 0.2], 0.05)
    assert r.multiplier.shape == (2,) and r.shift.tolist() == [2, 3]


# ---------------------------------------------------------------- op adapters


def q(scale, zp):
    return Quant([float(scale)], [int(zp)])


def one_node(op, inputs, output, attrs=None, profile="tflm", parallel=True):
    """inputs: list of (name, dtype, shape, quant, const_or_None); output: (name, dtype, shape, quant)."""
    tensors, constants, graph_inputs = {}, {}, []
    for name, dtype, shape, quant, const in inputs:
        tensors[name] = TensorSpec(name, dtype, list(shape), quant)
        if const is not None:
            constants[name] = np.asarray(const, dtype=dtype)
        else:
            graph_inputs.append(name)
    oname, odtype, oshape, oquant = output
    tensors[oname] = TensorSpec(oname, odtype, list(oshape), oquant)
    node = Node("n0", op, [i[0] for i in inputs], [oname], attrs or {})
    graph = Graph(tensors, [node], graph_inputs, [oname], constants, profile=profile)
    return Model(graph, profile=profile, parallel=parallel)


def params_inputs(prm, n):
    return [("mult", "int32", [n], None, prm.multiplier), ("shift", "int32", [n], None, prm.shift),
            ("scale", "float32", [n], None, prm.scale)]


@pytest.mark.parametrize("profile", ["tflm", "single", "onnx"])
@pytest.mark.parametrize("op", ["add", "sub"])
def test_add_sub_op_adapter(op, profile):
    rng = np.random.default_rng(11)
    prm = (Q.add_params if op == "add" else Q.sub_params)(0.02, 0.035, 0.05)
    model = one_node(op, [("a", "int8", [None, 3, 4], q(0.02, 5), None), ("b", "int8", [3, 1], q(0.035, -7), None),
                          *params_inputs(prm, 3)], ("y", "int8", [None, 3, 4], q(0.05, 3)), profile=profile)
    a, b = rand_codes(rng, (2, 3, 4), np.int8), rand_codes(rng, (3, 1), np.int8)
    y = model.run({"a": a, "b": b})["y"]
    path = model.profile.int8
    ap = E.pack_add_params(5, -7, prm.left_shift, reduced(prm.multiplier, path), prm.shift, prm.scale,
                           path.rounding_code, path.mult_bits, 3, -128, 127)
    ref, _, sat = R.add(a, b, ap, 1 if op == "add" else -1)
    assert y.dtype == np.int8 and y.tolist() == ref.tolist()
    assert model.counts["n0"].saturations == sat
    serial = one_node(op, [("a", "int8", [None, 3, 4], q(0.02, 5), None), ("b", "int8", [3, 1], q(0.035, -7), None),
                           *params_inputs(prm, 3)], ("y", "int8", [None, 3, 4], q(0.05, 3)), profile=profile,
                      parallel=False)
    assert np.array_equal(serial.run({"a": a, "b": b})["y"], y)


def test_mul_and_prelu_op_adapters_int16():
    rng = np.random.default_rng(5)
    prm = Q.mul_params(3e-4, 1.7e-4, 2e-4)
    model = one_node("mul", [("a", "int16", [4, 6], q(3e-4, 0), None), ("b", "int16", [6], q(1.7e-4, 0), None),
                             *params_inputs(prm, 1)], ("y", "int16", [4, 6], q(2e-4, 0)))
    a, b = rand_codes(rng, (4, 6), np.int16), rand_codes(rng, (6,), np.int16)
    ref, _, _ = R.mul(a, b, 0, 0, rq_for(prm, model.profile.int8, np.int16, 0))
    assert model.run({"a": a, "b": b})["y"].tolist() == ref.tolist()

    pp = Q.prelu_params(0.03, 0.004, 0.02)
    alpha = rand_codes(rng, (3, 1), np.int8)
    model = one_node("prelu", [("x", "int8", [2, 3, 5], q(0.03, 4), None),
                               ("alpha", "int8", [3, 1], q(0.004, 2), alpha),
                               *params_inputs(pp, 2)], ("y", "int8", [2, 3, 5], q(0.02, -3)))
    x = rand_codes(rng, (2, 3, 5), np.int8)
    ref, _, _ = R.prelu(x, alpha, 4, 2, rq_for(pp, model.profile.int8, np.int8, -3))
    assert model.run(x)["y"].tolist() == ref.tolist()


def test_requantize_op_adapter_per_channel_and_path_attr():
    rng = np.random.default_rng(9)
    prm = Q.requantize_params([1e-4, 2e-4, 5e-5], 0.02)
    for path_attr in ("int8", "int16"):
        model = one_node("requantize", [("x", "int32", [None, 3, 7], None, None), *params_inputs(prm, 3)],
                         ("y", "int8", [None, 3, 7], q(0.02, -4)), {"axis": -2, "act_min": -4, "path": path_attr})
        x = rng.integers(-(2**20), 2**20, (2, 3, 7)).astype(np.int32)
        path = model.profile.path(path_attr)
        rq = rq_for(prm, path, np.int8, -4, act_min=-4)
        # a fused activation bound (attribute act_min) never counts as saturation (intsim.ops.requant)
        rq = rq[:15] + (np.int64(-(2**62)), rq[16])
        ref, _, sat = R.requantize(x, 0, rq, axis=1)
        assert model.run(x)["y"].tolist() == ref.tolist()
        assert model.counts["n0"].saturations == sat


def test_relu_and_clamp_op_adapters():
    x = np.arange(-128, 128, dtype=np.int8).reshape(4, 64)
    model = one_node("relu", [("x", "int8", [4, 64], q(0.1, -20), None)], ("y", "int8", [4, 64], q(0.1, -20)),
                     {"max": 40})
    assert model.run(x)["y"].tolist() == np.clip(x, -20, 40).tolist()
    model = one_node("clamp", [("x", "int16", [4, 64], q(0.1, 0), None)], ("y", "int16", [4, 64], q(0.1, 0)),
                     {"min": -7, "max": 9})
    assert model.run(x.astype(np.int16))["y"].tolist() == np.clip(x, -7, 9).tolist()


BAD_NODES = [
    ("add", dict(attrs={"left_shift": 40}), "left_shift"),
    ("add", dict(attrs={"path": "int4"}), "attribute 'path'"),
    ("add", dict(attrs={"act_min": 50, "act_max": 10}), "act_min 50 / act_max 10"),
    ("add", dict(bshape=[5]), "do not broadcast"),
    ("add", dict(nparams=2), "shape [2], expected [3]"),
    ("mul", dict(odtype="int16"), "expected int8 like input"),
    ("mul", dict(bq=Quant([0.1, 0.2], [0, 0], axis=0), bshape=[2, 1]), "quantized per tensor"),
    ("sub", dict(mult=[-5, 1, 1]), "must be >= 0"),
]


@pytest.mark.parametrize("op,kw,message", BAD_NODES)
def test_binary_op_errors_name_the_problem(op, kw, message):
    n = kw.get("nparams", 3 if op in ("add", "sub") else 1)
    mult = np.array(kw.get("mult", [2**30] * n), dtype=np.int32)
    with pytest.raises(OpError, match=re.escape(message)) as err:
        one_node(op, [("a", "int8", [2, 3], q(0.1, 0), None),
                      ("b", "int8", kw.get("bshape", [3]), kw.get("bq", q(0.1, 0)), None),
                      ("mult", "int32", [n], None, mult), ("shift", "int32", [n], None, np.zeros(n, np.int32)),
                      ("scale", "float32", [n], None, np.full(n, 0.1, np.float32))],
                 ("y", kw.get("odtype", "int8"), [2, 3], q(0.1, 0)), kw.get("attrs"))
    assert "n0" in str(err.value)


def test_unary_op_errors():
    with pytest.raises(OpError, match="quantization of input"):
        one_node("relu", [("x", "int8", [3], q(0.1, 0), None)], ("y", "int8", [3], q(0.2, 0)))
    with pytest.raises(OpError, match="bounds"):
        one_node("clamp", [("x", "int8", [3], q(0.1, 0), None)], ("y", "int8", [3], q(0.1, 0)), {"min": 5, "max": 1})
    with pytest.raises(OpError, match="'axis' is required"):
        one_node("requantize", [("x", "int32", [2, 3], None, None), ("m", "int32", [3], None, [2**30] * 3),
                                ("s", "int32", [3], None, [0] * 3), ("c", "float32", [3], None, [0.5] * 3)],
                 ("y", "int8", [2, 3], q(0.1, 0)))
    with pytest.raises(OpError, match="symmetric"):
        one_node("requantize", [("x", "int16", [3], q(0.1, 3), None), ("m", "int32", [1], None, [2**30]),
                                ("s", "int32", [1], None, [0]), ("c", "float32", [1], None, [0.5])],
                 ("y", "int8", [3], q(0.1, 0)))
    model = one_node("requantize", [("x", "int32", [None, 3], None, None), ("m", "int32", [3], None, [2**30] * 3),
                                    ("s", "int32", [3], None, [0] * 3), ("c", "float32", [3], None, [0.5] * 3)],
                     ("y", "int8", [None, 3], q(0.1, 0)), {"axis": 1})
    with pytest.raises(ValueError, match="shape"):
        model.run(np.zeros((2, 4), np.int32))


def test_empty_tensors():
    model = one_node("requantize", [("x", "int32", [None, 3, None], None, None), ("m", "int32", [3], None, [2**30] * 3),
                                    ("s", "int32", [3], None, [0] * 3), ("c", "float32", [3], None, [0.5] * 3)],
                     ("y", "int8", [None, 3, None], q(0.1, 0)), {"axis": 1})
    assert model.run(np.zeros((0, 3, 4), np.int32))["y"].shape == (0, 3, 4)
    assert model.run(np.zeros((2, 3, 0), np.int32))["y"].shape == (2, 3, 0)
    prm = Q.add_params(0.1, 0.1, 0.1)
    model = one_node("add", [("a", "int8", [None, 4], q(0.1, 0), None), ("b", "int8", [4], q(0.1, 0), None),
                             *params_inputs(prm, 3)], ("y", "int8", [None, 4], q(0.1, 0)))
    assert model.run({"a": np.zeros((0, 4), np.int8), "b": np.ones(4, np.int8)})["y"].shape == (0, 4)
