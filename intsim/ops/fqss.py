"""FQSS input splitter and output combiner (SPEC §2.5, §2.6; arithmetic in ``kernels.fqss``).

splitter: inputs ``[x]``; outputs ``[codes]`` or ``[codes, delta]``
    x      float32 [N, C, T] or [N, T] (read as C = 1, like FQSS's unsqueeze) audio: the float32
           transcription of FQSS ``preprocess``; or int16 [N, C, T] / [N, T] PCM (x = u / 32768):
           the exact hi/lo byte split (n_splitter 2, n_bits 8 only) of w = min(32767,
           floor(32768*u/P)), P = max|u| (w = u when the tensor holds -32768, i.e. max |x| = 1.0;
           then it equals the float path bit for bit), see ``kernels.fqss``.
    codes  int8 [N, n_splitter*C, T], channel j*C + c = split stage j of audio channel c, zero
           point 0.  normalize=True: declared scale must be exactly 2^-(n_bits-1) (1/128).
           normalize=False (dynamic delta): the scale changes with every call; declare the codes
           without quantization or with zero point 0 (any declared scale is ignored) and use the
           ``delta`` output.
    delta  float32 [1]: the scale of the codes for this call (FQSS's delta = thr / 2^(n_bits-1));
           required when normalize=False, optional otherwise (then always 2^-(n_bits-1)).
  attrs: ``n_splitter`` (default 2, >= 2), ``n_bits`` (default 8, 2..8), ``normalize`` (default true).
    n_splitter = 1 is refused: FQSS then feeds the raw float audio, unnormalized and unquantized, to
    the encoder, so there is nothing to split; the converter must quantize the graph input itself
    (the graph's float input binding or an explicit quantize op with a scale it chooses).
    Silence (max |x| = 0) gives the codes of 0 (stage 0: 0, later stages: -2^(n_bits-1)) and, in
    the dynamic mode, delta = 0.  NaN or infinite samples are an error.

combiner: inputs ``[y0, y1]`` (float32 output) or ``[y0, y1, multiplier, shift, scale]`` (integer)
    y0, y1  int8/uint8/int16/int32, same shape, per-tensor quantization (s0, z0), (s1, z1): the
            decoder output and its residual (int8 codes, or the zero-point-free int16 sums of an
            ``overlap_add``).  Real value  y = s0*(a0 - z0) + s1/2^n_bits * (a1 - z1)  (y0 + y1/256).
    integer output int16/int32, zero point 0, scale s_out = s1 * 2^-(n_bits + F) for an integer
            frac_bits F in [0, 24] that the op reads off the declared scales (s1 / s_out must be an
            exact power of two >= 2^n_bits):
                code = clamp(R(a0 - z0) + (a1 - z1) * 2^F)
            R = the profile's int8-path requantization (rounding, multiplier width) with the
            constants multiplier int32 [1], shift int32 [1], scale float32 [1] for
            r = s0 / s_out = 2^(n_bits+F) * s0 / s1 (``scale`` must equal r to float32 precision).
            The y1 branch is exact; R rounds once (|error| <= s_out/2 + multiplier error); the result
            is exact when r is an integer.  Saturation is counted.
    float32 output: FQSS ``postprocess`` in float32, op by op:
                y = float32(s0)*float32(a0 - z0) + (float32(s1)*float32(a1 - z1)) * 2^-n_bits
  attrs: ``n_bits`` (default 8), ``act_min``/``act_max`` (integer output).

``to_audio(code, scale)`` is the float form the CLI writes for an integer combiner output.
"""

from __future__ import annotations

import math

import numpy as np

from intsim.kernels.fqss import (combine_float, combine_float_parallel, combine_int, combine_int_parallel,
                                 split_float, split_float_parallel, split_pcm, split_pcm_parallel)
from intsim.ops.base import Op
from intsim.ops.common import check_input, counters, zero_point
from intsim.ops.requant import activation_range, build_requant


def to_audio(code, scale) -> np.ndarray:
    """Dequantize an integer combiner output (zero point 0) to float32 audio.

    ``float32(float64(code) * float64(float32(scale)))``: the product is exact in float64 for
    |code| < 2^29 (a float32 scale has a 24-bit significand), so each sample is the correctly
    rounded float32 of the real value ``scale * code``.
    """
    code = np.asarray(code)
    if code.dtype.kind not in "iu":
        raise TypeError(f"to_audio expects integer codes, got {code.dtype}")
    return (code.astype(np.float64) * np.float64(np.float32(scale))).astype(np.float32)


