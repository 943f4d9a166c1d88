"""Matrix-product ops: ``linear`` (fully connected) and ``batch_matmul``.

linear: inputs ``[x, weight, bias, multiplier, shift, scale]`` (same contract as conv1d)
    x          int8 [..., K] (zero point from its quant) or int16 [..., K] (zero point 0)
    weight     int8 [N, K] constant, symmetric per output channel (TFLite FULLY_CONNECTED filter
               layout; ONNX MatMul/QLinearMatMul B [K, N] is its transpose)
    bias       int32 [N] (int64 for int16 activations), in units of s_in * s_w[n]
    multiplier int32 [N], shift int32 [N]: Q0.31 requantization s_in * s_w[n] / s_out
    scale      float32 [N]: the same real multiplier, for the float32 (ONNX) rounding
  attrs: optional act_min / act_max.  output: dtype of x, shape [..., N].
    y[..., n] = clamp(requant(bias[n] + sum_k w[n, k] * (x[..., k] - x_zp), n) + y_zp)

batch_matmul: inputs ``[a, b]`` (raw accumulators) or ``[a, b, multiplier, shift, scale]``
    a   int8 [..., M, K] (zero point from its quant) or int16 (zero point 0)
    b   int8 [..., K, N] (zero point from its quant); may be a constant
    multiplier / shift int32 [1], scale float32 [1]: per-tensor requantization s_a * s_b / s_y
  attrs: transpose_a, transpose_b (0/1, default 0: a given as [..., K, M] / b as [..., N, K] --
         TFLite BATCH_MATMUL adj_x / adj_y, ONNX Gemm transA / transB), optional act_min / act_max.
  Leading (batch) dims broadcast like numpy.matmul.  acc = sum_k (a - a_zp) * (b - b_zp), exact.
  output: int8 / int16 -> requantized with the 5-input form (profile path of a's dtype);
          int32 / int64 -> the accumulator register itself (2-input form): the path's acc_bits
          capped at the output width, wrapping or saturating per the profile; overflow counted.
"""

from __future__ import annotations

import numpy as np

from intsim.kernels.matmul import (batch_matmul, batch_matmul_acc, batch_matmul_acc_parallel, batch_matmul_parallel,
                                   linear, linear_parallel)
from intsim.ops.base import Op
from intsim.ops.common import check_input, counters, zero_point
from intsim.ops.conv import LinearRequantOp
from intsim.ops.requant import activation_range, build_requant


class Linear(LinearRequantOp):
    weight_ndim = 2
    out_channel_axis = 0

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_linear()
        self.k = self.weight.shape[1]
        self.weight = np.ascontiguousarray(self.weight)
        declared = self.input_spec(0).shape
        if len(declared) < 1 or declared[-1] not in (None, self.k):
            self.fail(f"input shape {declared} does not end in K = {self.k} (weight shape {list(self.weight.shape)})")
        out_declared = self.output_spec().shape
        if len(out_declared) != len(declared) or out_declared[-1] not in (None, self.c_out):
            self.fail(f"output shape {out_declared} must be the input shape with last dim {self.c_out}")
        self.kernel = linear_parallel if self.ctx.parallel else linear

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], None, self.input_spec(0).dtype)
        if x.ndim < 1 or x.shape[-1] != self.k:
            self.fail(f"input has shape {list(x.shape)}, expected last dim {self.k}")
        x2 = np.ascontiguousarray(x.reshape(-1, self.k))
        out = np.empty((x2.shape[0], self.c_out), dtype=self.out_dtype)
        ovf, sat = counters(self.c_out)
        self.kernel(x2, self.x_zp, self.weight, self.bias, self.rq, out, ovf, sat)
        counts.add(ovf, sat)
        return [out.reshape(x.shape[:-1] + (self.c_out,))]


