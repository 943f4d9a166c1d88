"""Streaming causal conv1d graphs (intsim.stream): any chunking is bit-equal to the whole-file run."""

from __future__ import annotations

import numpy as np
import pytest

import intsim
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.stream import Stream, StreamError
from tests.test_separate import fir_graph


def conv_consts(rng, prefix, c_out, c_in_per_group, k, real_scale):
    w = rng.integers(-127, 128, (c_out, c_in_per_group, k)).astype(np.int8)
    real = np.full(c_out, real_scale, np.float32)
    mult, shift = zip(*(quantize_multiplier(float(r)) for r in real))
    return {f"{prefix}_w": w, f"{prefix}_b": rng.integers(-500, 500, c_out).astype(np.int32),
            f"{prefix}_m": np.array(mult, np.int32), f"{prefix}_s": np.array(shift, np.int32), f"{prefix}_f": real}


def causal_graph(seed=0):
    """x int8 [1, 2, T] (zero point 3) -> a: conv K=5, pad [4, 0] -> b: conv K=3, dilation 2, groups 2,
    pad [4, 0] (output y1); a -> c: conv K=3, pad [1, 0] (one frame of look-ahead; output y2)."""
    rng = np.random.default_rng(seed)
    consts = {}
    consts.update(conv_consts(rng, "a", 4, 2, 5, 1 / 300))
    consts.update(conv_consts(rng, "b", 2, 2, 3, 1 / 150))
    consts.update(conv_consts(rng, "c", 3, 4, 3, 1 / 200))
    tensors = {name: TensorSpec(name, str(v.dtype), list(v.shape)) for name, v in consts.items()}
    tensors["x"] = TensorSpec("x", "int8", [1, 2, None], Quant([0.01], [3]))
    tensors["a"] = TensorSpec("a", "int8", [1, 4, None], Quant([0.05], [-5]))
    tensors["y1"] = TensorSpec("y1", "int8", [1, 2, None], Quant([0.1], [0]))
    tensors["y2"] = TensorSpec("y2", "int8", [1, 3, None], Quant([0.1], [2]))

    def conv(name, x, y, **attrs):
        return Node(name, "conv1d", [x, f"{name}_w", f"{name}_b", f"{name}_m", f"{name}_s", f"{name}_f"], [y], attrs)

    nodes = [conv("a", "x", "a", padding=[4, 0]),
             conv("b", "a", "y1", padding=[4, 0], dilation=2, groups=2),
             conv("c", "a", "y2", padding=[1, 0])]
    return Graph(tensors, nodes, ["x"], ["y1", "y2"], consts, "tflm", {})


def chunkings(total, rng):
    yield [1] * 40 + [total - 40]
    yield [0, 3, 0, 2, 7] + [total - 12]
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(0, 300)))
    sizes[-1] -= sum(sizes) - total
    yield sizes
    yield [total]


@pytest.mark.parametrize("profile", ["tflm", "single"])
def test_stream_is_bit_equal_to_whole_file(profile):
    graph = causal_graph()
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 2, 2000)).astype(np.int8)
    model = intsim.Model(graph, profile=profile)
    whole = model.run(x)
    whole_counts = {k: (c.acc_overflows, c.saturations) for k, c in model.counts.items()}
    assert sum(s for _, s in whole_counts.values()) > 0  # the check covers saturating frames too
    stream = Stream(graph, profile=profile)
    for sizes in chunkings(x.shape[-1], rng):
        stream.reset()
        parts, start = [], 0
        for n in sizes:
            parts.append(stream.push(x[..., start:start + n]))
            start += n
        for name in ("y1", "y2"):
            joined = np.concatenate([p[name] for p in parts], axis=-1)
            np.testing.assert_array_equal(joined, whole[name])
        assert {k: (c.acc_overflows, c.saturations) for k, c in stream.counts.items()} == whole_counts
    # latency: a fully causal chain (a, then b) emits one frame per input frame; c waits one frame
    stream.reset()
    first = stream.push(x[..., :1])
    assert first["y1"].shape[-1] == 1 and first["y2"].shape[-1] == 0


def test_float_chunks_are_quantized_like_model_run():
    graph = causal_graph()
    x = (np.random.default_rng(2).standard_normal((1, 2, 500)) * 0.5).astype(np.float32)
    whole = intsim.Model(graph).run(x)
    got = Stream(graph).run(x, chunk=37)
    for name in whole:
        np.testing.assert_array_equal(got[name], whole[name])


def test_separation_fir_model_streams_left_padded_conv():
    """The test separator of tests/test_separate.py without its splitter: conv K=31, padding [15, 0]."""
    graph = fir_graph(splitter=False)
    x = np.random.default_rng(3).integers(-128, 128, (1, 1, 3000)).astype(np.int8)
    whole = intsim.Model(graph).run(x)["y"]
    np.testing.assert_array_equal(Stream(graph).run(x, chunk=100)["y"], whole)


@pytest.mark.parametrize("change,fragment", [
    (lambda g: g.nodes[0].attrs.update(padding=[2, 2]), "right padding"),
    (lambda g: g.nodes[0].attrs.update(stride=2), "stride"),
])
def test_non_causal_graphs_are_refused(change, fragment):
    graph = causal_graph()
    change(graph)
    with pytest.raises(StreamError, match=fragment):
        Stream(graph)


def test_normalising_splitter_is_refused():
    with pytest.raises(StreamError, match="integer input"):
        Stream(fir_graph(splitter=True))  # float input, max-normalised per call
    graph = fir_graph(splitter=False)
    graph.nodes.append(Node("extra", "relu", ["y"], ["z"]))
    y = graph.tensors["y"]
    graph.tensors["z"] = TensorSpec("z", y.dtype, list(y.shape), y.quant)
    with pytest.raises(StreamError, match="only conv1d"):
        Stream(graph)


def test_bad_chunks():
    stream = Stream(causal_graph())
    with pytest.raises(ValueError, match="shape"):
        stream.push(np.zeros((1, 3, 5), np.int8))
    with pytest.raises(ValueError, match="dtype"):
        stream.push(np.zeros((1, 2, 5), np.int16))
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.full((1, 2, 5), np.nan, np.float32))
