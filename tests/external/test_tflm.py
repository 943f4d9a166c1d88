"""intsim (``tflm`` profile) == TFLite Micro, bit for bit, on single-op models.

Every case builds a one-operator int8 or int16x8 ``.tflite`` model from random per-channel weights and
realistic scales (``tests.external.tflite_builder``), runs it in the TFLite Micro Python interpreter in
a subprocess (``tests.external.tflm_runner``, one run for all cases; this process never imports
``tflite_micro``), runs the same integers through intsim, and asserts zero mismatching elements.
Linear ops (conv / depthwise / transpose conv / FC) call the kernels with requantization parameters
derived here the way TFLM's Prepare derives them (a few cases go through the op adapters instead);
ADD / SUB / MUL / LOGISTIC / TANH run through intsim's op adapters with the parameters of the
``intsim.quantize`` helpers, so those helpers are under test too.  Inputs: 3 trials uniform over the
full int8/int16 range plus 1 trial of extreme codes (only the dtype min / max); LOGISTIC / TANH
exhaustively (all 256 / 65536 codes); int8 binary ops also on all 65536 code pairs.

Op mapping (TFLite layout -> intsim layout):

* CONV_2D, H = 1, NHWC ``[N, 1, W, C]`` / OHWI ``[C_out, 1, K, C_in/g]`` -> ``kernels.conv.conv1d`` on
  ``[N, C, W]`` / ``[C_out, C_in/g, K]`` (grouped when the filter depth < input depth).  SAME ->
  explicit ``[left, right]``: ``total = max(0, (W_out - 1) * stride + (K - 1) * dilation + 1 - W)``,
  ``left = total // 2``, ``right = total - left`` (``ComputePaddingWithOffset``; TFLM's kernel uses
  ``left`` and ``W_out = ceil(W / stride)``).  VALID -> ``[0, 0]``.
* DEPTHWISE_CONV_2D ``[1, 1, K, C * m]`` -> conv1d with ``groups = C`` and weight ``[C * m, 1, K]``.
* TRANSPOSE_CONV, filter OHWI ``[C_out, 1, K, C_in]`` -> ``conv_transpose1d`` weight ``[C_in, C_out, K]``;
  TFLM pads from ``ComputePaddingHeightWidth`` applied to the *output* width (``pad = max(0,
  (ceil(W_out / s) - 1) * s + K - W_out) // 2``) -> PyTorch ``padding = pad`` and ``output_padding =
  W_out - ((W_in - 1) * s - 2 * pad + K)``, carried by ``out``'s shape (it is -1 for SAME with
  ``K - s`` odd: TFLite crops one more frame on the right).
* FULLY_CONNECTED ``[N, in]`` x ``[units, in]`` -> ``kernels.matmul.linear`` as is.
* Multipliers: ``QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))`` per channel
  (``PopulateConvolutionQuantizationParams``), FC per-tensor included (see ``fc_multipliers``); the
  int16 path reduces them to 15 bits.  ADD / SUB: see ``tflm_add_sub_multipliers``.
* Fused activations: ``CalculateActivationRangeQuantized`` (float32 ``round(f / s_out) + zp``).

On a mismatch the failure lists the first elements with a Python-int emulation of TFLM (accumulator,
multiplier, shift, exact quotient).  Per-op counts (elements compared / mismatched) are printed in the
terminal summary (``tests/external/conftest.py``) and recorded as junit properties.
"""

from __future__ import annotations

import importlib
import math
import pickle
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from intsim import fixedpoint as fp
from intsim.kernels.fixedpoint import requant_params
from intsim.profile import PROFILES

pytestmark = pytest.mark.external

REPO = Path(__file__).resolve().parents[2]
PROFILE = PROFILES["tflm"]
RUNNER_TIMEOUT_S = 300
N_RANDOM_TRIALS = 3  # plus one extreme-code trial

#: (op label) -> [elements compared, elements mismatched], filled by the tests, printed by conftest.
MISMATCH_REPORT: dict[str, list[int]] = {}


# ---------------------------------------------------------------------------------------------
# TFLM Prepare-time parameter derivation (float32 tensor params, double arithmetic)
# ---------------------------------------------------------------------------------------------

def f32(v) -> float:
    """A value as TFLite stores it (float32), widened exactly to a Python float (double)."""
    return float(np.float32(v))


def tflite_round(v: float) -> int:
    return fp.round_half_away(v)


def conv_multipliers(x_scale, w_scales, y_scale, n_channels):
    """PopulateConvolutionQuantizationParams: per channel double(s_in) * double(s_w) / double(s_out)."""
    ws = np.atleast_1d(np.asarray(w_scales, dtype=np.float32))
    if ws.size == 1:
        ws = np.repeat(ws, n_channels)
    reals = [f32(x_scale) * float(s) / f32(y_scale) for s in ws]
    mult, shift = zip(*(fp.quantize_multiplier(r) for r in reals))
    return np.array(mult, dtype=np.int64), np.array(shift, dtype=np.int64), np.array(reals, dtype=np.float32)


def activation_range(activation, y_scale, y_zp, dtype):
    """CalculateActivationRangeQuantized: ``zp + (int)TfLiteRound(f / scale)`` with float32 division."""
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)

    def q(f):
        return int(y_zp) + tflite_round(float(np.float32(f) / np.float32(y_scale)))

    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


def tflm_rq(mult, shift, reals, dtype, y_zp, act_min, act_max):
    """Kernel requant tuple for the tflm profile path of ``dtype`` activations."""
    path = PROFILE.path(dtype)
    m = np.array([fp.reduce_multiplier(int(v), path.mult_bits) for v in mult], dtype=np.int64)
    return requant_params(m, shift, reals, path.rounding_code, path.mult_bits, path.acc_bits, path.acc_saturating,
                          y_zp, act_min, act_max)


def emulate_requant(acc: int, mult: int, shift: int, dtype, y_zp, act_min, act_max):
    """TFLM's MultiplyByQuantizedMultiplier (+ zp, clamp) in Python ints; returns (code, details)."""
    if np.dtype(dtype) == np.int8:
        acc32 = fp.wrap(int(acc), 32)
        scaled = fp.mbqm_double(acc32, int(mult), int(shift))
        how = (f"int32 acc {acc32}, M {mult}, shift {shift}, double rounding -> {scaled}; exact acc*M/2^(31-shift) "
               f"= {acc32 * mult / 2.0 ** (31 - shift):.4f}")
    else:
        rm = fp.reduce_multiplier(int(mult), 15)
        scaled = fp.mbqm_single(int(acc), rm, int(shift), 15, fp.ROUND_HALF_UP)
        how = (f"int64 acc {acc}, M {mult} -> reduced {rm}, shift {shift}, "
               f"(acc*{rm} + 2^{14 - shift}) >> {15 - shift} = {scaled}; exact acc*M/2^(31-shift) = "
               f"{acc * mult / 2.0 ** (31 - shift):.4f}")
    code = max(act_min, min(act_max, scaled + int(y_zp)))
    return code, how


