"""linear / batch_matmul kernels == exact reference; parallel == serial; op adapters; errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.executor import Model
from intsim.fixedpoint import quantize_multiplier, reduce_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import matmul as km
from intsim.kernels.fixedpoint import requant_params
from intsim.ops import OpError
from tests.reference import matmul as ref
from tests.util import TEST_PATHS, random_requant

INT8 = (-128, 127)
INT16 = (-32768, 32767)


def fill(rng, shape, dtype, mode):
    """Codes of ``dtype``: uniform, all min, all max, or only the two extremes."""
    info = np.iinfo(dtype)
    if mode == "min":
        return np.full(shape, info.min, dtype=dtype)
    if mode == "max":
        return np.full(shape, info.max, dtype=dtype)
    if mode == "extremes":
        return rng.choice(np.array([info.min, info.max], dtype=dtype), size=shape)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


MODES = st.sampled_from(["uniform", "uniform", "min", "max", "extremes"])


def run_linear(kernel, x, x_zp, w, bias, rq, out_dtype):
    out = np.empty((x.shape[0], w.shape[0]), dtype=out_dtype)
    ovf = np.zeros(w.shape[0], dtype=np.int64)
    sat = np.zeros(w.shape[0], dtype=np.int64)
    kernel(x, x_zp, w, bias, rq, out, ovf, sat)
    return out, ovf, sat


def assert_same(got, want):
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


# --- int32 chunked dot product -------------------------------------------------------------

def test_int32_block_bounds():
    assert km.int32_block(128, 128, 10) == (2**31 - 1) // 16384  # int8 x int8: 131071
    assert km.int32_block(32768, 128, 10) == (2**31 - 1) // 2**22  # int16 x int8: 511
    assert km.int32_block(0, 128, 10) == 10 and km.int32_block(5, 0, 0) == 1
    assert km.int32_block(2**16, 2**16, 10) == 0  # a single product may not fit int32: int64 path
    # the bound is tight: block * amax * bmax <= 2^31 - 1 < (block + 1) * amax * bmax
    for amax, bmax in [(128, 128), (32768, 128), (32768, 127), (255, 3), (1, 1)]:
        block = int(km.int32_block(amax, bmax, 10))
        assert block * amax * bmax <= 2**31 - 1 < (block + 1) * amax * bmax


@pytest.mark.parametrize("block", [0, 1, 7, 511, 4096])
def test_dot_exact_chunks(block):
    rng = np.random.default_rng(block)
    for k in [0, 1, 510, 511, 512, 1023, 1500]:
        a = fill(rng, k, np.int16, "extremes" if k % 2 else "uniform")
        b = fill(rng, k, np.int8, "extremes")
        assert km.dot_exact(a, b, block) == int(a.astype(np.int64) @ b.astype(np.int64))


def test_dot_exact_worst_case_int16_is_exact():
    # every product is +2^22 -> a 32-bit accumulator over K = 2000 would wrap; chunks of 511 don't
    a = np.full(2000, -32768, dtype=np.int16)
    b = np.full(2000, -128, dtype=np.int8)
    block = km.int32_block(km.max_abs(a), km.max_abs(b), 2000)
    assert block == 511
    assert km.dot_exact(a, b, block) == 2000 * 2**22


# --- linear ----------------------------------------------------------------------------------

@settings(max_examples=70, deadline=None)
@given(path=st.sampled_from(sorted(TEST_PATHS)), m=st.integers(1, 5), k=st.integers(1, 300), n=st.integers(1, 7),
       x_zp=st.integers(*INT8), xmode=MODES, wmode=MODES, big_bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_linear_int8_matches_reference(path, m, k, n, x_zp, xmode, wmode, big_bias, seed):
    rng = np.random.default_rng(seed)
    x = fill(rng, (m, k), np.int8, xmode)
    w = fill(rng, (n, k), np.int8, wmode)
    lim = 2**31 - 1 if big_bias else 2**14
    bias = rng.integers(-lim, lim + 1, size=n).astype(np.int32)
    rq = random_requant(rng, n, TEST_PATHS[path], "int8")
    want = ref.linear(x, x_zp, w, bias, rq, np.int8)
    assert_same(run_linear(km.linear, x, x_zp, w, bias, rq, np.int8), want)
    assert_same(run_linear(km.linear_parallel, x, x_zp, w, bias, rq, np.int8), want)


@settings(max_examples=40, deadline=None)
@given(path=st.sampled_from(["tflm16", "acc24_sat_half_even", "onnx8"]), m=st.integers(1, 4), k=st.integers(1, 1200),
       n=st.integers(1, 5), xmode=MODES, wmode=MODES, seed=st.integers(0, 2**32 - 1))
def test_linear_int16_matches_reference(path, m, k, n, xmode, wmode, seed):
    rng = np.random.default_rng(seed)
    x = fill(rng, (m, k), np.int16, xmode)
    w = fill(rng, (n, k), np.int8, wmode)
    bias = rng.integers(-(2**40), 2**40, size=n).astype(np.int64)
    rq = random_requant(rng, n, TEST_PATHS[path], "int16", scale_range=(1e-7, 1e-3))
    want = ref.linear(x, 0, w, bias, rq, np.int16)
    assert_same(run_linear(km.linear, x, 0, w, bias, rq, np.int16), want)
    assert_same(run_linear(km.linear_parallel, x, 0, w, bias, rq, np.int16), want)


def test_linear_acc32_wraps_and_counts():
    # K * 255 * 128 + bias exceeds int32: the tflm8 register (32-bit wrap) overflows, and is counted
    k = 70000
    x = np.full((2, k), -128, dtype=np.int8)
    w = np.full((3, k), -128, dtype=np.int8)
    w[1] = 127
    bias = np.array([2**31 - 1, 0, -5], dtype=np.int32)
    rq = random_requant(np.random.default_rng(0), 3, TEST_PATHS["tflm8"], "int8")
    want = ref.linear(x, 127, w, bias, rq, np.int8)
    got = run_linear(km.linear, x, 127, w, bias, rq, np.int8)
    assert_same(got, want)
    assert got[1].tolist() == [2, 2, 2]


def test_linear_parallel_equals_serial_realistic():
    rng = np.random.default_rng(7)
    x = fill(rng, (257, 512), np.int8, "uniform")
    w = fill(rng, (130, 512), np.int8, "uniform")
    bias = rng.integers(-(2**20), 2**20, size=130).astype(np.int32)
    rq = random_requant(rng, 130, TEST_PATHS["single8"], "int8", scale_range=(1e-5, 1e-3))
    serial = run_linear(km.linear, x, -3, w, bias, rq, np.int8)
    assert_same(run_linear(km.linear_parallel, x, -3, w, bias, rq, np.int8), serial)
    acc = ref.linear_acc(x, -3, w, bias)
    assert np.abs(acc).max() < 2**31  # realistic: no overflow, so spot-check codes against the reference
    want = ref.linear(x[:9], -3, w, bias, rq, np.int8)
    np.testing.assert_array_equal(serial[0][:9], want[0])


# --- batch_matmul -----------------------------------------------------------------------------

def run_bmm(parallel, a, a_zp, b, b_zp, rq, out_dtype):
    bt = np.ascontiguousarray(np.swapaxes(b, 1, 2))
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=out_dtype)
    ovf = np.zeros(a.shape[0] * a.shape[1], dtype=np.int64)
    sat = np.zeros_like(ovf)
    (km.batch_matmul_parallel if parallel else km.batch_matmul)(a, a_zp, bt, b_zp, rq, out, ovf, sat)
    return out, ovf, sat


def run_bmm_acc(parallel, a, a_zp, b, b_zp, bits, saturating, out_dtype):
    bt = np.ascontiguousarray(np.swapaxes(b, 1, 2))
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=out_dtype)
    ovf = np.zeros(a.shape[0] * a.shape[1], dtype=np.int64)
    (km.batch_matmul_acc_parallel if parallel else km.batch_matmul_acc)(a, a_zp, bt, b_zp, bits, saturating, out, ovf)
    return out, ovf


@settings(max_examples=60, deadline=None)
@given(nb=st.integers(1, 3), m=st.integers(1, 5), k=st.integers(1, 700), n=st.integers(1, 6), a16=st.booleans(),
       a_zp=st.integers(*INT8), b_zp=st.integers(*INT8), amode=MODES, bmode=MODES,
       path=st.sampled_from(sorted(TEST_PATHS)), out16=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batch_matmul_matches_reference(nb, m, k, n, a16, a_zp, b_zp, amode, bmode, path, out16, seed):
    rng = np.random.default_rng(seed)
    a_dtype = np.int16 if a16 else np.int8
    a_zp = 0 if a16 else a_zp
    a = fill(rng, (nb, m, k), a_dtype, amode)
    b = fill(rng, (nb, k, n), np.int8, bmode)
    out_dtype = np.int16 if out16 else np.int8
    rq = random_requant(rng, 1, TEST_PATHS[path], out_dtype.__name__, scale_range=(1e-7, 1e-2))
    want = ref.batch_matmul(a, a_zp, b, b_zp, rq, out_dtype)
    assert_same(run_bmm(False, a, a_zp, b, b_zp, rq, out_dtype), want)
    assert_same(run_bmm(True, a, a_zp, b, b_zp, rq, out_dtype), want)


@settings(max_examples=40, deadline=None)
@given(nb=st.integers(1, 3), m=st.integers(1, 4), k=st.integers(1, 1500), n=st.integers(1, 5), a16=st.booleans(),
       a_zp=st.integers(*INT8), b_zp=st.integers(*INT8), amode=MODES, bmode=MODES,
       bits=st.sampled_from([20, 24, 32, 64]), saturating=st.booleans(), out64=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_batch_matmul_acc_matches_reference(nb, m, k, n, a16, a_zp, b_zp, amode, bmode, bits, saturating, out64, seed):
    rng = np.random.default_rng(seed)
    a_zp = 0 if a16 else a_zp
    a = fill(rng, (nb, m, k), np.int16 if a16 else np.int8, amode)
    b = fill(rng, (nb, k, n), np.int8, bmode)
    out_dtype = np.int64 if out64 else np.int32
    want = ref.batch_matmul_acc(a, a_zp, b, b_zp, bits, saturating, out_dtype)
    assert_same(run_bmm_acc(False, a, a_zp, b, b_zp, bits, int(saturating), out_dtype), want)
    assert_same(run_bmm_acc(True, a, a_zp, b, b_zp, bits, int(saturating), out_dtype), want)


def test_batch_matmul_acc_int32_output_caps_register():
    # int16 x int8 with K = 600 at the extremes: the exact sum 600 * 2^15 * 255 needs 33 bits;
    # an int32 output caps a 64-bit profile register at 32 bits, counts the overflow and wraps.
    a = np.full((1, 1, 600), -32768, dtype=np.int16)
    b = np.full((1, 600, 1), 127, dtype=np.int8)
    exact = 600 * -32768 * 255
    out, ovf = run_bmm_acc(False, a, 0, b, -128, 64, 0, np.int32)
    assert ovf.tolist() == [1] and out[0, 0, 0] == (exact + 2**31) % 2**32 - 2**31
    out, ovf = run_bmm_acc(False, a, 0, b, -128, 64, 1, np.int32)
    assert ovf.tolist() == [1] and out[0, 0, 0] == -(2**31)
    out, ovf = run_bmm_acc(False, a, 0, b, -128, 64, 0, np.int64)
    assert ovf.tolist() == [0] and out[0, 0, 0] == exact


# --- op adapters ------------------------------------------------------------------------------

def tensor(name, dtype, shape, scale=None, zp=0):
    return TensorSpec(name, dtype, list(shape), None if scale is None else Quant([scale], [zp]))


def one_node(op, inputs, outputs, attrs=None, constants=None, profile="tflm", parallel=True):
    tensors = {s.name: s for s in [*inputs, *outputs]}
    constants = constants or {}
    node = Node("n", op, [s.name for s in inputs], [s.name for s in outputs], attrs or {})
    graph = Graph(tensors, [node], [s.name for s in inputs if s.name not in constants], [s.name for s in outputs],
                  constants, profile)
    return Model(graph, parallel=parallel)


def linear_constants(rng, n, k, x_dtype, real=(1e-4, 1e-2)):
    w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=n).astype(np.int32 if x_dtype == "int8" else np.int64)
    scale = np.exp(rng.uniform(np.log(real[0]), np.log(real[1]), n)).astype(np.float32)
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in scale))
    return {"w": w, "b": bias, "m": np.array(mult, dtype=np.int32), "s": np.array(shift, dtype=np.int32), "sc": scale}


def linear_model(consts, x_dtype="int8", x_zp=5, y_zp=-3, x_shape=(None, None, 24), profile="tflm", parallel=True,
                 attrs=None):
    n = consts["w"].shape[0]
    x = tensor("x", x_dtype, x_shape, 0.02, x_zp)
    specs = [x] + [tensor(name, str(consts[name].dtype), consts[name].shape) for name in ("w", "b", "m", "s", "sc")]
    y = tensor("y", x_dtype, list(x_shape[:-1]) + [n], 0.05, y_zp)
    return one_node("linear", specs, [y], attrs, consts, profile, parallel)


@pytest.mark.parametrize("profile", ["tflm", "single", "onnx"])
@pytest.mark.parametrize("x_dtype", ["int8", "int16"])
def test_linear_op_matches_kernel_reference(profile, x_dtype):
    rng = np.random.default_rng(3)
    consts = linear_constants(rng, 6, 24, x_dtype)
    x_zp, y_zp = (5, -3) if x_dtype == "int8" else (0, 0)
    model = linear_model(consts, x_dtype, x_zp, y_zp, profile=profile)
    serial = linear_model(consts, x_dtype, x_zp, y_zp, profile=profile, parallel=False)
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, size=(2, 5, 24)).astype(x_dtype)
    y = model.run(x)["y"]
    assert y.shape == (2, 5, 6) and y.dtype == np.dtype(x_dtype)
    np.testing.assert_array_equal(serial.run(x)["y"], y)
    path = model.profile.path(x_dtype)
    mult = [reduce_multiplier(int(v), path.mult_bits) for v in consts["m"]]
    rq = requant_params(np.array(mult), consts["s"], consts["sc"], path.rounding_code, path.mult_bits, path.acc_bits,
                        path.acc_saturating, y_zp, info.min, info.max)
    want, ovf, sat = ref.linear(x.reshape(-1, 24), x_zp, consts["w"], consts["b"], rq, x_dtype)
    np.testing.assert_array_equal(y.reshape(-1, 6), want)
    assert model.counts["n"].saturations == int(sat.sum()) and model.counts["n"].acc_overflows == int(ovf.sum())


def test_linear_op_act_range_and_1d_input():
    rng = np.random.default_rng(4)
    consts = linear_constants(rng, 3, 8, "int8", real=(0.05, 0.1))
    model = linear_model(consts, x_shape=(8,), attrs={"act_min": -10, "act_max": 10})
    y = model.run(rng.integers(-128, 128, size=8).astype(np.int8))["y"]
    assert y.shape == (3,) and y.min() >= -10 and y.max() <= 10


def test_linear_op_errors():
    rng = np.random.default_rng(5)
    consts = linear_constants(rng, 4, 8, "int8")
    with pytest.raises(OpError, match="int16 input 'x' must be symmetric"):
        linear_model({**consts, "b": consts["b"].astype(np.int64)}, "int16", x_zp=3, x_shape=(None, 8))
    with pytest.raises(OpError, match="constant 'b' has dtype int64, expected int32"):
        linear_model({**consts, "b": consts["b"].astype(np.int64)}, x_shape=(None, 8))
    with pytest.raises(OpError, match="weight must have 2 dims"):
        linear_model({**consts, "w": consts["w"].reshape(4, 8, 1)}, x_shape=(None, 8))
    with pytest.raises(OpError, match="does not end in K = 8"):
        linear_model(consts, x_shape=(None, 9))
    model = linear_model(consts, x_shape=(None, None))
    with pytest.raises(OpError, match=r"node 'n' \(linear\): input has shape \[2, 9\], expected last dim 8"):
        model.run(np.zeros((2, 9), dtype=np.int8))


def bmm_model(a_spec, b_spec, y_spec, attrs=None, requant=None, b_const=None, profile="tflm", parallel=True):
    inputs, consts = [a_spec, b_spec], {}
    if b_const is not None:
        consts["b"] = b_const
        inputs[1] = TensorSpec(b_spec.name, b_spec.dtype, list(b_const.shape), b_spec.quant)
    if requant is not None:
        mult, shift = quantize_multiplier(requant)
        consts.update(m=np.array([mult], dtype=np.int32), s=np.array([shift], dtype=np.int32),
                      sc=np.array([requant], dtype=np.float32))
        inputs += [tensor("m", "int32", [1]), tensor("s", "int32", [1]), tensor("sc", "float32", [1])]
    return one_node("batch_matmul", inputs, [y_spec], attrs, consts, profile, parallel)


@pytest.mark.parametrize("transpose_a", [0, 1])
@pytest.mark.parametrize("transpose_b", [0, 1])
def test_batch_matmul_op_transposes_and_broadcasts(transpose_a, transpose_b):
    rng = np.random.default_rng(6)
    a = rng.integers(-128, 128, size=(2, 3, 5, 7)).astype(np.int8)  # [2, 3, M=5, K=7]
    b = rng.integers(-128, 128, size=(3, 7, 4)).astype(np.int8)  # [3, K=7, N=4], batch broadcast
    a_in = np.swapaxes(a, -1, -2).copy() if transpose_a else a
    b_in = np.swapaxes(b, -1, -2).copy() if transpose_b else b
    attrs = {"transpose_a": transpose_a, "transpose_b": transpose_b}
    a_spec = tensor("a", "int8", [None] * 4, 0.1, 9)
    b_spec = tensor("b", "int8", [None] * 3, 0.1, -4)
    # raw int32 accumulators == (a - 9) @ (b + 4)
    raw = bmm_model(a_spec, b_spec, tensor("y", "int32", [None] * 4), attrs).run({"a": a_in, "b": b_in})["y"]
    want = np.matmul(a.astype(np.int64) - 9, b.astype(np.int64) + 4)
    np.testing.assert_array_equal(raw, want)
    # requantized int8, per tensor, with b constant; serial == parallel
    y_spec = tensor("y", "int8", [None] * 4, 0.3, 2)
    got = [bmm_model(a_spec, b_spec, y_spec, attrs, 1e-3, b_in, parallel=p).run({"a": a_in})["y"] for p in (True, False)]
    np.testing.assert_array_equal(got[0], got[1])
    mult, shift = quantize_multiplier(1e-3)
    rq = requant_params(np.array([mult]), np.array([shift]), np.array([1e-3], dtype=np.float32), 0, 31, 32, False, 2,
                        -128, 127)
    a3 = a.reshape(6, 5, 7)
    b3 = np.broadcast_to(b, (2, 3, 7, 4)).reshape(6, 7, 4)
    want_q, _, _ = ref.batch_matmul(a3, 9, b3, -4, rq, np.int8)
    np.testing.assert_array_equal(got[0].reshape(6, 5, 4), want_q)


def test_batch_matmul_op_int16_probabilities_times_int8_values():
    # attention P.V: int16 probabilities (zp 0) x int8 values -> int8 context, tflm int16 path
    rng = np.random.default_rng(8)
    p = rng.integers(0, 32768, size=(4, 10, 10)).astype(np.int16)
    v = rng.integers(-128, 128, size=(4, 10, 16)).astype(np.int8)
    model = bmm_model(tensor("a", "int16", [4, 10, 10], 1 / 32768, 0), tensor("b", "int8", [4, 10, 16], 0.05, 3),
                      tensor("y", "int8", [4, 10, 16], 0.05, -1), requant=1 / 32768)
    y = model.run({"a": p, "b": v})["y"]
    path = model.profile.int16
    mult, shift = quantize_multiplier(1 / 32768)
    rq = requant_params(np.array([reduce_multiplier(mult, path.mult_bits)]), np.array([shift]),
                        np.array([1 / 32768], dtype=np.float32), path.rounding_code, path.mult_bits, path.acc_bits,
                        path.acc_saturating, -1, -128, 127)
    want, _, _ = ref.batch_matmul(p, 0, v, 3, rq, np.int8)
    np.testing.assert_array_equal(y, want)


def test_batch_matmul_op_errors():
    a8 = tensor("a", "int8", [None, 3, 4], 0.1, 0)
    b8 = tensor("b", "int8", [None, 4, 5], 0.1, 0)
    y32 = tensor("y", "int32", [None, 3, 5])
    y8 = tensor("y", "int8", [None, 3, 5], 0.1, 0)
    with pytest.raises(OpError, match="input b 'b' has dtype int16"):
        bmm_model(a8, tensor("b", "int16", [None, 4, 5], 0.1, 0), y32)
    with pytest.raises(OpError, match="int16 input 'a' must be symmetric"):
        bmm_model(tensor("a", "int16", [None, 3, 4], 0.1, 2), b8, y32)
    with pytest.raises(OpError, match="inner dims differ"):
        bmm_model(a8, tensor("b", "int8", [None, 6, 5], 0.1, 0), y32)
    with pytest.raises(OpError, match="expects inputs \\[a, b, multiplier, shift, scale\\]"):
        bmm_model(a8, b8, y8)
    with pytest.raises(OpError, match="raw accumulators\\): expects 2 inputs"):
        bmm_model(a8, b8, y32, requant=0.01)
    with pytest.raises(OpError, match="attribute 'transpose_b' must be 0 or 1"):
        bmm_model(a8, b8, y32, {"transpose_b": 2})
    with pytest.raises(OpError, match="needs at least 2 dims"):
        bmm_model(a8, tensor("b", "int8", [4], 0.1, 0), y32)
    model = bmm_model(tensor("a", "int8", [None, None, None], 0.1, 0), tensor("b", "int8", [None, None, None], 0.1, 0),
                      y32)
    with pytest.raises(OpError, match="do not broadcast"):
        model.run({"a": np.zeros((2, 3, 4), np.int8), "b": np.zeros((3, 4, 5), np.int8)})
    with pytest.raises(OpError, match="inner dims differ"):
        model.run({"a": np.zeros((2, 3, 4), np.int8), "b": np.zeros((2, 5, 5), np.int8)})
