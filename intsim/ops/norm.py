"""Normalization ops: integer GroupNorm and LayerNorm (arithmetic in ``docs/norm.md``).

group_norm: inputs ``[x, multiplier, shift, bias]``
    x          int8 / uint8 / int16 [N, C, ...] (trailing dims flattened to T); any zero point (it
               cancels; its scale is folded into eps_mult / eps_shift)
    multiplier int32 [C], shift int32 [C]: gamma[c] / s_out ~= multiplier * 2^(shift - 31)
               (``intsim.fixedpoint.quantize_multiplier``; negative gamma gives a negative multiplier)
    bias       int64 [C]: round(beta[c] / s_out * 2^16) (output LSBs with FRAC_BITS = 16 fraction bits)
  attrs: num_groups (G, divides C), eps_mult, eps_shift (eps / s_in^2 ~= eps_mult * 2^(eps_shift-31),
         eps_mult 0 or in [2^30, 2^31)), optional act_min / act_max.
  output: dtype int8 / uint8 / int16 with the shape of x; its zero point (tensor quant) is added.
  Statistics per (sample, group) over C/G channels x T frames, biased variance (PyTorch GroupNorm).

layer_norm: inputs ``[x, multiplier, shift, bias]`` as above, indexed along the normalized axis
  attrs: axis (default -1; statistics over that one axis for every position of the others, e.g.
         -1 = PyTorch LayerNorm(D) on [..., D], 1 = channel-wise LayerNorm (cLN) on [N, C, T]),
         eps_mult, eps_shift, optional act_min / act_max.

``norm_constants(s_in, gamma, beta, eps, s_out)`` builds the integer constants from float ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from intsim.fixedpoint import quantize_multiplier, round_half_away
from intsim.kernels.norm import (FRAC_BITS, MAX_GROUP_SIZE, group_norm, group_norm_parallel, layer_norm,
                                 layer_norm_parallel)
from intsim.ops.base import Op
from intsim.ops.common import check_input, zero_point
from intsim.ops.requant import activation_range

IN_DTYPES = ("int8", "uint8", "int16")
OUT_DTYPES = ("int8", "uint8", "int16")
#: |gamma / s_out| must stay below this (larger would saturate any non-trivial input anyway)
MAX_GAIN = 2.0**24
#: |bias| bound that keeps h + bias inside int64 (docs/norm.md)
MAX_BIAS = 2**55
MAX_EPS_SHIFT = 1100


@dataclass(frozen=True)
class NormConstants:
    """Integer constants of a GroupNorm/LayerNorm node (inputs 1-3 and the eps attributes)."""

    multiplier: np.ndarray  # int32 [C]
    shift: np.ndarray  # int32 [C]
    bias: np.ndarray  # int64 [C]
    eps_mult: int
    eps_shift: int

    def attrs(self) -> dict:
        return {"eps_mult": self.eps_mult, "eps_shift": self.eps_shift}


def quantize_positive(real: float) -> tuple[int, int]:
    """``real ~= m * 2^(shift - 31)`` with m in [2^30, 2^31) (ties away), no flush of tiny values.

    0 gives (0, 0).  Relative error <= 2^-31.
    """
    if real == 0.0:
        return 0, 0
    if not (math.isfinite(real) and real > 0):
        raise ValueError(f"expected a finite non-negative number, got {real!r}")
    q, shift = math.frexp(real)
    m = round_half_away(q * (1 << 31))
    if m == 1 << 31:
        m //= 2
        shift += 1
    return m, shift


def norm_constants(s_in: float, gamma, beta, eps: float, s_out: float) -> NormConstants:
    """Integer constants for y = gamma * (x - mean) / sqrt(var + eps) + beta on int codes.

    ``s_in``: input scale (the input zero point cancels and is not needed); ``s_out``: output
    scale (the output zero point comes from the output tensor's quant at run time).  gamma and
    beta: per-channel float arrays [C].  All products are formed in float64:

    * eps in code units E = eps / s_in^2 -> (eps_mult, eps_shift) by ``quantize_positive``;
    * gamma[c] / s_out -> (multiplier, shift) by ``quantize_multiplier`` (TFLite rule);
    * bias[c] = round_half_even(beta[c] / s_out * 2^FRAC_BITS).
    """
    gamma = np.atleast_1d(np.asarray(gamma, dtype=np.float64))
    beta = np.atleast_1d(np.asarray(beta, dtype=np.float64))
    if gamma.ndim != 1 or gamma.shape != beta.shape:
        raise ValueError(f"gamma and beta must be 1-D of equal length, got {gamma.shape} and {beta.shape}")
    for name, v in (("s_in", s_in), ("s_out", s_out)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite scale, got {v!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        raise ValueError("gamma and beta must be finite")
    gain = gamma / float(s_out)
    if np.any(np.abs(gain) >= MAX_GAIN):
        raise ValueError(f"|gamma / s_out| must be < 2^24, got max {float(np.max(np.abs(gain)))!r}")
    offset = beta / float(s_out) * (1 << FRAC_BITS)
    if np.any(np.abs(offset) >= MAX_BIAS):
        raise ValueError(f"|beta / s_out| must be < 2^{55 - FRAC_BITS}, got max {float(np.max(np.abs(beta / s_out)))!r}")
    ms = [quantize_multiplier(float(g)) for g in gain]
    eps_mult, eps_shift = quantize_positive(float(eps) / (float(s_in) * float(s_in)))
    return NormConstants(
        multiplier=np.array([m for m, _ in ms], dtype=np.int32),
        shift=np.array([s for _, s in ms], dtype=np.int32),
        bias=np.rint(offset).astype(np.int64),
        eps_mult=eps_mult,
        eps_shift=eps_shift,
    )


class _NormOp(Op):
    n_inputs = 4

    def prepare_norm(self):
        x = self.input_spec(0)
        y = self.output_spec()
        self.require_dtype("input", x, IN_DTYPES)
        self.require_dtype("output", y, OUT_DTYPES)
        self.mult = self.constant_input(1, "int32")
        if self.mult.ndim != 1 or self.mult.size == 0:
            self.fail(f"multiplier must be a non-empty 1-D constant, has shape {list(self.mult.shape)}")
        self.c = self.mult.size
        self.shift = self.constant_input(2, "int32", (self.c,))
        self.bias = self.constant_input(3, "int64", (self.c,))
        if np.any(self.shift < -62) or np.any(self.shift > 30):
            self.fail(f"shift must be in [-62, 30], got range [{int(self.shift.min())}, {int(self.shift.max())}]")
        if np.any(np.abs(self.bias) > MAX_BIAS):
            self.fail(f"bias must satisfy |bias| <= 2^55, got max {int(np.max(np.abs(self.bias)))}")
        self.eps_mult = self.attr("eps_mult", int)
        self.eps_shift = self.attr("eps_shift", int)
        if not (self.eps_mult == 0 or (1 << 30) <= self.eps_mult < (1 << 31)):
            self.fail(f"attribute 'eps_mult' must be 0 or in [2^30, 2^31), got {self.eps_mult}")
        if abs(self.eps_shift) > MAX_EPS_SHIFT:
            self.fail(f"attribute 'eps_shift' must be in [-{MAX_EPS_SHIFT}, {MAX_EPS_SHIFT}], got {self.eps_shift}")
        self.out_zp = zero_point(self, y)
        self.act_min, self.act_max = activation_range(self, y.dtype)
        self.in_dtype = x.dtype
        self.out_dtype = np.dtype(y.dtype)
        self.max_group = MAX_GROUP_SIZE[x.dtype]
        if len(y.shape) != len(x.shape):
            self.fail(f"output shape {y.shape} must have the rank of the input shape {x.shape}")

    def check_group_size(self, n):
        if n < 1 or n > self.max_group:
            self.fail(f"normalization group of {n} values; {self.in_dtype} input allows 1 to {self.max_group}")


class GroupNorm(_NormOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_norm()
        self.groups = self.attr("num_groups", int)
        if self.groups < 1 or self.c % self.groups:
            self.fail(f"attribute 'num_groups' {self.groups} must be >= 1 and divide the {self.c} channels")
        declared = self.input_spec(0).shape
        if len(declared) < 2 or declared[1] not in (None, self.c):
            self.fail(f"input shape {declared} must be [N, {self.c}, ...]")

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], None, self.in_dtype)
        if x.ndim < 2 or x.shape[1] != self.c:
            self.fail(f"input has shape {list(x.shape)}, expected [N, {self.c}, ...]")
        x3 = np.ascontiguousarray(x.reshape(x.shape[0], self.c, int(np.prod(x.shape[2:], dtype=np.int64))))
        self.check_group_size((self.c // self.groups) * x3.shape[2])
        out = np.empty(x3.shape, dtype=self.out_dtype)
        sat = np.zeros(x3.shape[0] * self.groups, dtype=np.int64)
        kernel = group_norm_parallel if self.ctx.parallel else group_norm
        kernel(x3, self.groups, self.eps_mult, self.eps_shift, self.mult, self.shift, self.bias, self.out_zp,
               self.act_min, self.act_max, out, sat)
        counts.add(0, sat)
        return [out.reshape(x.shape)]


class LayerNorm(_NormOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_norm()
        self.axis = self.attr("axis", int, -1)
        declared = self.input_spec(0).shape
        if not -len(declared) <= self.axis < len(declared):
            self.fail(f"attribute 'axis' {self.axis} is out of range for input rank {len(declared)}")
        self.axis %= len(declared)
        if declared[self.axis] not in (None, self.c):
            self.fail(f"input shape {declared} has {declared[self.axis]} entries on axis {self.axis}, expected {self.c}")

    def run(self, inputs, counts):
        x = check_input(self, 0, inputs[0], len(self.input_spec(0).shape), self.in_dtype)
        if x.shape[self.axis] != self.c:
            self.fail(f"input has shape {list(x.shape)}, expected {self.c} entries on axis {self.axis}")
        self.check_group_size(self.c)
        outer = int(np.prod(x.shape[:self.axis], dtype=np.int64))
        inner = int(np.prod(x.shape[self.axis + 1:], dtype=np.int64))
        x3 = np.ascontiguousarray(x.reshape(outer, self.c, inner))
        out = np.empty(x3.shape, dtype=self.out_dtype)
        sat = np.zeros(outer * inner, dtype=np.int64)
        kernel = layer_norm_parallel if self.ctx.parallel else layer_norm
        kernel(x3, self.eps_mult, self.eps_shift, self.mult, self.shift, self.bias, self.out_zp, self.act_min,
               self.act_max, out, sat)
        counts.add(0, sat)
        return [out.reshape(x.shape)]


OPS = {"group_norm": GroupNorm, "layer_norm": LayerNorm}
