"""Test helpers: random requantization parameters for every profile path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from intsim.fixedpoint import quantize_multiplier, reduce_multiplier
from intsim.kernels.fixedpoint import requant_params
from intsim.profile import PROFILES, ArithPath

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

#: Paths exercised by kernel tests: the built-in ones plus narrow and saturating custom ones.
TEST_PATHS = {
    "tflm8": PROFILES["tflm"].int8,
    "single8": PROFILES["single"].int8,
    "onnx8": PROFILES["onnx"].int8,
    "tflm16": PROFILES["tflm"].int16,
    "acc24_sat_half_even": ArithPath(acc_bits=24, acc_overflow="saturate", mult_bits=16, rounding="half_even"),
    "acc20_wrap_floor": ArithPath(acc_bits=20, acc_overflow="wrap", mult_bits=12, rounding="floor"),
    "acc32_half_away": ArithPath(acc_bits=32, acc_overflow="wrap", mult_bits=31, rounding="half_away"),
}


def random_requant(rng, n_channels, path: ArithPath, out_dtype="int8", scale_range=(1e-4, 0.05), out_zp=None,
                   act_min=None, act_max=None):
    """Kernel requant tuple with random per-channel real multipliers in ``scale_range``."""
    info = np.iinfo(out_dtype)
    reals = np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]), n_channels)).astype(np.float32)
    mult, shift = zip(*(quantize_multiplier(float(r)) for r in reals))
    mult = [reduce_multiplier(m, path.mult_bits) for m in mult]
    if out_zp is None:
        out_zp = int(rng.integers(info.min // 2, info.max // 2 + 1)) if info.bits == 8 else 0
    return requant_params(np.array(mult), np.array(shift), reals, path.rounding_code, path.mult_bits, path.acc_bits,
                          path.acc_saturating, out_zp, info.min if act_min is None else act_min,
                          info.max if act_max is None else act_max)
