"""kernels.table == tests.reference.table exhaustively (all 256 int8 / 65536 int16 inputs), TFLM
golden vectors, conversion helpers, op adapters."""

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from intsim import quantize as Q
from intsim.ir import Quant
from intsim.kernels import table as T
from intsim.ops import OpError
from tests.kernels.test_elementwise import one_node, q
from tests.reference import table as R

ALL16 = np.arange(-32768, 32768, dtype=np.int16)
ALL8 = np.arange(-128, 128, dtype=np.int8)
HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def run_flat(kernel, x, *args, dtype=None, chunk=1000):
    out = np.empty(x.shape, dtype=dtype or x.dtype)
    kernel(x, *args, chunk, out)
    return out


# ---------------------------------------------------------------- sigmoid table


def test_sigmoid_table_is_tflites():
    t = T.SIGMOID_TABLE_UINT16
    assert t.shape == (256,) and t[0] == 32768 and t[-1] == 65535 and np.all(np.diff(t) >= 0)
    digest = hashlib.sha256(t.astype("<u2").tobytes()).hexdigest()
    assert digest == "c79a34d2c8c6e794fbb0207601538fe0169e968cd6d9d5ca65fff859dcd55183"


# ---------------------------------------------------------------- lut8 / lut16


@pytest.mark.parametrize("in_dtype,out_dtype",
                         [("int8", "int8"), ("int8", "uint8"), ("uint8", "int8"), ("uint8", "uint8")])
def test_lut8_exhaustive(in_dtype, out_dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(out_dtype)
    table = rng.integers(info.min, info.max + 1, 256).astype(out_dtype)
    x = np.arange(np.iinfo(in_dtype).min, np.iinfo(in_dtype).max + 1).astype(in_dtype)
    offset = 128 if in_dtype == "int8" else 0
    expected = R.lut8(x, table, offset)
    for kernel in (T.lut8, T.lut8_parallel):
        assert run_flat(kernel, x, table, np.int64(offset), dtype=out_dtype).tolist() == expected
    assert expected == table.tolist()  # code order
    big = rng.integers(np.iinfo(in_dtype).min, np.iinfo(in_dtype).max + 1, 100_003).astype(in_dtype)
    a = run_flat(T.lut8, big, table, np.int64(offset), dtype=out_dtype, chunk=T.CHUNK)
    b = run_flat(T.lut8_parallel, big, table, np.int64(offset), dtype=out_dtype, chunk=T.CHUNK)
    assert np.array_equal(a, b) and np.array_equal(a, table[big.astype(np.int64) + offset])


def lut16_tables():
    rng = np.random.default_rng(2)
    wild = rng.integers(-32768, 32768, 513).astype(np.int16)  # slopes overflow int16: exercises the wraps
    smooth = np.round(np.linspace(-30000, 30000, 513)).astype(np.int16)
    tanh = Q.make_lut16(np.tanh, 6.0 / 32768, 0, 1.0 / 32768, 0)
    sigmoid = Q.make_lut16(lambda v: 1 / (1 + np.exp(-v)), 10.0 / 32768, 0, 2.0 / 65536, 0)
    return {"wild": wild, "smooth": smooth, "tanh": tanh, "sigmoid": sigmoid}


@pytest.mark.parametrize("name", ["wild", "smooth", "tanh", "sigmoid"])
def test_lut16_exhaustive(name):
    table = lut16_tables()[name]
    expected = [R.lut16(int(v), table) for v in ALL16]
    got = run_flat(T.lut16, ALL16, table)
    assert got.tolist() == expected
    assert np.array_equal(run_flat(T.lut16_parallel, ALL16, table, chunk=777), got)


def test_make_lut16_approximates_function():
    table = lut16_tables()["tanh"]
    got = run_flat(T.lut16, ALL16, table).astype(np.float64)
    # TFLite scales outputs by 65536 / (output range) = 65536 / (65535 * s_out); its 9-bit grid with
    # 7-bit interpolation is off by a few LSB where tanh bends (TFLite's own table, not ours).
    exact = np.tanh(ALL16 * np.float64(np.float32(6.0 / 32768))) * 32768 * 65536 / 65535
    assert np.max(np.abs(got - exact)) <= 6.0


def test_make_lut16_identity_is_the_scaled_grid():
    # identity: entry i samples input_min + i * step, scaled by 65536 / (output range); the
    # interpolation is exact up to rounding, so the midpoint bias is at most one code.
    table = Q.make_lut16(lambda v: v, 1.0, 0, 1.0, 0)
    step = np.float32(65535) / np.float32(512)
    grid = (np.float32(-32768) + np.arange(513, dtype=np.float32) * step) * (65536 / 65535)
    assert np.max(np.abs(table - grid)) <= 1.5
    assert table[0] == -32768 and table[512] == 32767


# ---------------------------------------------------------------- TFLM int16 logistic / tanh

INT16_SCALES = [2**-12, 2**-11, 2**-15, 2**-10, 2**-8, 3.1e-4, 1e-5, 0.7, 1.234e-3]


@pytest.mark.parametrize("kind", ["logistic", "tanh"])
@pytest.mark.parametrize("scale", INT16_SCALES)
def test_tflm_int16_exhaustive(kind, scale):
    params = (Q.tflm_logistic_int16_params if kind == "logistic" else Q.tflm_tanh_int16_params)(scale)
    kernel, kernel_par = ((T.tflm_logistic_int16, T.tflm_logistic_int16_parallel) if kind == "logistic"
                          else (T.tflm_tanh_int16, T.tflm_tanh_int16_parallel))
    ref_fn = R.tflm_logistic_int16 if kind == "logistic" else R.tflm_tanh_int16
    got = run_flat(kernel, ALL16, np.int64(params[0]), np.int64(params[1]))
    assert got.tolist() == [ref_fn(int(v), *params) for v in ALL16]
    assert np.array_equal(run_flat(kernel_par, ALL16, np.int64(params[0]), np.int64(params[1]), chunk=4099), got)
    # and it is the function (TFLM's table interpolation error is a few LSB)
    x = ALL16.astype(np.float64) * float(np.float32(scale))
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-x)) if kind == "logistic" else np.tanh(x)
    assert np.max(np.abs(got / 32768.0 - exact)) < 2e-4


