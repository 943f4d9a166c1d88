"""Framing ops: chunking with overlap (DPTNet/Sepformer segmentation) and overlap-add.

frame: inputs ``[x]``
    x    [..., T] codes (any dtype; usually int8 [N, C, T]), per-tensor or no quantization
    out  [..., chunk, n_chunks], same dtype and quantization:
         out[..., i, k] = xp[..., k*hop + i], xp = x padded with ``pad_code`` on both ends
  attrs: ``chunk`` (>= 1), ``hop`` (>= 1; default chunk // 2), ``padding``: [left, right] (>= 0,
         default [0, 0]) or ``"dptnet"``: DPTNet ``pad_segment`` (chunk even, hop = chunk / 2,
         left = hop, right = gap + hop with gap = chunk - (hop + T % chunk) % chunk, 1 <= gap <=
         chunk); ``pad_code`` (default: the input zero point, i.e. the real value 0 that DPTNet pads).
    n_chunks = (T + left + right - chunk) // hop + 1 (must be >= 1); with "dptnet" it is even and
    chunk 2j / 2j+1 are DPTNet's segments1[j] / segments2[j] (``kernels.framing``).

overlap_add: inputs ``[x, reference?, multiplier?, shift?, scale?]``
    x    layout "chunks" (default): [..., width, n_frames]   (the output of ``frame``)
         layout "frames":           [..., n_frames, width]   (decoder frames, FQSS overlap_and_add)
    reference (optional, may be ""): any tensor whose last dimension is the output length T
    multiplier int32 [1], shift int32 [1], scale float32 [1] (optional, together): requantize
    out  [..., T]
  attrs: ``hop`` (>= 1, required), ``padding``: [left, right] cropped from the full overlap-add
         signal of length (n_frames - 1)*hop + width (default [0, 0]) or ``"dptnet"`` (left = hop =
         width / 2; T from ``reference`` or ``length``, n_frames checked against it), ``length``
         (optional int, the output length when there is no reference), ``act_min``/``act_max``.
    Output length T: the reference's last dim, else ``length``, else full - left - right.
    Output position t is full position t + left; positions that no frame covers sum to 0.

    The sum is ``S[t] = sum_k (a_k - zp)`` = (sum of the covering codes) - n_overlap(t) * zp, exact:
    the summed zero point n_overlap * zp changes at the edges (FQSS: s*(a1+a2) + n_overlap*m), so
    the op removes it and returns a zero-point-free tensor:
    * without requantization constants: output int16/int32/int64 with the input's scale and zero
      point 0 (no quantization if the input has none); the dtype must hold the worst case
      ceil(width/hop) * max|a - zp| (checked; saturation would be counted);
    * with them: ``requantize_output(S)`` exactly like a linear op (profile path of the input's
      dtype, per-tensor multiplier for s_in / s_out, output zero point and act range) -> int8/int16.
      DPTNet's ``merge_feature`` is an AddQ of the two views: this is that requantized add.
"""

from __future__ import annotations

import math

import numpy as np

from intsim.kernels.framing import (dptnet_padding, frame, frame_count, frame_parallel, overlap_add_length,
                                    overlap_add_requant, overlap_add_requant_parallel, overlap_add_sum,
                                    overlap_add_sum_parallel)
from intsim.ops.base import Op
from intsim.ops.common import check_input, counters, zero_point
from intsim.ops.layout import describe_quant, same_quant
from intsim.ops.requant import INT_RANGES, activation_range, build_requant

WIDE_DTYPES = ("int16", "int32", "int64")


def _max_abs_offset(dtype, zp) -> int:
    """max |a - zp| over the codes of ``dtype``."""
    info = np.iinfo(dtype)
    return max(int(info.max) - zp, zp - int(info.min))


class _FramingBase(Op):
    def padding_attr(self):
        pad = self.node.attrs.get("padding", [0, 0])
        if pad == "dptnet":
            return "dptnet"
        if not (isinstance(pad, list) and len(pad) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pad)):
            self.fail(f"attribute 'padding' must be \"dptnet\" or [left, right] ints >= 0, got {pad!r}")
        return list(pad)

    def check_declared(self, shape, when="prepare"):
        declared = self.output_spec().shape
        if len(declared) != len(shape) or any(d is not None and s is not None and d != s
                                               for d, s in zip(declared, shape)):
            self.fail(f"output {self.node.outputs[0]!r} is declared with shape {declared}, but the op gives "
                      f"{list(shape)}" + (" at run time" if when == "run" else ""))


