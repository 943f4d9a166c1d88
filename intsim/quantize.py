"""Conversion-time builders: float scales -> the integer parameters of element-wise and table ops.

Everything here runs once, when a model is converted (never at inference).  Each builder follows
the float arithmetic of the engine it mirrors, operation by operation, so the integers match:

* Scales are taken as **float32** first (a .tflite / ONNX file stores float32 scales), then
  widened to double where TFLite computes in double.
* ``QuantizeMultiplier`` is TFLite's (``intsim.fixedpoint.quantize_multiplier``: frexp, round half
  away from zero, carry, flush below 2^-31).  TFLITE_SINGLE_ROUNDING's extra saturation of
  shifts > 30 is not applied (no multiplier here comes near 2^30).
* The ``scale`` arrays returned next to multipliers are the float32 values the ``float32`` (ONNX)
  rounding uses; see each op's docstring for which float32 value that is.

Table builders:

* ``make_lut8`` evaluates ``f`` on float32 inputs and, in ``mode="tflite"`` (TFLite
  ``LUTPopulate<int8_t/uint8_t>``), computes ``q = clamp(int(round_half_away(f(x) * (1/s_out)) +
  zp_out))`` in float32 -- note TFLite multiplies by the float32 reciprocal of the output scale
  rather than dividing; ``round_half_away`` is C ``roundf``.  ``mode="onnx"`` (ORT's QLinear unary
  tables, DequantizeLinear -> f -> QuantizeLinear) divides by ``s_out`` in float32 and rounds half
  to even.
* ``make_lut16`` follows TFLite ``LUTPopulateInt16<float>`` (513 entries, midpoint-error bias).
* Results depend on ``f`` being evaluated like the engine's libm (``expf``...).  NumPy's float32
  transcendental functions may differ from a given C libm by an ulp, which can move a table entry
  by one code; that is why tables travel in the model file as data and are never rebuilt at load.
  TFLite's float expressions are evaluated here without fused multiply-add (x86-64 builds; an
  aarch64 compiler may contract ``a + i * step`` into an FMA in ``LUTPopulateInt16``).

TFLite Micro LOGISTIC / TANH parameters (``tflm_int8_params``, ``tflm_logistic_int16_params``,
``tflm_tanh_int16_params``) reproduce ``CalculateArithmeticOpDataLogistic`` and tanh.cc's
``CalculateArithmeticOpData`` (TFLM @90b983c), including ``CheckedLog2`` in float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from intsim.fixedpoint import quantize_multiplier, round_half_away


def _f32(x) -> np.float32:
    x = np.float32(x)
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"scale must be a positive finite float32, got {x!r}")
    return x


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplierSmallerThanOneExp``: requires 0 < real < 1; shift <= 0."""
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier {real!r} must be in (0, 1) (TFLite QuantizeMultiplierSmallerThanOneExp)")
    m, shift = quantize_multiplier(real)
    if shift > 0:
        raise ValueError(f"multiplier {real!r} quantized to a positive shift {shift}")
    return m, shift


class RequantParams(NamedTuple):
    """Constant node inputs ``multiplier int32[n]``, ``shift int32[n]``, ``scale float32[n]``."""

    multiplier: np.ndarray
    shift: np.ndarray
    scale: np.ndarray


class AddParams(NamedTuple):
    """ADD/SUB constants: multiplier/shift int32[3] and scale float32[3] ordered (input1, input2,
    output), plus the ``left_shift`` attribute.  ``scale`` holds the float32 *tensor scales*
    (s1, s2, s_out) for the float32 rounding."""

    left_shift: int
    multiplier: np.ndarray
    shift: np.ndarray
    scale: np.ndarray


def _requant(reals, scales) -> RequantParams:
    pairs = [quantize_multiplier(float(r)) for r in reals]
    return RequantParams(np.array([m for m, _ in pairs], dtype=np.int32),
                         np.array([s for _, s in pairs], dtype=np.int32), np.array(scales, dtype=np.float32))


def requantize_params(s_in, s_out) -> RequantParams:
    """``requantize`` constants (TFLM QUANTIZE/Requantize form): real = double(s_in) / double(s_out).

    ``s_in`` may be an array (per-channel, e.g. int32 accumulators with per-channel weight scales);
    ``s_out`` is per tensor.  ``scale = float32(s_in / s_out)`` (float32 division).
    """
    s_in = np.atleast_1d(np.asarray(s_in, dtype=np.float32))
    so = _f32(s_out)
    for s in s_in:
        _f32(s)
    reals = [float(s) / float(so) for s in s_in]
    return _requant(reals, [np.float32(s / so) for s in s_in])


