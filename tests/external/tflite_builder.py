"""Build single-operator int8 / int16x8 ``.tflite`` flatbuffers from NumPy arrays, without TensorFlow.

Uses the TFLite object API shipped in the ``tflite-micro`` wheel (``tflite_micro.runtime.schema_fb``)
and ``flatbuffers``.  Importing ``tflite_micro`` loads the TFLM interpreter extension, so this module
imports it lazily and is meant to run inside the reference subprocess (``tests.external.tflm_runner``),
never in the pytest process.

All arrays are in TFLite layouts: activations NHWC (conv1d = ``[N, 1, W, C]``), CONV_2D and
TRANSPOSE_CONV filters OHWI, DEPTHWISE_CONV_2D filters ``[1, KH, KW, C * depth_multiplier]``,
FULLY_CONNECTED weights ``[units, in]``.  Weights are int8, symmetric (zero point 0), per output
channel when more than one scale is given.  Scales are stored as float32 (as in every .tflite file).

Each ``build_*`` function returns the model as ``bytes``; ``build(kind, **kwargs)`` dispatches by name.
"""

from __future__ import annotations

import numpy as np

_TYPES = {"int8": 9, "int16": 7, "int32": 2, "int64": 4, "float32": 0}
_PADDING = {"SAME": 0, "VALID": 1}
_ACTIVATION = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}


def _schema():
    from tflite_micro import runtime  # lazy: loads the TFLM extension module

    return runtime.schema_fb


def out_size(padding: str, in_size: int, filter_size: int, stride: int, dilation: int = 1) -> int:
    """TFLite ``ComputeOutSize`` (tensorflow/lite/kernels/padding.h)."""
    span = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        return (in_size + stride - 1) // stride
    if padding == "VALID":
        return (in_size + stride - span) // stride
    raise ValueError(f"padding must be SAME or VALID, got {padding!r}")


def padding_with_offset(padding: str, in_size: int, filter_size: int, stride: int, dilation: int = 1):
    """TFLite ``ComputePaddingWithOffset``: (pad_before, offset, out_size); pad_after = pad_before + offset."""
    out = out_size(padding, in_size, filter_size, stride, dilation)
    span = (filter_size - 1) * dilation + 1
    total = max(0, (out - 1) * stride + span - in_size)
    return total // 2, total % 2, out


class ModelBuilder:
    """Minimal one-subgraph model: tensors with optional constant data, operators, inputs/outputs."""

    def __init__(self):
        self.fb = _schema()
        self.buffers = [self._buffer(None)]  # buffer 0: the empty sentinel
        self.tensors = []
        self.operators = []
        self.opcodes = []
        self.inputs = []
        self.outputs = []

    def _buffer(self, data):
        fb = self.fb

        class AlignedBufferT(fb.BufferT):
            """BufferT whose byte vector is 16-byte aligned (the schema's force_align)."""

            def Pack(self, builder):
                vec = None
                if self.data is not None:
                    raw = bytes(self.data)
                    builder.StartVector(1, len(raw), 16)
                    builder.head = builder.head - len(raw)
                    builder.Bytes[builder.head:builder.head + len(raw)] = raw
                    vec = builder.EndVector()
                fb.BufferStart(builder)
                if vec is not None:
                    fb.BufferAddData(builder, vec)
                return fb.BufferEnd(builder)

        buf = AlignedBufferT()
        buf.data = None if data is None else np.ascontiguousarray(data).tobytes()
        return buf

    def tensor(self, name, dtype, shape, data=None, scale=None, zero_point=None, quantized_dimension=0):
        """Add a tensor; ``data`` makes it a constant.  ``scale``/``zero_point``: scalar or per-axis list."""
        fb = self.fb
        t = fb.TensorT()
        t.name = name
        t.type = _TYPES[dtype]
        t.shape = [int(d) for d in shape]
        if data is not None:
            data = np.asarray(data)
            if data.dtype != np.dtype(dtype) or list(data.shape) != t.shape:
                raise ValueError(f"tensor {name}: data {data.dtype}{list(data.shape)} != {dtype}{t.shape}")
            self.buffers.append(self._buffer(data))
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if scale is not None:
            q = fb.QuantizationParametersT()
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zps = np.atleast_1d(np.asarray(0 if zero_point is None else zero_point, dtype=np.int64))
            if zps.size == 1 and scales.size > 1:
                zps = np.zeros(scales.size, dtype=np.int64)
            q.scale = [float(s) for s in scales]
            q.zeroPoint = [int(z) for z in zps]
            q.quantizedDimension = int(quantized_dimension)
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def operator(self, op_name, inputs, outputs, options_name=None, **options):
        fb = self.fb
        code = getattr(fb.BuiltinOperator, op_name)
        if code not in self.opcodes:
            self.opcodes.append(code)
        op = fb.OperatorT()
        op.opcodeIndex = self.opcodes.index(code)
        op.inputs = list(inputs)
        op.outputs = list(outputs)
        if options_name is not None:
            opt = getattr(fb, options_name + "T")()
            for key, value in options.items():
                if not hasattr(opt, key):
                    raise AttributeError(f"{options_name} has no field {key!r}")
                setattr(opt, key, value)
            op.builtinOptionsType = getattr(fb.BuiltinOptions, options_name)
            op.builtinOptions = opt
        self.operators.append(op)

    def finish(self) -> bytes:
        import flatbuffers

        fb = self.fb
        sub = fb.SubGraphT()
        sub.tensors = self.tensors
        sub.inputs = list(self.inputs)
        sub.outputs = list(self.outputs)
        sub.operators = self.operators
        sub.name = "main"
        model = fb.ModelT()
        model.version = 3
        model.description = "intsim single-op test model"
        model.subgraphs = [sub]
        model.buffers = self.buffers
        codes = []
        for code in self.opcodes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            codes.append(oc)
        model.operatorCodes = codes
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _act_dtype(dtype):
    if dtype not in ("int8", "int16"):
        raise ValueError(f"activation dtype must be int8 or int16, got {dtype!r}")
    return dtype


