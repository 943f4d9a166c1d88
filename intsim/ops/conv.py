"""Convolution ops: conv1d, conv2d, conv_transpose1d, conv_transpose2d.

All take inputs ``[x, weight, bias, multiplier, shift, scale]``, optionally followed by the five
sign-dependent requantization inputs ``[neg_multiplier, neg_shift, neg_scale, pos_offset, neg_offset]``
(11 inputs; any of the five may be ``""``, meaning the positive side's value, or 0 for an offset):
    x          int8 (zero point from its quant) or int16 (zero point 0),
               [N, C_in, T] (1-D) or [N, C_in, H, W] (2-D)
    weight     int8, symmetric per output channel:
               conv            [C_out, C_in / groups, K] or [C_out, C_in / groups, KH, KW]
               conv_transpose  [C_in, C_out / groups, K] or [C_in, C_out / groups, KH, KW] (PyTorch)
    bias       int32 [C_out] (int64 for int16 activations), in units of s_in * s_w[c]
    multiplier int32 [C_out], shift int32 [C_out]: Q0.31 requantization s_in * s_w[c] / s_out
    scale      float32 [C_out]: the same real multiplier, for the float32 (ONNX) rounding
    neg_multiplier int32 [C_out], neg_shift int32 [C_out], neg_scale float32 [C_out]: the
               requantization of negative accumulators (a PReLU with slope a fused into the requant
               stage: a * s_in * s_w[c] / s_out; a may be negative or 0)
    pos_offset, neg_offset  int64 [C_out]: added to the accumulator (bias included) after its sign
               test, before scaling, in accumulator units (a constant placed after the activation)
               -- ``kernels.fixedpoint.requantize_output`` defines the arithmetic.
  output: dtype of x, [N, C_out, T_out] / [N, C_out, OH, OW].

Attributes (all optional; also act_min / act_max, see ``intsim.ops.requant.activation_range``):
    conv1d            stride (int, 1), padding ([left, right], [0, 0]), dilation (int, 1), groups (int, 1)
                      T_out = (T + left + right - dilation*(K-1) - 1) // stride + 1
    conv2d            stride, dilation: int or [h, w]; padding: int, [h, w] or [top, bottom, left, right];
                      groups: int.  OH / OW as conv1d per axis.
    conv_transpose1d  stride, dilation (int, 1), padding (int or [left, right], 0), output_padding (int, 0,
                      0 <= output_padding < max(stride, dilation)), groups (int, 1)
                      T_out = (T-1)*stride - left - right + dilation*(K-1) + output_padding + 1
    conv_transpose2d  stride, dilation, output_padding: int or [h, w]; padding: int, [h, w] or
                      [top, bottom, left, right]; groups: int.  OH / OW as conv_transpose1d per axis.
The arithmetic is documented in ``intsim.kernels.conv``.
"""

from __future__ import annotations

import numpy as np

from intsim.kernels.conv import (conv2d, conv2d_parallel, conv_transpose2d, conv_transpose2d_parallel,
                                 conv1d_output_length, conv_transpose_output_length)
from intsim.ops.base import Op
from intsim.ops.common import check_input, counters, zero_point
from intsim.ops.requant import activation_range, build_requant

#: Largest stride, dilation or padding a model file may ask for: far beyond any real network, small
#: enough that a hostile file cannot make an op allocate gigabytes from a tiny input.
MAX_GEOMETRY = 65536

BIAS_DTYPE = {"int8": "int32", "int16": "int64"}


