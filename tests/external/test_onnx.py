"""Cross-check of the ``onnx`` profile against ONNX Runtime and ``onnx.reference``.

Single-node ONNX models (QLinearConv 1-D, QLinearMatMul) are built with ``onnx.helper`` and run in
ONNX Runtime (CPU, ``ORT_DISABLE_ALL``, one thread) in a subprocess (``onnx_runner.py``: this
process never imports onnxruntime).  intsim runs the same integers through its kernels
(``intsim.kernels.conv.conv1d``, ``intsim.kernels.matmul.linear``) with the requantization of
``PROFILES["onnx"].int8`` (32-bit wrapping accumulator, rounding ``float32``), and through a
one-node ``intsim.Model`` with ``profile="onnx"``.  Every output element must be identical.

Real multiplier, as ONNX Runtime computes it (``onnxruntime/core/providers/cpu/quantization/
qlinearconv.cc`` ``ComputeOutputScale`` and ``quantize_linear_matmul.cc``)::

    output_scales[i] = (X_scale_value * W_scale_data[i] / Y_scale_value);   // all float

i.e. ``scale = float32(float32(x_scale * w_scale[i]) / y_scale)``: a float32 product, rounded, then
a float32 division, rounded (left to right, no FMA contraction: a multiply and a divide).
``onnx.reference`` (``op_qlinear_conv.py``: ``res * (x_scale * w_scale / y_scale)``) evaluates the
same float32 expression on float32 NumPy arrays, so both use the same float32 scale;
``scale_ort`` below computes it with NumPy float32 in that order and it is what the graph's
``scale`` constant holds.

Requantization, ONNX Runtime (MLAS ``MlasRequantizeOutput`` / fused ConvSym kernels):
``int32 acc (+ bias, int32 wrapping) -> float32(acc) * scale (float32) -> round half to even ->
+ y_zero_point -> saturate``; this is intsim's ``float32`` rounding.  ``onnx.reference`` differs in two
documented ways, which the tests below predict element by element from exact accumulators:
it multiplies in float64 (``int32 * float32`` promotes to float64 in NumPy) and it adds the zero
point *before* rounding half to even, so on an exact tie with an odd zero point it rounds the other
way (e.g. acc * scale = 2.5, y_zp = 1: ORT 2 + 1 = 3, reference rint(3.5) = 4).  Its per-channel
QLinearConv also only broadcasts 2-D convolutions (``np.expand_dims(w_scale, (0, 2, 3))``), so it is
run on the equivalent 2-D model (H = 1).

x86 note: on CPUs without VNNI, MLAS's u8s8 kernels use ``vpmaddubsw``, whose int16 pair sums can
saturate with full-range weights (a genuine ORT numerical effect, not intsim's); weights are drawn
from [-64, 63] there so pairs cannot saturate, full range otherwise.

Mismatch counts per op (elements compared / mismatched) are collected in ``MISMATCHES`` and
printed by the last test (run with ``-s`` to see them); every count must be zero.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels.conv import conv1d, conv1d_output_length
from intsim.kernels.fixedpoint import requant_params
from intsim.profile import PROFILES

onnx = pytest.importorskip("onnx")
if importlib.util.find_spec("onnxruntime") is None:  # find_spec does not import it
    pytest.skip("onnxruntime is not installed", allow_module_level=True)

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

pytestmark = pytest.mark.external

RUNNER = Path(__file__).with_name("onnx_runner.py")
OPSET = 21
ONNX_PATH = PROFILES["onnx"].int8

#: op -> [elements compared, mismatched] for ORT and for onnx.reference (beyond predicted ties).
MISMATCHES: dict[str, list[int]] = {}


def _count(key, n, bad):
    entry = MISMATCHES.setdefault(key, [0, 0])
    entry[0] += int(n)
    entry[1] += int(bad)


def _cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux/x86: no vpmaddubsw concern we can detect
    if "avx2" not in flags:
        return True  # not x86 with AVX2 (e.g. ARM: sdot, no int16 saturation)
    return "avx512_vnni" in flags or "avx_vnni" in flags


W_LO, W_HI = (-128, 127) if _cpu_has_vnni() else (-64, 63)


def scale_ort(x_scale, w_scale, y_scale) -> np.ndarray:
    """float32(float32(x_scale * w_scale) / y_scale), elementwise, as ORT computes output_scales."""
    xs = np.float32(x_scale)
    ys = np.float32(y_scale)
    ws = np.atleast_1d(np.asarray(w_scale, dtype=np.float32))
    prod = (xs * ws).astype(np.float32)
    return (prod / ys).astype(np.float32)


def onnx_rq(scale: np.ndarray, out_zp: int, act_min=-128, act_max=127):
    """Kernel requant tuple for the onnx profile's int8 path with float32 scales ``scale``."""
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in scale))
    return requant_params(np.array(mult), np.array(shift), scale, ONNX_PATH.rounding_code, ONNX_PATH.mult_bits,
                          ONNX_PATH.acc_bits, ONNX_PATH.acc_saturating, out_zp, act_min, act_max)


