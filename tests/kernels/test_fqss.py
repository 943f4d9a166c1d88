"""FQSS splitter and combiner kernels == float32 transcriptions of FQSS / integer references; ops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.executor import Model
from intsim.fixedpoint import quantize_multiplier, reduce_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import fqss as kq
from intsim.kernels.fixedpoint import requant_params
from intsim.ops import OpError
from intsim.ops.fqss import to_audio
from tests.reference import fqss as ref
from tests.util import TEST_PATHS

F32 = np.float32


def split_float(x, normalize=True, n_splitter=2, n_bits=8, parallel=False):
    x3 = np.ascontiguousarray(x if x.ndim == 3 else x[:, None, :], dtype=np.float32)
    out = np.empty((x3.shape[0], n_splitter * x3.shape[1], x3.shape[2]), np.int8)
    delta, _ = (kq.split_float_parallel if parallel else kq.split_float)(x3, normalize, n_splitter, n_bits, out)
    return out, F32(delta)


def split_pcm(u, parallel=False):
    out = np.empty((u.shape[0], 2 * u.shape[1], u.shape[2]), np.int8)
    peak = (kq.split_pcm_parallel if parallel else kq.split_pcm)(np.ascontiguousarray(u), out)
    return out, peak


def edge_values():
    """±1, 0, -0, tiny and subnormal values, and neighbours of every multiple of 2^-15 near ±1."""
    base = [1.0, -1.0, 0.0, -0.0, 0.5, -0.5, 1e-30, -1e-30, 1e-45, -1e-45, 2.0**-15, -(2.0**-15), 2.0**-7, -(2.0**-7)]
    grid = np.concatenate([np.arange(-32768, -32600), np.arange(-200, 200), np.arange(32600, 32769)]) / 32768.0
    grid = grid.astype(F32)
    neighbours = np.concatenate([grid, np.nextafter(grid, F32(2)), np.nextafter(grid, F32(-2))])
    v = np.concatenate([np.array(base, F32), neighbours]).astype(F32)
    return np.clip(v, F32(-1), F32(1))


def random_audio(n=100_000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n).astype(F32)
    x[:3] = [1.0, -1.0, 0.0]
    return x


def hi_lo(u):
    """The signed hi/lo bytes of 16-bit values: (u >> 8, (u & 255) - 128) stacked on axis 1."""
    u = np.asarray(u, dtype=np.int64)
    return np.concatenate([u >> 8, (u & 255) - 128], axis=1)


# --- splitter, float32 path --------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("n_splitter, n_bits", [(2, 8), (3, 8), (2, 4)])
def test_split_float_equals_float32_transcription(normalize, n_splitter, n_bits):
    edges = edge_values()
    cases = [
        edges.reshape(1, 1, -1),
        (edges * F32(0.37)).reshape(1, 1, -1),  # peak 0.37: the normalization rounds
        random_audio().reshape(2, 2, -1),
        (np.random.default_rng(1).standard_normal((3, 1, 4000)) * 0.05).astype(F32),
        np.array([[[3.0e-20, -1.7e-21, 1e-45, 0.0]]], F32),  # tiny peak: subnormal steps
    ]
    for x in cases:
        want_stages, want_codes, want_delta = ref.preprocess_float32(x, n_splitter, n_bits, normalize)
        got, delta = split_float(x, normalize, n_splitter, n_bits)
        np.testing.assert_array_equal(got, want_codes)
        assert delta == want_delta
        # what FQSS hands the encoder is exactly codes * delta
        np.testing.assert_array_equal(got.astype(F32) * delta, want_stages)
        got_p, _ = split_float(x, normalize, n_splitter, n_bits, parallel=True)
        np.testing.assert_array_equal(got_p, got)


@pytest.mark.parametrize("normalize", [True, False])
def test_split_float_equals_torch(normalize):
    pytest.importorskip("torch")
    for x in (edge_values().reshape(1, 1, -1), random_audio(seed=2).reshape(1, 1, -1),
              (random_audio(seed=3) * F32(0.123)).reshape(4, 1, -1)):
        _, want_codes, want_delta = ref.preprocess_torch(x, 2, 8, normalize)
        stages, _, _ = ref.preprocess_float32(x, 2, 8, normalize)
        torch_stages, _, _ = ref.preprocess_torch(x, 2, 8, normalize)
        np.testing.assert_array_equal(stages, torch_stages)
        got, delta = split_float(x, normalize)
        np.testing.assert_array_equal(got, want_codes)
        assert delta == want_delta


def test_split_float_is_the_hi_lo_split_of_floor_32768x():
    """normalize, n_splitter 2: codes = signed bytes of u = min(32767, floor(32768 * fl(x / peak))).

    Exact on random audio (SPEC §2.5).  Not on every float: for v within a float32 ulp below a
    nonzero multiple of 2^-15 with |v| < 2^-8, the stage-2 residual needs 25 bits, float32 rounds it
    up to the multiple, and the float path (the spec we follow) gives u + 1.
    """
    for x in (random_audio(seed=4), random_audio(seed=5) * F32(0.61), edge_values()):
        x = x.reshape(1, 1, -1)
        v = x / np.abs(x).max()  # float32 division, as FQSS
        u = np.minimum(np.floor(v.astype(np.float64) * 32768), 32767).astype(np.int64)
        got, delta = split_float(x)
        assert delta == F32(1 / 128)
        w = got[:, :1].astype(np.int64) * 256 + got[:, 1:] + 128
        off = w != u
        if x.size == 100_000:
            assert not off.any()
        assert ((w - u)[off] == 1).all()
        assert (np.abs(v[off]) < 2.0**-8).all() and (v[off] != 0).all()


def test_split_float_silence_and_2d_input():
    x = np.zeros((2, 5), F32)
    for normalize, want_delta in ((True, F32(1 / 128)), (False, F32(0))):
        got, delta = split_float(x, normalize)
        assert (got[:, 0] == 0).all() and (got[:, 1] == -128).all() and delta == want_delta
    # a peak too small for a normal delta is silence in the dynamic mode (FQSS would make inf/NaN)
    got, delta = split_float(np.full((1, 1, 3), 1e-38, F32), False)
    assert delta == 0 and (got[:, 0] == 0).all()


# --- splitter, int16 PCM path ------------------------------------------------------------------

def test_split_pcm_all_int16_values_equal_float_path():
    u = np.arange(-32768, 32768, dtype=np.int16)
    perm = np.random.default_rng(0).permutation(u.size)
    u = u[perm].reshape(2, 2, -1)  # peak 32768 in the tensor: max |x| is exactly 1.0
    got, peak = split_pcm(u)
    assert peak == 32768
    np.testing.assert_array_equal(got, hi_lo(u))
    x = u.astype(F32) / F32(32768)
    for normalize in (True, False):
        _, want, delta = ref.preprocess_float32(x, 2, 8, normalize)
        np.testing.assert_array_equal(got, want)
        assert delta == F32(1 / 128)
    np.testing.assert_array_equal(split_pcm(u, parallel=True)[0], got)
    # x = +1.0 (u = +32768, not an int16) saturates to 32767 = (127, 127) in the float path too
    plus_one, _ = split_float(np.array([[[1.0, -1.0]]], F32))
    np.testing.assert_array_equal(plus_one[0, :, 0], [127, 127])


def test_split_pcm_equals_reference_for_any_peak():
    rng = np.random.default_rng(8)
    for peak in [0, 1, 2, 255, 1024, 1025, 30000, 32767, 32768]:
        hi = min(peak, 32767)
        u = rng.integers(-min(peak, 32768), hi + 1, size=(2, 1, 3000)).astype(np.int16)
        if peak:
            u[0, 0, 0] = -peak if peak == 32768 else peak
        want, want_peak = ref.split_pcm_ref(u)
        got, got_peak = split_pcm(u)
        np.testing.assert_array_equal(got, want)
        assert got_peak == want_peak
        np.testing.assert_array_equal(split_pcm(u, parallel=True)[0], got)


def test_split_pcm_versus_float_path_for_other_peaks():
    """Dynamic mode: equal; normalize: differs only where fl(u/P) rounds across a multiple of 2^-15."""
    differ = total = 0
    for peak in [3, 700, 1024, 1025, 4097, 20000, 32767]:
        u = np.arange(-peak, peak + 1, dtype=np.int16).reshape(1, 1, -1)  # exhaustive for this peak
        got, _ = split_pcm(u)
        x = u.astype(F32) / F32(32768)
        _, dyn, delta = ref.preprocess_float32(x, 2, 8, normalize=False)
        np.testing.assert_array_equal(got, dyn)
        assert delta == F32(peak / 2**22)
        _, nrm, _ = ref.preprocess_float32(x, 2, 8, normalize=True)
        w_int = got[:, 0].astype(np.int64) * 256 + got[:, 1] + 128
        w_flt = nrm[:, 0] * 256 + nrm[:, 1] + 128
        assert np.abs(w_int - w_flt).max() <= 1
        if peak <= 1024:
            np.testing.assert_array_equal(w_int, w_flt)
        differ += int((w_int != w_flt).sum())
        total += u.size
    assert differ < total * 1e-3


# --- combiner kernels --------------------------------------------------------------------------

def combiner_rq(path, s0, s1, frac_bits, act=(-(2**31), 2**31 - 1)):
    r = s0 / (s1 * 2.0 ** -(8 + frac_bits))
    mult, shift = quantize_multiplier(r)
    mult = reduce_multiplier(mult, path.mult_bits)
    return requant_params(np.array([mult]), np.array([shift]), np.array([r], F32), path.rounding_code, path.mult_bits,
                          path.acc_bits, path.acc_saturating, 0, *act)


def run_combine(a0, z0, a1, z1, frac_bits, rq, dtype=np.int32, parallel=False):
    out = np.empty(a0.shape, dtype)
    sat = np.zeros(a0.shape[0], np.int64)
    (kq.combine_int_parallel if parallel else kq.combine_int)(a0, z0, a1, z1, frac_bits, rq, out, sat)
    return out, int(sat.sum())


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(sorted(TEST_PATHS)), frac_bits=st.integers(0, 6), z0=st.integers(-128, 127),
       z1=st.integers(-128, 127), s0=st.floats(1e-3, 0.1), ratio=st.floats(0.3, 3.0), wide=st.booleans())
def test_combine_int_equals_reference(path, frac_bits, z0, z1, s0, ratio, wide):
    rng = np.random.default_rng(frac_bits + (z0 + 128) * 7 + (z1 + 128) * 3000)
    if wide:  # zero-point-free overlap-add sums (int16, zero point 0, |d| <= 510)
        a0 = rng.integers(-510, 511, (3, 50)).astype(np.int16)
        a1 = rng.integers(-510, 511, (3, 50)).astype(np.int16)
        z0 = z1 = 0
    else:
        a0 = rng.integers(-128, 128, (3, 50)).astype(np.int8)
        a1 = rng.integers(-128, 128, (3, 50)).astype(np.int8)
    s1 = s0 * 256 / 255 * ratio
    rq = combiner_rq(TEST_PATHS[path], s0, s1, frac_bits)
    want, want_sat = ref.combine_ref(a0, z0, a1, z1, frac_bits, rq)
    got, sat = run_combine(a0, z0, a1, z1, frac_bits, rq)
    np.testing.assert_array_equal(got, want)
    assert sat == want_sat == 0
    np.testing.assert_array_equal(run_combine(a0, z0, a1, z1, frac_bits, rq, parallel=True)[0], want)
    if TEST_PATHS[path].mult_bits == 31 and TEST_PATHS[path].rounding not in ("floor", "float32"):
        # one rounding of the y0 branch: |s_out*code - (s0*d0 + s1/256*d1)| <= s_out/2, plus the
        # Q0.31 multiplier's relative error (<= 2^-31) on the y0 term r*d0, r = s0/s_out
        s_out = s1 * 2.0 ** -(8 + frac_bits)
        y0_codes = s0 / s_out * np.abs(a0.astype(np.float64) - z0)
        exact = s0 * (a0.astype(np.float64) - z0) + s1 / 256 * (a1.astype(np.float64) - z1)
        assert np.all(np.abs(got * s_out - exact) <= s_out * (0.5 + y0_codes * 2.0**-30 + 1e-9))


def test_combine_int_exact_when_ratio_is_integer_and_saturates():
    path = TEST_PATHS["tflm8"]
    a0 = np.arange(-128, 128, dtype=np.int8).reshape(1, -1)
    a1 = a0[:, ::-1].copy()
    for frac_bits in (0, 3):
        rq = combiner_rq(path, 0.01, 0.02, frac_bits)  # r = 2^(8+F) * 0.5: an integer
        got, _ = run_combine(a0, 5, a1, -3, frac_bits, rq)
        want = (a0.astype(np.int64) - 5) * 2 ** (7 + frac_bits) + (a1.astype(np.int64) + 3) * 2**frac_bits
        np.testing.assert_array_equal(got, want)
    rq = combiner_rq(path, 0.01, 0.005, 0, act=(-32768, 32767))  # r = 512: int16 saturates
    got, sat = run_combine(a0, 0, a1, 0, 0, rq, dtype=np.int16)
    exact = a0.astype(np.int64) * 512 + a1
    want = np.clip(exact, -32768, 32767)
    np.testing.assert_array_equal(got, want)
    assert sat == int((exact != want).sum()) > 0


def test_combine_float_equals_fqss_postprocess():
    rng = np.random.default_rng(11)
    a0 = rng.integers(-128, 128, (2, 3, 500)).astype(np.int8).reshape(6, 500)
    a1 = rng.integers(-128, 128, (2, 3, 500)).astype(np.int8).reshape(6, 500)
    s0, s1 = 0.0123, 0.0456
    out = np.empty(a0.shape, F32)
    kq.combine_float(a0, 7, s0, a1, -2, s1, 8, out)
    want = ref.combine_float_ref(a0, 7, s0, a1, -2, s1)
    np.testing.assert_array_equal(out, want)
    out_p = np.empty_like(out)
    kq.combine_float_parallel(a0, 7, s0, a1, -2, s1, 8, out_p)
    np.testing.assert_array_equal(out_p, out)
    torch = pytest.importorskip("torch")
    x = torch.stack([torch.from_numpy(F32(s0) * (a0.astype(np.int64) - 7).astype(F32)),
                     torch.from_numpy(F32(s1) * (a1.astype(np.int64) + 2).astype(F32))])
    delta = 1 / 2 ** (8 - 1)
    y = x[0] + x[1] * (0.5 * delta)  # FQSS postprocess, n_combiner 2
    np.testing.assert_array_equal(out, y.numpy())


# --- op adapters -------------------------------------------------------------------------------

def one_node(op, inputs, outputs, attrs, constants=None, profile="tflm", node_inputs=None):
    tensors = {s.name: s for s in [*inputs, *outputs]}
    consts = constants or {}
    node = Node("n", op, node_inputs or [s.name for s in inputs], [s.name for s in outputs], attrs)
    names = [s.name for s in inputs if s.name not in consts]
    return Model(Graph(tensors, [node], names, [s.name for s in outputs], consts), profile=profile)


CODES = TensorSpec("codes", "int8", [None, None, None], Quant([1 / 128], [0]))
DELTA = TensorSpec("delta", "float32", [1])


def test_splitter_op_normalize_float_and_pcm():
    x = random_audio(8000, seed=12).reshape(1, -1) * F32(0.3)
    m = one_node("splitter", [TensorSpec("x", "float32", [None, None])], [CODES, DELTA], {})
    res = m.run(x)
    _, want, _ = ref.preprocess_float32(x, 2, 8, True)
    np.testing.assert_array_equal(res["codes"], want)
    assert res["delta"].tolist() == [1 / 128]
    u = (np.random.default_rng(13).integers(-32768, 32768, (2, 1, 500))).astype(np.int16)
    m = one_node("splitter", [TensorSpec("u", "int16", [None, 1, None])], [CODES], {"normalize": True})
    np.testing.assert_array_equal(m.run(u)["codes"], ref.split_pcm_ref(u)[0])


def test_splitter_op_dynamic_delta():
    x = (np.random.default_rng(14).standard_normal((2, 2, 300)) * 3).astype(F32)
    codes = TensorSpec("codes", "int8", [None, 4, None])
    m = one_node("splitter", [TensorSpec("x", "float32", [None, 2, None])], [codes, DELTA], {"normalize": False})
    res = m.run(x)
    _, want, delta = ref.preprocess_float32(x, 2, 8, False)
    np.testing.assert_array_equal(res["codes"], want)
    assert res["delta"].dtype == np.float32 and res["delta"][0] == delta
    u = np.array([[[-5, 3, 1000, -1000]]], np.int16)
    codes = TensorSpec("codes", "int8", [1, 2, 4])
    m = one_node("splitter", [TensorSpec("u", "int16", [1, 1, 4])], [codes, DELTA], {"normalize": False})
    res = m.run(u)
    assert res["delta"][0] == F32(1000 / 2**22)
    np.testing.assert_array_equal(res["codes"], ref.split_pcm_ref(u)[0])


@pytest.mark.parametrize("attrs, outputs, message", [
    ({"n_splitter": 1}, [CODES], "'n_splitter' = 1 is not a split: FQSS feeds the raw float audio"),
    ({"n_splitter": 0}, [CODES], "'n_splitter' = 0 must be >= 2"),
    ({"n_bits": 9}, [CODES], "'n_bits' = 9 must be in \\[2, 8\\]"),
    ({"normalize": False}, [CODES], "needs two outputs \\[codes, delta\\]"),
    ({"normalize": 1}, [CODES], "'normalize' must be bool"),
    ({}, [TensorSpec("codes", "int8", [None, None, None], Quant([0.01], [0]))], "must have scale exactly 0.0078125"),
    ({}, [TensorSpec("codes", "int8", [None, 3, None], Quant([1 / 128], [0]))],
     r"declared with shape \[None, 3, None\], expected \[None, 2, None\]"),
    ({}, [CODES, TensorSpec("delta", "float32", [2])], "\\(delta\\) must be float32 \\[1\\]"),
])
def test_splitter_op_errors(attrs, outputs, message):
    with pytest.raises(OpError, match=message) as e:
        one_node("splitter", [TensorSpec("x", "float32", [None, 1, None])], outputs, attrs)
    assert "node 'n' (splitter)" in str(e.value)


def test_splitter_op_run_errors():
    with pytest.raises(OpError, match="needs n_splitter 2 and n_bits 8, got 3 and 8"):
        one_node("splitter", [TensorSpec("u", "int16", [None, 1, None])], [CODES], {"n_splitter": 3})
    m = one_node("splitter", [TensorSpec("x", "float32", [None, 1, None])], [CODES], {})
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.run(np.array([[[0.1, np.nan]]], F32))
    with pytest.raises(OpError, match="contains NaN or infinite samples"):
        m.prepared[0].run([np.array([[[0.1, np.inf]]], F32)], None)


def combiner_model(s0=0.01, s1=0.012, z0=3, z1=-4, frac_bits=2, out_dtype="int32", profile="tflm", y0_dtype="int8",
                   scale=None, out_scale=None):
    y0 = TensorSpec("y0", y0_dtype, [None, 2, None], Quant([s0], [z0]))
    y1 = TensorSpec("y1", "int8", [None, 2, None], Quant([s1], [z1]))
    s_out = s1 * 2.0 ** -(8 + frac_bits) if out_scale is None else out_scale
    r = s0 / s_out
    mult, shift = quantize_multiplier(r)
    consts = {"m": np.array([mult], np.int32), "s": np.array([shift], np.int32),
              "f": np.array([r if scale is None else scale], F32)}
    specs = [TensorSpec("m", "int32", [1]), TensorSpec("s", "int32", [1]), TensorSpec("f", "float32", [1])]
    y = TensorSpec("y", out_dtype, [None, 2, None], Quant([s_out], [0]))
    return one_node("combiner", [y0, y1, *specs], [y], {}, consts, profile), s_out


def test_combiner_op_integer_and_to_audio():
    rng = np.random.default_rng(15)
    a0 = rng.integers(-128, 128, (1, 2, 400)).astype(np.int8)
    a1 = rng.integers(-128, 128, (1, 2, 400)).astype(np.int8)
    for profile in ("tflm", "single", "onnx"):
        m, s_out = combiner_model(profile=profile)
        y = m.run([a0, a1])["y"]
        rq = combiner_rq(m.profile.int8, 0.01, 0.012, 2)
        want, _ = ref.combine_ref(a0.reshape(2, -1), 3, a1.reshape(2, -1), -4, 2, rq)
        np.testing.assert_array_equal(y.reshape(2, -1), want)
        audio = to_audio(y, s_out)
        exact = 0.01 * (a0.astype(np.float64) - 3) + 0.012 / 256 * (a1.astype(np.float64) + 4)
        assert audio.dtype == np.float32
        assert np.abs(audio - exact).max() <= s_out * 0.75
    m, _ = combiner_model(out_dtype="int16", frac_bits=0)
    assert m.run([a0, a1])["y"].dtype == np.int16


def test_combiner_op_float_output():
    y0 = TensorSpec("y0", "int8", [None, None], Quant([0.01], [3]))
    y1 = TensorSpec("y1", "int16", [None, None], Quant([0.02], [0]))
    m = one_node("combiner", [y0, y1], [TensorSpec("y", "float32", [None, None])], {})
    a0 = np.arange(-128, 128, dtype=np.int8).reshape(2, -1)
    a1 = np.arange(-512, 512, 4, dtype=np.int16).reshape(2, -1)
    np.testing.assert_array_equal(m.run([a0, a1])["y"], ref.combine_float_ref(a0, 3, 0.01, a1, 0, 0.02))


def test_combiner_op_errors():
    with pytest.raises(OpError, match="must be s1 \\* 2\\^-\\(n_bits \\+ F\\)"):
        combiner_model(out_scale=0.012 / 1000)
    with pytest.raises(OpError, match="must be s1 \\* 2\\^-\\(n_bits \\+ F\\)"):
        combiner_model(out_scale=0.012 * 2.0**-4)  # F = -4
    with pytest.raises(OpError, match="constant 'f' = .* does not match s0 / s_out"):
        combiner_model(scale=1.0)
    with pytest.raises(OpError, match="overflow int32 in the double-rounding requantization"):
        combiner_model(y0_dtype="int16", z0=0, frac_bits=9)
    combiner_model(y0_dtype="int16", z0=0, frac_bits=9, profile="single")  # single rounding: fine
    with pytest.raises(OpError, match="gives int16 or int32"):
        combiner_model(out_dtype="int8")
    y0 = TensorSpec("y0", "int8", [None], None)
    y1 = TensorSpec("y1", "int8", [None], Quant([0.1], [0]))
    with pytest.raises(OpError, match="input 'y0' needs per-tensor quantization"):
        one_node("combiner", [y0, y1], [TensorSpec("y", "float32", [None])], {})
    y0 = TensorSpec("y0", "int8", [None, 3], Quant([0.1], [0]))
    y1 = TensorSpec("y1", "int8", [None, 4], Quant([0.1], [0]))
    with pytest.raises(OpError, match="must have the same shape"):
        one_node("combiner", [y0, y1], [TensorSpec("y", "float32", [None, 3])], {})
    y1 = TensorSpec("y1", "int8", [None, None], Quant([0.1], [0]))
    y0 = TensorSpec("y0", "int8", [None, None], Quant([0.1], [0]))
    m = one_node("combiner", [y0, y1], [TensorSpec("y", "float32", [None, None])], {})
    with pytest.raises(OpError, match="inputs have shapes \\[1, 3\\] and \\[1, 4\\]"):
        m.run([np.zeros((1, 3), np.int8), np.zeros((1, 4), np.int8)])
