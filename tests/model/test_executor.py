"""intsim.load / Model.run on small multi-node conv1d graphs.

The expected values come from a naive reference executor (``reference_run``): it walks the nodes
in order and computes every conv1d with ``tests.reference.conv.conv1d`` (int64 NumPy sums, Python-int
requantization), so outputs, every intermediate tensor and per-node overflow / saturation counts
are checked against code that shares nothing with the kernels or the executor.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import intsim
from intsim import OPS, Model, modelfile
from intsim.executor import quantize_linear
from intsim.fixedpoint import mbqm_double, mbqm_single
from intsim.ir import Graph, GraphError, Node, TensorSpec
from intsim.ops import NodeCounts, Op, OpError
from intsim.ops.requant import build_requant
from intsim.profile import ProfileError, get_profile
from tests.model import conv_graph
from tests.reference.conv import conv1d as reference_conv1d


class _Failer:
    def fail(self, message):
        raise AssertionError(message)


def node_rq(graph: Graph, node: Node, profile):
    """The kernel requant tuple of a conv1d node under ``profile`` (built like the adapter does)."""
    x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    mult, shift, scale = (graph.constants[n] for n in node.inputs[3:6])
    path = get_profile(profile).path(x.dtype)
    info = np.iinfo(y.dtype)
    out_zp = y.quant.zero_point[0] if y.quant else 0
    return build_requant(_Failer(), path, mult, shift, scale, out_zp, info.min, info.max, out_dtype=y.dtype)


def reference_run(graph: Graph, inputs: dict, profile=None):
    """(outputs, every tensor, counts per node) with the naive reference conv1d."""
    profile = profile if profile is not None else graph.profile
    env = {**graph.constants, **inputs}
    counts = {}
    for node in graph.nodes:
        assert node.op == "conv1d"
        x = env[node.inputs[0]]
        w, b = env[node.inputs[1]], env[node.inputs[2]]
        spec = graph.tensors[node.inputs[0]]
        x_zp = spec.quant.zero_point[0] if spec.quant else 0
        a = node.attrs
        out, ovf, sat = reference_conv1d(x, x_zp, w, b, a["stride"], a["padding"], a["dilation"], a["groups"],
                                         node_rq(graph, node, profile))
        env[node.outputs[0]] = out
        counts[node.name] = (int(ovf.sum()), int(sat.sum()))
    return {n: env[n] for n in graph.outputs}, env, counts


def random_inputs(graph: Graph, rng, batch=2, time=37):
    out = {}
    for name in graph.inputs:
        spec = graph.tensors[name]
        shape = [batch if i == 0 and d is None else (time if d is None else d) for i, d in enumerate(spec.shape)]
        info = np.iinfo(spec.dtype)
        out[name] = rng.integers(info.min, info.max + 1, shape).astype(spec.dtype)
    return out


@pytest.fixture(scope="module")
def two_input_graph():
    return conv_graph(seed=11, second_input=True)


# ---------------------------------------------------------------------------------------------
# Results against the reference, every way of passing inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["tflm", "single", "onnx"])
def test_outputs_and_intermediates_match_reference(two_input_graph, profile):
    graph = two_input_graph
    feeds = random_inputs(graph, np.random.default_rng(1))
    expected, tensors, counts = reference_run(graph, feeds, profile)
    seen = {}

    def hook(node, ins, outs):
        assert node.name not in seen
        seen[node.name] = (list(ins), list(outs))

    model = Model(graph, profile=profile)
    got = model.run(feeds, hook=hook)
    assert list(got) == graph.outputs
    for name in graph.outputs:
        assert got[name].dtype == np.int8 and np.array_equal(got[name], expected[name]), name
    # The hook saw every node once, in order, with the arrays it read and wrote.
    assert list(seen) == [n.name for n in graph.nodes]
    for node in graph.nodes:
        ins, outs = seen[node.name]
        assert len(ins) == len(node.inputs) and len(outs) == len(node.outputs)
        for name, array in zip(node.inputs, ins):
            assert np.array_equal(array, tensors[name]), f"{node.name} input {name}"
        assert np.array_equal(outs[0], tensors[node.outputs[0]]), f"{node.name} output"
    assert {k: (c.acc_overflows, c.saturations) for k, c in model.counts.items()} == counts


def test_hook_captures_every_intermediate(two_input_graph):
    graph = two_input_graph
    feeds = random_inputs(graph, np.random.default_rng(2))
    captured = {}
    Model(graph).run(feeds, hook=lambda node, ins, outs: captured.update(zip(node.outputs, [o.copy() for o in outs])))
    produced = [t for n in graph.nodes for t in n.outputs]
    assert sorted(captured) == sorted(produced)
    # Same tensors as a graph that exposes every one of them as an output.
    exposed = Graph(graph.tensors, graph.nodes, graph.inputs, produced, graph.constants, graph.profile)
    direct = Model(exposed).run(feeds)
    for name in produced:
        assert np.array_equal(captured[name], direct[name]), name


def test_input_forms(two_input_graph, tmp_path):
    graph = two_input_graph
    feeds = random_inputs(graph, np.random.default_rng(3))
    modelfile.save(graph, tmp_path / "m.npz")
    model = intsim.load(tmp_path / "m.npz")
    assert model.inputs == ["x", "x2"] and model.outputs == ["y", "y2", "y3"]
    assert model.metadata["sample_rate"] == 8000
    by_dict = model.run(feeds)
    by_list = model.run([feeds["x"], feeds["x2"]])
    by_tuple = model.run((feeds["x"], feeds["x2"]))
    for name in model.outputs:
        assert np.array_equal(by_dict[name], by_list[name]) and np.array_equal(by_dict[name], by_tuple[name])
    single = Model(conv_graph(seed=11))
    x = feeds["x"]
    one = single.run(x)
    assert np.array_equal(one["y"], single.run([x])["y"]) and np.array_equal(one["y"], single.run({"x": x})["y"])
    assert np.array_equal(one["y"], by_dict["y"]), "the x branch of both graphs is the same network"
    # Non-contiguous input views are accepted and give the same result.
    wide = np.zeros((2, 4, 2 * x.shape[2]), np.int8)
    wide[:, :, ::2] = x
    assert np.array_equal(single.run(wide[:, :, ::2])["y"], one["y"])


def test_float_inputs_are_quantized_like_quantizelinear(two_input_graph):
    graph = two_input_graph
    rng = np.random.default_rng(4)
    spec = graph.tensors["x"]
    scale, zp = spec.quant.scale[0], spec.quant.zero_point[0]
    # Real values including exact ties (k + 0.5) * scale in float32, and values past both ends.
    codes = rng.integers(-140, 140, (2, 4, 40)).astype(np.float32)
    real = ((codes + np.where(rng.random(codes.shape) < 0.5, 0.5, 0.0)) * np.float32(scale)).astype(np.float32)
    real[0, 0, :4] = [1e30, -1e30, 0.0, -0.0]
    expected = quantize_linear(real, scale, zp, np.int8)
    by_hand = np.clip(np.clip(np.rint(real / np.float32(scale)), -1e6, 1e6).astype(np.int64) + zp, -128, 127)
    by_hand = by_hand.astype(np.int8)
    assert np.array_equal(expected, by_hand)
    x2 = random_inputs(graph, rng)["x2"]
    model = Model(graph)
    got = model.run({"x": real, "x2": x2})
    want = model.run({"x": expected, "x2": x2})
    for name in graph.outputs:
        assert np.array_equal(got[name], want[name])
    # float64 input: converted to float32 first (as ONNX QuantizeLinear takes float32).
    got64 = model.run({"x": real.astype(np.float64), "x2": x2})
    assert np.array_equal(got64["y"], want["y"])


def test_quantize_linear_matches_onnx_reference():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(5)
    for dtype, zp, tp in ((np.int8, -3, TensorProto.INT8), (np.uint8, 131, TensorProto.UINT8),
                          (np.int16, 0, TensorProto.INT16)):
        scale = np.float32(rng.uniform(0.001, 0.1))
        info = np.iinfo(dtype)
        codes = rng.integers(int(info.min) - 5, int(info.max) + 6, 5000).astype(np.float32)
        x = ((codes + rng.choice([0.0, 0.5, 0.25, -0.5], codes.shape)) * scale).astype(np.float32)
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
        graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
                                  [helper.make_tensor_value_info("y", tp, [x.size])],
                                  [numpy_helper.from_array(np.array(scale, np.float32), "s"),
                                   numpy_helper.from_array(np.array(zp, dtype), "z")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
        assert np.array_equal(quantize_linear(x, float(scale), zp, dtype), ref), dtype


# ---------------------------------------------------------------------------------------------
# Bad inputs: clear ValueErrors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, fragments", [
    (lambda f: {"x": f["x"]}, ["missing ['x2']"]),
    (lambda f: {**f, "x3": f["x"]}, ["unexpected ['x3']"]),
    (lambda f: [f["x"]], ["2 inputs", "got 1"]),
    (lambda f: [f["x"], f["x2"], f["x"]], ["got 3"]),
    (lambda f: f["x"], ["2 inputs", "got 1"]),
    (lambda f: {**f, "x": f["x"][0]}, ["input 'x'", "shape [4, 37]", "declared [None, 4, None]"]),
    (lambda f: {**f, "x": f["x"][:, :3]}, ["input 'x'", "shape [2, 3, 37]"]),
    (lambda f: {**f, "x": f["x"][..., None]}, ["input 'x'", "shape [2, 4, 37, 1]"]),
    (lambda f: {**f, "x": f["x"].astype(np.int16)}, ["input 'x'", "dtype int16", "expected int8"]),
    (lambda f: {**f, "x": f["x"].astype(np.uint8)}, ["input 'x'", "dtype uint8"]),
    (lambda f: {**f, "x": f["x"].astype(bool)}, ["input 'x'", "dtype bool"]),
    (lambda f: {**f, "x": f["x"].astype(np.complex64)}, ["input 'x'", "dtype complex64"]),
    (lambda f: {**f, "x": f["x"].astype(object)}, ["input 'x'", "dtype object"]),
    (lambda f: {**f, "x": np.full((2, 4, 37), np.nan, np.float32)}, ["input 'x'", "NaN"]),
    (lambda f: {**f, "x2": np.full((2, 3, 37), np.inf)}, ["input 'x2'", "infinite"]),
])
def test_bad_inputs_raise_valueerror(two_input_graph, make, fragments):
    model = Model(two_input_graph)
    feeds = random_inputs(two_input_graph, np.random.default_rng(6))
    with pytest.raises(ValueError) as info:
        model.run(make(feeds))
    assert not isinstance(info.value, (OpError, GraphError))
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_static_dims_are_enforced():
    model = Model(conv_graph(batch=1, time=20))
    model.run(np.zeros((1, 4, 20), np.int8))
    for shape in [(2, 4, 20), (1, 4, 21)]:
        with pytest.raises(ValueError, match="declared \\[1, 4, 20\\]"):
            model.run(np.zeros(shape, np.int8))


def test_too_short_input_is_an_operror():
    model = Model(conv_graph())
    model.run(np.zeros((1, 4, 1), np.int8))  # one frame is enough for every node
    with pytest.raises(OpError, match="conv0"):
        model.run(np.zeros((1, 4, 0), np.int8))


def _float_graph():
    """x float32 [None] -> passthrough -> y float32 (custom op)."""
    tensors = {"x": TensorSpec("x", "float32", [None]), "y": TensorSpec("y", "float32", [None])}
    return Graph(tensors, [Node("p", "passthrough", ["x"], ["y"])], ["x"], ["y"])


class Passthrough(Op):
    n_inputs = 1

    def run(self, inputs, counts):
        return [inputs[0].copy()]


def test_float_graph_inputs():
    model = Model(_float_graph(), ops={**OPS, "passthrough": Passthrough})
    assert model.run(np.arange(4))["y"].dtype == np.float32
    assert np.array_equal(model.run(np.arange(4, dtype=np.float64))["y"], np.arange(4, dtype=np.float32))
    for bad, fragment in [(np.array([1.0, np.nan]), "NaN"), (np.array([np.inf], np.float32), "infinite"),
                          (np.array([1e300]), "outside the float32 range"), (np.array(["a"]), "dtype <U1")]:
        with pytest.raises(ValueError, match=fragment):
            model.run(bad)


# ---------------------------------------------------------------------------------------------
# Counts, determinism, parallelism
# ---------------------------------------------------------------------------------------------


def _saturating_graph():
    """The conv graph with conv1's real multipliers scaled up 64x: conv1 saturates its int8 output."""
    graph = conv_graph(seed=12)
    node = next(n for n in graph.nodes if n.name == "conv1")
    mult, shift, scale = node.inputs[3:6]
    graph.constants[shift] = graph.constants[shift] + np.int32(6)
    graph.constants[scale] = (graph.constants[scale] * 64).astype(np.float32)
    return graph