def _bias_tensor(mb, bias, x_scale, w_scales, quantized_dimension=0):
    if bias is None:
        return -1
    bias = np.asarray(bias)
    scales = np.float32(x_scale) * np.atleast_1d(np.asarray(w_scales, dtype=np.float32))
    return mb.tensor("bias", str(bias.dtype), bias.shape, bias, scales, 0, quantized_dimension)


def build_conv2d(x_shape, x_scale, x_zp, w, w_scales, bias, y_scale, y_zp, stride=(1, 1), dilation=(1, 1),
                 padding="VALID", activation="NONE", dtype="int8"):
    """CONV_2D: x NHWC, w OHWI int8 (per-channel along dim 0 when len(w_scales) > 1), bias int32/int64."""
    dtype = _act_dtype(dtype)
    n, h, wd, _ = x_shape
    c_out, kh, kw, _ = w.shape
    oh = out_size(padding, h, kh, stride[0], dilation[0])
    ow = out_size(padding, wd, kw, stride[1], dilation[1])
    mb = ModelBuilder()
    xi = mb.tensor("x", dtype, x_shape, None, x_scale, x_zp)
    wi = mb.tensor("w", "int8", w.shape, w, w_scales, 0, 0)
    bi = _bias_tensor(mb, bias, x_scale, w_scales)
    yi = mb.tensor("y", dtype, (n, oh, ow, c_out), None, y_scale, y_zp)
    mb.operator("CONV_2D", [xi, wi, bi], [yi], "Conv2DOptions", padding=_PADDING[padding], strideH=int(stride[0]),
                strideW=int(stride[1]), dilationHFactor=int(dilation[0]), dilationWFactor=int(dilation[1]),
                fusedActivationFunction=_ACTIVATION[activation])
    mb.inputs, mb.outputs = [xi], [yi]
    return mb.finish()


def build_depthwise_conv2d(x_shape, x_scale, x_zp, w, w_scales, bias, y_scale, y_zp, stride=(1, 1),
                           dilation=(1, 1), padding="VALID", depth_multiplier=1, activation="NONE", dtype="int8"):
    """DEPTHWISE_CONV_2D: w ``[1, KH, KW, C * depth_multiplier]``, per-channel along dim 3."""
    dtype = _act_dtype(dtype)
    n, h, wd, _ = x_shape
    _, kh, kw, c_out = w.shape
    oh = out_size(padding, h, kh, stride[0], dilation[0])
    ow = out_size(padding, wd, kw, stride[1], dilation[1])
    mb = ModelBuilder()
    xi = mb.tensor("x", dtype, x_shape, None, x_scale, x_zp)
    wi = mb.tensor("w", "int8", w.shape, w, w_scales, 0, 3)
    bi = _bias_tensor(mb, bias, x_scale, w_scales)
    yi = mb.tensor("y", dtype, (n, oh, ow, c_out), None, y_scale, y_zp)
    mb.operator("DEPTHWISE_CONV_2D", [xi, wi, bi], [yi], "DepthwiseConv2DOptions", padding=_PADDING[padding],
                strideH=int(stride[0]), strideW=int(stride[1]), dilationHFactor=int(dilation[0]),
                dilationWFactor=int(dilation[1]), depthMultiplier=int(depth_multiplier),
                fusedActivationFunction=_ACTIVATION[activation])
    mb.inputs, mb.outputs = [xi], [yi]
    return mb.finish()


