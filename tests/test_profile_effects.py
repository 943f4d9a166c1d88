"""Each profile setting changes the bits exactly as specified, on a one-node conv1d model.

Profiles are written as TOML / JSON files and read with ``load_profile_file``.  Every expected
output is computed here by hand in Python ints (accumulators by explicit loops, rounding with
``fractions.Fraction`` or the ``intsim.fixedpoint`` spec), never by running a kernel.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

import intsim
from intsim import fixedpoint as fp
from intsim import modelfile
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.profile import ProfileError, get_profile, load_profile_file


def conv_model(tmp_path, w, bias, mult, shift, scale, x_zp=0, y_zp=0):
    """conv1d (no padding, stride 1) with int8 weights w [C_out, C_in, K] saved as a model file."""
    w = np.asarray(w, np.int8)
    c_out, c_in, _ = w.shape
    consts = {"w": w, "b": np.asarray(bias, np.int32), "m": np.asarray(mult, np.int32),
              "s": np.asarray(shift, np.int32), "f": np.asarray(scale, np.float32)}
    tensors = {k: TensorSpec(k, str(v.dtype), list(v.shape)) for k, v in consts.items()}
    tensors["x"] = TensorSpec("x", "int8", [1, c_in, None], Quant([1.0], [x_zp]))
    tensors["y"] = TensorSpec("y", "int8", [1, c_out, None], Quant([1.0], [y_zp]))
    graph = Graph(tensors, [Node("conv", "conv1d", ["x", "w", "b", "m", "s", "f"], ["y"])], ["x"], ["y"], consts)
    path = tmp_path / "conv.npz"
    modelfile.save(graph, path)
    return path


def write_profile(tmp_path, spec: dict, kind: str):
    """Write ``spec`` (flat fields, optional per-path tables) as .toml or .json; return the path."""
    path = tmp_path / f"profile.{kind}"
    if kind == "json":
        path.write_text(json.dumps(spec))
    else:
        lines = []
        for key, value in spec.items():
            if not isinstance(value, dict):
                lines.append(f"{key} = {json.dumps(value)}")
        for key, value in spec.items():
            if isinstance(value, dict):
                lines.append(f"[{key}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        path.write_text("\n".join(lines) + "\n")
    return path


def run(model_path, profile_path, x):
    """Channel-0 outputs (parallel and serial kernels must agree) and the node's counts."""
    spec = load_profile_file(profile_path)
    outs = []
    for parallel in (True, False):
        model = intsim.load(model_path, profile=spec, parallel=parallel)
        outs.append(model.run(x[None])["y"][0, 0])  # batch 0, the one output channel
    np.testing.assert_array_equal(outs[0], outs[1])
    return outs[0].astype(int).tolist(), model.counts["conv"]


def accumulators(x, w, bias, x_zp=0):
    """acc[c][t] = bias[c] + sum_{i,k} w[c][i][k] * (x[i][t+k] - x_zp), in Python ints."""
    w = np.asarray(w).tolist()
    x = np.asarray(x).tolist()
    k_len, t_len = len(w[0][0]), len(x[0])
    return [[int(bias[c]) + sum(w[c][i][k] * (x[i][t + k] - x_zp) for i in range(len(x)) for k in range(k_len))
             for t in range(t_len - k_len + 1)] for c in range(len(w))]


def clamp8(v):
    return max(-128, min(127, v))


# --- accumulator width: wrap vs saturate ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["toml", "json"])
def test_narrow_accumulator_wraps_or_saturates(tmp_path, kind):
    # 2 channels x 17 taps of 127 * 127 = 548,386 > 2^19 - 1: a 20-bit accumulator overflows on
    # windows of all-127 (positive) and all -128 (negative) inputs; random windows do not.
    rng = np.random.default_rng(0)
    k = 17
    w = np.full((1, 2, k), 127)
    x = np.concatenate([np.full((2, 30), 127), np.full((2, 30), -128), rng.integers(-30, 31, (2, 40))], axis=1).astype(np.int8)
    bias = [-700]
    m, sh = fp.quantize_multiplier(2.0**-13)
    assert (m, sh) == (2**30, -12)
    path = conv_model(tmp_path, w, bias, [m], [sh], [2.0**-13])
    acc = accumulators(x, w, bias)[0]
    lo, hi = -(2**19), 2**19 - 1
    overflowing = [not lo <= a <= hi for a in acc]
    assert sum(a > hi for a in acc) >= 10 and sum(a < lo for a in acc) >= 10 and not all(overflowing)

    results = {}
    for mode in ("wrap", "saturate"):
        profile = write_profile(tmp_path, {"name": f"acc20{mode}", "base": "tflm", "int8": {"acc_bits": 20, "acc_overflow": mode}}, kind)
        got, counts = run(path, profile, x)
        # by hand: the register is the exact sum wrapped (two's complement) or clamped to 20 bits
        register = [fp.wrap(a, 20) if mode == "wrap" else fp.saturate(a, 20) for a in acc]
        assert register == [fp.fit_accumulator(a, 20, mode == "saturate")[0] for a in acc]
        expected = [clamp8(fp.mbqm_double(r, m, sh)) for r in register]
        assert got == expected
        assert counts.acc_overflows == sum(overflowing)
        results[mode] = got
    for a, o, wv, sv in zip(acc, overflowing, results["wrap"], results["saturate"]):
        if o:  # saturation pins to the rail: (2^19 - 1) / 2^13 -> 64, -2^19 / 2^13 -> -64; wrapping flips sign
            assert sv == (64 if a > 0 else -64) and wv != sv and (wv < 0) == (a > 0)
        else:
            assert wv == sv
    # the default 32-bit register holds every sum: no overflow, exact requantization
    got, counts = run(path, write_profile(tmp_path, {"base": "tflm"}, kind), x)
    assert got == [clamp8(fp.mbqm_double(a, m, sh)) for a in acc] and counts.acc_overflows == 0