@pytest.mark.parametrize("profile", ["tflm", {"name": "acc16", "base": "single", "acc_bits": 16},
                                     {"name": "acc16sat", "base": "single", "acc_bits": 16, "acc_overflow": "saturate"}],
                         ids=["tflm", "acc16-wrap", "acc16-saturate"])
def test_per_node_counts(profile):
    graph = _saturating_graph()
    feeds = random_inputs(graph, np.random.default_rng(7))
    _, _, expected = reference_run(graph, feeds, profile)
    model = Model(graph, profile=profile)
    assert all(c == NodeCounts() for c in model.counts.values())
    model.run(feeds)
    got = {k: (c.acc_overflows, c.saturations) for k, c in model.counts.items()}
    assert got == expected
    assert expected["conv1"][1] > 0, "conv1 should saturate"
    if profile != "tflm":
        assert sum(o for o, _ in expected.values()) > 0, "a narrow accumulator should overflow"
    model.run(feeds)  # counts accumulate over runs
    assert {k: (c.acc_overflows, c.saturations) for k, c in model.counts.items()} == \
        {k: (2 * o, 2 * s) for k, (o, s) in expected.items()}
    model.reset_counts()
    assert all(c == NodeCounts() for c in model.counts.values())


def test_determinism_and_parallel_equals_serial(two_input_graph):
    graph = _saturating_graph()
    feeds = random_inputs(graph, np.random.default_rng(8), batch=3, time=200)
    runs = []
    for parallel in (True, True, False, False):
        model = Model(graph, parallel=parallel)
        out = model.run(feeds)
        runs.append(({k: v.tobytes() for k, v in out.items()},
                     {k: (c.acc_overflows, c.saturations) for k, c in model.counts.items()}))
    assert all(r == runs[0] for r in runs[1:])
    model = Model(two_input_graph, parallel=True)
    feeds = random_inputs(two_input_graph, np.random.default_rng(9))
    first = model.run(feeds)
    second = model.run(feeds)
    assert all(first[k].tobytes() == second[k].tobytes() for k in first)


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def _one_conv_graph(seed=13, c_in=16, c_out=16, k=5):
    """x -> conv0 -> y, with many output elements and per-channel multipliers (double rounding ties)."""
    graph = conv_graph(seed=seed)
    node = graph.nodes[0]
    keep = {"x", node.outputs[0], *node.inputs}
    graph.nodes = [node]
    graph.outputs = [node.outputs[0]]
    graph.tensors = {k2: v for k2, v in graph.tensors.items() if k2 in keep}
    graph.constants = {k2: v for k2, v in graph.constants.items() if k2 in keep}
    return graph