def add_params(s1, s2, s_out, bits: int = 8) -> AddParams:
    """TFLM ADD (``CalculateOpDataAdd``): double-precision multipliers, left_shift 20 (int8) / 15 (int16).

    ``twice_max = 2 * double(max(s1, s2))``; input multipliers ``double(s_i) / twice_max``; output
    multiplier ``twice_max / (2^left_shift * double(s_out))``; each through
    QuantizeMultiplierSmallerThanOneExp (ValueError where TFLite would abort).
    """
    s1, s2, so = _f32(s1), _f32(s2), _f32(s_out)
    left_shift = _left_shift(bits)
    twice_max = 2.0 * float(max(s1, s2))
    reals = [float(s1) / twice_max, float(s2) / twice_max, twice_max / ((1 << left_shift) * float(so))]
    return _add_like(left_shift, reals, (s1, s2, so))


def sub_params(s1, s2, s_out, bits: int = 8, float32_ratios: bool = False) -> AddParams:
    """TFLM SUB parameters.

    Default: computed exactly like ADD (double precision).  That is what the pinned tflite-micro
    interpreter (0.dev20261023182759) does: checked on scale triples where the two forms give
    different codes.  ``float32_ratios=True`` gives the form in TFLM's ``sub_common.cc`` source at
    @90b983c (ratios computed in float32: ``twice_max = 2 * max(s1, s2)`` float,
    ``double(float(s_i / twice_max))``, ``double(float(twice_max / (float(2^left_shift) * s_out)))``),
    for builds that use it.
    """
    if not float32_ratios:
        return add_params(s1, s2, s_out, bits)
    s1, s2, so = _f32(s1), _f32(s2), _f32(s_out)
    left_shift = _left_shift(bits)
    twice_max = np.float32(2) * max(s1, s2)
    reals = [float(np.float32(s1 / twice_max)), float(np.float32(s2 / twice_max)),
             float(np.float32(twice_max / (np.float32(1 << left_shift) * so)))]
    return _add_like(left_shift, reals, (s1, s2, so))


def _left_shift(bits):
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    return 15 if bits == 16 else 20


def _add_like(left_shift, reals, scales) -> AddParams:
    pairs = [quantize_multiplier_smaller_than_one_exp(r) for r in reals]
    return AddParams(left_shift, np.array([m for m, _ in pairs], dtype=np.int32),
                     np.array([s for _, s in pairs], dtype=np.int32), np.array(scales, dtype=np.float32))


def mul_params(s1, s2, s_out) -> RequantParams:
    """TFLM MUL: real = double(s1) * double(s2) / double(s_out), QuantizeMultiplier (n = 1).

    ``scale = float32(float32(s1 * s2) / s_out)`` (ORT MLAS QLinearMul's ScaleA * ScaleB / ScaleC).
    """
    s1, s2, so = _f32(s1), _f32(s2), _f32(s_out)
    return _requant([float(s1) * float(s2) / float(so)], [np.float32(np.float32(s1 * s2) / so)])


def prelu_params(s_in, s_alpha, s_out) -> RequantParams:
    """TFLM PRELU (``CalculatePreluParams``): n = 2, [identity, alpha]:
    ``double(s_in) / double(s_out)`` and ``double(s_in) * double(s_alpha) / double(s_out)``.
    ``scale = [float32(s_in / s_out), float32(float32(s_in * s_alpha) / s_out)]``."""
    si, sa, so = _f32(s_in), _f32(s_alpha), _f32(s_out)
    reals = [float(si) / float(so), float(si) * float(sa) / float(so)]
    return _requant(reals, [np.float32(si / so), np.float32(np.float32(si * sa) / so)])


# ---------------------------------------------------------------- tables


def _roundf_half_away(x: np.ndarray) -> np.ndarray:
    """C ``roundf`` on float32 values, exactly (through float64, where |x| + 0.5 is exact)."""
    d = np.asarray(x, dtype=np.float32).astype(np.float64)
    return (np.sign(d) * np.floor(np.abs(d) + 0.5)).astype(np.float32)


def _eval_f32(f, x: np.ndarray) -> np.ndarray:
    y = np.asarray(f(x.astype(np.float32)))
    y = np.broadcast_to(y, x.shape).astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise ValueError("table function returned NaN or infinite values")
    return y