class BatchMatmul(Op):
    n_inputs = None

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        if len(node.inputs) not in (2, 5):
            self.fail(f"expects 2 inputs (raw accumulators) or 5 (requantized), got {len(node.inputs)}")
        a, b, y = self.input_spec(0), self.input_spec(1), self.output_spec()
        self.require_dtype("input a", a, ("int8", "int16"))
        self.require_dtype("input b", b, ("int8",))
        self.a_zp = zero_point(self, a)
        self.b_zp = zero_point(self, b)
        if a.dtype == "int16" and self.a_zp != 0:
            self.fail(f"int16 input {a.name!r} must be symmetric (zero point 0), has {self.a_zp}")
        self.transpose_a = self._flag("transpose_a")
        self.transpose_b = self._flag("transpose_b")
        for what, spec in (("a", a), ("b", b)):
            if len(spec.shape) < 2:
                self.fail(f"input {what} {spec.name!r} has shape {spec.shape}, needs at least 2 dims")
        path = self.ctx.profile.path(a.dtype)
        self.raw = y.dtype in ("int32", "int64")
        if self.raw:
            if len(node.inputs) != 2:
                self.fail(f"output {y.name!r} is {y.dtype} (raw accumulators): expects 2 inputs, got {len(node.inputs)}")
            self.acc_bits = min(path.acc_bits, np.dtype(y.dtype).itemsize * 8)
            self.acc_saturating = 1 if path.acc_saturating else 0
        else:
            self.require_dtype("output", y, ("int8", "int16", "int32", "int64"))
            if len(node.inputs) != 5:
                self.fail(f"output {y.name!r} is {y.dtype}: expects inputs [a, b, multiplier, shift, scale], got {len(node.inputs)}")
            mult = self.constant_input(2, "int32", (1,))
            shift = self.constant_input(3, "int32", (1,))
            scale = self.constant_input(4, "float32", (1,))
            act_min, act_max = activation_range(self, y.dtype)
            self.rq = build_requant(self, path, mult, shift, scale, zero_point(self, y), act_min, act_max)
        self.out_dtype = np.dtype(y.dtype)
        self.a_dtype, self.b_dtype = a.dtype, b.dtype
        k_a = a.shape[-2] if self.transpose_a else a.shape[-1]
        k_b = b.shape[-1] if self.transpose_b else b.shape[-2]
        if k_a is not None and k_b is not None and k_a != k_b:
            self.fail(f"inner dims differ: a {a.shape} gives K = {k_a}, b {b.shape} gives K = {k_b}")
        self.parallel = self.ctx.parallel

    def _flag(self, key):
        value = self.attr(key, int, 0)
        if value not in (0, 1):
            self.fail(f"attribute {key!r} must be 0 or 1, got {value}")
        return value

    def run(self, inputs, counts):
        a = check_input(self, 0, inputs[0], None, self.a_dtype)
        b = check_input(self, 1, inputs[1], None, self.b_dtype)
        if a.ndim < 2 or b.ndim < 2:
            self.fail(f"inputs have shapes {list(a.shape)} and {list(b.shape)}, need at least 2 dims each")
        a_mk = np.swapaxes(a, -1, -2) if self.transpose_a else a  # [..., M, K]
        b_nk = b if self.transpose_b else np.swapaxes(b, -1, -2)  # [..., N, K]
        (m, k), (n, k_b) = a_mk.shape[-2:], b_nk.shape[-2:]
        if k != k_b:
            self.fail(f"inner dims differ: a {list(a.shape)} gives K = {k}, b {list(b.shape)} gives K = {k_b}")
        try:
            batch = np.broadcast_shapes(a_mk.shape[:-2], b_nk.shape[:-2])
        except ValueError:
            self.fail(f"batch dims of a {list(a.shape)} and b {list(b.shape)} do not broadcast")
        a3 = np.ascontiguousarray(np.broadcast_to(a_mk, batch + (m, k))).reshape(-1, m, k)
        b3 = np.ascontiguousarray(np.broadcast_to(b_nk, batch + (n, k))).reshape(-1, n, k)
        out = np.empty((a3.shape[0], m, n), dtype=self.out_dtype)
        ovf, sat = counters(a3.shape[0] * m)
        if self.raw:
            kernel = batch_matmul_acc_parallel if self.parallel else batch_matmul_acc
            kernel(a3, self.a_zp, b3, self.b_zp, self.acc_bits, self.acc_saturating, out, ovf)
        else:
            kernel = batch_matmul_parallel if self.parallel else batch_matmul
            kernel(a3, self.a_zp, b3, self.b_zp, self.rq, out, ovf, sat)
        counts.add(ovf, sat)
        return [out.reshape(batch + (m, n))]


OPS = {"linear": Linear, "batch_matmul": BatchMatmul}