def reference_requant(acc: np.ndarray, scale: np.ndarray, y_zp: int) -> np.ndarray:
    """onnx.reference's requant on exact int32 accumulators: float64 product, zp before rint."""
    r = acc.astype(np.int32).astype(np.float64) * scale.astype(np.float64) + float(y_zp)
    return np.rint(np.clip(r, -128, 127)).astype(np.int8)


def ort_requant(acc: np.ndarray, scale: np.ndarray, y_zp: int) -> np.ndarray:
    """ORT's requant: round_half_even(float32(acc) * scale) + zp, saturated (for tie predictions)."""
    r = np.rint(acc.astype(np.int32).astype(np.float32) * scale.astype(np.float32)).astype(np.int64) + y_zp
    return np.clip(r, -128, 127).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# QLinearConv (1-D)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    name: str
    n: int = 2
    c: int = 8
    t: int = 40
    m: int = 12
    k: int = 3
    stride: int = 1
    dilation: int = 1
    pads: tuple = (1, 1)
    group: int = 1
    bias: bool = True
    per_channel: bool = True
    x_zp: int = 3
    y_zp: int = -5
    scales: str = "random"  # "random", "pow2" (some exact ties), "ties" (many), "tiny" (saturation)
    bias_offset: int = 0  # added to every bias: pushes the int32 accumulator towards wrapping
    seed: int = 0


def _random_conv_cases(count, seed=1234):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        group = int(rng.choice([1, 1, 2, 4]))
        c = group * int(rng.integers(1, 6))
        m = group * int(rng.integers(1, 5))
        k = int(rng.integers(1, 7))
        dilation = int(rng.integers(1, 4))
        span = dilation * (k - 1) + 1
        pads = (int(rng.integers(0, span)), int(rng.integers(0, span)))
        t = int(rng.integers(max(1, span - sum(pads)), 50))
        cases.append(ConvCase(
            f"random{i:02d}", n=int(rng.integers(1, 4)), c=c, t=t, m=m, k=k, stride=int(rng.integers(1, 4)),
            dilation=dilation, pads=pads, group=group, bias=bool(rng.random() < 0.8),
            per_channel=bool(rng.random() < 0.8), x_zp=int(rng.integers(-128, 128)), y_zp=int(rng.integers(-128, 128)),
            scales=str(rng.choice(["random", "random", "pow2", "ties"])), seed=1000 + i))
    return cases


CONV_CASES = [
    ConvCase("basic"),
    ConvCase("stride2_dil3_asympad", n=1, c=6, t=61, m=10, k=4, stride=2, dilation=3, pads=(3, 0)),
    ConvCase("grouped4_stride3", c=16, m=8, t=50, k=3, stride=3, pads=(0, 2), group=4),
    ConvCase("depthwise", c=16, m=16, t=64, k=5, pads=(2, 2), group=16),
    ConvCase("depthwise_mult2_dil2", c=8, m=16, k=3, dilation=2, pads=(2, 2), group=8),
    ConvCase("pointwise", c=32, m=24, t=33, k=1, pads=(0, 0)),
    ConvCase("pointwise_strided", c=8, m=8, t=33, k=1, stride=2, pads=(0, 0)),
    ConvCase("no_bias", bias=False, x_zp=-7, y_zp=9),
    ConvCase("per_tensor", per_channel=False),
    ConvCase("per_tensor_depthwise", c=8, m=8, group=8, k=3, per_channel=False),
    ConvCase("zp_min", x_zp=-128, y_zp=127, scales="tiny"),
    ConvCase("zp_max", x_zp=127, y_zp=-128, scales="tiny"),
    ConvCase("ties_pow2_odd_zp", scales="pow2", y_zp=1),
    ConvCase("ties_pow2_depthwise", c=8, m=8, group=8, k=4, scales="pow2", y_zp=-3, pads=(3, 0)),
    ConvCase("ties_many_odd_zp", t=64, scales="ties", x_zp=-11, y_zp=7, seed=5),
    ConvCase("ties_many_even_zp_depthwise", c=12, m=12, group=12, t=64, k=5, pads=(2, 2), scales="ties", y_zp=-4,
             seed=6),
    ConvCase("ties_many_per_tensor", c=6, m=6, k=2, pads=(1, 0), per_channel=False, scales="ties", y_zp=3, seed=7),
    ConvCase("acc_wrap_int32", bias_offset=2**31 - 20_000, scales="tiny"),
    ConvCase("wide_c64_k9", n=1, c=64, m=16, t=40, k=9, pads=(4, 4)),
] + _random_conv_cases(24)