@HYP
@given(mult=st.integers(0, 32767), shift=st.integers(0, 31), kind=st.sampled_from(["logistic", "tanh"]))
def test_tflm_int16_any_parameters(mult, shift, kind):
    if mult == 0:
        shift = min(shift, 13)  # 3 << shift stays a valid int16-range multiplier
    kernel = T.tflm_logistic_int16 if kind == "logistic" else T.tflm_tanh_int16
    ref_fn = R.tflm_logistic_int16 if kind == "logistic" else R.tflm_tanh_int16
    x = ALL16[::37]
    got = run_flat(kernel, x, np.int64(mult), np.int64(shift))
    assert got.tolist() == [ref_fn(int(v), mult, shift) for v in x]


def test_tflm_int16_golden():
    """Hashes of tflite-micro 0.dev20261023182759 outputs for all 65536 inputs (output 2^-15, 0)."""
    golden = {("logistic", 2**-12): "5e888504031254f7", ("logistic", 2**-11): "692082fc1bbefbaf",
              ("logistic", 3.1e-4): "116dedee384fbca1", ("tanh", 2**-12): "e45a877eb31d4a70",
              ("tanh", 2**-11): "a1cf63d5e0312ce7", ("tanh", 3.1e-4): "9a9b1ca14760f52e"}
    for (kind, scale), digest in golden.items():
        m, s = (Q.tflm_logistic_int16_params if kind == "logistic" else Q.tflm_tanh_int16_params)(scale)
        kernel = T.tflm_logistic_int16 if kind == "logistic" else T.tflm_tanh_int16
        assert _sha(run_flat(kernel, ALL16, np.int64(m), np.int64(s))) == digest, (kind, scale)