def make_lut8(f, s_in, zp_in, s_out, zp_out, in_dtype="int8", out_dtype="int8", mode="tflite") -> np.ndarray:
    """256-entry table in code order (``table[code - min_code]``) of ``q_out = Q(f(DQ(q_in)))``.

    ``f`` maps a float32 array to float values (evaluated once, results taken as float32).
    ``mode="tflite"``: ``x = float32(s_in) * float32(q - zp_in)``; ``q_out = clamp(trunc(float32(
    roundf(f(x) * float32(1 / s_out)) + zp_out)))`` -- TFLite LUTPopulate, ties away from zero.
    ``mode="onnx"``: ``q_out = clamp(round_half_even(float32(f(x) / s_out)) + zp_out)``.
    """
    si, so = _f32(s_in), _f32(s_out)
    info_in, info_out = np.iinfo(in_dtype), np.iinfo(out_dtype)
    if info_in.bits != 8 or info_out.bits != 8:
        raise ValueError(f"make_lut8 needs 8-bit dtypes, got {in_dtype} -> {out_dtype}")
    codes = np.arange(info_in.min, info_in.max + 1, dtype=np.int64)
    x = si * (codes - int(zp_in)).astype(np.float32)
    y = _eval_f32(f, x)
    if mode == "tflite":
        inverse = np.float32(1) / so
        rescaled = _roundf_half_away(y * inverse)
        shifted = (rescaled + np.float32(zp_out)).astype(np.float32).astype(np.float64)
        q = np.trunc(np.clip(shifted, -2.0**31, 2.0**31 - 1))
    elif mode == "onnx":
        q = np.rint((y / so).astype(np.float32).astype(np.float64))
        q = np.clip(q, -2.0**31, 2.0**31 - 1) + int(zp_out)
    else:
        raise ValueError(f"mode must be 'tflite' or 'onnx', got {mode!r}")
    return np.clip(q, info_out.min, info_out.max).astype(out_dtype)


