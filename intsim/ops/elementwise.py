"""Element-wise ops: requantize, add, sub, mul, relu, clamp, prelu.

Zero points come from the tensors' ``quant`` (0 without one); int16 tensors must be symmetric.
Requantization constants are constant node inputs, built at conversion time by
``intsim.quantize`` (never recomputed from float scales here).  Multipliers are stored Q0.31 and
reduced to the profile path's multiplier width at prepare.

Arithmetic path: TFLite/TFLM rescale element-wise ops with the 32-bit
``MultiplyByQuantizedMultiplier`` for int8 *and* int16 tensors (unlike the 16x8 conv/FC path), so
these ops use the profile's **int8 path** (rounding, multiplier width, accumulator register) for
both widths by default.  Optional attribute ``path``: ``"int8"`` (default) or ``"int16"`` selects
the profile path explicitly.

requantize: inputs ``[x, multiplier, shift, scale]``
    x          int8 / uint8 / int16 / int32, any shape
    multiplier int32 [C], shift int32 [C]: Q0.31 real multiplier s_in[c] / s_out
               (``intsim.quantize.requantize_params``)
    scale      float32 [C]: the same real multiplier, for the float32 (ONNX) rounding
  output int8 / uint8 / int16, same shape.  attrs: ``axis`` (required when C > 1: the channel
  axis of x, negative allowed), optional ``act_min`` / ``act_max`` (codes; ReLU fused this way),
  ``path``.  ``out = clamp(rescale(x - zp_x) + zp_out)`` with the path's accumulator register
  applied to ``x - zp_x`` (wrap/saturate, counted).

add / sub: inputs ``[a, b, multiplier, shift, scale]``
    a, b       int8 or int16 (same dtype as the output), NumPy-broadcastable shapes
    multiplier int32 [3], shift int32 [3]: (input1, input2, output) multipliers of TFLite's
               ADD / SUB (``intsim.quantize.add_params`` / ``sub_params``; shifts <= 0)
    scale      float32 [3]: the *tensor scales* (s_a, s_b, s_out), used only by the float32
               rounding: ``round_half_even((f32(a - za) * s_a +/- f32(b - zb) * s_b) / s_out)``
  attrs: ``left_shift`` (default 20 for int8, 15 for int16), ``act_min`` / ``act_max``, ``path``.
  Optional 6th input ``offset`` int32 [1]: a constant added to the sum of the rescaled inputs, in
  their units ``2 * max(s_a, s_b) * 2^-left_shift`` (FQSS's float zero points:
  ``round((c_a +/- c_b - c_out) * 2^left_shift / (2 * max(s_a, s_b)))``); the ``float32`` rounding
  adds the same constant in real units (``kernels.elementwise.add_offset``).

mul: inputs ``[a, b, multiplier, shift, scale]``
    a, b       int8 or int16, broadcastable; multiplier int32 [1], shift int32 [1]: real
               s_a * s_b / s_out (``intsim.quantize.mul_params``); scale float32 [1]: float32
               real multiplier (ORT QLinearMul's ScaleA * ScaleB / ScaleC)
  attrs: ``act_min`` / ``act_max``, ``path``.  ``out = clamp(rescale((a - za)(b - zb)) + zp_out)``.
  Optional 6th input ``offsets`` int32 [3] = (o_a, o_b, o_0) with attribute ``offset_bits`` P
  (0..14): fractional zero points (FQSS's float zero points), ``acc = (a - za)(b - zb) * 2^P +
  o_b (a - za) + o_a (b - zb) + o_0``, rescaled by the multiplier, which is then
  s_a * s_b / (2^P * s_out) (``kernels.elementwise.mul_affine``).

prelu: inputs ``[x, alpha, multiplier, shift, scale]``
    x          int8 or int16; alpha int8 (per-tensor quant, its zero point used), broadcastable
               to x's shape (one slope ``[1]``, per-channel slopes e.g. ``[C, 1]`` for [N, C, T])
    multiplier int32 [2], shift int32 [2], scale float32 [2]: [identity s_x / s_out,
               alpha s_x * s_alpha / s_out] (``intsim.quantize.prelu_params``)
  attrs: ``act_min`` / ``act_max``, ``path``.  The output shape must equal x's shape.

relu: inputs ``[x]``; output has x's dtype and quantization.  ``out = clamp(x, zp_x, max)``;
  attr ``max`` (optional code, ReLU6-style upper bound; default the dtype maximum).
clamp: inputs ``[x]``; output has x's dtype and quantization.  attrs ``min`` / ``max`` (codes,
  default the dtype range).

Counters: ``saturations`` counts outputs clamped by the final [act_min, act_max] (requantize,
add, sub, mul, prelu); ``acc_overflows`` counts accumulator-register overflows (requantize, mul,
prelu; add/sub cannot overflow int32 by construction).  relu/clamp count nothing.
"""