# --- multiplier width -----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [31, 15, 8])
def test_multiplier_width_uses_the_reduced_multiplier(tmp_path, bits):
    x = np.arange(-128, 128, dtype=np.int8)[None]  # identity conv: acc = x - zp, every code once
    real = 0.7937
    m, sh = fp.quantize_multiplier(real)
    path = conv_model(tmp_path, [[[1]]], [0], [m], [sh], [real], x_zp=-5, y_zp=3)
    got, _ = run(path, write_profile(tmp_path, {"base": "single", "mult_bits": bits}, "toml"), x)
    reduced = fp.reduce_multiplier(m, bits)
    assert reduced == (m if bits == 31 else (m + (1 << (30 - bits))) >> (31 - bits))  # ties up, no saturation here
    # by hand: round(acc * M_b / 2^(bits - shift)), ties up, in exact integers
    expected = []
    for v in x[0].tolist():
        acc = v + 5
        q, r = divmod(acc * reduced, 1 << (bits - sh))
        expected.append(clamp8(q + (1 if 2 * r >= (1 << (bits - sh)) else 0) + 3))
    assert got == expected
    assert got == [clamp8(fp.mbqm_single(v + 5, reduced, sh, bits, fp.ROUND_HALF_UP) + 3) for v in x[0].tolist()]
    full = [clamp8(fp.mbqm_single(v + 5, m, sh, 31, fp.ROUND_HALF_UP) + 3) for v in x[0].tolist()]
    assert (got != full) == (bits == 8)  # 8 bits are coarse enough to move codes; 15 are not, here


# --- rounding rules ---------------------------------------------------------------------------------

#: weight 2, multiplier 2^30, shift -3: the exact requantized value of input code x is x / 8, and
#: SRDHM's product 2x * 2^30 / 2^31 = x is exact, so only the final division rounds.
TIE_M, TIE_SHIFT = 2**30, -3


def hand_round(value: Fraction, rule: str) -> int:
    floor = value.numerator // value.denominator
    frac = value - floor
    if rule == "floor":
        return floor
    if frac != Fraction(1, 2):
        return floor + (1 if frac > Fraction(1, 2) else 0)
    return {"half_up": floor + 1, "half_away": floor + 1 if value > 0 else floor,
            "half_even": floor + (floor % 2)}[rule]


@pytest.fixture
def tie_model(tmp_path):
    return conv_model(tmp_path, [[[2]]], [0], [TIE_M], [TIE_SHIFT], [2.0**-3])


CODES = np.arange(-128, 128, dtype=np.int8)[None]
TIES = [v for v in range(-128, 128) if v % 8 == 4]


@pytest.mark.parametrize("rule", ["double", "half_up", "half_even", "half_away", "floor"])
def test_rounding_rule_by_hand(tmp_path, tie_model, rule):
    got, _ = run(tie_model, write_profile(tmp_path, {"base": "tflm", "int8": {"rounding": rule}}, "toml"), CODES)
    if rule == "double":  # SRDHM exact (x), then RDBP: divide by 8, ties away from zero
        expected = [hand_round(Fraction(v, 8), "half_away") for v in range(-128, 128)]
        assert expected == [fp.mbqm_double(2 * v, TIE_M, TIE_SHIFT) for v in range(-128, 128)]
    else:
        expected = [hand_round(Fraction(v, 8), rule) for v in range(-128, 128)]
    assert got == expected


def test_rounding_rules_differ_exactly_on_ties(tmp_path, tie_model):
    out = {}
    for rule in ("double", "half_up", "half_even", "half_away", "floor"):
        out[rule], _ = run(tie_model, write_profile(tmp_path, {"base": "tflm", "int8": {"rounding": rule}}, "json"), CODES)
    codes = list(range(-128, 128))

    def differ(a, b):
        return [v for v, p, q in zip(codes, out[a], out[b]) if p != q]

    assert differ("double", "half_up") == [v for v in TIES if v < 0]  # ties away vs ties up: negative ties
    assert differ("double", "half_away") == []  # with an exact SRDHM, double rounding is ties-away
    assert differ("half_even", "half_away") == [v for v in TIES if hand_round(Fraction(v, 8), "half_away") % 2]
    assert differ("floor", "half_up") == [v for v in codes if v % 8 >= 4]  # remainder >= 1/2