class Splitter(Op):
    n_inputs = 1

    def __init__(self, node, ctx):
        self.n_outputs = len(node.outputs) if len(node.outputs) in (1, 2) else 1
        super().__init__(node, ctx)
        x = self.input_spec(0)
        self.require_dtype("input", x, ("float32", "int16"))
        self.pcm = x.dtype == "int16"
        if len(x.shape) not in (2, 3):
            self.fail(f"input {x.name!r} must be [N, T] or [N, C, T], has shape {x.shape}")
        self.rank = len(x.shape)
        if self.pcm and x.quant is not None and (x.quant.axis is not None or x.quant.zero_point[0] != 0):
            self.fail(f"int16 PCM input {x.name!r} must be symmetric (zero point 0): x = u / 32768")
        self.n_splitter = self.attr("n_splitter", int, 2)
        if self.n_splitter == 1:
            self.fail("attribute 'n_splitter' = 1 is not a split: FQSS feeds the raw float audio, unnormalized and "
                      "unquantized, to the encoder; the converter must quantize the graph input itself")
        if self.n_splitter < 2:
            self.fail(f"attribute 'n_splitter' = {self.n_splitter} must be >= 2")
        self.n_bits = self.attr("n_bits", int, 8)
        if not 2 <= self.n_bits <= 8:
            self.fail(f"attribute 'n_bits' = {self.n_bits} must be in [2, 8] (the codes are int8)")
        if self.pcm and (self.n_splitter != 2 or self.n_bits != 8):
            self.fail(f"int16 PCM input {x.name!r} is split into its two bytes: needs n_splitter 2 and n_bits 8, "
                      f"got {self.n_splitter} and {self.n_bits}")
        self.normalize = self.attr("normalize", bool, True)
        if not self.normalize and len(node.outputs) != 2:
            self.fail("normalize=false (dynamic delta) needs two outputs [codes, delta]: the codes' scale "
                      "changes with every call")
        codes = self.output_spec(0)
        if codes.dtype != "int8":
            self.fail(f"output {codes.name!r} has dtype {codes.dtype}, expected int8")
        self.delta_fixed = 2.0 ** -(self.n_bits - 1)
        q = codes.quant
        if q is not None and (q.axis is not None or q.zero_point[0] != 0):
            self.fail(f"output {codes.name!r} must have zero point 0 (per tensor)")
        if self.normalize and (q is None or float(q.scale[0]) != self.delta_fixed):
            self.fail(f"output {codes.name!r} must have scale exactly {self.delta_fixed!r} (2^-(n_bits-1)) with "
                      f"normalize=true, has {None if q is None else q.scale[0]!r}")
        if len(node.outputs) == 2:
            d = self.output_spec(1)
            if d.dtype != "float32" or d.shape != [1] or d.quant is not None:
                self.fail(f"output {d.name!r} (delta) must be float32 [1] without quantization, is {d.dtype} {d.shape}")
        declared = codes.shape
        c = x.shape[1] if self.rank == 3 else 1
        want = [x.shape[0], None if c is None else self.n_splitter * c, x.shape[-1]]
        if len(declared) != 3 or any(a is not None and b is not None and a != b for a, b in zip(declared, want)):
            self.fail(f"output {codes.name!r} is declared with shape {declared}, expected {want}")
        if self.pcm:
            self.kernel = split_pcm_parallel if ctx.parallel else split_pcm
        else:
            self.kernel = split_float_parallel if ctx.parallel else split_float

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], self.rank, "int16" if self.pcm else "float32")
        x3 = np.ascontiguousarray(x if self.rank == 3 else x[:, None, :])
        n, c, t = x3.shape
        out = np.empty((n, self.n_splitter * c, t), dtype=np.int8)
        if self.pcm:
            peak = self.kernel(x3, out)
            delta = self.delta_fixed if self.normalize else peak / 2.0**22
        else:
            if not np.all(np.isfinite(x3)):
                self.fail(f"input {self.node.inputs[0]!r} contains NaN or infinite samples")
            delta, _ = self.kernel(x3, self.normalize, self.n_splitter, self.n_bits, out)
        outs = [out]
        if len(self.node.outputs) == 2:
            outs.append(np.array([delta], dtype=np.float32))
        return outs


def _frac_bits(s1: float, s_out: float, n_bits: int):
    """F with s_out = s1 * 2^-(n_bits + F) exactly, or None."""
    m1, e1 = math.frexp(s1)
    mo, eo = math.frexp(s_out)
    if m1 != mo:
        return None
    return e1 - eo - n_bits