from __future__ import annotations

import numpy as np

from intsim.fixedpoint import reduce_multiplier
from intsim.kernels import elementwise as K
from intsim.ops.base import Op
from intsim.ops.common import check_input, counters, zero_point
from intsim.ops.requant import INT_RANGES, activation_range, build_requant

BINARY_DTYPES = ("int8", "int16")


def arith_path(op):
    """The profile path named by attribute ``path`` (default ``"int8"``, the 32-bit path)."""
    name = op.attr("path", str, "int8")
    if name not in ("int8", "int16"):
        op.fail(f"attribute 'path' must be 'int8' or 'int16', got {name!r}")
    return op.ctx.profile.path(name)


def symmetric_zero_point(op, spec):
    zp = zero_point(op, spec)
    if spec.dtype == "int16" and zp != 0:
        op.fail(f"int16 tensor {spec.name!r} must be symmetric (zero point 0), has {zp}")
    if spec.dtype in INT_RANGES:
        lo, hi = INT_RANGES[spec.dtype]
        if not lo <= zp <= hi:
            op.fail(f"zero point {zp} of tensor {spec.name!r} is outside the {spec.dtype} range")
    return zp


def same_quant(op, x, y):
    """relu/clamp work on codes: output dtype and quantization must equal the input's."""
    if y.dtype != x.dtype:
        op.fail(f"output {y.name!r} has dtype {y.dtype}, expected {x.dtype} like the input")
    qx, qy = x.quant, y.quant
    key = lambda q: None if q is None else ([float(s) for s in q.scale], [int(z) for z in q.zero_point], q.axis)
    if key(qx) != key(qy):
        op.fail(f"output {y.name!r} must have the quantization of input {x.name!r} (the op works on codes); "
                f"use requantize with act_min/act_max to change scale")


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


class Requantize(Op):
    n_inputs = 4

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x, y = self.input_spec(0), self.output_spec()
        self.require_dtype("input", x, ("int8", "uint8", "int16", "int32"))
        self.require_dtype("output", y, ("int8", "uint8", "int16"))
        mult = self.constant_input(1, "int32")
        if mult.ndim != 1 or mult.size < 1:
            self.fail(f"multiplier must have shape [C], has {list(mult.shape)}")
        c = mult.shape[0]
        shift = self.constant_input(2, "int32", (c,))
        scale = self.constant_input(3, "float32", (c,))
        rank = len(x.shape)
        axis = self.attr("axis", int, None)
        if axis is None:
            if c != 1:
                self.fail(f"attribute 'axis' is required with {c} per-channel multipliers")
        else:
            if not -rank <= axis < rank:
                self.fail(f"attribute 'axis' {axis} is out of range for input rank {rank}")
            axis %= rank
            if x.shape[axis] not in (None, c):
                self.fail(f"input {x.name!r} has {x.shape[axis]} channels on axis {axis}, multipliers {c}")
        if len(y.shape) != rank or any(p is not None and q is not None and p != q for p, q in zip(x.shape, y.shape)):
            self.fail(f"output shape {y.shape} differs from input shape {x.shape}")
        self.axis = axis
        self.channels = c
        self.x_zp = zero_point(self, x) if x.dtype == "int32" else symmetric_zero_point(self, x)
        out_zp = symmetric_zero_point(self, y)
        act_min, act_max = activation_range(self, y.dtype)
        self.rq = build_requant(self, arith_path(self), mult, shift, scale, out_zp, act_min, act_max)
        self.out_dtype = np.dtype(y.dtype)
        self.kernel = K.requantize_parallel if ctx.parallel else K.requantize

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], len(self.input_spec(0).shape), self.input_spec(0).dtype)
        x = np.ascontiguousarray(x)
        if self.axis is None:
            x3 = x.reshape(1, 1, x.size)
        else:
            if x.shape[self.axis] != self.channels:
                self.fail(f"input has {x.shape[self.axis]} channels on axis {self.axis}, expected {self.channels}")
            outer = int(np.prod(x.shape[:self.axis], dtype=np.int64))
            inner = int(np.prod(x.shape[self.axis + 1:], dtype=np.int64))
            x3 = x.reshape(outer, self.channels, inner)
        out = np.empty(x.shape, dtype=self.out_dtype)
        out3 = out.reshape(x3.shape)
        ovf, sat = counters(K.requantize_items(*x3.shape))
        self.kernel(x3, self.x_zp, self.rq, K.CHUNK, out3, ovf, sat)
        counts.add(ovf, sat)
        return [out]