def build_transpose_conv(x_shape, x_scale, x_zp, w, w_scales, bias, y_shape, y_scale, y_zp, stride=(1, 1),
                         padding="VALID", activation="NONE", dtype="int8"):
    """TRANSPOSE_CONV: inputs (output_shape int32[4], w OHWI ``[C_out, KH, KW, C_in]``, x, bias)."""
    dtype = _act_dtype(dtype)
    mb = ModelBuilder()
    si = mb.tensor("output_shape", "int32", (4,), np.asarray(y_shape, dtype=np.int32))
    wi = mb.tensor("w", "int8", w.shape, w, w_scales, 0, 0)
    xi = mb.tensor("x", dtype, x_shape, None, x_scale, x_zp)
    bi = _bias_tensor(mb, bias, x_scale, w_scales)
    yi = mb.tensor("y", dtype, y_shape, None, y_scale, y_zp)
    inputs = [si, wi, xi] + ([bi] if bi >= 0 else [])
    mb.operator("TRANSPOSE_CONV", inputs, [yi], "TransposeConvOptions", padding=_PADDING[padding],
                strideH=int(stride[0]), strideW=int(stride[1]), fusedActivationFunction=_ACTIVATION[activation])
    mb.inputs, mb.outputs = [xi], [yi]
    return mb.finish()


def build_fully_connected(x_shape, x_scale, x_zp, w, w_scales, bias, y_scale, y_zp, activation="NONE",
                          dtype="int8"):
    """FULLY_CONNECTED: x ``[N, in]``, w ``[units, in]`` (per-channel along dim 0 if several scales)."""
    dtype = _act_dtype(dtype)
    mb = ModelBuilder()
    xi = mb.tensor("x", dtype, x_shape, None, x_scale, x_zp)
    wi = mb.tensor("w", "int8", w.shape, w, w_scales, 0, 0)
    bi = _bias_tensor(mb, bias, x_scale, w_scales)
    yi = mb.tensor("y", dtype, (x_shape[0], w.shape[0]), None, y_scale, y_zp)
    mb.operator("FULLY_CONNECTED", [xi, wi, bi], [yi], "FullyConnectedOptions",
                fusedActivationFunction=_ACTIVATION[activation], keepNumDims=False)
    mb.inputs, mb.outputs = [xi], [yi]
    return mb.finish()


def build_binary(op, x1_shape, x1_scale, x1_zp, x2_shape, x2_scale, x2_zp, y_shape, y_scale, y_zp,
                 activation="NONE", dtype="int8", pot_scale_int16=False):
    """ADD / SUB / MUL of two runtime inputs (NumPy-style broadcasting by TFLite rules)."""
    dtype = _act_dtype(dtype)
    mb = ModelBuilder()
    ai = mb.tensor("x1", dtype, x1_shape, None, x1_scale, x1_zp)
    bi = mb.tensor("x2", dtype, x2_shape, None, x2_scale, x2_zp)
    yi = mb.tensor("y", dtype, y_shape, None, y_scale, y_zp)
    options = {"fusedActivationFunction": _ACTIVATION[activation]}
    if op in ("ADD", "SUB"):
        options["potScaleInt16"] = bool(pot_scale_int16)
    mb.operator(op, [ai, bi], [yi], op.capitalize() + "Options", **options)
    mb.inputs, mb.outputs = [ai, bi], [yi]
    return mb.finish()


def build_unary(op, shape, x_scale, x_zp, y_scale, y_zp, dtype="int8"):
    """LOGISTIC / TANH (no options)."""
    dtype = _act_dtype(dtype)
    mb = ModelBuilder()
    xi = mb.tensor("x", dtype, shape, None, x_scale, x_zp)
    yi = mb.tensor("y", dtype, shape, None, y_scale, y_zp)
    mb.operator(op, [xi], [yi])
    mb.inputs, mb.outputs = [xi], [yi]
    return mb.finish()


BUILDERS = {
    "conv2d": build_conv2d,
    "depthwise_conv2d": build_depthwise_conv2d,
    "transpose_conv": build_transpose_conv,
    "fully_connected": build_fully_connected,
    "binary": build_binary,
    "unary": build_unary,
}


def build(kind: str, **kwargs) -> bytes:
    if kind not in BUILDERS:
        raise KeyError(f"unknown model kind {kind!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[kind](**kwargs)