def conv_arrays(case: ConvCase) -> dict:
    rng = np.random.default_rng(case.seed)
    x = rng.integers(-128, 128, (case.n, case.c, case.t), dtype=np.int8)
    w = rng.integers(W_LO, W_HI + 1, (case.m, case.c // case.group, case.k), dtype=np.int8)
    typical = float(np.sqrt((case.c // case.group) * case.k)) * 64 * 70
    if case.scales == "ties":  # small accumulators, scales 2^-1..2^-3: a large share of exact ties
        x = np.clip(case.x_zp + rng.integers(-4, 5, x.shape), -128, 127).astype(np.int8)
        w = rng.integers(-4, 5, w.shape, dtype=np.int8)
        typical = 50
    bias = rng.integers(-int(typical), int(typical) + 1, case.m).astype(np.int64)
    bias = np.clip(bias + case.bias_offset, -(2**31), 2**31 - 1).astype(np.int32) if case.bias else None
    if case.scales == "ties":
        x_scale = np.float32(2.0**-3)
        w_scale = (2.0 ** -rng.integers(1, 4, case.m if case.per_channel else 1).astype(np.float64)).astype(np.float32)
        y_scale = x_scale
    elif case.scales == "pow2":
        x_scale = np.float32(2.0**-int(rng.integers(3, 8)))
        w_exp = rng.integers(5, 12, case.m if case.per_channel else 1)
        w_scale = (2.0 ** -w_exp.astype(np.float64)).astype(np.float32)
        y_scale = np.float32(x_scale * np.float32(2.0**-int(rng.integers(2, 5))) * 8)
    else:
        x_scale = np.float32(rng.uniform(0.005, 0.05))
        w_scale = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), case.m if case.per_channel else 1)).astype(np.float32)
        target = 40.0 if case.scales == "random" else 400.0  # "tiny": y_scale small -> many saturations
        y_scale = np.float32(x_scale * float(np.median(w_scale)) * typical / target)
    if not case.per_channel:
        w_scale = w_scale.reshape(())
    return {"x": x, "w": w, "bias": bias, "x_scale": x_scale, "w_scale": w_scale, "y_scale": y_scale}


def conv_model(case: ConvCase, a: dict, two_d: bool = False, weight_as_input: bool = False):
    """QLinearConv model; ``two_d`` gives the equivalent [N, C, 1, T] model (for onnx.reference).

    ``weight_as_input`` feeds the weight as a graph input instead of an initializer: ORT cannot
    prepack it and takes its generic path (im2col + MlasGemm / MlasConvDepthwise, then
    MlasRequantizeOutput) instead of the fused symmetric ConvSym kernels.
    """
    x, w = a["x"], a["w"]
    if two_d:
        x_shape = [case.n, case.c, 1, case.t]
        w = w[:, :, None, :]
        attrs = dict(strides=[1, case.stride], dilations=[1, case.dilation], pads=[0, case.pads[0], 0, case.pads[1]],
                     group=case.group, kernel_shape=[1, case.k])
        y_shape = [case.n, case.m, 1, None]
    else:
        x_shape = list(x.shape)
        attrs = dict(strides=[case.stride], dilations=[case.dilation], pads=list(case.pads), group=case.group,
                     kernel_shape=[case.k])
        y_shape = [case.n, case.m, None]
    w_zp = np.zeros(case.m, np.int8) if case.per_channel else np.array(0, np.int8)
    inits = [
        numpy_helper.from_array(np.array(a["x_scale"], np.float32), "x_scale"),
        numpy_helper.from_array(np.array(case.x_zp, np.int8), "x_zero_point"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.asarray(a["w_scale"], np.float32), "w_scale"),
        numpy_helper.from_array(w_zp, "w_zero_point"),
        numpy_helper.from_array(np.array(a["y_scale"], np.float32), "y_scale"),
        numpy_helper.from_array(np.array(case.y_zp, np.int8), "y_zero_point"),
    ]
    inputs = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point"]
    if a["bias"] is not None:
        inits.append(numpy_helper.from_array(a["bias"], "bias"))
        inputs.append("bias")
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.INT8, x_shape)]
    if weight_as_input:
        inits = [i for i in inits if i.name != "w"]
        graph_inputs.append(helper.make_tensor_value_info("w", TensorProto.INT8, list(w.shape)))
    node = helper.make_node("QLinearConv", inputs, ["y"], **attrs)
    graph = helper.make_graph([node], case.name, graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.INT8, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def conv_scale(case, a):
    return np.broadcast_to(scale_ort(a["x_scale"], a["w_scale"], a["y_scale"]), (case.m,)).astype(np.float32).copy()


def conv_bias64(case, a):
    return np.zeros(case.m, np.int32) if a["bias"] is None else a["bias"]


def conv_exact_acc(case, a) -> np.ndarray:
    """Exact int64 accumulators (bias included), naive NumPy."""
    x = a["x"].astype(np.int64) - case.x_zp
    w = a["w"].astype(np.int64)
    xp = np.pad(x, ((0, 0), (0, 0), case.pads))
    t_out = conv1d_output_length(case.t, case.k, case.stride, *case.pads, case.dilation)
    cig, cog = case.c // case.group, case.m // case.group
    acc = np.zeros((case.n, case.m, t_out), np.int64)
    for co in range(case.m):
        g = co // cog
        for k in range(case.k):
            start = k * case.dilation
            taps = xp[:, g * cig:(g + 1) * cig, start:start + case.stride * (t_out - 1) + 1:case.stride]
            acc[:, co, :] += np.einsum("nct,c->nt", taps, w[co, :, k])
    return acc + conv_bias64(case, a).astype(np.int64)[None, :, None]


def intsim_conv(case, a):
    scale = conv_scale(case, a)
    t_out = conv1d_output_length(case.t, case.k, case.stride, *case.pads, case.dilation)
    out = np.empty((case.n, case.m, t_out), np.int8)
    ovf = np.zeros(case.m, np.int64)
    sat = np.zeros(case.m, np.int64)
    conv1d(a["x"], case.x_zp, a["w"], conv_bias64(case, a), case.stride, case.pads[0], case.dilation, case.group,
           onnx_rq(scale, case.y_zp), out, ovf, sat)
    return out, int(ovf.sum()), int(sat.sum())


def intsim_conv_model(case, a):
    """The same convolution through a one-node intsim graph run with profile='onnx'."""
    from intsim import Model

    scale = conv_scale(case, a)
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in scale))
    consts = {"w": a["w"], "b": conv_bias64(case, a), "mult": np.array(mult, np.int32),
              "shift": np.array(shift, np.int32), "scale": scale}
    tensors = {
        "x": TensorSpec("x", "int8", [None, case.c, None], Quant([float(a["x_scale"])], [case.x_zp])),
        "y": TensorSpec("y", "int8", [None, case.m, None], Quant([float(a["y_scale"])], [case.y_zp])),
    }
    for name, data in consts.items():
        tensors[name] = TensorSpec(name, str(data.dtype), list(data.shape))
    node = Node("conv", "conv1d", ["x", "w", "b", "mult", "shift", "scale"], ["y"],
                {"stride": case.stride, "padding": list(case.pads), "dilation": case.dilation, "groups": case.group})
    graph = Graph(tensors, [node], ["x"], ["y"], consts, profile="tflm")
    return Model(graph, profile="onnx", parallel=False).run(a["x"])["y"]