class _Binary(Op):
    """Shared checks for broadcasting binary ops with inputs [a, b, multiplier, shift, scale]."""

    n_inputs = 5
    n_params = 1
    a_dtypes = BINARY_DTYPES
    b_dtypes = BINARY_DTYPES

    def prepare_binary(self):
        a, b, y = self.input_spec(0), self.input_spec(1), self.output_spec()
        self.require_dtype("input", a, self.a_dtypes)
        self.require_dtype("input", b, self.b_dtypes)
        if y.dtype != a.dtype:
            self.fail(f"output {y.name!r} has dtype {y.dtype}, expected {a.dtype} like input {a.name!r}")
        n = self.n_params
        mult = self.constant_input(2, "int32", (n,))
        shift = self.constant_input(3, "int32", (n,))
        scale = self.constant_input(4, "float32", (n,))
        self.a_zp = symmetric_zero_point(self, a)
        self.b_zp = symmetric_zero_point(self, b)
        self.out_zp = symmetric_zero_point(self, y)
        self.act_min, self.act_max = activation_range(self, y.dtype)
        self.path = arith_path(self)
        self.out_dtype = np.dtype(y.dtype)
        try:
            declared = np.broadcast_shapes(*(tuple(1 if d is None else d for d in s.shape) for s in (a, b)))
        except ValueError:
            self.fail(f"input shapes {a.shape} and {b.shape} do not broadcast")
        if len(y.shape) != len(declared):
            self.fail(f"output shape {y.shape} does not match the broadcast of {a.shape} and {b.shape}")
        return mult, shift, scale

    def plan(self, a, b):
        try:
            return K.broadcast_plan(a.shape, b.shape)
        except ValueError:
            self.fail(f"input shapes {list(a.shape)} and {list(b.shape)} do not broadcast")

    def inputs_ab(self, inputs):
        a = check_input(self, 0, inputs[0], None, self.input_spec(0).dtype)
        b = check_input(self, 1, inputs[1], None, self.input_spec(1).dtype)
        return a, b


class AddSub(_Binary):
    n_inputs = None  # 5, or 6 with the constant 'offset'
    n_params = 3
    sign = 1

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        if len(node.inputs) not in (5, 6):
            self.fail(f"expects inputs [a, b, multiplier, shift, scale] or with 'offset', got {len(node.inputs)}")
        mult, shift, scale = self.prepare_binary()
        dtype = self.input_spec(0).dtype
        if self.input_spec(1).dtype != dtype:
            self.fail(f"inputs have dtypes {dtype} and {self.input_spec(1).dtype}; they must match")
        self.left_shift = self.attr("left_shift", int, 20 if dtype == "int8" else 15)
        if not 0 <= self.left_shift <= 30:
            self.fail(f"attribute 'left_shift' {self.left_shift} must be in [0, 30]")
        if np.any(mult < 0) or np.any(shift < -62) or np.any(shift > 30):
            self.fail(f"multipliers {mult.tolist()} must be >= 0 and shifts {shift.tolist()} in [-62, 30]")
        path = self.path
        if path.rounding == "float32" and not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            self.fail(f"scale {scale.tolist()} must hold three positive finite tensor scales")
        m = np.array([reduce_multiplier(int(v), path.mult_bits) for v in mult], dtype=np.int64)
        self.ap = K.pack_add_params(self.a_zp, self.b_zp, self.left_shift, m, shift, scale, path.rounding_code,
                                    path.mult_bits, self.out_zp, self.act_min, self.act_max)
        self.offset = ()
        if len(node.inputs) == 6:
            off = int(self.constant_input(5, "int32", (1,))[0])
            unit = 2.0 * max(float(scale[0]), float(scale[1])) * 2.0**-self.left_shift
            self.offset = (np.int64(off), np.float32(off * unit))
            self.kernel = K.add_offset_parallel if ctx.parallel else K.add_offset
        else:
            self.kernel = K.add_parallel if ctx.parallel else K.add

    def run(self, inputs, counts):
        a, b = self.inputs_ab(inputs)
        out_shape, dims, st1, st2, n_items = self.plan(a, b)
        out = np.empty(out_shape, dtype=self.out_dtype)
        ovf, sat = counters(n_items)
        self.kernel(_flat(a), _flat(b), dims, st1, st2, K.CHUNK, self.sign, self.ap, *self.offset, out.reshape(-1),
                    ovf, sat)
        counts.add(ovf, sat)
        return [out]


class Add(AddSub):
    sign = 1


class Sub(AddSub):
    sign = -1