class Combiner(Op):
    n_inputs = None

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        if len(node.inputs) not in (2, 5) or "" in node.inputs[:2]:
            self.fail("expects inputs [y0, y1] (float32 output) or [y0, y1, multiplier, shift, scale], "
                      f"got {node.inputs}")
        y0, y1, y = self.input_spec(0), self.input_spec(1), self.output_spec()
        for spec in (y0, y1):
            self.require_dtype("input", spec, ("int8", "uint8", "int16", "int32"))
            if spec.quant is None or spec.quant.axis is not None:
                self.fail(f"input {spec.name!r} needs per-tensor quantization (its scale is part of the sum)")
        if len(y0.shape) != len(y1.shape) or any(a is not None and b is not None and a != b
                                                 for a, b in zip(y0.shape, y1.shape)):
            self.fail(f"inputs {y0.name!r} {y0.shape} and {y1.name!r} {y1.shape} must have the same shape")
        if len(y0.shape) < 1:
            self.fail(f"input {y0.name!r} must have at least 1 dim")
        self.rank = len(y0.shape)
        self.dtypes = (np.dtype(y0.dtype), np.dtype(y1.dtype))
        self.z0, self.z1 = zero_point(self, y0), zero_point(self, y1)
        self.s0, self.s1 = float(y0.quant.scale[0]), float(y1.quant.scale[0])
        self.n_bits = self.attr("n_bits", int, 8)
        if not 1 <= self.n_bits <= 16:
            self.fail(f"attribute 'n_bits' = {self.n_bits} must be in [1, 16]")
        declared = y.shape
        if len(declared) != self.rank or any(a is not None and b is not None and a != b
                                             for a, b in zip(declared, y0.shape)):
            self.fail(f"output {y.name!r} is declared with shape {declared}, expected {y0.shape}")
        self.float_out = len(node.inputs) == 2
        self.out_dtype = np.dtype(y.dtype)
        if self.float_out:
            if y.dtype != "float32" or y.quant is not None:
                self.fail(f"output {y.name!r} must be float32 without quantization when there are no "
                          f"requantization constants, is {y.dtype}")
            self.kernel = combine_float_parallel if ctx.parallel else combine_float
            return
        if y.dtype not in ("int16", "int32"):
            self.fail(f"output {y.name!r} has dtype {y.dtype}; the integer combiner gives int16 or int32 "
                      "(or float32 without requantization constants)")
        if y.quant is None or y.quant.axis is not None or int(y.quant.zero_point[0]) != 0:
            self.fail(f"output {y.name!r} needs per-tensor quantization with zero point 0")
        s_out = float(y.quant.scale[0])
        f = _frac_bits(self.s1, s_out, self.n_bits)
        if f is None or not 0 <= f <= 24:
            self.fail(f"output {y.name!r} has scale {s_out!r}; it must be s1 * 2^-(n_bits + F) = "
                      f"{self.s1!r} * 2^-({self.n_bits} + F) for an integer F in [0, 24]")
        self.frac_bits = f
        mult = self.constant_input(2, "int32", (1,))
        shift = self.constant_input(3, "int32", (1,))
        scale = self.constant_input(4, "float32", (1,))
        ratio = self.s0 / s_out
        if abs(float(scale[0]) - ratio) > ratio * 2.0**-20:
            self.fail(f"constant {node.inputs[4]!r} = {float(scale[0])!r} does not match s0 / s_out = {ratio!r}")
        path = ctx.profile.path("int8")
        act_min, act_max = activation_range(self, y.dtype)
        self.rq = build_requant(self, path, mult, shift, scale, 0, act_min, act_max)
        if path.rounding == "double":
            d_max = max(int(np.iinfo(self.dtypes[0]).max) - self.z0, self.z0 - int(np.iinfo(self.dtypes[0]).min))
            left = max(int(shift[0]), 0)
            if d_max << left > 2**31 - 1:
                self.fail(f"y0 offsets up to {d_max} shifted left by {left} overflow int32 in the double-rounding "
                          "requantization; use a smaller frac_bits (output scale) or a narrower y0")
        self.kernel = combine_int_parallel if ctx.parallel else combine_int

    def run(self, inputs, counts):
        a0 = check_input(self, 0, inputs[0], self.rank, self.dtypes[0])
        a1 = check_input(self, 1, inputs[1], self.rank, self.dtypes[1])
        if a0.shape != a1.shape:
            self.fail(f"inputs have shapes {list(a0.shape)} and {list(a1.shape)}; they must be equal")
        t = a0.shape[-1]
        m = math.prod(a0.shape[:-1])
        r0 = np.ascontiguousarray(a0).reshape(m, t)
        r1 = np.ascontiguousarray(a1).reshape(m, t)
        out = np.empty(r0.shape, dtype=self.out_dtype)
        if self.float_out:
            self.kernel(r0, self.z0, self.s0, r1, self.z1, self.s1, self.n_bits, out)
        else:
            _, sat = counters(r0.shape[0])
            self.kernel(r0, self.z0, r1, self.z1, self.frac_bits, self.rq, out, sat)
            counts.add(np.zeros(1, np.int64), sat)
        return [out.reshape(a0.shape)]


OPS = {"splitter": Splitter, "combiner": Combiner}