def test_profile_override_single_vs_tflm():
    """'single' and 'tflm' (int8 path) differ only in the rounding of the requantization: by at most
    1 LSB, exactly where TFLite's double rounding and single rounding disagree on the accumulator."""
    graph = _one_conv_graph()
    rng = np.random.default_rng(10)
    x = rng.integers(-128, 128, (4, 4, 2000)).astype(np.int8)
    captured = {}
    tflm = Model(graph, profile="tflm").run(x, hook=lambda n, i, o: captured.update(inputs=i))["h0"]
    single = Model(graph, profile="single").run(x)["h0"]
    assert np.abs(tflm.astype(int) - single.astype(int)).max() <= 1
    node = graph.nodes[0]
    w, b, mult, shift = (graph.constants[n] for n in node.inputs[1:5])
    zp = graph.tensors["x"].quant.zero_point[0]
    out_zp = graph.tensors["h0"].quant.zero_point[0]
    # Exact accumulators (pad 1, stride 1, k 3): predict where the two roundings disagree.
    xs = np.pad(x.astype(np.int64) - zp, ((0, 0), (0, 0), (1, 1)))
    acc = b.astype(np.int64)[None, :, None] + sum(np.einsum("nct,oc->not", xs[:, :, k:k + x.shape[2]], w[:, :, k].astype(np.int64))
                                                 for k in range(3))
    predicted = np.zeros(acc.shape, bool)
    for index in zip(*np.nonzero(np.ones(acc.shape, bool))):
        a = int(acc[index])
        c = index[1]
        d = mbqm_double(a, int(mult[c]), int(shift[c])) + out_zp
        s = mbqm_single(a, int(mult[c]), int(shift[c])) + out_zp
        predicted[index] = min(127, max(-128, d)) != min(127, max(-128, s))
    differs = tflm != single
    assert np.array_equal(differs, predicted)
    assert 0 < differs.sum() < differs.size // 50, f"{differs.sum()} of {differs.size} differ"


