"""Turning a node's requantization constants and the profile into kernel parameters."""

from __future__ import annotations

import numpy as np

from intsim.fixedpoint import reduce_multiplier
from intsim.kernels.fixedpoint import requant_params

INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int32": (-(2**31), 2**31 - 1)}


def activation_range(op, dtype: str) -> tuple[int, int]:
    """[act_min, act_max]: the dtype range, narrowed by optional attributes act_min / act_max."""
    if dtype not in INT_RANGES:
        op.fail(f"output dtype {dtype} has no integer range")
    lo, hi = INT_RANGES[dtype]
    act_min = op.attr("act_min", int, lo)
    act_max = op.attr("act_max", int, hi)
    if not lo <= act_min <= act_max <= hi:
        op.fail(f"act_min {act_min} / act_max {act_max} outside the {dtype} range [{lo}, {hi}]")
    return act_min, act_max


def build_requant(op, path, mult, shift, scale, out_zp, act_min, act_max, negative=None, out_dtype=None):
    """Kernel requant tuple for a profile path from Q0.31 multipliers and float32 scales.

    ``mult``/``shift`` are the stored TFLite-style multipliers; they are reduced to the path's
    multiplier width here (integers only).  ``scale`` is the float32 real multiplier used by the
    ``float32`` rounding (ONNX profile).  ``negative`` optionally holds the sign-dependent part
    of a fused activation: a dict with any of ``mult``, ``shift``, ``scale`` (applied to negative
    accumulators) and ``pos_offset``, ``neg_offset`` (see kernels.fixedpoint.requant_params).
    """
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if mult.shape != shift.shape or mult.shape != np.shape(scale):
        op.fail(f"multiplier, shift and scale shapes differ: {mult.shape}, {shift.shape}, {np.shape(scale)}")
    if np.any(np.abs(mult) > 2**31 - 1) or np.any(shift < -62) or np.any(shift > 30):
        op.fail("multiplier outside int32 or shift outside [-62, 30]")
    neg = dict(negative or {})
    if path.mult_bits < 31:
        mult = _reduce(mult, path.mult_bits)
        if "mult" in neg:
            neg["mult"] = _reduce(neg["mult"], path.mult_bits)
    # Saturation is counted against the output dtype's range (default: the op's first output), not
    # against a fused activation's clamp.
    out_dtype = op.output_spec(0).dtype if out_dtype is None else str(np.dtype(out_dtype))
    range_min, range_max = INT_RANGES.get(out_dtype, (act_min, act_max))
    # A bound set by a fused activation (attribute act_min / act_max, e.g. ReLU's zero point) is
    # the activation's own clamp even where it equals the dtype limit: it never counts.
    attrs = getattr(getattr(op, "node", None), "attrs", {})
    if "act_min" in attrs:
        range_min = -(2**62)
    if "act_max" in attrs:
        range_max = 2**62
    return requant_params(mult, shift, scale, path.rounding_code, path.mult_bits, path.acc_bits,
                          path.acc_saturating, out_zp, act_min, act_max, neg.get("mult"), neg.get("shift"),
                          neg.get("scale"), neg.get("pos_offset"), neg.get("neg_offset"), range_min, range_max)


def _reduce(mult, mult_bits):
    return np.array([reduce_multiplier(int(m), mult_bits) for m in np.asarray(mult)], dtype=np.int64)