def test_double_rounding_of_an_inexact_srdhm(tmp_path):
    # weight 1: SRDHM(x, 2^30) = x / 2 rounds for odd x, then RDBP rounds again (gemmlowp double
    # rounding): x = 3 -> SRDHM 2 -> RDBP(2, 2) = 1, while single rounding gives round(3/8) = 0.
    path = conv_model(tmp_path, [[[1]]], [0], [2**30], [-2], [2.0**-3])
    got, _ = run(path, write_profile(tmp_path, {"base": "tflm"}, "toml"), CODES)
    single, _ = run(path, write_profile(tmp_path, {"base": "single"}, "toml"), CODES)
    by_hand = [hand_round(Fraction(hand_round(Fraction(v, 2), "half_up"), 4), "half_away") for v in range(-128, 128)]
    assert got == by_hand
    assert single == [hand_round(Fraction(v, 8), "half_up") for v in range(-128, 128)]
    assert got[3 + 128] == 1 and single[3 + 128] == 0


# --- float32 (ONNX) ---------------------------------------------------------------------------------

def f32(value) -> Fraction:
    """The exact value of the float32 nearest to ``value`` (round to nearest even)."""
    return Fraction(float(np.float32(value)))


def onnx_by_hand(acc: int, scale: float) -> int:
    # float32(acc) * float32(scale) is exact in a double (24 + 24 bits), then rounded to float32,
    # then rounded half to even (Python's round on a Fraction).
    product = f32(acc) * f32(scale)
    return round(f32(float(product)))


@pytest.mark.parametrize("scale", [0.125, 0.1, 0.3737])
def test_float32_requantization(tmp_path, scale):
    path = conv_model(tmp_path, [[[2]]], [0], [0], [0], [scale], y_zp=-1)
    got, _ = run(path, write_profile(tmp_path, {"base": "onnx"}, "toml"), CODES)
    assert got == [clamp8(onnx_by_hand(2 * v, scale) - 1) for v in range(-128, 128)]
    if scale == 0.125:  # exact products 2x/8 = x/4: ties at x = 2 mod 4 go to even
        assert [got[v + 128] + 1 for v in (-6, -2, 2, 6, 10)] == [-2, 0, 0, 2, 2]


def test_float32_rounds_the_accumulator_to_float32_first(tmp_path):
    # acc = 2^24 + 1 is not a float32: float32(acc) = 2^24, so acc * 2.5 * 2^-24 = 2.5 (exactly a
    # tie -> 2), where exact arithmetic gives 2.50000015 -> 3.
    scale = 2.5 * 2.0**-24
    path = conv_model(tmp_path, [[[1]]], [2**24 + 1], [0], [0], [scale])
    got, _ = run(path, write_profile(tmp_path, {"base": "onnx"}, "json"), np.zeros((1, 3), np.int8))
    assert got == [2, 2, 2] == [onnx_by_hand(2**24 + 1, scale)] * 3
    assert round(Fraction(2**24 + 1) * Fraction(scale)) == 3


# --- profile files --------------------------------------------------------------------------------

def test_profile_file_forms(tmp_path):
    spec = {"name": "dsp24", "base": "single", "acc_bits": 24, "acc_overflow": "saturate",
            "int16": {"acc_bits": 40, "mult_bits": 15}}
    toml = load_profile_file(write_profile(tmp_path, spec, "toml"))
    assert toml == spec == load_profile_file(write_profile(tmp_path, spec, "json"))
    p = get_profile(toml)
    assert (p.int8.acc_bits, p.int8.acc_overflow, p.int16.acc_bits, p.int16.rounding) == (24, "saturate", 40, "half_up")


@pytest.mark.parametrize("name, text, message", [
    ("p.toml", "acc_bits = ", "not valid TOML"),
    ("p.toml", "acc_bits = 99\n", "acc_bits"),
    ("p.toml", "rounding = 'stochastic'\n", "rounding must be one of"),
    ("p.toml", "acc_bits = 24.0\n", "acc_bits"),
    ("p.json", '{"acc_bits": NaN}', "not valid JSON"),
    ("p.json", '{"acc_bits": 24, "acc_bits": 32}', "duplicate key"),
    ("p.json", "[1, 2]", "must hold an object"),
    ("p.json", '{"rounding": ["a"]}', "profile"),
    ("p.json", b"\xff\xfe", "not UTF-8"),
    ("missing.toml", None, "does not exist"),
])
def test_bad_profile_files(tmp_path, name, text, message):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(ProfileError, match=message) as info:
        load_profile_file(path)
    assert str(path) in str(info.value)