class LinearRequantOp(Op):
    """Shared prepare for ops with [x, weight, bias, multiplier, shift, scale] inputs.

    The output channel count is ``weight.shape[out_channel_axis] * out_channel_multiplier()``
    (transposed convolutions: ``weight.shape[1] * groups``).
    """

    n_inputs = None  # 6, or 11 with the sign-dependent requantization inputs
    weight_ndim = 3
    out_channel_axis = 0

    def prepare_linear(self):
        if len(self.node.inputs) not in (6, 11):
            self.fail(f"expects 6 inputs [x, weight, bias, multiplier, shift, scale] or 11 (plus neg_multiplier, "
                      f"neg_shift, neg_scale, pos_offset, neg_offset), got {len(self.node.inputs)}")
        if "" in self.node.inputs[:6]:
            self.fail(f"inputs 0-5 are required, got {self.node.inputs[:6]}")
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
        self.rq = build_requant(self, path, mult, shift, scale, out_zp, act_min, act_max, self.negative_side(c_out))
        self.out_dtype = np.dtype(y.dtype)

    def negative_side(self, c_out):
        """The optional inputs 6-10 as ``build_requant``'s ``negative`` dict (None without them)."""
        if len(self.node.inputs) == 6:
            return None
        spec = (("mult", "int32"), ("shift", "int32"), ("scale", "float32"), ("pos_offset", "int64"),
                ("neg_offset", "int64"))
        neg = {}
        for i, (key, dtype) in enumerate(spec, start=6):
            if self.node.inputs[i]:
                neg[key] = self.constant_input(i, dtype, (c_out,))
        if "shift" in neg and (np.any(neg["shift"] < -62) or np.any(neg["shift"] > 30)):
            self.fail("neg_shift outside [-62, 30]")
        for key in ("pos_offset", "neg_offset"):
            if key in neg and np.any(np.abs(neg[key].astype(np.float64)) > 2.0**62):
                self.fail(f"{key} magnitude above 2^62")
        return neg

    def out_channel_multiplier(self):
        return 1


