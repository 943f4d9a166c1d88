"""Table ops: lut8, lut16, logistic, tanh.

lut8: inputs ``[x, table]``
    x      int8 or uint8 codes, any shape
    table  constant int8 or uint8 [256] in code order: ``table[x + 128]`` for int8 inputs,
           ``table[x]`` for uint8 (build with ``intsim.quantize.make_lut8``)
  output: the table's dtype, x's shape.  Any 8-bit -> 8-bit function (the conversion-time table
  ``q_out = Q(f(DQ(q_in)))``); no attributes.

lut16: inputs ``[x, table]``
    x      int16, any shape
    table  constant int16 [513]: TFLite's interpolated int16 LUT (``intsim.quantize.make_lut16``)
  output: int16, x's shape.  ``LUTLookup``: index ``256 + (x >> 7)``, 7-bit interpolation.

logistic / tanh: inputs ``[x]`` -- TFLite Micro's integer LOGISTIC / TANH, bit for bit.
  int8 x (zero point from its quant): attributes from TFLM's Prepare,
    ``input_multiplier``, ``input_left_shift``, ``input_range_radius``
    (``intsim.quantize.tflm_int8_params(s_in, zp_in)``: same for logistic and tanh).
    Output int8 with quantization (1/256, -128) for logistic, (1/128, 0) for tanh (checked when the
    output tensor carries quant).  Computed with gemmlowp fixed point once per input code at
    prepare, then run as a 256-entry table.
  int16 x (zero point 0): attributes ``input_multiplier`` (0 = power-of-two scale case) and
    ``input_left_shift`` (``intsim.quantize.tflm_logistic_int16_params`` /
    ``tflm_tanh_int16_params``).  Output int16 with scale 2^-15 and zero point 0 (checked as TFLM
    does, with CheckedLog2).  Interpolated ``sigmoid_table_uint16`` lookups per element.

No counters (these ops saturate by design).
"""

from __future__ import annotations

import numpy as np

from intsim.kernels import table as K
from intsim.ops.base import Op
from intsim.ops.common import check_input, zero_point
from intsim.quantize import tflm_int16_output_scale_ok


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


class _Unary(Op):
    def check_shapes(self):
        x, y = self.input_spec(0), self.output_spec()
        mismatch = any(p is not None and q is not None and p != q for p, q in zip(x.shape, y.shape))
        if len(y.shape) != len(x.shape) or mismatch:
            self.fail(f"output shape {y.shape} differs from input shape {x.shape}")

    def input_array(self, inputs):
        spec = self.input_spec(0)
        return check_input(self, 0, inputs[0], len(spec.shape), spec.dtype)


class Lut8(_Unary):
    n_inputs = 2

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x, y = self.input_spec(0), self.output_spec()
        self.require_dtype("input", x, ("int8", "uint8"))
        table = self.constant_input(1)
        if table.dtype not in (np.int8, np.uint8) or table.shape != (256,):
            self.fail(f"table {node.inputs[1]!r} must be an int8 or uint8 constant of shape [256], "
                      f"has {table.dtype} {list(table.shape)}")
        if y.dtype != table.dtype.name:
            self.fail(f"output {y.name!r} has dtype {y.dtype}, expected {table.dtype.name} like the table")
        self.check_shapes()
        self.table = np.ascontiguousarray(table)
        self.offset = np.int64(128 if x.dtype == "int8" else 0)
        self.kernel = K.lut8_parallel if ctx.parallel else K.lut8

    def run(self, inputs, counts):
        x = self.input_array(inputs)
        out = np.empty(x.shape, dtype=self.table.dtype)
        self.kernel(_flat(x), self.table, self.offset, K.CHUNK, out.reshape(-1))
        return [out]


class Lut16(_Unary):
    n_inputs = 2

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x, y = self.input_spec(0), self.output_spec()
        self.require_dtype("input", x, ("int16",))
        self.require_dtype("output", y, ("int16",))
        self.table = np.ascontiguousarray(self.constant_input(1, "int16", (513,)))
        self.check_shapes()
        self.kernel = K.lut16_parallel if ctx.parallel else K.lut16

    def run(self, inputs, counts):
        x = self.input_array(inputs)
        out = np.empty(x.shape, dtype=np.int16)
        self.kernel(_flat(x), self.table, K.CHUNK, out.reshape(-1))
        return [out]


