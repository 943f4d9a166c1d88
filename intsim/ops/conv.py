"""Convolution ops.

conv1d: inputs ``[x, weight, bias, multiplier, shift, scale]``
    x       int8 [N, C_in, T] (zero point from its quant) or int16 [N, C_in, T] (zero point 0)
    weight  int8 [C_out, C_in / groups, K], symmetric per output channel
    bias    int32 [C_out] (int64 for int16 activations), in units of s_in * s_w[c]
    multiplier int32 [C_out], shift int32 [C_out]: Q0.31 requantization s_in * s_w[c] / s_out
    scale   float32 [C_out]: the same real multiplier, for the float32 (ONNX) rounding
  attrs: stride, padding [left, right], dilation, groups, optional act_min / act_max
"""

from __future__ import annotations

import numpy as np

from intsim.kernels.conv import conv1d, conv1d_output_length, conv1d_parallel
from intsim.ops.base import Op
from intsim.ops.common import check_input, counters, zero_point
from intsim.ops.requant import activation_range, build_requant

BIAS_DTYPE = {"int8": "int32", "int16": "int64"}


class LinearRequantOp(Op):
    """Shared prepare for ops with [x, weight, bias, multiplier, shift, scale] inputs."""

    n_inputs = 6
    weight_ndim = 3
    out_channel_axis = 0

    def prepare_linear(self):
        x = self.input_spec(0)
        y = self.output_spec()
        self.require_dtype("input", x, ("int8", "int16"))
        if y.dtype != x.dtype:
            self.fail(f"output {y.name!r} has dtype {y.dtype}, expected {x.dtype} like the input")
        self.weight = self.constant_input(1, "int8")
        if self.weight.ndim != self.weight_ndim:
            self.fail(f"weight must have {self.weight_ndim} dims, has shape {list(self.weight.shape)}")
        c_out = self.weight.shape[self.out_channel_axis] * self.out_channel_multiplier()
        self.c_out = c_out
        self.bias = self.constant_input(2, BIAS_DTYPE[x.dtype], (c_out,))
        mult = self.constant_input(3, "int32", (c_out,))
        shift = self.constant_input(4, "int32", (c_out,))
        scale = self.constant_input(5, "float32", (c_out,))
        self.x_zp = zero_point(self, x)
        if x.dtype == "int16" and self.x_zp != 0:
            self.fail(f"int16 input {x.name!r} must be symmetric (zero point 0), has {self.x_zp}")
        out_zp = zero_point(self, y)
        act_min, act_max = activation_range(self, y.dtype)
        path = self.ctx.profile.path(x.dtype)
        self.rq = build_requant(self, path, mult, shift, scale, out_zp, act_min, act_max)
        self.out_dtype = np.dtype(y.dtype)

    def out_channel_multiplier(self):
        return 1


class Conv1d(LinearRequantOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_linear()
        self.stride = self.attr("stride", int, 1)
        self.padding = self.int_list("padding", 2, [0, 0])
        self.dilation = self.attr("dilation", int, 1)
        self.groups = self.attr("groups", int, 1)
        c_out, c_in_group, self.kernel_size = self.weight.shape
        if self.stride < 1 or self.dilation < 1 or self.groups < 1 or min(self.padding) < 0:
            self.fail(f"stride {self.stride}, dilation {self.dilation}, groups {self.groups} must be >= 1 and padding {self.padding} >= 0")
        if c_out % self.groups:
            self.fail(f"groups {self.groups} does not divide output channels {c_out}")
        self.c_in = c_in_group * self.groups
        declared = self.input_spec(0).shape
        if len(declared) != 3 or declared[1] not in (None, self.c_in):
            self.fail(f"input shape {declared} does not match weight {list(self.weight.shape)} with groups {self.groups}")
        self.kernel = conv1d_parallel if self.ctx.parallel else conv1d

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], 3, self.input_spec(0).dtype)
        if x.shape[1] != self.c_in:
            self.fail(f"input has {x.shape[1]} channels, expected {self.c_in}")
        t_out = conv1d_output_length(x.shape[2], self.kernel_size, self.stride, *self.padding, self.dilation)
        if t_out < 1:
            self.fail(f"input of {x.shape[2]} frames is too short for kernel {self.kernel_size}, dilation {self.dilation}")
        out = np.empty((x.shape[0], self.c_out, t_out), dtype=self.out_dtype)
        ovf, sat = counters(self.c_out)
        self.kernel(np.ascontiguousarray(x), self.x_zp, self.weight, self.bias, self.stride, self.padding[0],
                    self.dilation, self.groups, self.rq, out, ovf, sat)
        counts.add(ovf, sat)
        return [out]


OPS = {"conv1d": Conv1d}