def test_tflm_int16_params_follow_prepare():
    assert Q.tflm_logistic_int16_params(2**-12) == (0, 0)
    assert Q.tflm_tanh_int16_params(2**-12) == (0, 0)
    assert Q.tflm_tanh_int16_params(2**-11) == (0, 1)
    assert Q.tflm_logistic_int16_params(2**-11) == (24576, 12)  # 2^-11 * 12288 = 6, doubled 12 times
    assert Q.tflm_tanh_int16_params(2**-15) == (24576, 16)
    m, s = Q.tflm_logistic_int16_params(3.1e-4)
    scaled = float(np.float32(3.1e-4)) * 12288 * 2**s
    assert 16383.5 < scaled < 32768 and m == int(scaled)
    with pytest.raises(ValueError, match="too large"):
        Q.tflm_logistic_int16_params(3.0)
    assert Q.checked_log2(2**-15) == (True, -15)
    assert Q.checked_log2(3e-5)[0] is False
    assert Q.tflm_int16_output_scale_ok(1 / 32768) and not Q.tflm_int16_output_scale_ok(1 / 32767.0 * 1.01)


# ---------------------------------------------------------------- TFLM int8 logistic / tanh (gemmlowp)


@pytest.mark.parametrize("kind", ["logistic", "tanh"])
def test_tflm_int8_all_inputs_many_scales(kind):
    rng = np.random.default_rng(4 if kind == "logistic" else 5)
    ref_fn = R.tflm_logistic_int8 if kind == "logistic" else R.tflm_tanh_int8
    for scale in [2**-4, 2**-7, 0.05, 0.1234, 1.0, 3e-3] + [float(np.exp(rng.uniform(np.log(1e-3), np.log(2.0))))
                                                            for _ in range(10)]:
        zp = int(rng.integers(-128, 128))
        p = Q.tflm_int8_params(scale, zp)
        table = T.tflm_int8_table(kind, *p)
        assert table.tolist() == [ref_fn(int(v), *p) for v in ALL8], (scale, zp)
        kernel = getattr(T, f"tflm_{kind}_int8")
        kernel_par = getattr(T, f"tflm_{kind}_int8_parallel")
        args = (np.int64(p.input_zero_point), np.int64(p.input_range_radius), np.int64(p.input_multiplier),
                np.int64(p.input_left_shift))
        assert np.array_equal(run_flat(kernel_par, ALL8, *args, chunk=7), table)
        # within one code of the exactly rounded function
        x = np.float64(np.float32(scale)) * (ALL8.astype(np.float64) - zp)
        exact = 256 / (1 + np.exp(-x)) - 128 if kind == "logistic" else 128 * np.tanh(x)
        assert np.max(np.abs(table - np.clip(exact, -128, 127))) <= 1.0


def test_tflm_int8_golden():
    """Hashes of tflite-micro outputs for all 256 int8 inputs."""
    golden = {("logistic", 0.05, 3): "9dfb6a14e013284c", ("logistic", 0.1234, -20): "11eddeb0ca9bba68",
              ("tanh", 0.05, 3): "3d875079079b7c5d", ("tanh", 0.1234, -20): "d51d8410463fc842"}
    for (kind, scale, zp), digest in golden.items():
        assert _sha(T.tflm_int8_table(kind, *Q.tflm_int8_params(scale, zp))) == digest


def test_tflm_int8_params_follow_prepare():
    p = Q.tflm_int8_params(0.05, 3)
    s = float(np.float32(0.05)) * 2**27
    assert p.input_left_shift == 23 and 2**22 <= s < 2**23
    assert p.input_multiplier == int(np.floor(s / 2**23 * 2**31 + 0.5))
    assert p.input_range_radius == (15 * 2**27) >> 23 == 240
    assert p.input_zero_point == 3
    with pytest.raises(ValueError, match="2\\^-28"):
        Q.tflm_int8_params(1e-9, 0)


@njit(cache=True)
def _gemmlowp_all(a, int_bits, which, out):
    for i in range(a.size):
        if which == 0:
            out[i] = T.gemmlowp_logistic(a[i], int_bits)
        elif which == 1:
            out[i] = T.gemmlowp_tanh(a[i], int_bits)
        else:
            out[i] = T.gemmlowp_exp_on_negative_values(a[i], int_bits)