def test_profile_from_file_and_override(tmp_path):
    graph = conv_graph(seed=14, profile="single")
    modelfile.save(graph, tmp_path / "m.npz")
    assert intsim.load(tmp_path / "m.npz").profile.name == "single"
    assert intsim.load(tmp_path / "m.npz", profile="tflm").profile.name == "tflm"
    custom = {"name": "dsp24", "base": "tflm", "acc_bits": 24, "acc_overflow": "saturate"}
    model = intsim.load(tmp_path / "m.npz", profile=custom)
    assert model.profile.name == "dsp24" and model.profile.int8.acc_bits == 24
    with pytest.raises(ProfileError, match="nosuch"):
        intsim.load(tmp_path / "m.npz", profile="nosuch")


@pytest.mark.parametrize("profile", ["nosuch", {"rounding": []}, {"acc_bits": "32"}, 42])
def test_bad_profile_is_a_profileerror(profile):
    with pytest.raises(ProfileError):
        Model(conv_graph(), profile=profile)


# ---------------------------------------------------------------------------------------------
# Op errors, executor checks, memory
# ---------------------------------------------------------------------------------------------


def test_unknown_op(tmp_path):
    graph = conv_graph()
    graph.nodes[2].op = "frobnicate"
    with pytest.raises(OpError) as info:
        Model(graph)
    assert "conv2" in str(info.value) and "'frobnicate'" in str(info.value) and "conv1d" in str(info.value)
    modelfile.save(graph, tmp_path / "m.npz")
    with pytest.raises(OpError) as info:
        intsim.load(tmp_path / "m.npz")
    assert str(info.value).startswith(str(tmp_path / "m.npz")) and "conv2" in str(info.value)