# ---------------------------------------------------------------------------------------------
# Random data
# ---------------------------------------------------------------------------------------------

def qrange(dtype):
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def random_codes(rng, shape, dtype, extreme=False):
    """Uniform codes over the full dtype range, or (extreme) only the dtype minimum and maximum."""
    lo, hi = qrange(dtype)
    if extreme:
        return np.where(rng.random(shape) < 0.5, lo, hi).astype(dtype)
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(dtype)


def input_trials(rng, shapes, dtype, n_random=N_RANDOM_TRIALS):
    """``n_random`` uniform trials and one extreme-code trial; each trial a list (one array per input)."""
    trials = [[random_codes(rng, s, dtype) for s in shapes] for _ in range(n_random)]
    trials.append([random_codes(rng, s, dtype, extreme=True) for s in shapes])
    return trials


def input_quant(rng, dtype):
    """A realistic activation scale and zero point (int16 symmetric)."""
    if dtype == "int8":
        return f32(math.exp(rng.uniform(math.log(4e-3), math.log(8e-2)))), int(rng.integers(-100, 101))
    return f32(math.exp(rng.uniform(math.log(2e-5), math.log(6e-4)))), 0


def per_channel_weights(rng, shape, channel_axis):
    """Symmetric narrow-range int8 weights with per-channel scales ``max|w| / 127`` (TFLite spec)."""
    n_ch = shape[channel_axis]
    sigma = np.exp(rng.uniform(np.log(0.02), np.log(0.5), n_ch))
    bshape = [1] * len(shape)
    bshape[channel_axis] = n_ch
    w_real = rng.standard_normal(shape) * sigma.reshape(bshape)
    axes = tuple(a for a in range(len(shape)) if a != channel_axis)
    scales = (np.max(np.abs(w_real), axis=axes) / 127.0).astype(np.float32)
    w = np.clip(np.round(w_real / scales.reshape(bshape)), -127, 127).astype(np.int8)
    return w, scales


def output_scale_and_bias(rng, w_codes_per_channel, fan_in, x_scale, w_scales, dtype, bias_dtype):
    """Output scale so that typical channels span a few sigma of the output range; random bias.

    ``w_codes_per_channel``: [C, fan_in] weight codes feeding each output channel.
    """
    lo, hi = qrange(dtype)
    var_x = ((hi - lo + 1) ** 2) / 12.0
    acc_std = np.sqrt(np.mean(w_codes_per_channel.astype(np.float64) ** 2, axis=1) * fan_in * var_x)
    real_std = acc_std * x_scale * w_scales.astype(np.float64)
    y_scale = f32(np.median(real_std) * rng.uniform(2.0, 6.0) / hi)
    bias = np.round(rng.standard_normal(len(acc_std)) * 0.5 * acc_std)
    return y_scale, bias.astype(bias_dtype)


def output_zero_point(rng, dtype):
    return int(rng.integers(-60, 61)) if dtype == "int8" else 0


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    op: str  # report label, e.g. "CONV_2D int8"
    kind: str  # tflite_builder kind
    kwargs: dict  # tflite_builder kwargs
    trials: list  # [[input arrays]] in TFLite layout
    run_intsim: Callable  # (trial inputs) -> output in TFLite layout
    explain: Callable | None = None  # (trial index, mismatch index tuple, intsim, tflm) -> str
    info: dict = field(default_factory=dict)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def explicit_padding(padding, w_in, k, stride, dilation):
    """TFLite SAME/VALID -> intsim explicit [left, right] and the output length."""
    from tests.external.tflite_builder import padding_with_offset

    if padding == "VALID":
        span = (k - 1) * dilation + 1
        return 0, 0, (w_in + stride - span) // stride
    left, offset, out = padding_with_offset(padding, w_in, k, stride, dilation)
    return left, left + offset, out


def conv1d_acc(x, x_zp, w, bias, stride, pad_left, pad_right, dilation, groups, t_out):
    """Exact int64 accumulators [N, C_out, T_out] (bias included) of a grouped 1-D convolution."""
    n, c_in, t_in = x.shape
    c_out, c_in_g, k = w.shape
    xp = np.zeros((n, c_in, t_in + pad_left + pad_right + stride * t_out + k * dilation), dtype=np.int64)
    xp[:, :, pad_left:pad_left + t_in] = x.astype(np.int64) - x_zp
    acc = np.zeros((n, c_out, t_out), dtype=np.int64) + bias.astype(np.int64)[None, :, None]
    c_out_g = c_out // groups
    idx = np.arange(t_out) * stride
    for g in range(groups):
        xs = xp[:, g * c_in_g:(g + 1) * c_in_g]
        wg = w[g * c_out_g:(g + 1) * c_out_g].astype(np.int64)
        for kk in range(k):
            taps = xs[:, :, idx + kk * dilation]
            acc[:, g * c_out_g:(g + 1) * c_out_g] += np.einsum("oc,nct->not", wg[:, :, kk], taps)
    return acc


def linear_explainer(acc_fn, mult, shift, dtype, y_zp, act_min, act_max, channel_axis=-1):
    """Diagnostic for linear ops: Python-int emulation of TFLM's requant at a mismatching element."""

    def explain(trial, index, got, expected):
        acc = acc_fn(trial)[index]
        c = index[channel_axis]
        code, how = emulate_requant(int(acc), int(mult[c]), int(shift[c]), dtype, y_zp, act_min, act_max)
        return (f"element {index} (channel {c}): intsim {got}, TFLM {expected}, Python-int TFLM emulation "
                f"{code} [{how}]")

    return explain