def test_gemmlowp_functions_on_raw_values():
    rng = np.random.default_rng(6)
    edges = [-(2**31) + 1, -(2**30), -(2**27), -1, 0, 1, 2**27, 2**30, 2**31 - 1]
    raw = np.array(edges + rng.integers(-(2**31) + 1, 2**31, 400).tolist(), dtype=np.int64)
    for ibits in (1, 2, 4):
        for which, fn in ((0, R.logistic), (1, R.tanh)):
            out = np.empty_like(raw)
            _gemmlowp_all(raw, ibits, which, out)
            assert out.tolist() == [fn(R.FP(int(v), ibits)).raw for v in raw], (which, ibits)
    neg = -np.abs(raw)
    for ibits in (3, 4, 5):
        out = np.empty_like(neg)
        _gemmlowp_all(neg, ibits, 2, out)
        assert out.tolist() == [R.exp_on_negative_values(R.FP(int(v), ibits)).raw for v in neg]


# ---------------------------------------------------------------- make_lut8


def test_make_lut8_rounding_modes():
    ident = lambda v: v  # noqa: E731
    t = Q.make_lut8(ident, 0.5, 0, 1.0, 0)  # x / 2: exact halves
    codes = np.arange(-128, 128)
    assert t[codes + 128].tolist() == [int(np.sign(c) * np.floor(abs(c) / 2 + 0.5)) for c in codes]  # away from 0
    t = Q.make_lut8(ident, 0.5, 0, 1.0, 0, mode="onnx")
    assert t.tolist() == np.rint(codes / 2).astype(int).tolist()  # half to even
    t = Q.make_lut8(ident, 1.0, 0, 1.0, -200, in_dtype="uint8", out_dtype="uint8")
    assert t.tolist() == [max(0, c - 200) for c in range(256)]
    t = Q.make_lut8(lambda v: 1 / (1 + np.exp(-v)), 0.1, 10, 1 / 256, -128)
    x = np.float32(0.1) * (codes - 10).astype(np.float32)
    y = (1 / (1 + np.exp(-x))).astype(np.float32) * (np.float32(1) / np.float32(1 / 256))
    expected = np.clip(np.sign(y) * np.floor(np.abs(y.astype(np.float64)) + 0.5) - 128, -128, 127)
    assert t.tolist() == expected.astype(int).tolist()
    with pytest.raises(ValueError, match="NaN"), np.errstate(all="ignore"):
        Q.make_lut8(np.log, 0.1, 0, 0.1, 0)


# ---------------------------------------------------------------- op adapters


def test_lut8_and_lut16_op_adapters():
    rng = np.random.default_rng(8)
    table = Q.make_lut8(np.tanh, 0.05, 3, 1 / 128, 0)
    model = one_node("lut8", [("x", "int8", [None, 16], q(0.05, 3), None), ("t", "int8", [256], None, table)],
                     ("y", "int8", [None, 16], q(1 / 128, 0)))
    x = rng.integers(-128, 128, (3, 16)).astype(np.int8)
    assert model.run(x)["y"].tolist() == table[x.astype(np.int64) + 128].tolist()
    ut = rng.integers(0, 256, 256).astype(np.uint8)
    model = one_node("lut8", [("x", "uint8", [16], None, None), ("t", "uint8", [256], None, ut)],
                     ("y", "uint8", [16], None))
    xu = rng.integers(0, 256, 16).astype(np.uint8)
    assert model.run(xu)["y"].tolist() == ut[xu].tolist()
    t16 = lut16_tables()["tanh"]
    model = one_node("lut16", [("x", "int16", [2, 50], q(6 / 32768, 0), None), ("t", "int16", [513], None, t16)],
                     ("y", "int16", [2, 50], q(1 / 32768, 0)))
    x16 = rng.integers(-32768, 32768, (2, 50)).astype(np.int16)
    assert model.run(x16)["y"].reshape(-1).tolist() == [R.lut16(int(v), t16) for v in x16.reshape(-1)]