class _TflmActivation(_Unary):
    """TFLM LOGISTIC / TANH on int8 (table from gemmlowp) or int16 (interpolated sigmoid table)."""

    n_inputs = 1
    kind = ""
    int8_out_quant = (0.0, 0)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x, y = self.input_spec(0), self.output_spec()
        self.require_dtype("input", x, ("int8", "int16"))
        if y.dtype != x.dtype:
            self.fail(f"output {y.name!r} has dtype {y.dtype}, expected {x.dtype} like the input")
        self.check_shapes()
        self.dtype = np.dtype(x.dtype)
        helper = f"intsim.quantize.{'tflm_int8_params' if x.dtype == 'int8' else f'tflm_{self.kind}_int16_params'}"
        for key in ("input_multiplier", "input_left_shift") + (("input_range_radius",) if x.dtype == "int8" else ()):
            if key not in node.attrs:
                self.fail(f"attribute {key!r} is missing (TFLM Prepare parameters; build them with {helper})")
        mult = self.attr("input_multiplier", int)
        shift = self.attr("input_left_shift", int)
        out_quant = y.quant
        if out_quant is not None and out_quant.axis is not None:
            self.fail(f"output {y.name!r} must be quantized per tensor")
        if x.dtype == "int8":
            radius = self.attr("input_range_radius", int)
            if not 0 <= mult < 2**31 or not 0 <= shift <= 31 or radius < 0:
                self.fail(f"input_multiplier {mult} must be in [0, 2^31), input_left_shift {shift} in [0, 31], "
                          f"input_range_radius {radius} >= 0")
            x_zp = zero_point(self, x)
            if not -128 <= x_zp <= 127:
                self.fail(f"zero point {x_zp} of input {x.name!r} is outside the int8 range")
            if out_quant is not None:
                scale, zp = self.int8_out_quant
                if np.float32(out_quant.scale[0]) != np.float32(scale) or out_quant.zero_point[0] != zp:
                    self.fail(f"int8 {self.kind} output {y.name!r} must have scale {scale} and zero point {zp} "
                              f"(TFLM's fixed output quantization), has {out_quant.scale[0]} and "
                              f"{out_quant.zero_point[0]}")
            self.table = K.tflm_int8_table(self.kind, x_zp, radius, mult, shift)
            self.kernel = K.lut8_parallel if ctx.parallel else K.lut8
        else:
            if not 0 <= mult <= 32767 or not 0 <= shift <= 31:
                self.fail(f"input_multiplier {mult} must be in [0, 32767] and input_left_shift {shift} in [0, 31]")
            if mult == 0 and (3 << shift) > 32767:
                self.fail(f"power-of-two case (input_multiplier 0) needs 3 << input_left_shift <= 32767, "
                          f"input_left_shift is {shift}")
            if zero_point(self, x) != 0:
                self.fail(f"int16 input {x.name!r} must be symmetric (zero point 0)")
            if out_quant is not None:
                if out_quant.zero_point[0] != 0 or not tflm_int16_output_scale_ok(out_quant.scale[0]):
                    self.fail(f"int16 {self.kind} output {y.name!r} must have scale 2^-15 and zero point 0, "
                              f"has {out_quant.scale[0]} and {out_quant.zero_point[0]}")
            self.mult, self.shift = np.int64(mult), np.int64(shift)
            kernels = {"logistic": (K.tflm_logistic_int16, K.tflm_logistic_int16_parallel),
                       "tanh": (K.tflm_tanh_int16, K.tflm_tanh_int16_parallel)}[self.kind]
            self.kernel = kernels[1] if ctx.parallel else kernels[0]

    def run(self, inputs, counts):
        x = self.input_array(inputs)
        out = np.empty(x.shape, dtype=self.dtype)
        if self.dtype == np.int8:
            self.kernel(_flat(x), self.table, np.int64(128), K.CHUNK, out.reshape(-1))
        else:
            self.kernel(_flat(x), self.mult, self.shift, K.CHUNK, out.reshape(-1))
        return [out]


class Logistic(_TflmActivation):
    kind = "logistic"
    int8_out_quant = (1.0 / 256.0, -128)


class Tanh(_TflmActivation):
    kind = "tanh"
    int8_out_quant = (1.0 / 128.0, 0)


OPS = {"lut8": Lut8, "lut16": Lut16, "logistic": Logistic, "tanh": Tanh}