def make_conv1d_case(name, dtype, n, c_in, c_out, w_in, k, stride=1, dilation=1, padding="VALID", groups=1,
                     activation="NONE", via="kernel", aligned_trial=False):
    """CONV_2D with H = 1.  ``via="adapter"`` runs intsim's ``conv1d`` op (one-node graph) instead of the kernel.
    ``aligned_trial``: add a trial whose first window matches the signs of output channel 0's weights
    (stride 1, no padding), so that accumulator is as large as the dtype allows (beyond int32 for a
    large int16 fan-in)."""
    rng = np.random.default_rng(_seed(name))
    c_in_g = c_in // groups
    x_scale, x_zp = input_quant(rng, dtype)
    w, w_scales = per_channel_weights(rng, (c_out, 1, k, c_in_g), 0)  # OHWI
    bias_dtype = np.int32 if dtype == "int8" else np.int64
    y_scale, bias = output_scale_and_bias(rng, w.reshape(c_out, -1), k * c_in_g, x_scale, w_scales, dtype, bias_dtype)
    y_zp = output_zero_point(rng, dtype)
    kwargs = dict(x_shape=(n, 1, w_in, c_in), x_scale=x_scale, x_zp=x_zp, w=w, w_scales=w_scales, bias=bias,
                  y_scale=y_scale, y_zp=y_zp, stride=(1, stride), dilation=(1, dilation), padding=padding,
                  activation=activation, dtype=dtype)
    trials = input_trials(rng, [(n, 1, w_in, c_in)], dtype)
    if aligned_trial:
        assert stride == 1 and dilation == 1 and padding == "VALID" and groups == 1
        lo, hi = qrange(dtype)
        x = random_codes(rng, (n, 1, w_in, c_in), dtype)
        x[0, 0, :k, :] = np.where(w[0, 0] >= 0, hi, lo)
        trials.append([x])

    pad_l, pad_r, t_out = explicit_padding(padding, w_in, k, stride, dilation)
    w_i = np.ascontiguousarray(w[:, 0].transpose(0, 2, 1))  # [C_out, C_in/g, K]
    mult, shift, reals = conv_multipliers(x_scale, w_scales, y_scale, c_out)
    act_min, act_max = activation_range(activation, y_scale, y_zp, dtype)
    rq = tflm_rq(mult, shift, reals, dtype, y_zp, act_min, act_max)

    def to_ncw(x_tfl):
        return np.ascontiguousarray(x_tfl[:, 0].transpose(0, 2, 1))

    def run_intsim(inputs):
        from intsim.kernels.conv import conv1d, conv1d_output_length

        x = to_ncw(inputs[0])
        assert conv1d_output_length(w_in, k, stride, pad_l, pad_r, dilation) == t_out
        if via == "adapter":
            consts = {"w": w_i, "b": bias, "mult": mult.astype(np.int32), "shift": shift.astype(np.int32),
                      "scale": reals}
            attrs = dict(stride=stride, padding=[pad_l, pad_r], dilation=dilation, groups=groups, act_min=act_min,
                         act_max=act_max)
            out = run_one_node("conv1d", [x], {"x": ((n, c_in, w_in), dtype, (x_scale, x_zp))}, consts, attrs, dtype,
                               (n, c_out, t_out), (y_scale, y_zp))
            return out.transpose(0, 2, 1)[:, None]
        out = np.empty((n, c_out, t_out), dtype=dtype)
        ovf = np.zeros(c_out, np.int64)
        sat = np.zeros(c_out, np.int64)
        conv1d(x, x_zp, w_i, bias, stride, pad_l, dilation, groups, rq, out, ovf, sat)
        return out.transpose(0, 2, 1)[:, None]

    def acc_fn(trial):
        acc = conv1d_acc(to_ncw(trials[trial][0]), x_zp, w_i, bias, stride, pad_l, pad_r, dilation, groups, t_out)
        return acc.transpose(0, 2, 1)[:, None]

    return Case(name, f"CONV_2D {dtype}", "conv2d", kwargs, trials, run_intsim,
                linear_explainer(acc_fn, mult, shift, dtype, y_zp, act_min, act_max),
                info=dict(padding=(pad_l, pad_r), t_out=t_out))


def make_depthwise_case(name, dtype, n, c, w_in, k, stride=1, dilation=1, padding="VALID", depth_multiplier=1,
                        activation="NONE"):
    rng = np.random.default_rng(_seed(name))
    c_out = c * depth_multiplier
    x_scale, x_zp = input_quant(rng, dtype)
    w, w_scales = per_channel_weights(rng, (1, 1, k, c_out), 3)
    bias_dtype = np.int32 if dtype == "int8" else np.int64
    y_scale, bias = output_scale_and_bias(rng, w.reshape(k, c_out).T, k, x_scale, w_scales, dtype, bias_dtype)
    y_zp = output_zero_point(rng, dtype)
    kwargs = dict(x_shape=(n, 1, w_in, c), x_scale=x_scale, x_zp=x_zp, w=w, w_scales=w_scales, bias=bias,
                  y_scale=y_scale, y_zp=y_zp, stride=(1, stride), dilation=(1, dilation), padding=padding,
                  depth_multiplier=depth_multiplier, activation=activation, dtype=dtype)
    trials = input_trials(rng, [(n, 1, w_in, c)], dtype)

    pad_l, pad_r, t_out = explicit_padding(padding, w_in, k, stride, dilation)
    w_i = np.ascontiguousarray(w[0, 0].T[:, None, :])  # [C * m, 1, K]
    mult, shift, reals = conv_multipliers(x_scale, w_scales, y_scale, c_out)
    act_min, act_max = activation_range(activation, y_scale, y_zp, dtype)
    rq = tflm_rq(mult, shift, reals, dtype, y_zp, act_min, act_max)

    def to_ncw(x_tfl):
        return np.ascontiguousarray(x_tfl[:, 0].transpose(0, 2, 1))

    def run_intsim(inputs):
        from intsim.kernels.conv import conv1d, conv1d_output_length

        assert conv1d_output_length(w_in, k, stride, pad_l, pad_r, dilation) == t_out
        out = np.empty((n, c_out, t_out), dtype=dtype)
        ovf = np.zeros(c_out, np.int64)
        sat = np.zeros(c_out, np.int64)
        conv1d(to_ncw(inputs[0]), x_zp, w_i, bias, stride, pad_l, dilation, c, rq, out, ovf, sat)
        return out.transpose(0, 2, 1)[:, None]

    def acc_fn(trial):
        acc = conv1d_acc(to_ncw(trials[trial][0]), x_zp, w_i, bias, stride, pad_l, pad_r, dilation, c, t_out)
        return acc.transpose(0, 2, 1)[:, None]

    return Case(name, f"DEPTHWISE_CONV_2D {dtype}", "depthwise_conv2d", kwargs, trials, run_intsim,
                linear_explainer(acc_fn, mult, shift, dtype, y_zp, act_min, act_max),
                info=dict(padding=(pad_l, pad_r), t_out=t_out))