# ---------------------------------------------------------------------------------------------
# QLinearMatMul
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatMulCase:
    name: str
    rows: int = 64
    k: int = 64
    n: int = 40
    per_column: bool = False
    a_zp: int = 5
    y_zp: int = -3
    scales: str = "random"  # as ConvCase; "wrap": large positive products, the int32 accumulator wraps
    batch: tuple = ()  # leading batch dims of A
    seed: int = 0


MATMUL_CASES = [
    MatMulCase("per_tensor"),
    MatMulCase("per_tensor_zp_extremes", a_zp=-128, y_zp=127, seed=1),
    MatMulCase("per_tensor_ties_pow2", scales="pow2", y_zp=1, seed=2),
    MatMulCase("per_tensor_ties_many", scales="ties", y_zp=-1, seed=10),
    MatMulCase("per_tensor_k1", k=1, n=7, seed=3),
    MatMulCase("per_tensor_batched", batch=(3,), rows=5, k=17, n=9, seed=4),
    MatMulCase("per_tensor_wide_k", rows=8, k=1024, n=16, seed=5),
    MatMulCase("per_tensor_acc_wrap_int32", rows=2, k=100_000, n=4, a_zp=-128, scales="wrap", seed=12),
    MatMulCase("per_column", per_column=True, seed=6),
    MatMulCase("per_column_ties_pow2", per_column=True, scales="pow2", y_zp=-7, seed=7),
    MatMulCase("per_column_ties_many", per_column=True, scales="ties", a_zp=-20, y_zp=4, seed=11),
    MatMulCase("per_column_tiny_scale", per_column=True, scales="tiny", a_zp=127, y_zp=-128, seed=8),
    MatMulCase("per_column_batched", per_column=True, batch=(2, 2), rows=3, k=40, n=11, seed=9),
]


