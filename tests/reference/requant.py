"""Reference of kernels.fixedpoint.requantize_output in plain Python ints."""

from intsim import fixedpoint as fp


def requantize_output(acc: int, c: int, rq) -> tuple[int, bool, bool]:
    """acc -> accumulator register -> sign-selected requantize -> + zp -> clamp; returns (code, overflowed, saturated)."""
    (mult, shift, scale, rounding, mult_bits, acc_bits, acc_saturating, out_zp, act_min, act_max,
     neg_mult, neg_shift, neg_scale, pos_offset, neg_offset, range_min, range_max) = rq
    reg, overflowed = fp.fit_accumulator(int(acc), int(acc_bits), bool(acc_saturating))
    if reg >= 0:
        scaled = fp.requantize(reg + int(pos_offset[c]), int(mult[c]), int(shift[c]), float(scale[c]), int(rounding), int(mult_bits))
    else:
        scaled = fp.requantize(reg + int(neg_offset[c]), int(neg_mult[c]), int(neg_shift[c]), float(neg_scale[c]), int(rounding), int(mult_bits))
    value = scaled + int(out_zp)
    code = max(int(act_min), min(int(act_max), value))
    return code, overflowed, not int(range_min) <= value <= int(range_max)