def conv_transpose1d_acc(x, x_zp, w, bias, stride, padding, t_out):
    """Exact int64 accumulators [N, C_out, T_out] of a 1-D transposed convolution (groups 1).

    ``out[o] = bias + sum_{i, k: i * stride + k - padding = o} w[ci, co, k] * (x[ci, i] - x_zp)``.
    """
    n, c_in, t_in = x.shape
    _, c_out, k = w.shape
    full = max((t_in - 1) * stride + k, padding + t_out)
    acc = np.zeros((n, c_out, full), dtype=np.int64)
    xs = x.astype(np.int64) - x_zp
    for kk in range(k):
        acc[:, :, kk:kk + stride * (t_in - 1) + 1:stride] += np.einsum("io,nit->not", w[:, :, kk].astype(np.int64), xs)
    return acc[:, :, padding:padding + t_out] + bias.astype(np.int64)[None, :, None]


def transpose_conv_padding(padding, w_in, w_out, k, stride):
    """TFLM TRANSPOSE_CONV: pad from ComputePaddingHeightWidth on the *output* size -> PyTorch
    ``padding`` and ``output_padding`` with ``W_out = (W_in - 1) * stride - 2 * padding + K + output_padding``."""
    from tests.external.tflite_builder import padding_with_offset

    pad, _, _ = padding_with_offset(padding, w_out, k, stride, 1)
    output_padding = w_out - ((w_in - 1) * stride - 2 * pad + k)
    return pad, output_padding