def test_op_prepare_error_names_node_and_attribute():
    graph = conv_graph()
    graph.nodes[1].attrs["groups"] = 3
    with pytest.raises(OpError, match="conv1.*groups"):
        Model(graph)


def test_invalid_graph_is_a_grapherror():
    graph = conv_graph()
    graph.nodes[0], graph.nodes[1] = graph.nodes[1], graph.nodes[0]
    with pytest.raises(GraphError, match="conv1.*used before"):
        Model(graph)


class WrongShape(Op):
    n_inputs = 1

    def run(self, inputs, counts):
        return [np.zeros(3, np.float32)]


class WrongDtype(Op):
    n_inputs = 1

    def run(self, inputs, counts):
        return [inputs[0].astype(np.float64)]


class WrongCount(Op):
    n_inputs = 1

    def run(self, inputs, counts):
        return [inputs[0], inputs[0]]


@pytest.mark.parametrize("op, fragment", [(WrongShape, "has shape [3], declared [2]"),
                                          (WrongDtype, "dtype float64, declared float32"),
                                          (WrongCount, "returned 2 outputs, expected 1")])
def test_executor_checks_op_outputs(op, fragment):
    graph = _float_graph()
    graph.tensors["y"].shape = [2]
    model = Model(graph, ops={**OPS, "passthrough": op})
    with pytest.raises(OpError) as info:
        model.run(np.zeros(2, np.float32))
    assert "'p'" in str(info.value) and fragment in str(info.value)


