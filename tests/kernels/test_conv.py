"""Convolution kernels == naive reference (and torch); parallel == serial; op adapters; errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.executor import Model
from intsim.fixedpoint import quantize_multiplier, reduce_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import conv as kc
from intsim.kernels.fixedpoint import requant_params
from intsim.ops import OpError
from tests.reference import conv as ref
from tests.reference.requant import requantize_output
from tests.util import TEST_PATHS, random_requant

PATHS = sorted(TEST_PATHS)
# C_in / groups values on both sides of kc.DOT_MIN_CHANNELS (row and dot loop orders)
_D = kc.DOT_MIN_CHANNELS
GROUP_WIDTHS = [1, 2, 3, 5, _D - 1, _D, _D + 3, 2 * _D + 1]
MODES = ["uniform", "uniform", "uniform", "min", "max", "extremes", "small"]


# --- operands ---------------------------------------------------------------------------------

def fill(rng, shape, dtype, mode):
    """Codes of ``dtype``: uniform, all min, all max, only the two extremes, or small values."""
    info = np.iinfo(dtype)
    if mode == "min":
        return np.full(shape, info.min, dtype=dtype)
    if mode == "max":
        return np.full(shape, info.max, dtype=dtype)
    if mode == "extremes":
        return rng.choice(np.array([info.min, info.max], dtype=dtype), size=shape)
    if mode == "small":
        return rng.integers(-3, 4, size=shape).astype(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


def operands(rng, path, x_shape, w_shape, c_out, xmode, wmode, bias_mode, relu=False):
    """(x, x_zp, w, bias, rq, out_dtype) for a test path: int8 data on int8 paths, int16 + int64 bias on tflm16."""
    int16 = path == "tflm16"
    dtype = np.int16 if int16 else np.int8
    x = fill(rng, x_shape, dtype, xmode)
    w = fill(rng, w_shape, np.int8, wmode)
    x_zp = 0 if int16 else int(rng.integers(-128, 128))
    if bias_mode == "large":  # beyond a 20..32-bit register on its own; int64 bias stays < 2^47 (16x8 MBQM domain)
        hi = 2**40 if int16 else 2**31 - 1
        bias = rng.choice(np.array([-hi, hi, -hi // 3, hi // 2], dtype=np.int64), size=c_out)
    else:
        bias = rng.integers(-(2**14), 2**14, size=c_out)
    bias = bias.astype(np.int64 if int16 else np.int32)
    info = np.iinfo(dtype)
    act = dict(act_min=info.min // 4, act_max=info.max // 2) if relu else {}  # a narrower (fused) activation range
    rq = random_requant(rng, c_out, TEST_PATHS[path], out_dtype=dtype.__name__, **act)
    return x, x_zp, w, bias, rq, dtype


def run(kernel, out_shape, dtype, *args):
    """Call a kernel with garbage-filled output and counters (it must overwrite both); returns (out, ovf, sat)."""
    c_out = out_shape[1]
    out = np.full(out_shape, 7, dtype=dtype)
    ovf = np.full(c_out, 99, dtype=np.int64)
    sat = np.full(c_out, 99, dtype=np.int64)
    kernel(*args, out, ovf, sat)
    return out, ovf, sat


def assert_same(got, want):
    names = ("output", "overflows", "saturations")
    for name, g, w in zip(names, got, want):
        np.testing.assert_array_equal(g, w, err_msg=name)


def check_twins(serial, parallel, out_shape, dtype, args, want):
    got = run(serial, out_shape, dtype, *args)
    assert_same(got, want)
    assert_same(run(parallel, out_shape, dtype, *args), got)
    return got


# --- conv1d -----------------------------------------------------------------------------------

@st.composite
def conv1d_cases(draw):
    depthwise = draw(st.booleans())
    groups = draw(st.integers(1, 6)) if depthwise else draw(st.integers(1, 3))
    cg = 1 if depthwise else draw(st.sampled_from(GROUP_WIDTHS))
    cog = draw(st.integers(1, 3))
    k = draw(st.integers(1, 5))
    dilation = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    pads = (draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    span = dilation * (k - 1) + 1
    t = max(1, span - pads[0] - pads[1]) + draw(st.integers(0, 24))
    return dict(n=draw(st.integers(1, 2)), groups=groups, cg=cg, cog=cog, k=k, dilation=dilation, stride=stride,
                pads=pads, t=t)


@settings(max_examples=300, deadline=None)
@given(case=conv1d_cases(), path=st.sampled_from(PATHS), xmode=st.sampled_from(MODES), wmode=st.sampled_from(MODES),
       bias_mode=st.sampled_from(["small", "large"]), relu=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_conv1d_matches_reference(case, path, xmode, wmode, bias_mode, relu, seed):
    rng = np.random.default_rng(seed)
    g, cg, cog = case["groups"], case["cg"], case["cog"]
    c_out = g * cog
    x, x_zp, w, bias, rq, dtype = operands(rng, path, (case["n"], g * cg, case["t"]), (c_out, cg, case["k"]), c_out,
                                           xmode, wmode, bias_mode, relu)
    want = ref.conv1d(x, x_zp, w, bias, case["stride"], case["pads"], case["dilation"], g, rq)
    t_out = kc.conv1d_output_length(case["t"], case["k"], case["stride"], *case["pads"], case["dilation"])
    assert want[0].shape == (case["n"], c_out, t_out)
    args = (x, x_zp, w, bias, case["stride"], case["pads"][0], case["dilation"], g, rq)
    check_twins(kc.conv1d, kc.conv1d_parallel, want[0].shape, dtype, args, want)


# --- conv2d -----------------------------------------------------------------------------------

@st.composite
def conv2d_cases(draw):
    depthwise = draw(st.booleans())
    groups = draw(st.integers(1, 4)) if depthwise else draw(st.integers(1, 2))
    cg = 1 if depthwise else draw(st.sampled_from(GROUP_WIDTHS))
    axes = []
    for _ in range(2):
        k = draw(st.integers(1, 3))
        dilation = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 3))
        pads = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        size = max(1, dilation * (k - 1) + 1 - sum(pads)) + draw(st.integers(0, 6))
        axes.append((k, dilation, stride, pads, size))
    return dict(n=draw(st.integers(1, 2)), groups=groups, cg=cg, cog=draw(st.integers(1, 2)), axes=axes)


@settings(max_examples=120, deadline=None)
@given(case=conv2d_cases(), path=st.sampled_from(PATHS), xmode=st.sampled_from(MODES), wmode=st.sampled_from(MODES),
       bias_mode=st.sampled_from(["small", "large"]), seed=st.integers(0, 2**32 - 1))
def test_conv2d_matches_reference(case, path, xmode, wmode, bias_mode, seed):
    rng = np.random.default_rng(seed)
    g, cg, cog = case["groups"], case["cg"], case["cog"]
    (kh, dh, sh, ph, h), (kw, dw, sw, pw, w_in) = case["axes"]
    c_out = g * cog
    x, x_zp, w, bias, rq, dtype = operands(rng, path, (case["n"], g * cg, h, w_in), (c_out, cg, kh, kw), c_out,
                                           xmode, wmode, bias_mode)
    want = ref.conv2d(x, x_zp, w, bias, (sh, sw), (*ph, *pw), (dh, dw), g, rq)
    args = (x, x_zp, w, bias, sh, sw, ph[0], pw[0], dh, dw, g, rq)
    check_twins(kc.conv2d, kc.conv2d_parallel, want[0].shape, dtype, args, want)


# --- conv_transpose1d -------------------------------------------------------------------------

@st.composite
def transpose1d_cases(draw):
    depthwise = draw(st.booleans())
    groups = draw(st.integers(1, 4)) if depthwise else draw(st.integers(1, 2))
    cg = 1 if depthwise else draw(st.sampled_from(GROUP_WIDTHS))
    k = draw(st.integers(1, 6))
    stride = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 3))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1))
    t = draw(st.integers(1, 10))
    full = (t - 1) * stride + dilation * (k - 1) + output_padding + 1
    padding = draw(st.integers(0, (full - 1) // 2))
    return dict(n=draw(st.integers(1, 2)), groups=groups, cg=cg, cog=draw(st.integers(1, 3)), k=k, stride=stride,
                dilation=dilation, output_padding=output_padding, padding=padding, t=t)


@settings(max_examples=200, deadline=None)
@given(case=transpose1d_cases(), path=st.sampled_from(PATHS), xmode=st.sampled_from(MODES),
       wmode=st.sampled_from(MODES), bias_mode=st.sampled_from(["small", "large"]), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose1d_matches_reference(case, path, xmode, wmode, bias_mode, seed):
    rng = np.random.default_rng(seed)
    g, cg, cog = case["groups"], case["cg"], case["cog"]
    c_out = g * cog
    x, x_zp, w, bias, rq, dtype = operands(rng, path, (case["n"], g * cg, case["t"]), (g * cg, cog, case["k"]), c_out,
                                           xmode, wmode, bias_mode)
    want = ref.conv_transpose1d(x, x_zp, w, bias, case["stride"], case["padding"], case["output_padding"],
                                case["dilation"], g, rq)
    t_out = kc.conv_transpose_output_length(case["t"], case["k"], case["stride"], case["padding"],
                                            case["output_padding"], case["dilation"])
    assert want[0].shape == (case["n"], c_out, t_out)
    args = (x, x_zp, w, bias, case["stride"], case["padding"], case["dilation"], g, rq)
    check_twins(kc.conv_transpose1d, kc.conv_transpose1d_parallel, want[0].shape, dtype, args, want)


# --- conv_transpose2d -------------------------------------------------------------------------

@st.composite
def transpose2d_cases(draw):
    depthwise = draw(st.booleans())
    groups = draw(st.integers(1, 3)) if depthwise else draw(st.integers(1, 2))
    cg = 1 if depthwise else draw(st.sampled_from(GROUP_WIDTHS))
    axes = []
    for _ in range(2):
        k = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 3))
        dilation = draw(st.integers(1, 2))
        output_padding = draw(st.integers(0, max(stride, dilation) - 1))
        size = draw(st.integers(1, 4))
        full = (size - 1) * stride + dilation * (k - 1) + output_padding + 1
        padding = draw(st.integers(0, (full - 1) // 2))
        axes.append((k, stride, dilation, output_padding, padding, size))
    return dict(n=draw(st.integers(1, 2)), groups=groups, cg=cg, cog=draw(st.integers(1, 2)), axes=axes)


@settings(max_examples=120, deadline=None)
@given(case=transpose2d_cases(), path=st.sampled_from(PATHS), xmode=st.sampled_from(MODES),
       wmode=st.sampled_from(MODES), bias_mode=st.sampled_from(["small", "large"]), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose2d_matches_reference(case, path, xmode, wmode, bias_mode, seed):
    rng = np.random.default_rng(seed)
    g, cg, cog = case["groups"], case["cg"], case["cog"]
    (kh, sh, dh, oph, ph, h), (kw, sw, dw, opw, pw, w_in) = case["axes"]
    c_out = g * cog
    x, x_zp, w, bias, rq, dtype = operands(rng, path, (case["n"], g * cg, h, w_in), (g * cg, cog, kh, kw), c_out,
                                           xmode, wmode, bias_mode)
    want = ref.conv_transpose2d(x, x_zp, w, bias, (sh, sw), (ph, pw), (oph, opw), (dh, dw), g, rq)
    args = (x, x_zp, w, bias, sh, sw, ph, pw, dh, dw, g, rq)
    check_twins(kc.conv_transpose2d, kc.conv_transpose2d_parallel, want[0].shape, dtype, args, want)


# --- edge cases: int32 partial sums, overflow counting, output sizes, domain ---------------------

def test_term_limit_bounds():
    w = np.full(3, -128, dtype=np.int8)
    assert kc.term_limit(np.zeros(1, np.int16), 0, w) == (2**31 - 1) // (128 * 32768)  # 511
    assert kc.term_limit(np.zeros(1, np.int8), 127, w) == (2**31 - 1) // (128 * 255)
    assert kc.term_limit(np.zeros(1, np.int8), 0, np.full(3, 5, np.int8)) == (2**31 - 1) // (5 * 128)
    with pytest.raises(ValueError, match="x - x_zp must fit int16"):
        kc.term_limit(np.zeros(1, np.int16), 1, w)


@pytest.mark.parametrize("cg, k", [(600, 1), (8, 64), (kc.DOT_MIN_CHANNELS, 40)])
def test_int16_extremes_need_int64_totals(cg, k):
    """All -32768 inputs and -128 weights: 2^22 per term, so > 511 terms would wrap an int32 partial sum."""
    x = np.full((1, cg, k + 3), -32768, dtype=np.int16)
    w = np.full((2, cg, k), -128, dtype=np.int8)
    bias = np.array([0, -(2**33)], dtype=np.int64)
    path = TEST_PATHS["tflm16"]
    rq = requant_params(np.array([reduce_multiplier(2**30, 15)] * 2), np.array([-20, -25]), np.array([2**-21, 2**-26]),
                        path.rounding_code, 15, 64, False, 0, -32768, 32767)
    want = ref.conv1d(x, 0, w, bias, 1, (0, 0), 1, 1, rq)
    assert cg * k * 2**22 >= 2**31  # the exact sum itself does not fit int32
    got = check_twins(kc.conv1d, kc.conv1d_parallel, want[0].shape, np.int16, (x, 0, w, bias, 1, 0, 1, 1, rq), want)
    assert got[0][0, 0, 0] == requantize_output(cg * k * 2**22, 0, rq)[0]
    # the same through the transposed kernel (gather / dot order): weight [C_in, C_out, K]
    wt = np.ascontiguousarray(w.transpose(1, 0, 2))
    want = ref.conv_transpose1d(x, 0, wt, bias, 1, k - 1, 0, 1, 1, rq)
    check_twins(kc.conv_transpose1d, kc.conv_transpose1d_parallel, want[0].shape, np.int16,
                (x, 0, wt, bias, 1, k - 1, 1, 1, rq), want)


@pytest.mark.parametrize("path", ["tflm8", "acc20_wrap_floor", "acc24_sat_half_even"])
def test_accumulator_overflow_is_counted(path):
    rng = np.random.default_rng(11)
    x = np.full((1, 100, 9), 127, dtype=np.int8)
    w = np.full((3, 100, 3), 127, dtype=np.int8)
    bias = np.array([2**31 - 1, 0, -(2**31)], dtype=np.int32)
    rq = random_requant(rng, 3, TEST_PATHS[path])
    want = ref.conv1d(x, -128, w, bias, 1, (1, 1), 1, 1, rq)
    got = check_twins(kc.conv1d, kc.conv1d_parallel, want[0].shape, np.int8, (x, -128, w, bias, 1, 1, 1, 1, rq), want)
    assert got[1][0] > 0  # bias 2^31 - 1 plus a positive sum never fits 32 bits
    if TEST_PATHS[path].acc_bits < 32:  # 100 * 3 * 255 * 127 > 2^23
        assert got[1][1] > 0


def test_transposed_output_may_be_longer_or_cropped():
    """out's length is free: positions no tap reaches hold requantize(bias); TFLite SAME's extra crop works."""
    rng = np.random.default_rng(12)
    x, x_zp, w, bias, rq, dtype = operands(rng, "tflm8", (1, 3, 5), (3, 2, 4), 2, "uniform", "uniform", "small")
    full = ref.conv_transpose1d(x, x_zp, w, bias, 2, 0, 1, 1, 1, rq)  # length 13 (output_padding 1)
    for length in (13, 11, 12):
        got = run(kc.conv_transpose1d, (1, 2, length), dtype, x, x_zp, w, bias, 2, 0, 1, 1, rq)
        np.testing.assert_array_equal(got[0], full[0][:, :, :length])
    assert full[0][0, 1, 12] == requantize_output(int(bias[1]), 1, rq)[0]


def test_empty_batch():
    rng = np.random.default_rng(13)
    x, x_zp, w, bias, rq, dtype = operands(rng, "tflm8", (0, 4, 6), (2, 4, 3), 2, "uniform", "uniform", "small")
    out, ovf, sat = run(kc.conv1d, (0, 2, 4), dtype, x, x_zp, w, bias, 1, 0, 1, 1, rq)
    assert out.shape == (0, 2, 4) and ovf.tolist() == [0, 0] and sat.tolist() == [0, 0]


def test_bad_geometry_raises():
    rng = np.random.default_rng(14)
    x, x_zp, w, bias, rq, dtype = operands(rng, "tflm8", (1, 4, 6), (2, 4, 3), 2, "uniform", "uniform", "small")
    with pytest.raises(ValueError, match="groups dividing"):
        run(kc.conv1d, (1, 2, 4), dtype, x, x_zp, w, bias, 1, 0, 1, 3, rq)
    with pytest.raises(ValueError, match="stride and dilation"):
        run(kc.conv1d, (1, 2, 4), dtype, x, x_zp, w, bias, 0, 0, 1, 1, rq)
    with pytest.raises(ValueError, match="x - x_zp must fit int16"):
        run(kc.conv1d, (1, 2, 4), np.int16, x.astype(np.int16), 3, w, bias.astype(np.int64), 1, 0, 1, 1, rq)


def test_realistic_sizes_parallel_equals_serial():
    """Blocks of output channels / frames and both loop orders at sizes the model uses."""
    rng = np.random.default_rng(15)
    path = TEST_PATHS["tflm8"]
    cases = [((1, 64, 700), (96, 64, 1), 1, 1, 0, 1), ((2, 48, 600), (48, 1, 3), 48, 8, 8, 1),
             ((1, 40, 300), (40, 20, 3), 2, 1, 1, 2)]
    for x_shape, w_shape, groups, dilation, pad, stride in cases:
        x = rng.integers(-128, 128, size=x_shape).astype(np.int8)
        w = rng.integers(-127, 128, size=w_shape).astype(np.int8)
        bias = rng.integers(-5000, 5000, size=w_shape[0]).astype(np.int32)
        rq = random_requant(rng, w_shape[0], path)
        t_out = kc.conv1d_output_length(x_shape[2], w_shape[2], stride, pad, pad, dilation)
        args = (x, 4, w, bias, stride, pad, dilation, groups, rq)
        serial = run(kc.conv1d, (x_shape[0], w_shape[0], t_out), np.int8, *args)
        assert_same(run(kc.conv1d_parallel, (x_shape[0], w_shape[0], t_out), np.int8, *args), serial)
    x = rng.integers(-128, 128, size=(1, 64, 500)).astype(np.int8)
    w = rng.integers(-127, 128, size=(64, 2, 16)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=2).astype(np.int32)
    rq = random_requant(rng, 2, path)
    length = kc.conv_transpose_output_length(500, 16, 8, 0, 0, 1)
    args = (x, -3, w, bias, 8, 0, 1, 1, rq)
    serial = run(kc.conv_transpose1d, (1, 2, length), np.int8, *args)
    assert_same(run(kc.conv_transpose1d_parallel, (1, 2, length), np.int8, *args), serial)
    want = ref.conv_transpose1d(x[:, :, :24], -3, w, bias, 8, 0, 0, 1, 1, rq)  # frames < 23*8 see only x[:, :, :24]
    np.testing.assert_array_equal(serial[0][:, :, :23 * 8], want[0][:, :, :23 * 8])


# --- torch as an independent oracle for the sums ------------------------------------------------

def torch_acc(fn, x, x_zp, w, bias, **kwargs):
    """Exact sums from torch in float64 (every value here is an integer far below 2^53)."""
    torch = pytest.importorskip("torch")
    xs = torch.from_numpy(x.astype(np.float64) - x_zp)
    acc = fn(xs, torch.from_numpy(w.astype(np.float64)), torch.from_numpy(bias.astype(np.float64)), **kwargs)
    acc = acc.numpy()
    assert np.all(np.abs(acc) < 2**52) and np.array_equal(acc, np.round(acc))
    return acc.astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_conv1d_and_transpose_equal_torch(seed):
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    rng = np.random.default_rng(100 + seed)
    groups = [1, 2, 4, 8][seed % 4]
    cg = [3, 20, 1, 2][seed % 4]
    c_in, c_out, k, stride, dilation, pads = groups * cg, groups * 2, 1 + seed % 5, 1 + seed % 3, 1 + seed % 2, (2, 1)
    path = PATHS[seed % len(PATHS)]
    x, x_zp, w, bias, rq, dtype = operands(rng, path, (2, c_in, 31), (c_out, cg, k), c_out, "uniform", "uniform",
                                           "small")
    x_padded = np.pad(x.astype(np.int64) - x_zp, ((0, 0), (0, 0), pads))  # padding holds real zero
    acc = torch_acc(fn.conv1d, x_padded, 0, w, bias, stride=stride, dilation=dilation, groups=groups)
    want = ref._requantize(acc, rq, dtype)
    check_twins(kc.conv1d, kc.conv1d_parallel, acc.shape, dtype,
                (x, x_zp, w, bias, stride, pads[0], dilation, groups, rq), want)
    # transposed: weight [C_in, C_out/groups, K]
    wt = fill(rng, (c_in, 2, k), np.int8, "uniform")
    output_padding = seed % max(stride, dilation)
    acc = torch_acc(fn.conv_transpose1d, x, x_zp, wt, bias, stride=stride, padding=1, output_padding=output_padding,
                    groups=groups, dilation=dilation)
    want = ref._requantize(acc, rq, dtype)
    check_twins(kc.conv_transpose1d, kc.conv_transpose1d_parallel, acc.shape, dtype,
                (x, x_zp, wt, bias, stride, 1, dilation, groups, rq), want)


@pytest.mark.parametrize("seed", range(3))
def test_conv2d_and_transpose_equal_torch(seed):
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    rng = np.random.default_rng(200 + seed)
    groups, cg = [(1, 17), (2, 3), (6, 1)][seed]
    c_in, c_out = groups * cg, groups * 2
    x, x_zp, w, bias, rq, dtype = operands(rng, PATHS[seed], (2, c_in, 7, 9), (c_out, cg, 3, 2), c_out, "uniform",
                                           "uniform", "small")
    acc = torch_acc(fn.conv2d, x, x_zp, w, bias, stride=(1, 2), padding=(1, 1), dilation=(2, 1), groups=groups)
    want = ref._requantize(acc, rq, dtype)
    check_twins(kc.conv2d, kc.conv2d_parallel, acc.shape, dtype, (x, x_zp, w, bias, 1, 2, 1, 1, 2, 1, groups, rq), want)
    wt = fill(rng, (c_in, 2, 3, 2), np.int8, "uniform")
    acc = torch_acc(fn.conv_transpose2d, x, x_zp, wt, bias, stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                    groups=groups, dilation=(1, 1))
    want = ref._requantize(acc, rq, dtype)
    check_twins(kc.conv_transpose2d, kc.conv_transpose2d_parallel, acc.shape, dtype,
                (x, x_zp, wt, bias, 2, 3, 1, 0, 1, 1, groups, rq), want)


# --- op adapters through a one-node graph ---------------------------------------------------------

def tensor(name, dtype, shape, scale=None, zp=0):
    return TensorSpec(name, dtype, list(shape), None if scale is None else Quant([scale], [zp]))


def conv_model(op, consts, x_shape, y_shape, attrs, x_dtype="int8", x_zp=5, y_zp=-3, profile="tflm", parallel=True):
    x = tensor("x", x_dtype, x_shape, 0.02, x_zp)
    specs = [x] + [tensor(name, str(consts[name].dtype), consts[name].shape) for name in ("w", "b", "m", "s", "sc")]
    y = tensor("y", x_dtype, y_shape, 0.05, y_zp)
    node = Node("n", op, [s.name for s in specs], ["y"], attrs)
    graph = Graph({s.name: s for s in [*specs, y]}, [node], ["x"], ["y"], consts, profile)
    return Model(graph, parallel=parallel)


def conv_constants(rng, w_shape, c_out, x_dtype, real=(1e-4, 1e-2)):
    w = rng.integers(-127, 128, size=w_shape).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=c_out).astype(np.int32 if x_dtype == "int8" else np.int64)
    scale = np.exp(rng.uniform(np.log(real[0]), np.log(real[1]), c_out)).astype(np.float32)
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in scale))
    return {"w": w, "b": bias, "m": np.array(mult, dtype=np.int32), "s": np.array(shift, dtype=np.int32), "sc": scale}


def reference_rq(model, consts, x_dtype, y_zp, act=None):
    path = model.profile.path(x_dtype)
    info = np.iinfo(x_dtype)
    mult = [reduce_multiplier(int(v), path.mult_bits) for v in consts["m"]]
    lo, hi = act or (info.min, info.max)
    return requant_params(np.array(mult), consts["s"], consts["sc"], path.rounding_code, path.mult_bits, path.acc_bits,
                          path.acc_saturating, y_zp, lo, hi)


OP_CASES = {
    # op: (x shape, weight shape, C_out, attrs, reference call)
    "conv1d": ((2, 6, 23), (4, 3, 3), 4, {"stride": 2, "padding": [2, 1], "dilation": 2, "groups": 2},
               lambda x, zp, c, rq: ref.conv1d(x, zp, c["w"], c["b"], 2, (2, 1), 2, 2, rq)),
    "conv2d": ((1, 4, 7, 9), (6, 2, 3, 2), 6,
               {"stride": [1, 2], "padding": [1, 0, 2, 1], "dilation": [2, 1], "groups": 2},
               lambda x, zp, c, rq: ref.conv2d(x, zp, c["w"], c["b"], (1, 2), (1, 0, 2, 1), (2, 1), 2, rq)),
    "conv_transpose1d": ((2, 4, 9), (4, 3, 5), 6,
                         {"stride": 3, "padding": 2, "output_padding": 1, "dilation": 1, "groups": 2},
                         lambda x, zp, c, rq: ref.conv_transpose1d(x, zp, c["w"], c["b"], 3, 2, 1, 1, 2, rq)),
    "conv_transpose2d": ((1, 18, 4, 5), (18, 2, 3, 3), 2,
                         {"stride": [2, 1], "padding": [1, 0], "output_padding": [1, 0], "dilation": [1, 2]},
                         lambda x, zp, c, rq: ref.conv_transpose2d(x, zp, c["w"], c["b"], (2, 1), (1, 0), (1, 0),
                                                                   (1, 2), 1, rq)),
}


@pytest.mark.parametrize("op", sorted(OP_CASES))
@pytest.mark.parametrize("x_dtype, profile", [("int8", "tflm"), ("int8", "onnx"), ("int16", "tflm")])
def test_conv_ops_match_reference(op, x_dtype, profile):
    rng = np.random.default_rng(21)
    x_shape, w_shape, c_out, attrs, call = OP_CASES[op]
    consts = conv_constants(rng, w_shape, c_out, x_dtype)
    x_zp, y_zp = (5, -3) if x_dtype == "int8" else (0, 0)
    declared = [None, x_shape[1]] + [None] * (len(x_shape) - 2)
    y_declared = [None, c_out] + [None] * (len(x_shape) - 2)
    model = conv_model(op, consts, declared, y_declared, attrs, x_dtype, x_zp, y_zp, profile)
    serial = conv_model(op, consts, declared, y_declared, attrs, x_dtype, x_zp, y_zp, profile, parallel=False)
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, size=x_shape).astype(x_dtype)
    y = model.run(x)["y"]
    want, ovf, sat = call(x, x_zp, consts, reference_rq(model, consts, x_dtype, y_zp))
    assert y.dtype == np.dtype(x_dtype)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(serial.run(x)["y"], y)
    assert model.counts["n"].saturations == int(sat.sum()) and model.counts["n"].acc_overflows == int(ovf.sum())


def test_conv1d_op_defaults_and_act_range():
    rng = np.random.default_rng(22)
    consts = conv_constants(rng, (3, 4, 1), 3, "int8", real=(0.05, 0.1))
    model = conv_model("conv1d", consts, [1, 4, None], [1, 3, None], {"act_min": -3, "act_max": 10})
    x = rng.integers(-128, 128, size=(1, 4, 50)).astype(np.int8)
    y = model.run(x)["y"]
    rq = reference_rq(model, consts, "int8", -3, (-3, 10))
    want = ref.conv1d(x, 5, consts["w"], consts["b"], 1, (0, 0), 1, 1, rq)
    np.testing.assert_array_equal(y, want[0])
    assert y.min() >= -3 and y.max() <= 10


def _error(op, consts, attrs, x_shape=None, y_shape=None, x_dtype="int8", x_zp=5):
    c_out = len(consts["b"])
    nd = consts["w"].ndim
    x_shape = x_shape or [None, None] + [None] * (nd - 2)
    y_shape = y_shape or [None, c_out] + [None] * (nd - 2)
    with pytest.raises(OpError) as info:
        conv_model(op, consts, x_shape, y_shape, attrs, x_dtype, x_zp)
    message = str(info.value)
    assert message.startswith(f"node 'n' ({op}):"), message
    return message


def test_conv_op_attribute_errors():
    rng = np.random.default_rng(23)
    c1 = conv_constants(rng, (6, 2, 3), 6, "int8")
    assert "attribute 'groups' 4 does not divide output channels 6" in _error("conv1d", c1, {"groups": 4})
    assert "attribute 'groups' must be >= 1, got 0" in _error("conv1d", c1, {"groups": 0})
    assert "attribute 'stride' must be in [1, 65536], got 0" in _error("conv1d", c1, {"stride": 0})
    # hostile geometry is refused at prepare time instead of allocating gigabytes or failing in Numba
    assert "attribute 'stride' must be in [1, 65536], got 1000000000000000000000000000000" in _error(
        "conv1d", c1, {"stride": 10**30})
    assert "attribute 'padding' must be in [0, 65536], got [1000000000, 0]" in _error(
        "conv1d", c1, {"padding": [10**9, 0]})
    assert "attribute 'dilation' must be an int, got [1, 2]" in _error("conv1d", c1, {"dilation": [1, 2]})
    assert "attribute 'padding' must be [left, right], got [1]" in _error("conv1d", c1, {"padding": [1]})
    assert "attribute 'padding' must be in [0, 65536], got [-1, 0]" in _error("conv1d", c1, {"padding": [-1, 0]})
    assert "input shape [None, 5, None] does not match weight [6, 2, 3] with groups 2" in _error(
        "conv1d", c1, {"groups": 2}, x_shape=[None, 5, None])
    assert "weight must have 4 dims" in _error("conv2d", c1, {})
    c2 = conv_constants(rng, (4, 2, 3, 3), 4, "int8")
    assert "attribute 'dilation' must be in [1, 65536], got [1, 0]" in _error("conv2d", c2, {"dilation": [1, 0]})
    assert "attribute 'stride' must be an int or a list of 2 ints, got [1, 2, 3]" in _error(
        "conv2d", c2, {"stride": [1, 2, 3]})
    assert "attribute 'padding' must be an int, [h, w] or [top, bottom, left, right], got [1, 2, 3]" in _error(
        "conv2d", c2, {"padding": [1, 2, 3]})
    ct = conv_constants(rng, (4, 3, 5), 6, "int8")  # C_in 4, C_out/groups 3
    assert "attribute 'groups' 3 does not divide input channels 4" in _error(
        "conv_transpose1d", conv_constants(rng, (4, 3, 5), 9, "int8"), {"groups": 3})
    assert "attribute 'output_padding' 2 must be smaller than stride 2 or dilation 1" in _error(
        "conv_transpose1d", ct, {"groups": 2, "stride": 2, "output_padding": 2})
    assert "constant 'b' has shape [6], expected [3]" in _error("conv_transpose1d", ct, {})
    assert "output shape [None, 5, None] does not match 6 output channels" in _error(
        "conv_transpose1d", ct, {"groups": 2}, y_shape=[None, 5, None])


def test_conv_op_run_errors():
    rng = np.random.default_rng(24)
    consts = conv_constants(rng, (2, 3, 5), 2, "int8")
    model = conv_model("conv1d", consts, [None, 3, None], [None, 2, None], {"dilation": 2})
    with pytest.raises(OpError, match=r"node 'n' \(conv1d\): input of spatial size \[8\] gives an empty output"):
        model.run(np.zeros((1, 3, 8), dtype=np.int8))
    model = conv_model("conv1d", consts, [None, None, None], [None, 2, None], {})
    with pytest.raises(OpError, match="input 'x' has 4 channels, expected 3"):
        model.run(np.zeros((1, 4, 8), dtype=np.int8))



def test_conv_op_with_sign_dependent_requantization():
    """The 11-input form (fused PReLU: separate multiplier for negative sums) reaches the kernel's rq."""
    rng = np.random.default_rng(25)
    consts = conv_constants(rng, (4, 3, 3), 4, "int8")
    neg = np.float32(0.25) * consts["sc"]
    nm, nsh = zip(*(quantize_multiplier(float(s)) for s in neg))
    consts.update(nm=np.array(nm, dtype=np.int32), ns=np.array(nsh, dtype=np.int32), nsc=neg,
                  po=np.zeros(4, np.int64), no=np.full(4, -7, np.int64))
    x = tensor("x", "int8", [None, 3, None], 0.02, 5)
    names = ("w", "b", "m", "s", "sc", "nm", "ns", "nsc", "po", "no")
    specs = [x] + [tensor(name, str(consts[name].dtype), consts[name].shape) for name in names]
    y = tensor("y", "int8", [None, 4, None], 0.05, -3)
    node = Node("n", "conv1d", [s.name for s in specs], ["y"], {"padding": [1, 1]})
    model = Model(Graph({s.name: s for s in [*specs, y]}, [node], ["x"], ["y"], consts, "tflm"))
    xv = rng.integers(-128, 128, size=(2, 3, 40)).astype(np.int8)
    got = model.run(xv)["y"]
    path = model.profile.path("int8")
    rq = requant_params(consts["m"], consts["s"], consts["sc"], path.rounding_code, path.mult_bits, path.acc_bits,
                        path.acc_saturating, -3, -128, 127, consts["nm"], consts["ns"], consts["nsc"], consts["po"],
                        consts["no"])
    want = ref.conv1d(xv, 5, consts["w"], consts["b"], 1, (1, 1), 1, 1, rq)
    np.testing.assert_array_equal(got, want[0])
    plain = ref.conv1d(xv, 5, consts["w"], consts["b"], 1, (1, 1), 1, 1, reference_rq(model, consts, "int8", -3))
    assert np.any(got != plain[0])  # the negative side really differs