def make_transpose_conv_case(name, dtype, n, c_in, c_out, w_in, k, stride, padding="VALID", extra=0,
                             activation="NONE"):
    """TRANSPOSE_CONV 1 x K.  Output width: VALID ``(W_in - 1) * s + K + extra``; SAME ``W_in * s``."""
    rng = np.random.default_rng(_seed(name))
    x_scale, x_zp = input_quant(rng, dtype)
    w, w_scales = per_channel_weights(rng, (c_out, 1, k, c_in), 0)  # OHWI
    bias_dtype = np.int32 if dtype == "int8" else np.int64
    fan_in = c_in * -(-k // stride)
    y_scale, bias = output_scale_and_bias(rng, w.reshape(c_out, -1), fan_in, x_scale, w_scales, dtype, bias_dtype)
    y_zp = output_zero_point(rng, dtype)
    w_out = (w_in - 1) * stride + k + extra if padding == "VALID" else w_in * stride
    y_shape = (n, 1, w_out, c_out)
    kwargs = dict(x_shape=(n, 1, w_in, c_in), x_scale=x_scale, x_zp=x_zp, w=w, w_scales=w_scales, bias=bias,
                  y_shape=y_shape, y_scale=y_scale, y_zp=y_zp, stride=(1, stride), padding=padding,
                  activation=activation, dtype=dtype)
    trials = input_trials(rng, [(n, 1, w_in, c_in)], dtype)

    pad, output_padding = transpose_conv_padding(padding, w_in, w_out, k, stride)
    w_i = np.ascontiguousarray(w[:, 0].transpose(2, 0, 1))  # OHWI [C_out, 1, K, C_in] -> [C_in, C_out, K]
    mult, shift, reals = conv_multipliers(x_scale, w_scales, y_scale, c_out)
    act_min, act_max = activation_range(activation, y_scale, y_zp, dtype)
    rq = tflm_rq(mult, shift, reals, dtype, y_zp, act_min, act_max)

    def to_ncw(x_tfl):
        return np.ascontiguousarray(x_tfl[:, 0].transpose(0, 2, 1))

    def run_intsim(inputs):
        from intsim.kernels.conv import conv_transpose1d, conv_transpose_output_length

        # out's shape carries output_padding (which may be -1: TFLite SAME with K - stride odd crops one more
        # frame on the right than PyTorch's symmetric padding can express).
        assert conv_transpose_output_length(w_in, k, stride, pad, output_padding, 1) == w_out
        out = np.empty((n, c_out, w_out), dtype=dtype)
        ovf = np.zeros(c_out, np.int64)
        sat = np.zeros(c_out, np.int64)
        conv_transpose1d(to_ncw(inputs[0]), x_zp, w_i, bias, stride, pad, 1, 1, rq, out, ovf, sat)
        return out.transpose(0, 2, 1)[:, None]

    def acc_fn(trial):
        acc = conv_transpose1d_acc(to_ncw(trials[trial][0]), x_zp, w_i, bias, stride, pad, w_out)
        return acc.transpose(0, 2, 1)[:, None]

    return Case(name, f"TRANSPOSE_CONV {dtype}", "transpose_conv", kwargs, trials, run_intsim,
                linear_explainer(acc_fn, mult, shift, dtype, y_zp, act_min, act_max),
                info=dict(padding=pad, output_padding=output_padding, w_out=w_out))


def fc_multipliers(x_scale, w_scales, y_scale, n_units):
    """TFLM FULLY_CONNECTED multipliers, per channel or per tensor: ``double(s_in) * double(s_w) / double(s_out)``.

    Measured on the pinned wheel (0.dev20261023182759-g8f6596d): the per-tensor path too takes the
    product in double.  The TFLM sources of 2026-08 (``GetQuantizedConvolutionMultipler``, used by
    ``CalculateOpDataFullyConnected`` for per-tensor weights) read
    ``static_cast<double>(input->params.scale * filter->params.scale)``, a float32 product; on scales
    where that changes the 16-bit reduced multiplier (case ``fc-int16-per-tensor-product-path``) the
    float32 product disagrees with the wheel on ~25 % of int16x8 outputs and the double product on none.
    """
    return conv_multipliers(x_scale, w_scales, y_scale, n_units)


def product_path_sensitive_scale(x_scale, w_scale, y_scale, mult_bits):
    """Nudge ``y_scale`` until the float32 and double products of ``s_in * s_w`` give different
    ``mult_bits`` multipliers, so the test notices which path an implementation took."""
    reduce = fp.reduce_multiplier
    for i in range(200000):
        ys = f32(y_scale * (1.0 + 1e-6 * i))
        m32, s32 = fp.quantize_multiplier(float(np.float32(x_scale) * np.float32(w_scale)) / ys)
        m64, s64 = fp.quantize_multiplier(f32(x_scale) * f32(w_scale) / ys)
        if (reduce(m32, mult_bits), s32) != (reduce(m64, mult_bits), s64):
            return ys
    raise AssertionError("no float32-product-sensitive output scale found")


def make_fc_case(name, dtype, batch, n_in, n_out, per_channel=True, activation="NONE", product_path_sensitive=False,
                 via="kernel", aligned_trial=False):
    """FULLY_CONNECTED.  ``via="adapter"`` runs intsim's ``linear`` op (one-node graph) instead of the kernel.
    ``aligned_trial``: add a trial whose rows 0 / 1 match / oppose the signs of units 0 / 1, the
    largest accumulators of either sign the dtype allows."""
    rng = np.random.default_rng(_seed(name))
    x_scale, x_zp = input_quant(rng, dtype)
    if per_channel:
        w, w_scales = per_channel_weights(rng, (n_out, n_in), 0)
    else:
        w_real = rng.standard_normal((n_out, n_in)) * np.exp(rng.uniform(np.log(0.02), np.log(0.5)))
        w_scales = np.array([np.max(np.abs(w_real)) / 127.0], dtype=np.float32)
        w = np.clip(np.round(w_real / w_scales[0]), -127, 127).astype(np.int8)
    bias_dtype = np.int32 if dtype == "int8" else np.int64
    ws_full = np.broadcast_to(w_scales, (n_out,)).astype(np.float32)
    y_scale, bias = output_scale_and_bias(rng, w, n_in, x_scale, ws_full, dtype, bias_dtype)
    if product_path_sensitive:
        y_scale = product_path_sensitive_scale(x_scale, w_scales[0], y_scale, PROFILE.path(dtype).mult_bits)
    y_zp = output_zero_point(rng, dtype)
    kwargs = dict(x_shape=(batch, n_in), x_scale=x_scale, x_zp=x_zp, w=w, w_scales=w_scales, bias=bias,
                  y_scale=y_scale, y_zp=y_zp, activation=activation, dtype=dtype)
    trials = input_trials(rng, [(batch, n_in)], dtype)
    if aligned_trial:
        lo, hi = qrange(dtype)
        x = random_codes(rng, (batch, n_in), dtype)
        x[0] = np.where(w[0] >= 0, hi, lo)
        x[1] = np.where(w[1] >= 0, lo, hi)
        trials.append([x])

    mult, shift, reals = fc_multipliers(x_scale, w_scales, y_scale, n_out)
    act_min, act_max = activation_range(activation, y_scale, y_zp, dtype)
    rq = tflm_rq(mult, shift, reals, dtype, y_zp, act_min, act_max)

    def run_intsim(inputs):
        from intsim.kernels.matmul import linear

        if via == "adapter":
            consts = {"w": w, "b": bias, "mult": mult.astype(np.int32), "shift": shift.astype(np.int32), "scale": reals}
            return run_one_node("linear", [inputs[0]], {"x": ((batch, n_in), dtype, (x_scale, x_zp))}, consts,
                                dict(act_min=act_min, act_max=act_max), dtype, (batch, n_out), (y_scale, y_zp))

        out = np.empty((batch, n_out), dtype=dtype)
        ovf = np.zeros(n_out, np.int64)
        sat = np.zeros(n_out, np.int64)
        linear(np.ascontiguousarray(inputs[0]), x_zp, w, bias, rq, out, ovf, sat)
        return out

    def acc_fn(trial):
        x = trials[trial][0].astype(np.int64) - x_zp
        return x @ w.astype(np.int64).T + bias.astype(np.int64)[None, :]

    return Case(name, f"FULLY_CONNECTED {dtype}", "fully_connected", kwargs, trials, run_intsim,
                linear_explainer(acc_fn, mult, shift, dtype, y_zp, act_min, act_max),
                info=dict(per_channel=per_channel))


def run_one_node(op, inputs, tensors, constants, attrs, dtype, out_shape, out_quant):
    """Run a single intsim op through its adapter (one-node Graph, ``tflm`` profile, serial kernels)."""
    from intsim import Graph, Model, Node, Quant, TensorSpec

    specs = {}
    for name, (arr_shape, arr_dtype, quant) in tensors.items():
        q = None if quant is None else Quant([quant[0]], [quant[1]])
        specs[name] = TensorSpec(name, arr_dtype, list(arr_shape), q)
    specs["y"] = TensorSpec("y", dtype, list(out_shape), Quant([out_quant[0]], [out_quant[1]]))
    for name, data in constants.items():
        specs[name] = TensorSpec(name, str(data.dtype), list(data.shape))
    names = list(tensors)
    node = Node("n", op, names + list(constants), ["y"], attrs)
    graph = Graph(specs, [node], names, ["y"], dict(constants), profile="tflm")
    return Model(graph, profile=PROFILE, parallel=False).run(list(inputs))["y"]


def tflm_add_sub_multipliers(s1, s2, s_out, left_shift):
    """ADD and SUB Prepare as the pinned TFLM wheel computes it: ``twice_max = 2 * double(max(s1, s2))``,
    ``double(s_i) / twice_max`` and ``twice_max / (double(1 << left_shift) * double(s_out))``, each through
    QuantizeMultiplierSmallerThanOneExp.  (SUB's source at TFLM @90b983c computes these ratios in
    float32; the wheel's machine code -- cvtss2sd, addsd, divsd in CalculateOpDataSub -- and its
    outputs follow the double formula of ADD.)"""
    s1, s2, so = f32(s1), f32(s2), f32(s_out)
    twice_max = 2.0 * max(s1, s2)
    reals = [s1 / twice_max, s2 / twice_max, twice_max / (float(1 << left_shift) * so)]
    return [fp.quantize_multiplier(r) for r in reals]


def binary_quant(rng, op, dtype):
    """Scales / zero points for ADD, SUB, MUL with full-range inputs and a few percent clipping."""
    lo, hi = qrange(dtype)
    (s1, z1), (s2, z2) = input_quant(rng, dtype), input_quant(rng, dtype)
    if op in ("ADD", "SUB"):
        s_out = f32(max(s1, s2) * rng.uniform(1.1, 2.2))
    else:
        std = (hi - lo + 1) / math.sqrt(12.0)
        s_out = f32(s1 * s2 * std * std * rng.uniform(2.0, 6.0) / hi)
    return (s1, z1), (s2, z2), (s_out, output_zero_point(rng, dtype))


def make_binary_case(name, op, dtype, shape1, shape2, activation="NONE", exhaustive=False):
    """ADD / SUB / MUL through intsim's op adapter.  ``exhaustive``: every int8 code pair, as the
    broadcast of a [256, 1] and a [1, 256] input (one trial), plus random same-shape trials."""
    rng = np.random.default_rng(_seed(name))
    (s1, z1), (s2, z2), (so, zo) = binary_quant(rng, op, dtype)
    y_shape = tuple(np.broadcast_shapes(shape1, shape2))
    kwargs = dict(op=op, x1_shape=shape1, x1_scale=s1, x1_zp=z1, x2_shape=shape2, x2_scale=s2, x2_zp=z2,
                  y_shape=y_shape, y_scale=so, y_zp=zo, activation=activation, dtype=dtype)
    if exhaustive:
        codes = np.arange(-128, 128, dtype=np.int8)
        trials = [[codes.reshape(shape1), codes.reshape(shape2)]]
    else:
        trials = input_trials(rng, [shape1, shape2], dtype)
    act_min, act_max = activation_range(activation, so, zo, dtype)

    def run_intsim(inputs):
        from intsim import quantize as Q

        if op == "MUL":
            p = Q.mul_params(s1, s2, so)
            attrs = {}
        else:
            p = (Q.add_params if op == "ADD" else Q.sub_params)(s1, s2, so, bits=np.iinfo(dtype).bits)
            attrs = {"left_shift": int(p.left_shift)}
        attrs.update(act_min=act_min, act_max=act_max)
        consts = {"mult": np.asarray(p.multiplier, np.int32), "shift": np.asarray(p.shift, np.int32),
                  "scale": np.asarray(p.scale, np.float32)}
        tensors = {"a": (shape1, dtype, (s1, z1)), "b": (shape2, dtype, (s2, z2))}
        return run_one_node(op.lower(), inputs, tensors, consts, attrs, dtype, y_shape, (so, zo))

    def explain(trial, index, got, expected):
        a, b = np.broadcast_arrays(*trials[trial])
        va, vb = int(a[index]) - z1, int(b[index]) - z2
        from intsim import quantize as Q

        if op == "MUL":
            m, sh = fp.quantize_multiplier(f32(s1) * f32(s2) / f32(so))
            scaled = fp.mbqm_double(va * vb, m, sh)
            emu = max(act_min, min(act_max, scaled + zo))
            p = Q.mul_params(s1, s2, so)
            return (f"element {index}: a {a[index]}, b {b[index]}: intsim {got}, TFLM {expected}; Python-int TFLM "
                    f"emulation {emu} [prod {va * vb}, M {m}, shift {sh} from double(s1)*double(s2)/double(s_out); "
                    f"intsim.quantize.mul_params gave M {int(p.multiplier[0])}, shift {int(p.shift[0])}]")
        ls = 15 if dtype == "int16" else 20
        (m1, h1), (m2, h2), (mo, ho) = tflm_add_sub_multipliers(s1, s2, so, ls)
        t1 = fp.mbqm_double(va << ls, m1, h1)
        t2 = fp.mbqm_double(vb << ls, m2, h2)
        raw = t1 + t2 if op == "ADD" else t1 - t2
        emu = max(act_min, min(act_max, fp.mbqm_double(raw, mo, ho) + zo))
        p = (Q.add_params if op == "ADD" else Q.sub_params)(s1, s2, so, bits=np.iinfo(dtype).bits)
        return (f"element {index}: a {a[index]}, b {b[index]}: intsim {got}, TFLM {expected}; Python-int TFLM "
                f"emulation {emu} [double-precision Prepare: (M, shift) in1 ({m1}, {h1}), in2 ({m2}, {h2}), out "
                f"({mo}, {ho}); scaled inputs {t1}, {t2}, raw {raw}, exact raw*M_out/2^(31-shift) = "
                f"{raw * mo / 2.0 ** (31 - ho):.5f}; intsim.quantize gave "
                f"{list(zip(p.multiplier.tolist(), p.shift.tolist()))}]")

    return Case(name, f"{op} {dtype}", "binary", kwargs, trials, run_intsim, explain,
                info=dict(scales=(s1, s2, so), zero_points=(z1, z2, zo)))


UNARY_OUT_QUANT = {("LOGISTIC", "int8"): (1.0 / 256.0, -128), ("TANH", "int8"): (1.0 / 128.0, 0),
                   ("LOGISTIC", "int16"): (2.0 ** -15, 0), ("TANH", "int16"): (2.0 ** -15, 0)}


def make_unary_case(name, op, dtype, x_scale=None, x_zp=None):
    """LOGISTIC / TANH on every input code (exhaustive: 256 or 65536 elements)."""
    rng = np.random.default_rng(_seed(name))
    if x_scale is None:
        x_scale = f32(math.exp(rng.uniform(math.log(0.01), math.log(0.25)))) if dtype == "int8" else \
            f32(math.exp(rng.uniform(math.log(3e-5), math.log(2e-3))))
    if x_zp is None:
        x_zp = int(rng.integers(-80, 81)) if dtype == "int8" else 0
    x_scale = f32(x_scale)
    lo, hi = qrange(dtype)
    codes = np.arange(lo, hi + 1, dtype=np.int64).astype(dtype).reshape(1, -1)
    ys, yz = UNARY_OUT_QUANT[(op, dtype)]
    kwargs = dict(op=op, shape=codes.shape, x_scale=x_scale, x_zp=x_zp, y_scale=ys, y_zp=yz, dtype=dtype)

    def run_intsim(inputs):
        from intsim import quantize as Q

        if dtype == "int8":
            p = Q.tflm_int8_params(x_scale, x_zp)
            attrs = dict(input_multiplier=p.input_multiplier, input_left_shift=p.input_left_shift,
                         input_range_radius=p.input_range_radius)
        else:
            m, sh = (Q.tflm_logistic_int16_params if op == "LOGISTIC" else Q.tflm_tanh_int16_params)(x_scale)
            attrs = dict(input_multiplier=int(m), input_left_shift=int(sh))
        tensors = {"x": (codes.shape, dtype, (x_scale, x_zp))}
        return run_one_node(op.lower(), inputs, tensors, {}, attrs, dtype, codes.shape, (ys, yz))

    def explain(trial, index, got, expected):
        from intsim import quantize as Q

        if dtype == "int8":
            params = Q.tflm_int8_params(x_scale, x_zp)
        else:
            params = (Q.tflm_logistic_int16_params if op == "LOGISTIC" else Q.tflm_tanh_int16_params)(x_scale)
        return (f"input code {int(codes[index])}: intsim {got}, TFLM {expected} (s_in {x_scale!r}, zp {x_zp}; "
                f"intsim.quantize Prepare parameters {params})")

    return Case(name, f"{op} {dtype}", "unary", kwargs, [[codes]], run_intsim, explain,
                info=dict(x_scale=x_scale, x_zp=x_zp))


# name -> (factory, kwargs).  Names are stable: they seed the random generators.
CASE_SPECS: dict[str, tuple[Callable, dict]] = {}


def _add(name, factory, **kwargs):
    assert name not in CASE_SPECS
    CASE_SPECS[name] = (factory, kwargs)


for _dt in ("int8", "int16"):
    _add(f"conv1d-{_dt}-plain", make_conv1d_case, dtype=_dt, n=2, c_in=8, c_out=16, w_in=64, k=3)
    _add(f"conv1d-{_dt}-pointwise", make_conv1d_case, dtype=_dt, n=1, c_in=32, c_out=24, w_in=50, k=1)
    _add(f"conv1d-{_dt}-strided-valid", make_conv1d_case, dtype=_dt, n=2, c_in=6, c_out=12, w_in=67, k=4, stride=3)
    _add(f"conv1d-{_dt}-strided-same", make_conv1d_case, dtype=_dt, n=2, c_in=6, c_out=12, w_in=67, k=4, stride=2,
         padding="SAME")
    _add(f"conv1d-{_dt}-dilated-valid", make_conv1d_case, dtype=_dt, n=1, c_in=8, c_out=8, w_in=60, k=3,
         dilation=4)
    _add(f"conv1d-{_dt}-dilated-same", make_conv1d_case, dtype=_dt, n=2, c_in=8, c_out=16, w_in=64, k=3,
         dilation=2, padding="SAME")
    _add(f"conv1d-{_dt}-same-even-kernel", make_conv1d_case, dtype=_dt, n=1, c_in=4, c_out=10, w_in=41, k=6,
         padding="SAME")
    _add(f"conv1d-{_dt}-strided-dilated-same", make_conv1d_case, dtype=_dt, n=1, c_in=5, c_out=7, w_in=53, k=5,
         stride=3, dilation=2, padding="SAME")
    _add(f"conv1d-{_dt}-same-stride-gt-kernel", make_conv1d_case, dtype=_dt, n=1, c_in=4, c_out=6, w_in=30, k=2,
         stride=4, padding="SAME")
    _add(f"conv1d-{_dt}-grouped", make_conv1d_case, dtype=_dt, n=2, c_in=16, c_out=8, w_in=40, k=3, groups=4,
         padding="SAME")
    _add(f"conv1d-{_dt}-relu6", make_conv1d_case, dtype=_dt, n=1, c_in=8, c_out=8, w_in=32, k=3, padding="SAME",
         activation="RELU6")
    _add(f"conv1d-{_dt}-wide-dilated-same", make_conv1d_case, dtype=_dt, n=1, c_in=32, c_out=40, w_in=300, k=3,
         dilation=2, padding="SAME")
    _add(f"conv1d-{_dt}-wide-strided-same", make_conv1d_case, dtype=_dt, n=2, c_in=48, c_out=36, w_in=129, k=4,
         stride=2, padding="SAME")
    _add(f"conv1d-{_dt}-adapter", make_conv1d_case, dtype=_dt, n=2, c_in=16, c_out=16, w_in=50, k=5, stride=2,
         padding="SAME", activation="RELU", via="adapter")
    _add(f"dwconv1d-{_dt}-plain", make_depthwise_case, dtype=_dt, n=2, c=16, w_in=64, k=3)
    _add(f"dwconv1d-{_dt}-dilated-same", make_depthwise_case, dtype=_dt, n=2, c=32, w_in=64, k=3, dilation=4,
         padding="SAME")
    _add(f"dwconv1d-{_dt}-strided-same", make_depthwise_case, dtype=_dt, n=1, c=12, w_in=61, k=8, stride=2,
         padding="SAME")
    _add(f"dwconv1d-{_dt}-strided-dilated-valid", make_depthwise_case, dtype=_dt, n=1, c=10, w_in=70, k=5, stride=3,
         dilation=2)
    _add(f"dwconv1d-{_dt}-multiplier2", make_depthwise_case, dtype=_dt, n=1, c=8, w_in=40, k=3, padding="SAME",
         depth_multiplier=2)
    _add(f"dwconv1d-{_dt}-relu", make_depthwise_case, dtype=_dt, n=1, c=8, w_in=32, k=5, padding="SAME",
         activation="RELU")


# int16x8 accumulators beyond int32 (TFLM accumulates in int64): fan-in 4096 with sign-aligned inputs.
_add("conv1d-int16-int64-accumulator", make_conv1d_case, dtype="int16", n=1, c_in=2048, c_out=4, w_in=6, k=2,
     aligned_trial=True)
_add("fc-int16-int64-accumulator", make_fc_case, dtype="int16", batch=4, n_in=4096, n_out=6, aligned_trial=True)

for _dt in ("int8", "int16"):
    _add(f"tconv1d-{_dt}-valid", make_transpose_conv_case, dtype=_dt, n=2, c_in=16, c_out=8, w_in=20, k=8, stride=4)
    _add(f"tconv1d-{_dt}-valid-output-padding", make_transpose_conv_case, dtype=_dt, n=1, c_in=8, c_out=6, w_in=17,
         k=5, stride=3, extra=2)
    _add(f"tconv1d-{_dt}-same-k2s", make_transpose_conv_case, dtype=_dt, n=2, c_in=12, c_out=4, w_in=24, k=16,
         stride=8, padding="SAME")
    _add(f"tconv1d-{_dt}-same-k-lt-s", make_transpose_conv_case, dtype=_dt, n=1, c_in=8, c_out=8, w_in=15, k=3,
         stride=4, padding="SAME")
    _add(f"tconv1d-{_dt}-same-odd", make_transpose_conv_case, dtype=_dt, n=1, c_in=6, c_out=5, w_in=19, k=5,
         stride=2, padding="SAME")
    _add(f"tconv1d-{_dt}-stride1", make_transpose_conv_case, dtype=_dt, n=1, c_in=8, c_out=8, w_in=30, k=3,
         stride=1, padding="SAME")
    _add(f"tconv1d-{_dt}-wide-same", make_transpose_conv_case, dtype=_dt, n=1, c_in=32, c_out=40, w_in=140, k=4,
         stride=2, padding="SAME")
    _add(f"fc-{_dt}-adapter", make_fc_case, dtype=_dt, batch=10, n_in=33, n_out=20, via="adapter")
    _add(f"fc-{_dt}-per-channel", make_fc_case, dtype=_dt, batch=16, n_in=64, n_out=48)
    _add(f"fc-{_dt}-per-channel-wide", make_fc_case, dtype=_dt, batch=4, n_in=257, n_out=100)
    _add(f"fc-{_dt}-per-tensor", make_fc_case, dtype=_dt, batch=16, n_in=64, n_out=48, per_channel=False)
    _add(f"fc-{_dt}-per-tensor-product-path", make_fc_case, dtype=_dt, batch=32, n_in=64, n_out=32,
         per_channel=False, product_path_sensitive=True)
    _add(f"fc-{_dt}-per-tensor-relu", make_fc_case, dtype=_dt, batch=8, n_in=40, n_out=24, per_channel=False,
         activation="RELU")


for _op in ("ADD", "SUB", "MUL"):
    _lo = _op.lower()
    for _dt in ("int8", "int16"):
        _add(f"{_lo}-{_dt}-same-shape", make_binary_case, op=_op, dtype=_dt, shape1=(2, 40, 16), shape2=(2, 40, 16))
        _add(f"{_lo}-{_dt}-broadcast-channel", make_binary_case, op=_op, dtype=_dt, shape1=(2, 40, 16),
             shape2=(1, 1, 16))
        _add(f"{_lo}-{_dt}-broadcast-frame", make_binary_case, op=_op, dtype=_dt, shape1=(1, 16, 1),
             shape2=(2, 16, 30))
    _add(f"{_lo}-int8-all-pairs", make_binary_case, op=_op, dtype="int8", shape1=(256, 1), shape2=(1, 256),
         exhaustive=True)
    _add(f"{_lo}-int8-all-pairs-b", make_binary_case, op=_op, dtype="int8", shape1=(256, 1), shape2=(1, 256),
         exhaustive=True)
    _add(f"{_lo}-int8-relu", make_binary_case, op=_op, dtype="int8", shape1=(4, 64), shape2=(4, 64), activation="RELU")
for _op in ("LOGISTIC", "TANH"):
    _lo = _op.lower()
    for _i in range(4):
        _add(f"{_lo}-int8-random-scale-{_i}", make_unary_case, op=_op, dtype="int8")
    _add(f"{_lo}-int16-pot-2^-12", make_unary_case, op=_op, dtype="int16", x_scale=2.0 ** -12)
    _add(f"{_lo}-int16-pot-2^-11", make_unary_case, op=_op, dtype="int16", x_scale=2.0 ** -11)
    _add(f"{_lo}-int16-pot-2^-10", make_unary_case, op=_op, dtype="int16", x_scale=2.0 ** -10)
    _add(f"{_lo}-int16-pot-2^-13", make_unary_case, op=_op, dtype="int16", x_scale=2.0 ** -13)
    for _i in range(3):
        _add(f"{_lo}-int16-random-scale-{_i}", make_unary_case, op=_op, dtype="int16")


# ---------------------------------------------------------------------------------------------
# Running TFLM once for all cases
# ---------------------------------------------------------------------------------------------

def _run_runner(args, timeout):
    return subprocess.run([sys.executable, "-m", "tests.external.tflm_runner", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cases():
    return {name: factory(name, **kw) for name, (factory, kw) in CASE_SPECS.items()}


@pytest.fixture(scope="module")
def tflm(cases, tmp_path_factory):
    probe = _run_runner(["--probe"], 120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"TFLite Micro reference unavailable in a subprocess (pip install "
                    f"'tflite-micro==0.dev20261023182759' flatbuffers): {last}")
    tmp = tmp_path_factory.mktemp("tflm")
    payload = [dict(name=c.name, kind=c.kind, kwargs=c.kwargs, trials=c.trials) for c in cases.values()]
    with open(tmp / "cases.pkl", "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    proc = _run_runner([str(tmp / "cases.pkl"), str(tmp / "results.pkl"), "--save-models", str(tmp)],
                       RUNNER_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"TFLM runner exited with {proc.returncode} (models in {tmp}):\n{proc.stderr[-4000:]}")
    with open(tmp / "results.pkl", "rb") as f:
        out = pickle.load(f)
    out["dir"] = tmp
    return out


def _require(module, attr):
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} not importable yet: {exc}")
    if not hasattr(mod, attr):
        pytest.skip(f"{module}.{attr} does not exist yet")
    return getattr(mod, attr)


REQUIRES = {
    "conv2d": ("intsim.kernels.conv", "conv1d"),
    "depthwise_conv2d": ("intsim.kernels.conv", "conv1d"),
    "transpose_conv": ("intsim.kernels.conv", "conv_transpose1d"),
    "fully_connected": ("intsim.kernels.matmul", "linear"),
    "binary": ("intsim.quantize", "add_params"),
    "unary": ("intsim.quantize", "tflm_int8_params"),
}


@pytest.mark.parametrize("name", list(CASE_SPECS))
def test_matches_tflm(name, cases, tflm, record_property):
    case = cases[name]
    _require(*REQUIRES[case.kind])
    res = tflm["results"][name]
    if "error" in res:
        pytest.fail(f"TFLM could not run case {name}: {res['error']}")
    total = 0
    mismatched = 0
    messages = []
    for t, (inputs, expected) in enumerate(zip(case.trials, res["outputs"])):
        got = case.run_intsim(inputs)
        assert got.shape == expected.shape, f"trial {t}: intsim shape {got.shape} != TFLM {expected.shape}"
        assert got.dtype == expected.dtype, f"trial {t}: intsim dtype {got.dtype} != TFLM {expected.dtype}"
        bad = np.argwhere(got != expected)
        total += expected.size
        mismatched += len(bad)
        for index in bad[:5]:
            index = tuple(int(i) for i in index)
            detail = (case.explain(t, index, int(got[index]), int(expected[index])) if case.explain
                      else f"element {index}: intsim {got[index]}, TFLM {expected[index]}")
            messages.append(f"trial {t}: {detail}")
    counts = MISMATCH_REPORT.setdefault(case.op, [0, 0])
    counts[0] += total
    counts[1] += mismatched
    record_property("elements", total)
    record_property("mismatches", mismatched)
    print(f"{name}: {total} elements, {mismatched} mismatches ({tflm['version']})")
    assert mismatched == 0, (f"{name}: {mismatched}/{total} elements differ from TFLM (models in {tflm['dir']}):\n"
                             + "\n".join(messages))


def test_reference_runs_out_of_process(tflm):
    """The TFLM interpreter (native code) only ever runs in the runner subprocess."""
    assert "tflite_micro" not in sys.modules
    assert tflm["version"].startswith("0.dev")