def make_lut16(f, s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """513-entry int16 table of TFLite ``LUTPopulateInt16<float>`` for the ``lut16`` op.

    In float32: ``input_min/max = s_in * (-32768/32767 - zp_in)``, ``step = (max - min) / 512``,
    ``output_scaling_inv = 65536 / (output_max - output_min)``; entry i is
    ``roundf(f(x_i) * inv) - roundf(midpoint_err / 2)`` clamped to int16, where ``midpoint_err`` is
    the rounded linear interpolation at the midpoint minus the rounded value there; entry 512 is
    ``roundf(f(input_max) * inv)``.
    """
    si, so = _f32(s_in), _f32(s_out)
    zi, zo = int(zp_in), int(zp_out)
    input_min = si * np.float32(-32768 - zi)
    input_max = si * np.float32(32767 - zi)
    output_min = so * np.float32(-32768 - zo)
    output_max = so * np.float32(32767 - zo)
    steps = 512
    step = np.float32((input_max - input_min) / np.float32(steps))
    half_step = np.float32(step / np.float32(2))
    scaling_inv = np.float32(np.float32(65536) / np.float32(output_max - output_min))
    i = np.arange(steps, dtype=np.float32)
    x_val = (input_min + (i * step).astype(np.float32)).astype(np.float32)
    x_mid = (x_val + half_step).astype(np.float32)
    x_next = (input_min + ((i + np.float32(1)) * step).astype(np.float32)).astype(np.float32)
    val, val_mid, val_next = _eval_f32(f, x_val), _eval_f32(f, x_mid), _eval_f32(f, x_next)
    sample = _roundf_half_away((val * scaling_inv).astype(np.float32))
    interp = _roundf_half_away((((val_next * scaling_inv).astype(np.float32) + sample).astype(np.float32)
                                / np.float32(2)).astype(np.float32))
    midpoint = _roundf_half_away((val_mid * scaling_inv).astype(np.float32))
    bias = _roundf_half_away(((interp - midpoint).astype(np.float32) / np.float32(2)).astype(np.float32))
    table = np.empty(steps + 1, dtype=np.int16)
    table[:steps] = np.clip((sample - bias).astype(np.float32), -32768, 32767).astype(np.int16)
    last = _roundf_half_away((_eval_f32(f, np.array([input_max], dtype=np.float32)) * scaling_inv).astype(np.float32))
    table[steps] = np.int16(np.clip(last[0], -32768, 32767))
    return table


# ---------------------------------------------------------------- TFLite Micro LOGISTIC / TANH


class TflmInt8Params(NamedTuple):
    """TFLM int8 LOGISTIC/TANH Prepare results (the op's attributes; zero point from the tensor)."""

    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int


def tflm_int8_params(input_scale, input_zero_point) -> TflmInt8Params:
    """TFLM int8 LOGISTIC and TANH Prepare (identical for both): Q4.27 input rescale.

    ``real = double(s_in) * 2^27``; ``q, left_shift = frexp(real)``;
    ``multiplier = int32(round_half_away(q * 2^31))`` (no carry handling in TFLM: a float32 scale
    cannot round up to 2^31); ``radius = floor(15 * 2^27 / 2^left_shift)`` (CalculateInputRadius).
    """
    s = _f32(input_scale)
    q, left_shift = math.frexp(float(s) * float(1 << 27))
    multiplier = round_half_away(q * float(1 << 31))
    if multiplier >= 1 << 31:  # pragma: no cover - impossible for float32 scales
        raise ValueError(f"input scale {float(s)!r} rounds the multiplier to 2^31")
    if left_shift < 0:
        raise ValueError(f"input scale {float(s)!r} is below 2^-28: TFLM's input radius is undefined")
    radius = math.floor(15.0 * float(1 << 27) / float(1 << left_shift))
    return TflmInt8Params(int(input_zero_point), int(radius), int(multiplier), int(left_shift))


tflm_logistic_int8_params = tflm_int8_params
tflm_tanh_int8_params = tflm_int8_params


def checked_log2(x) -> tuple[bool, int]:
    """TFLite ``CheckedLog2(float)``: ``log2 = logf(x) * (1.0f / logf(2.0f))`` in float32, rounded
    half away; returns (|fraction| < 1e-3, rounded log2).  ``logf`` is taken as the correctly
    rounded float32 log (float64 log rounded to float32)."""
    x = _f32(x)
    log_x = np.float32(math.log(float(x)))
    inv_ln2 = np.float32(np.float32(1.0) / np.float32(math.log(2.0)))
    x_log2 = np.float32(log_x * inv_ln2)
    rounded = np.float32(round_half_away(float(x_log2)))
    frac = np.float32(x_log2 - rounded)
    return bool(abs(frac) < np.float32(1e-3)), int(rounded)


def _tflm_int16_params(input_scale, pot_shifts) -> tuple[int, int]:
    s = _f32(input_scale)
    pot, log2_rounded = checked_log2(s)
    left_shift = (15 - 3) + log2_rounded
    if pot and left_shift in pot_shifts:
        return 0, left_shift
    multiplier = float(s) * 4096.0 * 3.0
    left_shift = 0
    while multiplier <= 32767.0 / 2.0 and left_shift <= 30:
        left_shift += 1
        multiplier *= 2.0
    multiplier = int(multiplier)  # C truncation
    if multiplier > 32767:
        raise ValueError(f"int16 input scale {float(s)!r} is too large for TFLM's logistic/tanh "
                         f"(input multiplier {multiplier} > 32767)")
    return multiplier, left_shift


def tflm_logistic_int16_params(input_scale) -> tuple[int, int]:
    """TFLM int16 LOGISTIC Prepare -> ``(input_multiplier, input_left_shift)``.

    Power-of-two case (CheckedLog2 and ``12 + log2(s) == 0``, i.e. s = 2^-12): ``(0, 0)``.
    Otherwise ``multiplier = double(s) * 4096 * 3``, doubled (``left_shift += 1``) while
    ``<= 32767 / 2`` and ``left_shift <= 30``, truncated to int.
    """
    return _tflm_int16_params(input_scale, (0,))


def tflm_tanh_int16_params(input_scale) -> tuple[int, int]:
    """TFLM int16 TANH Prepare: as logistic, but the power-of-two case also accepts
    ``12 + log2(s) == 1`` (s = 2^-11): ``(0, 0)`` or ``(0, 1)``."""
    return _tflm_int16_params(input_scale, (0, 1))


def tflm_int16_output_scale_ok(output_scale) -> bool:
    """TFLM's int16 LOGISTIC/TANH output check: CheckedLog2(s_out) holds with log2 == -15."""
    ok, log2 = checked_log2(output_scale)
    return ok and log2 == -15
