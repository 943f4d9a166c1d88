"""conv1d_dynamic (per-call input scale, FQSS music encoder): kernel == Python-int reference,
exactness of the identity multiplier, error bound against exact rational arithmetic, the op
adapter against FQSS's float32 encoder, silence (delta = 0) and validation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from intsim.executor import Model
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import dynamic as kd
from intsim.ops import OpError
from intsim.ops.dynamic import dynamic_multipliers

F32 = np.float32


def run_kernel(x, w, stride, mult, shift, bias16, zp=0, lo=-128, hi=127, parallel=False):
    t_out = (x.shape[2] - w.shape[2]) // stride + 1
    out = np.empty((x.shape[0], w.shape[0], t_out), np.int8)
    sat = np.zeros(w.shape[0], np.int64)
    (kd.conv1d_dynamic_parallel if parallel else kd.conv1d_dynamic)(
        np.ascontiguousarray(x), np.ascontiguousarray(w), np.int64(stride), np.asarray(mult, np.int64),
        np.asarray(shift, np.int64), np.asarray(bias16, np.int64), np.int64(zp), np.int64(lo), np.int64(hi), out, sat)
    return out, sat


def random_case(rng, c_out=6, c_in=4, k=5, t=40):
    x = rng.integers(-128, 128, (2, c_in, t)).astype(np.int8)
    w = rng.integers(-128, 128, (c_out, c_in, k)).astype(np.int8)
    return x, w


@pytest.mark.parametrize("parallel", [False, True])
def test_kernel_matches_python_reference(parallel):
    rng = np.random.default_rng(0)
    for trial in range(20):
        x, w = random_case(rng)
        reals = 10.0 ** rng.uniform(-9, 1, w.shape[0])
        pairs = [quantize_multiplier(float(r)) for r in reals]
        mult = [m for m, _ in pairs]
        shift = [s for _, s in pairs]
        if trial == 0:
            mult[0], shift[0] = 0, 0  # delta = 0
            mult[1], shift[1] = 2**30, 20  # left shift (saturating path)
        bias16 = rng.integers(-2**40, 2**40, w.shape[0])
        zp = int(rng.integers(-20, 20))
        out, sat = run_kernel(x, w, 3, mult, shift, bias16, zp, zp, 127, parallel)
        want = kd.conv1d_dynamic_reference(x, w, 3, mult, shift, bias16, zp, zp, 127)
        np.testing.assert_array_equal(out, want)


def test_identity_multiplier_is_exact():
    """M = 2^30, shift 1 is r = 1: the output is the accumulator itself (plus bias16 / 2^16), no rounding."""
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, (1, 2, 50)).astype(np.int8)
    w = rng.integers(-3, 4, (3, 2, 4)).astype(np.int8)
    assert quantize_multiplier(1.0) == (2**30, 1)
    bias = np.array([0, 5, -7])
    out, sat = run_kernel(x, w, 2, [2**30] * 3, [1] * 3, bias * 2**16)
    acc = np.stack([[[int(np.sum(w[c].astype(np.int64) * x[0, :, t * 2:t * 2 + 4])) for t in range(out.shape[2])]
                     for c in range(3)]])
    assert np.abs(acc).max() < 128
    np.testing.assert_array_equal(out.astype(np.int64), acc + bias[None, :, None])
    assert sat.sum() == 0


def test_error_bound_against_exact_arithmetic():
    """|q - round(acc * r + beta)| <= 1 and equal unless acc*r + beta is within 2^-14 LSB of a tie
    (multiplier error <= 2^-31 relative, product rounding 2^-17 LSB, bias rounding 2^-17 LSB)."""
    rng = np.random.default_rng(2)
    x, w = random_case(rng, c_out=8, c_in=4, k=20, t=400)
    delta = F32(0.0123)
    d = (rng.uniform(0.001, 0.02, 8)).astype(F32)
    s_out = F32(0.05)
    beta = rng.uniform(-40, 40, 8)  # (b - c_out) / s_out in output LSB
    bias16 = np.rint(beta * 2**16).astype(np.int64)
    mult, shift = dynamic_multipliers(float(delta), d, float(s_out))
    out, _ = run_kernel(x, w, 10, mult, shift, bias16, 0, -128, 127)
    checked = near = 0
    for c in range(8):
        r = Fraction(float(delta)) * Fraction(float(d[c])) / Fraction(float(s_out))
        for t in range(out.shape[2]):
            acc = int(np.sum(w[c].astype(np.int64) * x[0, :, t * 10:t * 10 + 20]))
            v = acc * r + Fraction(float(beta[c]))
            exact = int(np.floor(v + Fraction(1, 2))) if v >= 0 else -int(np.floor(-v + Fraction(1, 2)))
            exact = min(max(exact, -128), 127)
            frac = abs(float(v - int(v)))
            if abs(frac - 0.5) < 2.0**-14:
                near += 1
                assert abs(int(out[0, c, t]) - exact) <= 1
            else:
                assert int(out[0, c, t]) == exact, (c, t, float(v))
            checked += 1
    assert checked > 100


def encoder_graph(c_in=4, c_out=5, k=20, stride=10, s_out=0.05, zp=-3, act_min=None, weight=None, d=None,
                  bias16=None):
    rng = np.random.default_rng(3)
    w = weight if weight is not None else rng.integers(-128, 128, (c_out, c_in, k)).astype(np.int8)
    d = d if d is not None else rng.uniform(0.001, 0.01, c_out).astype(F32)
    b16 = bias16 if bias16 is not None else np.zeros(c_out, np.int64)
    t = {
        "x": TensorSpec("x", "float32", [1, c_in // 2, None]),
        "codes": TensorSpec("codes", "int8", [1, c_in, None]),
        "delta": TensorSpec("delta", "float32", [1]),
        "w": TensorSpec("w", "int8", list(w.shape)),
        "d": TensorSpec("d", "float32", [c_out]),
        "b": TensorSpec("b", "int64", [c_out]),
        "y": TensorSpec("y", "int8", [1, c_out, None], Quant([s_out], [zp])),
    }
    attrs = {"stride": stride}
    if act_min is not None:
        attrs["act_min"] = act_min
    nodes = [Node("split", "splitter", ["x"], ["codes", "delta"], {"normalize": False}),
             Node("enc", "conv1d_dynamic", ["codes", "delta", "w", "d", "b"], ["y"], attrs)]
    return Graph(t, nodes, ["x"], ["y"], {"w": w, "d": d, "b": b16}), w, d


def fqss_encoder(x, w, d, s_out, zp, bias=None):
    """FQSS float32: preprocess(normalize=False) -> conv1d(delta*k, d*w) (+b) -> ReLU -> Q (codes - 128 + ...)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from intsim.converters.fqss.quant import preprocess

    xs = preprocess(torch.from_numpy(x), 2, 8, normalize=False)
    wf = torch.from_numpy(d[:, None, None] * w.astype(F32))
    y = torch.relu(F.conv1d(xs, wf, None if bias is None else torch.from_numpy(bias), stride=10))
    mn = F32(-s_out * (zp + 128))  # a grid with min = -s*(zp+128): offset 0, nudged zero point zp
    a = torch.clamp(torch.round((y - float(mn)) / float(F32(s_out))), 0, 255)
    return (a.numpy() - 128).astype(np.int64)