@pytest.mark.parametrize("kind", ["logistic", "tanh"])
def test_logistic_tanh_op_adapters(kind):
    rng = np.random.default_rng(10)
    p = Q.tflm_int8_params(0.07, -5)
    out_q = q(1 / 256, -128) if kind == "logistic" else q(1 / 128, 0)
    attrs = {"input_multiplier": p.input_multiplier, "input_left_shift": p.input_left_shift,
             "input_range_radius": p.input_range_radius}
    for parallel in (True, False):
        model = one_node(kind, [("x", "int8", [None, 9], q(0.07, -5), None)], ("y", "int8", [None, 9], out_q), attrs,
                         parallel=parallel)
        x = rng.integers(-128, 128, (4, 9)).astype(np.int8)
        ref_fn = R.tflm_logistic_int8 if kind == "logistic" else R.tflm_tanh_int8
        assert model.run(x)["y"].reshape(-1).tolist() == [ref_fn(int(v), *p) for v in x.reshape(-1)]
    m, s = (Q.tflm_logistic_int16_params if kind == "logistic" else Q.tflm_tanh_int16_params)(3.1e-4)
    model = one_node(kind, [("x", "int16", [None], q(3.1e-4, 0), None)], ("y", "int16", [None], q(1 / 32768, 0)),
                     {"input_multiplier": m, "input_left_shift": s})
    ref_fn = R.tflm_logistic_int16 if kind == "logistic" else R.tflm_tanh_int16
    x16 = ALL16[::101]
    assert model.run(x16)["y"].tolist() == [ref_fn(int(v), m, s) for v in x16]


TABLE_ERRORS = [
    ("logistic", "int8", {"input_multiplier": 1, "input_left_shift": 1}, q(1 / 256, -128), "input_range_radius"),
    ("logistic", "int8", {"input_multiplier": 1, "input_left_shift": 1, "input_range_radius": 5}, q(1 / 256, 0),
     "scale 0.00390625 and zero point -128"),
    ("tanh", "int8", {"input_multiplier": 1, "input_left_shift": 40, "input_range_radius": 5}, q(1 / 128, 0),
     "input_left_shift 40"),
    ("tanh", "int16", {"input_multiplier": 1, "input_left_shift": 3}, q(1 / 1000, 0), "scale 2\\^-15"),
    ("logistic", "int16", {"input_multiplier": 40000, "input_left_shift": 3}, q(1 / 32768, 0),
     "input_multiplier 40000"),
    ("logistic", "int16", {"input_multiplier": 0, "input_left_shift": 20}, q(1 / 32768, 0), "power-of-two"),
    ("tanh", "int16", {"input_left_shift": 3}, None, "tflm_tanh_int16_params"),
]


@pytest.mark.parametrize("op,dtype,attrs,out_q,message", TABLE_ERRORS)
def test_table_op_errors(op, dtype, attrs, out_q, message):
    with pytest.raises(OpError, match=message) as err:
        one_node(op, [("x", dtype, [4], q(0.1, 0), None)], ("y", dtype, [4], out_q), attrs)
    assert "n0" in str(err.value)


def test_table_op_shape_and_dtype_errors():
    with pytest.raises(OpError, match="shape \\[256\\]"):
        one_node("lut8", [("x", "int8", [4], None, None), ("t", "int8", [255], None, np.zeros(255, np.int8))],
                 ("y", "int8", [4], None))
    with pytest.raises(OpError, match="like the table"):
        one_node("lut8", [("x", "int8", [4], None, None), ("t", "uint8", [256], None, np.zeros(256, np.uint8))],
                 ("y", "int8", [4], None))
    with pytest.raises(OpError, match="expected \\[513\\]"):
        one_node("lut16", [("x", "int16", [4], None, None), ("t", "int16", [512], None, np.zeros(512, np.int16))],
                 ("y", "int16", [4], None))
    with pytest.raises(OpError, match="symmetric"):
        one_node("logistic", [("x", "int16", [4], q(0.1, 2), None)], ("y", "int16", [4], q(1 / 32768, 0)),
                 {"input_multiplier": 100, "input_left_shift": 3})
    with pytest.raises(OpError, match="per tensor"):
        one_node("tanh", [("x", "int8", [4], q(0.1, 0), None)], ("y", "int8", [4], Quant([0.1] * 4, [0] * 4, axis=0)),
                 {"input_multiplier": 1, "input_left_shift": 1, "input_range_radius": 5})