class Frame(_FramingBase):
    n_inputs = 1

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        x = self.input_spec(0)
        y = self.output_spec()
        if x.quant is not None and x.quant.axis is not None:
            self.fail(f"input {x.name!r} must be quantized per tensor, has axis {x.quant.axis}")
        if y.dtype != x.dtype or not same_quant(x.quant, y.quant):
            self.fail(f"output {y.name!r} ({y.dtype}, {describe_quant(y.quant)}) must have the input's dtype and "
                      f"quantization ({x.dtype}, {describe_quant(x.quant)})")
        if len(x.shape) < 1:
            self.fail(f"input {x.name!r} must have at least 1 dim, has shape {x.shape}")
        self.rank = len(x.shape)
        self.dtype = np.dtype(x.dtype)
        self.chunk = self.attr("chunk", int)
        if self.chunk < 1:
            self.fail(f"attribute 'chunk' = {self.chunk} must be >= 1")
        self.padding = self.padding_attr()
        self.hop = self.attr("hop", int, max(1, self.chunk // 2))
        if self.hop < 1:
            self.fail(f"attribute 'hop' = {self.hop} must be >= 1")
        if self.padding == "dptnet" and (self.chunk % 2 or self.hop * 2 != self.chunk):
            self.fail(f"padding \"dptnet\" needs an even 'chunk' and hop = chunk / 2, got chunk {self.chunk}, "
                      f"hop {self.hop}")
        if "pad_code" in node.attrs:
            self.pad_code = self.attr("pad_code", int)
            if self.dtype.kind in "iu":
                info = np.iinfo(self.dtype)
                if not info.min <= self.pad_code <= info.max:
                    self.fail(f"attribute 'pad_code' = {self.pad_code} is outside the {self.dtype} range "
                              f"[{info.min}, {info.max}]")
        else:
            self.pad_code = zero_point(self, x)
        t = x.shape[-1]
        n_chunks = None if t is None else self.n_chunks(t)
        self.check_declared([*x.shape[:-1], self.chunk, n_chunks])
        self.kernel = frame_parallel if ctx.parallel else frame

    def pads(self, t):
        if self.padding == "dptnet":
            left, right, _ = dptnet_padding(t, self.chunk)
            return left, right
        return self.padding

    def n_chunks(self, t, when="prepare"):
        left, right = self.pads(t)
        n = frame_count(t, self.chunk, self.hop, left, right)
        if n < 1:
            self.fail(f"input of {t} samples (padding {left}+{right}) is shorter than 'chunk' = {self.chunk}"
                      + (" at run time" if when == "run" else ""))
        return n

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], self.rank, self.dtype)
        t = x.shape[-1]
        n = self.n_chunks(t, "run")
        left, _ = self.pads(t)
        rows = np.ascontiguousarray(x).reshape(math.prod(x.shape[:-1]), t)
        out = np.empty((rows.shape[0], self.chunk, n), dtype=self.dtype)
        self.kernel(rows, self.chunk, self.hop, left, self.dtype.type(self.pad_code), out)
        out = out.reshape(*x.shape[:-1], self.chunk, n)
        self.check_declared(out.shape, "run")
        return [out]