def matmul_arrays(case: MatMulCase) -> dict:
    rng = np.random.default_rng(100 + case.seed)
    a = rng.integers(-128, 128, (*case.batch, case.rows, case.k), dtype=np.int8)
    b = rng.integers(W_LO, W_HI + 1, (case.k, case.n), dtype=np.int8)
    typical = float(np.sqrt(case.k)) * 64 * 70
    n_scales = case.n if case.per_column else 1
    if case.scales == "ties":  # small accumulators, scales 2^-1..2^-3: a large share of exact ties
        a = np.clip(case.a_zp + rng.integers(-4, 5, a.shape), -128, 127).astype(np.int8)
        b = rng.integers(-4, 5, b.shape, dtype=np.int8)
        a_scale = np.float32(2.0**-3)
        b_scale = (2.0 ** -rng.integers(1, 4, n_scales).astype(np.float64)).astype(np.float32)
        y_scale = a_scale
    elif case.scales == "wrap":  # (a - zp) * b up to 255 * 127 over K = 100000 terms: past 2^31
        a = rng.integers(100, 128, a.shape, dtype=np.int8)
        b = rng.integers(100, 128, b.shape, dtype=np.int8)
        a_scale, b_scale, y_scale = np.float32(0.01), np.full(n_scales, 0.001, np.float32), np.float32(100.0)
    elif case.scales == "pow2":
        a_scale = np.float32(2.0**-int(rng.integers(3, 8)))
        b_scale = (2.0 ** -rng.integers(5, 12, n_scales).astype(np.float64)).astype(np.float32)
        y_scale = np.float32(a_scale * np.float32(2.0**-int(rng.integers(2, 5))) * 8)
    else:
        a_scale = np.float32(rng.uniform(0.005, 0.05))
        b_scale = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), n_scales)).astype(np.float32)
        target = 40.0 if case.scales == "random" else 400.0
        y_scale = np.float32(a_scale * float(np.median(b_scale)) * typical / target)
    if not case.per_column:
        b_scale = b_scale.reshape(())
    return {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "y_scale": y_scale}