class Mul(_Binary):
    n_inputs = None  # 5, or 6 with the fractional zero points
    n_params = 1

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        if len(node.inputs) not in (5, 6):
            self.fail(f"expects inputs [a, b, multiplier, shift, scale] or with 'offsets', got {len(node.inputs)}")
        mult, shift, scale = self.prepare_binary()
        if self.input_spec(1).dtype != self.input_spec(0).dtype:
            self.fail(f"inputs have dtypes {self.input_spec(0).dtype} and {self.input_spec(1).dtype}; they must match")
        self.rq = build_requant(self, self.path, mult, shift, scale, self.out_zp, self.act_min, self.act_max)
        self.affine = None
        if len(node.inputs) == 6:
            offsets = self.constant_input(5, "int32", (3,))
            bits = self.attr("offset_bits", int)
            if not 0 <= bits <= 14:
                self.fail(f"attribute 'offset_bits' {bits} must be in [0, 14]")
            self.affine = (np.int64(bits), np.int64(offsets[0]), np.int64(offsets[1]), np.int64(offsets[2]))
            self.kernel = K.mul_affine_parallel if ctx.parallel else K.mul_affine
        else:
            if "offset_bits" in node.attrs:
                self.fail("attribute 'offset_bits' needs the 'offsets' input")
            self.kernel = K.mul_parallel if ctx.parallel else K.mul

    def run(self, inputs, counts):
        a, b = self.inputs_ab(inputs)
        out_shape, dims, st1, st2, n_items = self.plan(a, b)
        out = np.empty(out_shape, dtype=self.out_dtype)
        ovf, sat = counters(n_items)
        extra = () if self.affine is None else self.affine
        self.kernel(_flat(a), _flat(b), dims, st1, st2, K.CHUNK, self.a_zp, self.b_zp, *extra, self.rq,
                    out.reshape(-1), ovf, sat)
        counts.add(ovf, sat)
        return [out]


class PRelu(_Binary):
    n_params = 2
    b_dtypes = ("int8",)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        mult, shift, scale = self.prepare_binary()
        self.rq = build_requant(self, self.path, mult, shift, scale, self.out_zp, self.act_min, self.act_max)
        self.kernel = K.prelu_parallel if ctx.parallel else K.prelu

    def run(self, inputs, counts):
        x, alpha = self.inputs_ab(inputs)
        out_shape, dims, st1, st2, n_items = self.plan(x, alpha)
        if out_shape != x.shape:
            self.fail(f"alpha of shape {list(alpha.shape)} must broadcast to the input shape {list(x.shape)}")
        out = np.empty(out_shape, dtype=self.out_dtype)
        ovf, sat = counters(n_items)
        self.kernel(_flat(x), _flat(alpha), dims, st1, st2, K.CHUNK, self.a_zp, self.b_zp, self.rq, out.reshape(-1),
                    ovf, sat)
        counts.add(ovf, sat)
        return [out]


class _CodeClamp(Op):
    n_inputs = 1

    def prepare_clamp(self, lo, hi):
        x = self.input_spec(0)
        self.require_dtype("input", x, ("int8", "uint8", "int16"))
        same_quant(self, x, self.output_spec())
        dmin, dmax = INT_RANGES[x.dtype]
        if not dmin <= lo <= hi <= dmax:
            self.fail(f"bounds [{lo}, {hi}] must satisfy {dmin} <= min <= max <= {dmax} for {x.dtype}")
        self.lo, self.hi = np.int64(lo), np.int64(hi)
        self.kernel = K.clamp_codes_parallel if self.ctx.parallel else K.clamp_codes

    def run(self, inputs, counts):
        spec = self.input_spec(0)
        x = check_input(self, 0, inputs[0], len(spec.shape), spec.dtype)
        out = np.empty(x.shape, dtype=x.dtype)
        self.kernel(_flat(x), self.lo, self.hi, K.CHUNK, out.reshape(-1))
        return [out]


class Relu(_CodeClamp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x = self.input_spec(0)
        self.require_dtype("input", x, ("int8", "uint8", "int16"))
        zp = symmetric_zero_point(self, x)
        self.prepare_clamp(zp, self.attr("max", int, INT_RANGES[x.dtype][1]))


class Clamp(_CodeClamp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x = self.input_spec(0)
        self.require_dtype("input", x, ("int8", "uint8", "int16"))
        dmin, dmax = INT_RANGES[x.dtype]
        self.prepare_clamp(self.attr("min", int, dmin), self.attr("max", int, dmax))


OPS = {"requantize": Requantize, "add": Add, "sub": Sub, "mul": Mul, "relu": Relu, "clamp": Clamp, "prelu": PRelu}