class OverlapAdd(_FramingBase):
    n_inputs = None

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        if len(node.inputs) not in (1, 2, 5) or node.inputs[0] == "":
            self.fail(f"expects inputs [x], [x, reference] or [x, reference or \"\", multiplier, shift, scale], "
                      f"got {node.inputs}")
        x = self.input_spec(0)
        y = self.output_spec()
        self.require_dtype("input", x, ("int8", "uint8", "int16", "int32"))
        if len(x.shape) < 2:
            self.fail(f"input {x.name!r} must have at least 2 dims, has shape {x.shape}")
        self.rank = len(x.shape)
        self.x_dtype = np.dtype(x.dtype)
        self.x_zp = zero_point(self, x)
        self.layout = self.attr("layout", str, "chunks")
        if self.layout not in ("chunks", "frames"):
            self.fail(f"attribute 'layout' = {self.layout!r} must be \"chunks\" or \"frames\"")
        self.frames_last = self.layout == "frames"
        self.hop = self.attr("hop", int)
        if self.hop < 1:
            self.fail(f"attribute 'hop' = {self.hop} must be >= 1")
        self.padding = self.padding_attr()
        self.length = self.attr("length", int, None)
        if self.length is not None and self.length < 0:
            self.fail(f"attribute 'length' = {self.length} must be >= 0")
        self.has_ref = len(node.inputs) >= 2 and node.inputs[1] != ""
        if self.has_ref and self.length is not None:
            self.fail("give either a reference input or the attribute 'length', not both")
        if self.padding == "dptnet" and not self.has_ref and self.length is None:
            self.fail("padding \"dptnet\" needs the output length: a reference input or the attribute 'length'")
        self.requant = len(node.inputs) == 5
        self.out_dtype = np.dtype(y.dtype)
        if self.requant:
            self.require_dtype("input", x, ("int8", "uint8", "int16"))
            if y.dtype not in ("int8", "uint8", "int16"):
                self.fail(f"output {y.name!r} has dtype {y.dtype}; a requantized overlap-add gives int8, uint8 "
                          "or int16")
            mult = self.constant_input(2, "int32", (1,))
            shift = self.constant_input(3, "int32", (1,))
            scale = self.constant_input(4, "float32", (1,))
            out_zp = zero_point(self, y)
            act_min, act_max = activation_range(self, y.dtype)
            self.rq = build_requant(self, ctx.profile.path(x.dtype), mult, shift, scale, out_zp, act_min, act_max)
        else:
            if y.dtype not in WIDE_DTYPES:
                self.fail(f"output {y.name!r} has dtype {y.dtype}; without requantization the zero-point-free sum "
                          f"needs one of {list(WIDE_DTYPES)}")
            if x.quant is None:
                if y.quant is not None:
                    self.fail(f"output {y.name!r} must have no quantization, like input {x.name!r}")
            elif (y.quant is None or y.quant.axis is not None or int(y.quant.zero_point[0]) != 0
                  or float(y.quant.scale[0]) != float(x.quant.scale[0])):
                self.fail(f"output {y.name!r} has {describe_quant(y.quant)}; the zero-point-free sum has the input's "
                          f"scale {x.quant.scale[0]!r} and zero point 0")
            self.lo, self.hi = INT_RANGES.get(y.dtype, (-(2**63), 2**63 - 1))
        width = x.shape[-1] if self.frames_last else x.shape[-2]
        n_frames = x.shape[-2] if self.frames_last else x.shape[-1]
        if width is not None:
            self.check_width(width)
        t_out = None
        if width is not None and n_frames is not None and not self.has_ref:
            t_out = self.out_length(n_frames, width, self.length)
        elif self.length is not None:
            t_out = self.length
        self.check_declared([*x.shape[:-2], t_out])
        if self.requant:
            self.kernel = overlap_add_requant_parallel if ctx.parallel else overlap_add_requant
        else:
            self.kernel = overlap_add_sum_parallel if ctx.parallel else overlap_add_sum

    def check_width(self, width, when="prepare"):
        suffix = " at run time" if when == "run" else ""
        if width < 1:
            self.fail(f"frame width {width} must be >= 1{suffix}")
        if self.padding == "dptnet" and (width % 2 or width != 2 * self.hop):
            self.fail(f"padding \"dptnet\" needs hop = width / 2 (even width), got width {width}, "
                      f"hop {self.hop}{suffix}")
        if not self.requant:
            worst = -(-width // self.hop) * _max_abs_offset(self.x_dtype, self.x_zp)
            if worst > self.hi:
                self.fail(f"output dtype {self.out_dtype} cannot hold a sum of up to {-(-width // self.hop)} frames "
                          f"(worst |sum| {worst}){suffix}; use a wider dtype or requantize")

    def crop_left(self, width):
        return width // 2 if self.padding == "dptnet" else self.padding[0]

    def out_length(self, n_frames, width, length, when="prepare"):
        suffix = " at run time" if when == "run" else ""
        full = overlap_add_length(n_frames, width, self.hop)
        if self.padding == "dptnet":
            left, right, _ = dptnet_padding(length, width)
            expected = frame_count(length, width, self.hop, left, right)
            if n_frames != expected:
                self.fail(f"{n_frames} chunks do not match DPTNet segmentation of {length} samples "
                          f"(chunk {width} gives {expected}){suffix}")
            return length
        if length is not None:
            return length
        t = full - self.padding[0] - self.padding[1]
        if t < 0:
            self.fail(f"attribute 'padding' = {self.padding} crops more than the {full} overlap-added samples{suffix}")
        return t

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], self.rank, self.x_dtype)
        width = x.shape[-1] if self.frames_last else x.shape[-2]
        n_frames = x.shape[-2] if self.frames_last else x.shape[-1]
        self.check_width(width, "run")
        length = self.length
        if self.has_ref:
            ref = inputs[1]
            if ref is None or ref.ndim < 1:
                self.fail(f"reference input {self.node.inputs[1]!r} must have at least 1 dim")
            length = ref.shape[-1]
        t_out = self.out_length(n_frames, width, length, "run")
        rows = np.ascontiguousarray(x).reshape(math.prod(x.shape[:-2]), *x.shape[-2:])
        out = np.empty((rows.shape[0], t_out), dtype=self.out_dtype)
        ovf, sat = counters(rows.shape[0])
        left = self.crop_left(width)
        if self.requant:
            self.kernel(rows, self.x_zp, self.hop, self.frames_last, left, self.rq, out, ovf, sat)
        else:
            self.kernel(rows, self.x_zp, self.hop, self.frames_last, left, self.lo, self.hi, out, sat)
        counts.add(ovf, sat)
        out = out.reshape(*x.shape[:-2], t_out)
        self.check_declared(out.shape, "run")
        return [out]


OPS = {"frame": Frame, "overlap_add": OverlapAdd}