def matmul_model(case: MatMulCase, d: dict, b_scale_shape=None, weight_as_input=False):
    """QLinearMatMul model; ``weight_as_input``: B is a graph input (ORT's unpacked MlasGemm path)."""
    b_scale = np.asarray(d["b_scale"], np.float32)
    b_zp = np.zeros(b_scale.shape, np.int8)
    if b_scale_shape is not None:
        b_scale = b_scale.reshape(b_scale_shape)
        b_zp = b_zp.reshape(b_scale_shape)
    inits = [
        numpy_helper.from_array(np.array(d["a_scale"], np.float32), "a_scale"),
        numpy_helper.from_array(np.array(case.a_zp, np.int8), "a_zero_point"),
        numpy_helper.from_array(d["b"], "b"),
        numpy_helper.from_array(b_scale, "b_scale"),
        numpy_helper.from_array(b_zp, "b_zero_point"),
        numpy_helper.from_array(np.array(d["y_scale"], np.float32), "y_scale"),
        numpy_helper.from_array(np.array(case.y_zp, np.int8), "y_zero_point"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                              "y_scale", "y_zero_point"], ["y"])
    a_shape = list(d["a"].shape)
    graph_inputs = [helper.make_tensor_value_info("a", TensorProto.INT8, a_shape)]
    if weight_as_input:
        inits = [i for i in inits if i.name != "b"]
        graph_inputs.append(helper.make_tensor_value_info("b", TensorProto.INT8, [case.k, case.n]))
    graph = helper.make_graph([node], case.name, graph_inputs,
                              [helper.make_tensor_value_info("y", TensorProto.INT8, a_shape[:-1] + [case.n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def matmul_scale(case, d):
    return np.broadcast_to(scale_ort(d["a_scale"], d["b_scale"], d["y_scale"]), (case.n,)).astype(np.float32).copy()


def matmul_exact_acc(case, d):
    return (d["a"].astype(np.int64) - case.a_zp) @ d["b"].astype(np.int64)


def _linear_kernel():
    try:
        from intsim.kernels.matmul import linear
    except ImportError:
        return None
    return linear


def intsim_matmul(case, d):
    """QLinearMatMul through intsim's linear kernel: weight [N, K] = B^T, zero bias."""
    linear = _linear_kernel()
    if linear is None:
        pytest.skip("intsim.kernels.matmul.linear is not available yet")
    scale = matmul_scale(case, d)
    x = np.ascontiguousarray(d["a"].reshape(-1, case.k))
    w = np.ascontiguousarray(d["b"].T)
    out = np.empty((x.shape[0], case.n), np.int8)
    ovf = np.zeros(case.n, np.int64)
    sat = np.zeros(case.n, np.int64)
    linear(x, case.a_zp, w, np.zeros(case.n, np.int32), onnx_rq(scale, case.y_zp), out, ovf, sat)
    return out.reshape(*case.batch, case.rows, case.n)


def intsim_matmul_model(case, d):
    """The same product through a one-node intsim graph (op ``linear``) run with profile='onnx'."""
    from intsim import OPS, Model

    if "linear" not in OPS:
        pytest.skip("op 'linear' is not registered yet")
    scale = matmul_scale(case, d)
    mult, shift = zip(*(quantize_multiplier(float(s)) for s in scale))
    consts = {"w": np.ascontiguousarray(d["b"].T), "b": np.zeros(case.n, np.int32), "mult": np.array(mult, np.int32),
              "shift": np.array(shift, np.int32), "scale": scale}
    lead = [None] * (d["a"].ndim - 1)
    tensors = {
        "a": TensorSpec("a", "int8", [*lead, case.k], Quant([float(d["a_scale"])], [case.a_zp])),
        "y": TensorSpec("y", "int8", [*lead, case.n], Quant([float(d["y_scale"])], [case.y_zp])),
    }
    for name, data in consts.items():
        tensors[name] = TensorSpec(name, str(data.dtype), list(data.shape))
    node = Node("fc", "linear", ["a", "w", "b", "mult", "shift", "scale"], ["y"], {})
    graph = Graph(tensors, [node], ["a"], ["y"], consts, profile="tflm")
    return Model(graph, profile="onnx", parallel=False).run(d["a"])["y"]


# ---------------------------------------------------------------------------------------------
# Running ONNX Runtime once for every case
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_outputs(tmp_path_factory):
    """Build every model, run them all in one ORT subprocess, return {case name: output}."""
    work = tmp_path_factory.mktemp("ort")
    manifest = []

    def add(name, model, feeds):
        onnx.save(model, str(work / f"{name}.onnx"))
        np.savez(work / f"{name}.in.npz", **feeds)
        manifest.append({"name": name, "model": f"{name}.onnx", "inputs": f"{name}.in.npz"})

    for case in CONV_CASES:
        a = conv_arrays(case)
        add(f"conv-{case.name}", conv_model(case, a), {"x": a["x"]})
        add(f"conv-{case.name}-dynw", conv_model(case, a, weight_as_input=True), {"x": a["x"], "w": a["w"]})
    for case in MATMUL_CASES:
        d = matmul_arrays(case)
        add(f"matmul-{case.name}", matmul_model(case, d), {"a": d["a"]})
        add(f"matmul-{case.name}-dynw", matmul_model(case, d, weight_as_input=True), {"a": d["a"], "b": d["b"]})
        if case.per_column:
            # ONNX spec: 1-D b_scale [N]; ORT also accepts [1, N] ("last to second dimension is 1").
            add(f"matmul-{case.name}-1xN", matmul_model(case, d, (1, case.n)), {"a": d["a"]})
    (work / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run([sys.executable, str(RUNNER), str(work)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:
        pytest.skip(f"onnxruntime cannot be imported in a subprocess: {proc.stderr[-500:]}")
    assert proc.returncode == 0, f"ORT runner failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads((work / "result.json").read_text())
    outputs = {}
    for name, status in result["cases"].items():
        if status == "ok":
            with np.load(work / f"{name}.out.npz") as f:
                outputs[name] = f["y"]
        else:
            outputs[name] = status
    outputs["__version__"] = result["ort_version"]
    return outputs


def _ort(outputs, name):
    out = outputs[name]
    if isinstance(out, str):
        pytest.fail(f"ONNX Runtime failed on {name}:\n{out}")
    return out


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_scale_order_matters_and_matches_onnx_reference():
    """The float32 expression order is observable: another order gives other scales (so the
    cross-check below would see a wrong order), and onnx.reference's expression equals scale_ort."""
    rng = np.random.default_rng(7)
    xs = np.float32(rng.uniform(0.001, 0.1))
    ws = np.exp(rng.uniform(np.log(1e-5), np.log(1e-1), 20000)).astype(np.float32)
    ys = np.float32(rng.uniform(0.001, 0.1))
    ours = scale_ort(xs, ws, ys)
    # onnx.reference op_qlinear_conv.py: x_scale * w_scale / y_scale on float32 arrays.
    assert np.array_equal(ours, np.array(xs, np.float32) * ws / np.array(ys, np.float32))
    via_double = (np.float64(xs) * ws.astype(np.float64) / np.float64(ys)).astype(np.float32)
    other_order = (xs * (ws / ys)).astype(np.float32)
    assert np.count_nonzero(ours != via_double) > 0
    assert np.count_nonzero(ours != other_order) > 0


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_qlinearconv_matches_ort(case, ort_outputs):
    a = conv_arrays(case)
    expected = _ort(ort_outputs, f"conv-{case.name}")
    got, ovf, sat = intsim_conv(case, a)
    assert got.shape == expected.shape
    bad = int(np.count_nonzero(got != expected))
    _count("QLinearConv intsim kernel vs ORT (prepacked weight)", got.size, bad)
    assert bad == 0, f"{bad}/{got.size} elements differ from ONNX Runtime; first at {np.argwhere(got != expected)[:5].tolist()}"
    expected_dynw = _ort(ort_outputs, f"conv-{case.name}-dynw")
    bad_dynw = int(np.count_nonzero(got != expected_dynw))
    _count("QLinearConv intsim kernel vs ORT (weight as input)", got.size, bad_dynw)
    assert bad_dynw == 0, f"{bad_dynw}/{got.size} elements differ from ONNX Runtime's unpacked path"
    via_model = intsim_conv_model(case, a)
    bad_model = int(np.count_nonzero(via_model != expected))
    _count("QLinearConv intsim Model(profile=onnx) vs ORT", got.size, bad_model)
    assert bad_model == 0
    # Sanity of the case itself: the exact accumulators requantized the ORT way give ORT's output.
    acc = conv_exact_acc(case, a)
    assert np.array_equal(ort_requant(acc, conv_scale(case, a)[None, :, None], case.y_zp), expected)
    if case.name == "acc_wrap_int32":
        assert ovf > 0, "the case should overflow the 32-bit accumulator"
    if case.scales == "tiny":
        assert sat > 0


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_qlinearconv_vs_onnx_reference(case):
    """onnx.reference (2-D equivalent model) == intsim except where its documented semantics
    (float64 product, zero point added before rounding) predict otherwise."""
    a = conv_arrays(case)
    model = conv_model(case, a, two_d=True)
    ref = ReferenceEvaluator(model).run(None, {"x": a["x"][:, :, None, :]})[0][:, :, 0, :]
    got, _, _ = intsim_conv(case, a)
    acc = conv_exact_acc(case, a)
    scale = conv_scale(case, a)[None, :, None]
    predicted = reference_requant(acc, scale, case.y_zp)
    assert np.array_equal(ref, predicted), "onnx.reference no longer behaves as documented in this module"
    differs = got != ref
    expected_differs = ort_requant(acc, scale, case.y_zp) != predicted
    assert np.array_equal(differs, expected_differs)
    unexplained = int(np.count_nonzero(differs & ~expected_differs))
    _count("QLinearConv intsim vs onnx.reference (unexplained)", got.size, unexplained)
    _count("QLinearConv intsim vs onnx.reference (documented tie/float64 differences)", got.size,
           int(np.count_nonzero(differs)))
    if case.name == "ties_pow2_odd_zp":
        assert np.count_nonzero(differs) > 0, "odd zero point with exact ties should expose zp-before-rint"


def test_qlinearconv_1d_per_tensor_reference_runs_1d():
    """Per-tensor 1-D QLinearConv runs in onnx.reference directly (no 2-D detour) and agrees."""
    case = next(c for c in CONV_CASES if c.name == "per_tensor")
    a = conv_arrays(case)
    ref = ReferenceEvaluator(conv_model(case, a)).run(None, {"x": a["x"]})[0]
    got, _, _ = intsim_conv(case, a)
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("case", MATMUL_CASES, ids=lambda c: c.name)
def test_qlinearmatmul_matches_ort(case, ort_outputs):
    d = matmul_arrays(case)
    if case.scales == "wrap":
        assert np.abs(matmul_exact_acc(case, d)).max() > 2**31, "the case should overflow the int32 accumulator"
    names = [f"matmul-{case.name}", f"matmul-{case.name}-dynw"] + ([f"matmul-{case.name}-1xN"] if case.per_column else [])
    got = intsim_matmul(case, d)
    acc = matmul_exact_acc(case, d)
    assert np.array_equal(ort_requant(acc, matmul_scale(case, d), case.y_zp), _ort(ort_outputs, names[0]))
    for name in names:
        expected = _ort(ort_outputs, name)
        assert got.shape == expected.shape
        bad = int(np.count_nonzero(got != expected))
        kind = "per-column" if case.per_column else "per-tensor"
        variant = name.rsplit("-", 1)[1] if name.endswith(("-dynw", "-1xN")) else "prepacked"
        _count(f"QLinearMatMul intsim kernel vs ORT ({kind}, {variant})", got.size, bad)
        assert bad == 0, f"{name}: {bad}/{got.size} elements differ from ONNX Runtime"
    via_model = intsim_matmul_model(case, d)
    bad_model = int(np.count_nonzero(via_model != _ort(ort_outputs, names[0])))
    _count("QLinearMatMul intsim Model(op linear, profile=onnx) vs ORT", via_model.size, bad_model)
    assert bad_model == 0


@pytest.mark.parametrize("case", MATMUL_CASES, ids=lambda c: c.name)
def test_qlinearmatmul_vs_onnx_reference(case):
    d = matmul_arrays(case)
    ref = ReferenceEvaluator(matmul_model(case, d)).run(None, {"a": d["a"]})[0]
    acc = matmul_exact_acc(case, d)
    scale = matmul_scale(case, d)
    predicted = reference_requant(acc, scale, case.y_zp)
    assert np.array_equal(ref, predicted), "onnx.reference no longer behaves as documented in this module"
    got = intsim_matmul(case, d)
    differs = got != ref
    expected_differs = ort_requant(acc, scale, case.y_zp) != predicted
    assert np.array_equal(differs, expected_differs)
    _count("QLinearMatMul intsim vs onnx.reference (unexplained)", got.size, int(np.count_nonzero(differs & ~expected_differs)))
    _count("QLinearMatMul intsim vs onnx.reference (documented tie/float64 differences)", got.size,
           int(np.count_nonzero(differs)))


def test_zz_mismatch_summary(ort_outputs):
    """Print the per-op table (visible with -s); every ORT and unexplained count must be zero."""
    lines = [f"ONNX Runtime {ort_outputs['__version__']}; weights in [{W_LO}, {W_HI}]"]
    for key, (n, bad) in sorted(MISMATCHES.items()):
        lines.append(f"  {key}: {bad} / {n} elements")
    print("\n" + "\n".join(lines))
    for key, (n, bad) in MISMATCHES.items():
        if "documented" not in key:
            assert bad == 0, key
