"""Layout ops (pad, concat, split, slice, reshape, transpose) through one-node graphs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.executor import Model
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.ops import OpError

Q = Quant([0.05], [-7])


def spec(name, dtype="int8", shape=(None,), quant=Q):
    return TensorSpec(name, dtype, list(shape), quant if dtype != "float32" else None)


def model(op, inputs, outputs, attrs, constants=None):
    """One-node graph: ``inputs``/``outputs`` are TensorSpecs."""
    tensors = {s.name: s for s in [*inputs, *outputs]}
    node = Node("n", op, [s.name for s in inputs], [s.name for s in outputs], attrs)
    consts = constants or {}
    graph_inputs = list(dict.fromkeys(s.name for s in inputs if s.name not in consts))
    graph = Graph(tensors, [node], graph_inputs, [s.name for s in outputs], consts)
    return Model(graph)


def run(op, x, attrs, out_shape=None, dtype="int8", quant=Q, n_out=1):
    shape = [None] * x.ndim
    outs = [spec(f"y{i}", dtype, out_shape or [None] * (x.ndim if op != "reshape" else len(attrs["shape"])), quant)
            for i in range(n_out)]
    m = model(op, [spec("x", dtype, shape, quant)], outs, attrs)
    res = m.run(x)
    return [res[f"y{i}"] for i in range(n_out)]


def codes(rng, shape, dtype="int8"):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)


# --- pad -------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(shape=shapes, data=st.data())
def test_pad_fills_with_zero_point(shape, data):
    rng = np.random.default_rng(len(shape))
    x = codes(rng, shape)
    pads = [[data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))] for _ in shape]
    (y,) = run("pad", x, {"pads": pads})
    np.testing.assert_array_equal(y, np.pad(x, pads, constant_values=-7))
    assert y.dtype == np.int8


def test_pad_explicit_code_and_int16():
    x = np.arange(-3, 3, dtype=np.int16).reshape(2, 3)
    (y,) = run("pad", x, {"pads": [[0, 1], [2, 0]], "code": -32768}, dtype="int16", quant=Quant([1e-3], [0]))
    np.testing.assert_array_equal(y, np.pad(x, [[0, 1], [2, 0]], constant_values=-32768))


@pytest.mark.parametrize("attrs, message", [
    ({"pads": [[0, 1]]}, "2 pairs"),
    ({"pads": [[0, 1], [-1, 0]]}, ">= 0"),
    ({"pads": [[0, 1], [0, 0]], "code": 128}, "'code' = 128 is outside the int8 range"),
    ({}, "'pads' is missing"),
])
def test_pad_errors(attrs, message):
    with pytest.raises(OpError, match=message) as e:
        model("pad", [spec("x", shape=[2, 3])], [spec("y", shape=[None, None])], attrs)
    assert "node 'n' (pad)" in str(e.value)


def test_pad_declared_shape_and_quant_checked():
    with pytest.raises(OpError, match=r"declared with shape \[3, 3\], but the op gives \[3, 5\]"):
        model("pad", [spec("x", shape=[2, 3])], [spec("y", shape=[3, 3])], {"pads": [[0, 1], [1, 1]]})
    with pytest.raises(OpError, match="layout ops do not requantize"):
        model("pad", [spec("x", shape=[2, 3])], [spec("y", shape=[None, None], quant=Quant([0.05], [0]))],
              {"pads": [[0, 1], [1, 1]]})
    with pytest.raises(OpError, match="dtype int16, expected int8"):
        model("pad", [spec("x", shape=[2, 3])], [spec("y", "int16", shape=[None, None])], {"pads": [[0, 1], [1, 1]]})


# --- concat ----------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shape=shapes, data=st.data())
def test_concat_equals_numpy(shape, data):
    rng = np.random.default_rng(sum(shape))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = data.draw(st.integers(1, 3))
    xs = []
    for _ in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(0, 3))
        xs.append(codes(rng, s))
    ins = [spec(f"x{i}", shape=[None] * len(shape)) for i in range(n)]
    m = model("concat", ins, [spec("y", shape=[None] * len(shape))], {"axis": axis})
    y = m.run(xs)["y"]
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=axis))


def test_concat_refuses_requantization():
    a = spec("a", shape=[1, 2, None])
    b = spec("b", shape=[1, 2, None], quant=Quant([0.05], [3]))
    with pytest.raises(OpError, match=r"input 'b' has scale 0.05, zero point 3, but 'a' has scale 0.05, zero point -7: "
                                      "concat does not requantize"):
        model("concat", [a, b], [spec("y", shape=[1, 2, None])], {"axis": 2})
    c = spec("c", "int16", shape=[1, 2, None])
    with pytest.raises(OpError, match="must share dtype"):
        model("concat", [a, c], [spec("y", shape=[1, 2, None])], {"axis": 2})


def test_concat_shape_errors():
    a, b = spec("a", shape=[1, 2, None]), spec("b", shape=[1, 3, None])
    with pytest.raises(OpError, match="size 3 on axis 1"):
        model("concat", [a, b], [spec("y", shape=[1, None, None])], {"axis": 2})
    with pytest.raises(OpError, match="'axis' = 3 is out of range for rank 3"):
        model("concat", [a, a], [spec("y", shape=[1, None, None])], {"axis": 3})
    a, b = spec("a", shape=[1, None, 4]), spec("b", shape=[1, None, 4])
    m = model("concat", [a, b], [spec("y", shape=[1, None, 8])], {"axis": 2})
    with pytest.raises(OpError, match="only axis 2 may differ"):
        m.run([np.zeros((1, 2, 4), np.int8), np.zeros((1, 3, 4), np.int8)])
    y = m.run([np.ones((1, 2, 4), np.int8), np.zeros((1, 2, 4), np.int8)])["y"]
    assert y.shape == (1, 2, 8) and y[..., :4].all() and not y[..., 4:].any()


# --- split -----------------------------------------------------------------------------------

def test_split_sizes_remainder_and_equal():
    x = codes(np.random.default_rng(0), (2, 7, 3))
    outs = run("split", x, {"axis": 1, "sizes": [2, -1, 1]}, n_out=3)
    for a, b in zip(outs, np.split(x, [2, 6], axis=1)):
        np.testing.assert_array_equal(a, b)
        assert a.flags.c_contiguous
    outs = run("split", x, {"axis": -1}, n_out=3)
    for i, a in enumerate(outs):
        np.testing.assert_array_equal(a, x[..., i:i + 1])


def test_split_errors():
    x = spec("x", shape=[2, 6])
    ys = [spec("y0", shape=[2, None]), spec("y1", shape=[2, None])]
    with pytest.raises(OpError, match=r"'sizes' = \[2, 3\] sums to 5, but axis 1 has size 6"):
        model("split", [x], ys, {"axis": 1, "sizes": [2, 3]})
    with pytest.raises(OpError, match="has 3 entries for 2 outputs"):
        model("split", [x], ys, {"axis": 1, "sizes": [2, 3, 1]})
    with pytest.raises(OpError, match="at most one -1"):
        model("split", [x], ys, {"axis": 1, "sizes": [-1, -1]})
    with pytest.raises(OpError, match="cannot be split into 4 equal parts"):
        model("split", [x], [spec(f"y{i}", shape=[2, None]) for i in range(4)], {"axis": 1})
    m = model("split", [spec("x", shape=[2, None])], ys, {"axis": 1, "sizes": [2, 3]})
    with pytest.raises(OpError, match="sums to 5, but axis 1 has size 7 at run time"):
        m.run(np.zeros((2, 7), np.int8))


# --- slice -----------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(shape=shapes, data=st.data())
def test_slice_equals_python_slicing(shape, data):
    rng = np.random.default_rng(len(shape))
    x = codes(rng, shape)
    rank = len(shape)
    axes = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank,
                              unique_by=lambda a: a % rank))
    big = st.sampled_from([2**62, -(2**62)])
    starts = [data.draw(st.integers(-7, 7) | big) for _ in axes]
    ends = [data.draw(st.integers(-7, 7) | big) for _ in axes]
    steps = [data.draw(st.integers(-3, 3).filter(bool)) for _ in axes]
    (y,) = run("slice", x, {"starts": starts, "ends": ends, "axes": axes, "steps": steps})
    index = [slice(None)] * rank
    for a, s, e, k in zip(axes, starts, ends, steps):
        index[a % rank] = slice(s, e, k)
    np.testing.assert_array_equal(y, x[tuple(index)])
    assert y.flags.c_contiguous


def test_slice_static_shape_and_errors():
    x = spec("x", shape=[2, 10])
    m = model("slice", [x], [spec("y", shape=[2, 3])], {"starts": [-3], "ends": [2**62], "axes": [1]})
    np.testing.assert_array_equal(m.run(np.arange(20, dtype=np.int8).reshape(2, 10))["y"], [[7, 8, 9], [17, 18, 19]])
    with pytest.raises(OpError, match=r"'steps' = \[0\] contains 0"):
        model("slice", [x], [spec("y", shape=[2, None])], {"starts": [0], "ends": [3], "axes": [1], "steps": [0]})
    with pytest.raises(OpError, match="repeats an axis"):
        model("slice", [x], [spec("y", shape=[None, None])], {"starts": [0, 0], "ends": [1, 1], "axes": [1, -1]})
    with pytest.raises(OpError, match=r"'ends' must have 1 entries"):
        model("slice", [x], [spec("y", shape=[None, None])], {"starts": [0], "ends": [1, 2]})
    with pytest.raises(OpError, match=r"declared with shape \[2, 4\], but the op gives \[2, 3\]"):
        model("slice", [x], [spec("y", shape=[2, 4])], {"starts": [0], "ends": [3], "axes": [1]})


# --- reshape ---------------------------------------------------------------------------------

def test_reshape_zero_copies_and_minus_one_infers():
    x = codes(np.random.default_rng(1), (2, 3, 4))
    (y,) = run("reshape", x, {"shape": [0, -1]})
    np.testing.assert_array_equal(y, x.reshape(2, 12))
    (y,) = run("reshape", x, {"shape": [0, 0, 2, 2]})
    np.testing.assert_array_equal(y, x.reshape(2, 3, 2, 2))
    (y,) = run("reshape", np.ascontiguousarray(x.transpose(2, 0, 1)), {"shape": [-1]})
    np.testing.assert_array_equal(y, x.transpose(2, 0, 1).reshape(-1))


def test_reshape_errors():
    x = spec("x", shape=[2, 3, 4])
    with pytest.raises(OpError, match=r"'shape' = \[5, -1\] cannot hold input shape \[2, 3, 4\]"):
        model("reshape", [x], [spec("y", shape=[None, None])], {"shape": [5, -1]})
    with pytest.raises(OpError, match=r"'shape' = \[2, 2\] gives 4 elements, input shape \[2, 3, 4\] has 24"):
        model("reshape", [x], [spec("y", shape=[None, None])], {"shape": [2, 2]})
    with pytest.raises(OpError, match="at most one -1"):
        model("reshape", [x], [spec("y", shape=[None, None])], {"shape": [-1, -1]})
    with pytest.raises(OpError, match="entry 3 is 0"):
        model("reshape", [x], [spec("y", shape=[None] * 4)], {"shape": [2, 3, 4, 0]})
    with pytest.raises(OpError, match="must be a list of ints"):
        model("reshape", [x], [spec("y", shape=[None])], {"shape": [24.0]})
    m = model("reshape", [spec("x", shape=[2, None])], [spec("y", shape=[2, None, 3])], {"shape": [0, -1, 3]})
    assert m.run(np.zeros((2, 6), np.int8))["y"].shape == (2, 2, 3)
    with pytest.raises(OpError, match=r"cannot hold input shape \[2, 5\] \(10 elements\) at run time"):
        m.run(np.zeros((2, 5), np.int8))


# --- transpose -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shape=shapes, data=st.data())
def test_transpose_equals_numpy(shape, data):
    x = codes(np.random.default_rng(2), shape)
    perm = data.draw(st.permutations(range(len(shape))))
    (y,) = run("transpose", x, {"perm": list(perm)})
    np.testing.assert_array_equal(y, np.transpose(x, perm))
    assert y.flags.c_contiguous


def test_transpose_errors_and_static_shape():
    x = spec("x", shape=[2, 3, None])
    with pytest.raises(OpError, match=r"'perm' = \[0, 0, 1\] is not a permutation of the 3 input axes"):
        model("transpose", [x], [spec("y", shape=[None] * 3)], {"perm": [0, 0, 1]})
    with pytest.raises(OpError, match="'perm' is missing"):
        model("transpose", [x], [spec("y", shape=[None] * 3)], {})
    with pytest.raises(OpError, match=r"declared with shape \[2, 3, None\], but the op gives \[None, 2, 3\]"):
        model("transpose", [x], [spec("y", shape=[2, 3, None])], {"perm": [2, 0, 1]})


def test_float_and_unquantized_tensors_pass_through():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    (y,) = run("transpose", x, {"perm": [1, 0]}, dtype="float32", quant=None)
    np.testing.assert_array_equal(y, x.T)
    (y,) = run("pad", x, {"pads": [[1, 0], [0, 0]]}, dtype="float32", quant=None)
    assert y.dtype == np.float32 and (y[0] == 0).all()


def test_per_axis_quant_refused():
    q = Quant([0.1, 0.2], [0, 0], axis=0)
    with pytest.raises(OpError, match="per-axis quantization"):
        model("transpose", [spec("x", shape=[2, 3], quant=q)], [spec("y", shape=[2, 3], quant=q)], {"perm": [0, 1]})