class _ConvBase(LinearRequantOp):
    """Attribute parsing and checks shared by the four convolution ops."""

    transposed = False
    spatial = 1  # number of spatial axes

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.groups = self.attr("groups", int, 1)
        if self.groups < 1:
            self.fail(f"attribute 'groups' must be >= 1, got {self.groups}")
        self.stride = self.per_axis("stride", 1, minimum=1)
        self.dilation = self.per_axis("dilation", 1, minimum=1)
        self.pads = self.padding_attr()  # [(before, after)] per spatial axis
        if self.transposed:
            self.output_padding = self.per_axis("output_padding", 0, minimum=0)
            for axis, (op, s, d) in enumerate(zip(self.output_padding, self.stride, self.dilation)):
                if op >= max(s, d):
                    self.fail(f"attribute 'output_padding' {self.attr_value('output_padding')} must be smaller than "
                              f"stride {s} or dilation {d} (axis {axis})")
        self.prepare_linear()
        w = self.weight
        self.kernel_size = list(w.shape[2:])
        if self.transposed:
            self.c_in = w.shape[0]
            if self.c_in % self.groups:
                self.fail(f"attribute 'groups' {self.groups} does not divide input channels {self.c_in} "
                          f"(weight shape {list(w.shape)})")
        else:
            self.c_in = w.shape[1] * self.groups
            if self.c_out % self.groups:
                self.fail(f"attribute 'groups' {self.groups} does not divide output channels {self.c_out} "
                          f"(weight shape {list(w.shape)})")
        declared = self.input_spec(0).shape
        if len(declared) != 2 + self.spatial or declared[1] not in (None, self.c_in):
            self.fail(f"input shape {declared} does not match weight {list(w.shape)} with groups {self.groups}: "
                      f"expected [N, {self.c_in}{', H, W' if self.spatial == 2 else ', T'}]")
        out_declared = self.output_spec().shape
        if len(out_declared) != 2 + self.spatial or out_declared[1] not in (None, self.c_out):
            self.fail(f"output shape {out_declared} does not match {self.c_out} output channels")
        self.weight = np.ascontiguousarray(w)
        if self.transposed:
            self.kernel = conv_transpose2d_parallel if self.ctx.parallel else conv_transpose2d
        else:
            self.kernel = conv2d_parallel if self.ctx.parallel else conv2d

    def out_channel_multiplier(self):
        return self.groups if self.transposed else 1

    def attr_value(self, key):
        return self.node.attrs.get(key)

    def per_axis(self, key, default, minimum):
        """An int, or (2-D ops) an int or a list of 2 ints; returns a list of one int per spatial axis."""
        value = self.node.attrs.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            values = [value] * self.spatial
        elif self.spatial > 1 and isinstance(value, list) and len(value) == self.spatial and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            values = list(value)
        else:
            form = "an int" if self.spatial == 1 else f"an int or a list of {self.spatial} ints"
            self.fail(f"attribute {key!r} must be {form}, got {value!r}")
        if min(values) < minimum or max(values) > MAX_GEOMETRY:
            self.fail(f"attribute {key!r} must be in [{minimum}, {MAX_GEOMETRY}], got {value!r}")
        return values

    def padding_attr(self):
        """padding -> [(before, after)] per spatial axis.

        conv1d: [left, right].  conv_transpose1d: int or [left, right].  2-D: int, [h, w] (both
        sides) or [top, bottom, left, right].
        """
        value = self.node.attrs.get("padding", 0 if (self.transposed or self.spatial == 2) else [0, 0])
        ok_int = isinstance(value, int) and not isinstance(value, bool)
        ok_list = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        pads = None
        if self.spatial == 1:
            if ok_int and self.transposed:
                pads = [(value, value)]
            elif ok_list and len(value) == 2:
                pads = [(value[0], value[1])]
            form = "an int or [left, right]" if self.transposed else "[left, right]"
        else:
            if ok_int:
                pads = [(value, value), (value, value)]
            elif ok_list and len(value) == 2:
                pads = [(value[0], value[0]), (value[1], value[1])]
            elif ok_list and len(value) == 4:
                pads = [(value[0], value[1]), (value[2], value[3])]
            form = "an int, [h, w] or [top, bottom, left, right]"
        if pads is None:
            self.fail(f"attribute 'padding' must be {form}, got {value!r}")
        if min(min(p) for p in pads) < 0 or max(max(p) for p in pads) > MAX_GEOMETRY:
            self.fail(f"attribute 'padding' must be in [0, {MAX_GEOMETRY}], got {value!r}")
        return pads

    def output_size(self, sizes):
        """Output spatial sizes for input spatial ``sizes``; fails if any is < 1."""
        result = []
        for axis, size in enumerate(sizes):
            k, s, d = self.kernel_size[axis], self.stride[axis], self.dilation[axis]
            before, after = self.pads[axis]
            if self.transposed:
                n = conv_transpose_output_length(size, k, s, 0, self.output_padding[axis], d) - before - after
            else:
                n = conv1d_output_length(size, k, s, before, after, d)
            if n < 1:
                self.fail(f"input of spatial size {list(sizes)} gives an empty output (axis {axis}: kernel {k}, "
                          f"stride {s}, dilation {d}, padding {[before, after]})")
            result.append(n)
        return result

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], 2 + self.spatial, self.input_spec(0).dtype)
        if x.shape[1] != self.c_in:
            self.fail(f"input {self.node.inputs[0]!r} has {x.shape[1]} channels, expected {self.c_in}")
        sizes = self.output_size(x.shape[2:])
        out = np.empty((x.shape[0], self.c_out, *sizes), dtype=self.out_dtype)
        ovf, sat = counters(self.c_out)
        x4 = np.ascontiguousarray(x)
        w4 = self.weight
        out4 = out
        if self.spatial == 1:
            x4 = x4.reshape(x.shape[0], x.shape[1], 1, x.shape[2])
            w4 = w4.reshape(w4.shape[0], w4.shape[1], 1, w4.shape[2])
            out4 = out.reshape(out.shape[0], out.shape[1], 1, out.shape[2])
            geometry = (1, self.stride[0], 0, self.pads[0][0], 1, self.dilation[0])
        else:
            geometry = (self.stride[0], self.stride[1], self.pads[0][0], self.pads[1][0], self.dilation[0],
                        self.dilation[1])
        self.kernel(x4, self.x_zp, w4, self.bias, *geometry, self.groups, self.rq, out4, ovf, sat)
        counts.add(ovf, sat)
        return [out]


class Conv1d(_ConvBase):
    weight_ndim = 3


class Conv2d(_ConvBase):
    spatial = 2
    weight_ndim = 4


class ConvTranspose1d(_ConvBase):
    transposed = True
    weight_ndim = 3
    out_channel_axis = 1


class ConvTranspose2d(_ConvBase):
    transposed = True
    spatial = 2
    weight_ndim = 4
    out_channel_axis = 1


OPS = {"conv1d": Conv1d, "conv2d": Conv2d, "conv_transpose1d": ConvTranspose1d, "conv_transpose2d": ConvTranspose2d}