class Track(Op):
    """passthrough that remembers its output arrays (weakly) in a class-level list."""

    n_inputs = 1
    outputs: list = []

    def run(self, inputs, counts):
        out = inputs[0] + np.float32(1)
        Track.outputs.append(weakref.ref(out))
        return [out]


class Probe(Op):
    """Checks, while the graph runs, that earlier intermediates were freed after their last use."""

    n_inputs = 1
    alive_seen: list = []

    def run(self, inputs, counts):
        gc.collect()
        Probe.alive_seen.append([ref() is not None for ref in Track.outputs])
        return [inputs[0].copy()]


def test_intermediates_are_freed_after_last_use():
    """x -> t0 -> a -> t1 -> b -> probe -> y, and a dead-end t2 (nobody reads it) off x."""
    tensors = {n: TensorSpec(n, "float32", [None]) for n in ["x", "a", "b", "dead", "y"]}
    nodes = [Node("t0", "track", ["x"], ["a"]), Node("t2", "track", ["x"], ["dead"]),
             Node("t1", "track", ["a"], ["b"]), Node("probe", "probe", ["b"], ["y"])]
    model = Model(Graph(tensors, nodes, ["x"], ["y"]), ops={**OPS, "track": Track, "probe": Probe})
    Track.outputs.clear()
    Probe.alive_seen.clear()
    model.run(np.zeros(4, np.float32))
    # While probe ran: 'a' (last read by t1) and 'dead' (never read) were freed, 'b' (probe's input) alive.
    assert Probe.alive_seen == [[False, False, True]]
    kept = []
    Track.outputs.clear()
    model.run(np.zeros(4, np.float32), hook=lambda node, ins, outs: kept.extend(outs))
    assert all(ref() is not None for ref in Track.outputs), "a hook that keeps arrays keeps them alive"


def test_model_validates_graph_and_io_names():
    graph = conv_graph()
    graph.inputs = ["x", "x"]
    with pytest.raises(GraphError, match="listed twice"):
        Model(graph)


def test_fused_activation_clamp_is_not_counted_as_saturation():
    """A fused ReLU (act_min attribute) clamps by design; only values past the dtype maximum count."""
    from intsim.executor import Model

    x = np.random.default_rng(3).integers(-128, 128, (1, 4, 64)).astype(np.int8)

    def run(act_min):
        graph = conv_graph(seed=3)
        node = graph.nodes[0]
        if act_min is not None:
            node.attrs["act_min"] = act_min
        model = Model(graph, parallel=False)
        seen = {}
        model.run(x, hook=lambda n, ins, outs: seen.setdefault(n.name, outs[0]))
        return model.counts[node.name].saturations, seen[node.name]

    node = conv_graph(seed=3).nodes[0]
    zp = conv_graph(seed=3).tensors[node.outputs[0]].quant.zero_point[0]
    plain_count, plain = run(None)  # counts both sides of the int8 range
    high_count, same = run(-128)  # act_min at the dtype minimum: clamps nothing new, counts the high side only
    relu_count, relu = run(zp)
    np.testing.assert_array_equal(same, plain)
    assert np.count_nonzero(relu == zp) > np.count_nonzero(plain == zp)  # the ReLU clamped values ...
    assert relu_count == high_count  # ... which are not counted,
    assert 0 < high_count < plain_count  # while the int8 saturations above 127 are