def test_op_matches_fqss_float_encoder_and_relu():
    s_out, zp = 0.05, -100
    graph, w, d = encoder_graph(s_out=s_out, zp=zp, act_min=zp)
    model = Model(graph)
    rng = np.random.default_rng(4)
    for scale in (0.01, 0.3, 3.0):
        x = (scale * rng.standard_normal((1, 2, 4000))).astype(F32)
        y = model.run(x)["y"]
        want = fqss_encoder(x, w, d, s_out, zp)
        assert y.shape == want.shape
        diff = np.abs(y.astype(np.int64) - want)
        assert diff.max() <= 1
        assert np.mean(diff > 0) < 2e-3  # float32 conv vs exact integers: rare 1-LSB ties
        assert y.min() >= zp


def test_silence_gives_the_output_for_zero_input():
    bias16 = np.array([0, 3 * 2**16, -2 * 2**16, int(2.6 * 2**16), 7], np.int64)
    graph, w, d = encoder_graph(zp=-3, act_min=-3, bias16=bias16)
    y = Model(graph).run(np.zeros((1, 2, 100), F32))["y"]
    np.testing.assert_array_equal(y[0, :, 0], [-3, 0, -3, 0, -3])
    assert np.all(y == y[:, :, :1])
    graph, _, _ = encoder_graph(zp=-3, bias16=bias16)  # no ReLU: the bias alone, rounded
    y = Model(graph).run(np.zeros((1, 2, 100), F32))["y"]
    np.testing.assert_array_equal(y[0, :, 0], [-3, 0, -5, 0, -3])


def test_multiplier_follows_delta():
    """delta * 4 moves the per-call multiplier's exponent by 2 and leaves its mantissa alone."""
    d = np.random.default_rng(6).uniform(0.001, 0.01, 5).astype(F32)
    m1, s1 = dynamic_multipliers(0.01, d, 0.05)
    m2, s2 = dynamic_multipliers(0.04, d, 0.05)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(s2, s1 + 2)
    m0, s0 = dynamic_multipliers(0.0, d, 0.05)
    assert not m0.any() and not s0.any()


@pytest.mark.parametrize("change, message", [
    (dict(codes=TensorSpec("codes", "int8", [1, 4, None], Quant([0.1], [3]))), "zero point 0"),
    (dict(y=TensorSpec("y", "int8", [1, 5, None])), "per-tensor quantization"),
    (dict(y=TensorSpec("y", "int16", [1, 5, None], Quant([0.1], [0]))), "expected int8"),
])
def test_validation(change, message):
    graph, _, _ = encoder_graph()
    graph.tensors.update(change)
    with pytest.raises(OpError, match=message):
        Model(graph)


def test_negative_or_nan_delta_is_refused():
    graph, _, _ = encoder_graph()
    graph.nodes = graph.nodes[1:]
    graph.inputs = ["codes", "delta"]
    model = Model(graph)
    codes = np.zeros((1, 4, 40), np.int8)
    with pytest.raises(OpError, match="delta"):
        model.run({"codes": codes, "delta": np.array([-1.0], F32)})
    y = model.run({"codes": codes, "delta": np.array([0.5], F32)})["y"]
    assert y.shape == (1, 5, 3)
