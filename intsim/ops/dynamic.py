"""Ops whose requantization depends on a per-call scale (arithmetic in ``kernels.dynamic``).

conv1d_dynamic: inputs ``[x, delta, weight, weight_scale, bias16]``
    x             int8 [N, C_in, T], zero point 0 (declared without quantization or with zero
                  point 0; any declared scale is ignored): codes whose real value is ``delta * x``,
                  e.g. the codes of a ``splitter`` with normalize=false
    delta         float32 [1] (run-time tensor, e.g. the splitter's second output): the scale of x
                  for this call; finite and >= 0 (0 = silence)
    weight        int8 [C_out, C_in, K] constant, symmetric per output channel
    weight_scale  float32 [C_out] constant: d_c (real weight = d_c * weight)
    bias16        int64 [C_out] constant: round(2^16 * (b_c - c_out) / s_out), the layer's real
                  bias (minus any constant the output grid carries) in output LSB with 16 fraction
                  bits (independent of delta)
  output: int8 [N, C_out, T_out], per-tensor quantization (s_out, z_out) -- s_out enters the
          per-call multiplier.  T_out = (T - K) // stride + 1 (no padding).
  attrs: ``stride`` (default 1), optional ``act_min`` / ``act_max`` (ReLU: act_min = z_out).

  Once per call, per output channel: ``(M_c, shift_c) = quantize_multiplier(double(delta) *
  double(d_c) / double(s_out))`` (TFLite QuantizeMultiplier, Q0.31).  This is the only float
  arithmetic; it models hardware with a per-call scale register (the multiplier written once per
  inference from delta).  Everything after it is integer (``kernels.dynamic``):
  ``q = clamp(round((round(acc * M * 2^(shift-15)) + bias16) / 2^16) + z_out)``.
  delta = 0 (an all-zero input: FQSS itself produces NaN there, 0/0 in its splitter) gives M = 0,
  so every output is the code of the bias alone: the layer's output for real input 0, which is the
  limit delta -> 0 and what the ``splitter`` op's silence convention (delta = 0) implies.
  The multiplier does not depend on the profile (the int8 path's multiplier width is not applied:
  the rounding is this op's own, documented above).
"""

from __future__ import annotations

import math

import numpy as np

from intsim.fixedpoint import quantize_multiplier
from intsim.kernels.dynamic import conv1d_dynamic, conv1d_dynamic_parallel
from intsim.ops.base import Op
from intsim.ops.common import check_input, zero_point
from intsim.ops.requant import activation_range

#: |acc| = |sum w * x| <= 128 * 128 * C_in * K must stay below 2^31 (exact int64 product with M)
MAX_TAPS = 2**31 // (128 * 128)


def dynamic_multipliers(delta: float, weight_scale, s_out: float):
    """Per-call (M int64 [C], shift int64 [C]) of ``double(delta) * double(d_c) / double(s_out)``."""
    d = np.asarray(weight_scale, np.float32).astype(np.float64)
    pairs = [quantize_multiplier(float(delta) * float(v) / float(s_out)) for v in d]
    return (np.array([m for m, _ in pairs], dtype=np.int64), np.array([s for _, s in pairs], dtype=np.int64))


class Conv1dDynamic(Op):
    n_inputs = 5

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x = self.input_spec(0)
        self.require_dtype("input", x, ("int8",))
        if len(x.shape) != 3:
            self.fail(f"input {x.name!r} must be [N, C_in, T], has shape {x.shape}")
        if x.quant is not None and (x.quant.axis is not None or int(x.quant.zero_point[0]) != 0):
            self.fail(f"input {x.name!r} must have zero point 0 (its scale is the run-time delta)")
        dspec = self.input_spec(1)
        if dspec.dtype != "float32" or dspec.shape != [1]:
            self.fail(f"input {dspec.name!r} (delta) must be float32 [1], is {dspec.dtype} {dspec.shape}")
        self.weight = np.ascontiguousarray(self.constant_input(2, "int8"))
        if self.weight.ndim != 3:
            self.fail(f"weight must be [C_out, C_in, K], has shape {list(self.weight.shape)}")
        c_out, c_in, k = self.weight.shape
        if c_in * k > MAX_TAPS:
            self.fail(f"C_in * K = {c_in * k} taps exceed {MAX_TAPS} (the accumulator must stay below 2^31)")
        if x.shape[1] not in (None, c_in):
            self.fail(f"input {x.name!r} has {x.shape[1]} channels, weight expects {c_in}")
        self.c_in, self.c_out, self.k = c_in, c_out, k
        self.weight_scale = self.constant_input(3, "float32", (c_out,))
        if not np.all(np.isfinite(self.weight_scale)) or np.any(self.weight_scale < 0):
            self.fail("weight_scale must be finite and >= 0")
        self.bias16 = self.constant_input(4, "int64", (c_out,))
        if np.any(np.abs(self.bias16.astype(np.float64)) > 2.0**61):
            self.fail("bias16 magnitude above 2^61")
        y = self.output_spec()
        if y.dtype != "int8":
            self.fail(f"output {y.name!r} has dtype {y.dtype}, expected int8")
        if y.quant is None or y.quant.axis is not None:
            self.fail(f"output {y.name!r} needs per-tensor quantization (its scale enters the multiplier)")
        self.s_out = float(np.float32(y.quant.scale[0]))
        if not (math.isfinite(self.s_out) and self.s_out > 0):
            self.fail(f"output {y.name!r} scale must be positive")
        self.out_zp = zero_point(self, y)
        self.act_min, self.act_max = activation_range(self, "int8")
        self.stride = self.attr("stride", int, 1)
        if not 1 <= self.stride <= 65536:
            self.fail(f"attribute 'stride' = {self.stride} must be in [1, 65536]")
        self.kernel = conv1d_dynamic_parallel if ctx.parallel else conv1d_dynamic

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], 3, "int8")
        delta = check_input(self, 1, inputs[1], 1, "float32")
        if x.shape[1] != self.c_in:
            self.fail(f"input has {x.shape[1]} channels, expected {self.c_in}")
        if delta.shape != (1,) or not math.isfinite(float(delta[0])) or float(delta[0]) < 0:
            self.fail(f"delta must be one finite value >= 0, got {delta!r}")
        t_out = (x.shape[2] - self.k) // self.stride + 1
        if x.shape[2] < self.k:
            self.fail(f"input has {x.shape[2]} samples, fewer than the kernel ({self.k})")
        mult, shift = dynamic_multipliers(float(delta[0]), self.weight_scale, self.s_out)
        out = np.empty((x.shape[0], self.c_out, t_out), dtype=np.int8)
        sat = np.zeros(self.c_out, dtype=np.int64)
        self.kernel(np.ascontiguousarray(x), self.weight, np.int64(self.stride), mult, shift, self.bias16,
                    np.int64(self.out_zp), np.int64(self.act_min), np.int64(self.act_max), out, sat)
        counts.add(np.zeros(self.c_out, dtype=np.int64), sat)
        return [out]


OPS = {"conv1d_dynamic": Conv1dDynamic}
