"""Framing and overlap-add kernels == naive references and DPTNet's own code; op adapters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intsim.executor import Model
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels import framing as kf
from intsim.kernels.fixedpoint import requant_params
from intsim.ops import OpError
from intsim.profile import PROFILES
from tests.reference import framing as ref
from tests.util import TEST_PATHS, random_requant


def codes(rng, shape, dtype="int8"):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


def run_frame(x, chunk, hop, left, right, code, parallel=False):
    rows = x.reshape(-1, x.shape[-1])
    n = kf.frame_count(x.shape[-1], chunk, hop, left, right)
    out = np.empty((rows.shape[0], chunk, n), dtype=x.dtype)
    (kf.frame_parallel if parallel else kf.frame)(rows, chunk, hop, left, x.dtype.type(code), out)
    return out.reshape(*x.shape[:-1], chunk, n)


def run_ola_sum(x, zp, hop, frames_last, crop, length, dtype=np.int32, parallel=False):
    rows = x.reshape(-1, *x.shape[-2:])
    out = np.empty((rows.shape[0], length), dtype=dtype)
    sat = np.zeros(rows.shape[0], np.int64)
    info = np.iinfo(dtype)
    (kf.overlap_add_sum_parallel if parallel else kf.overlap_add_sum)(
        rows, zp, hop, frames_last, crop, int(info.min), int(info.max), out, sat)
    return out.reshape(*x.shape[:-2], length), int(sat.sum())


def run_ola_requant(x, zp, hop, frames_last, crop, length, rq, dtype=np.int8, parallel=False):
    rows = x.reshape(-1, *x.shape[-2:])
    out = np.empty((rows.shape[0], length), dtype=dtype)
    ovf = np.zeros(rows.shape[0], np.int64)
    sat = np.zeros(rows.shape[0], np.int64)
    (kf.overlap_add_requant_parallel if parallel else kf.overlap_add_requant)(
        rows, zp, hop, frames_last, crop, rq, out, ovf, sat)
    return out.reshape(*x.shape[:-2], length), int(ovf.sum()), int(sat.sum())


# --- frame kernel ----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), t=st.integers(1, 40), chunk=st.integers(1, 12),
       hop=st.integers(1, 12), left=st.integers(0, 12), right=st.integers(0, 12),
       dtype=st.sampled_from(["int8", "int16"]),
       data=st.data())
def test_frame_equals_reference(lead, t, chunk, hop, left, right, dtype, data):
    if kf.frame_count(t, chunk, hop, left, right) < 1:
        return
    rng = np.random.default_rng(t * 131 + chunk)
    x = codes(rng, (*lead, t), dtype)
    info = np.iinfo(dtype)
    code = data.draw(st.integers(int(info.min), int(info.max)))
    want = ref.frame_ref(x, chunk, hop, left, right, code)
    got = run_frame(x, chunk, hop, left, right, code)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(run_frame(x, chunk, hop, left, right, code, parallel=True), want)


@pytest.mark.parametrize("segment", [2, 4, 6, 10, 250])
def test_frame_dptnet_equals_dptnet_split_feature(segment):
    rng = np.random.default_rng(segment)
    hop = segment // 2
    lengths = sorted({1, 2, hop, segment - 1, segment, segment + 1, 3 * segment - hop, 3 * segment - hop + 1,
                      2 * segment + 3, 7999})
    for t in lengths:
        x = codes(rng, (2, 3, t))
        want, rest = ref.dptnet_split_feature(x, segment, 5)
        left, right, gap = kf.dptnet_padding(t, segment)
        assert gap == rest and 1 <= gap <= segment
        got = run_frame(x, segment, hop, left, right, 5, parallel=True)
        np.testing.assert_array_equal(got, want)
        assert got.shape[-1] % 2 == 0
        # DPTNet merge (AddQ of the two half-shifted views) == the zero-point-free overlap-add cropped by hop.
        y = codes(rng, got.shape)
        merged = ref.dptnet_merge_feature(y, rest, zp=-9)
        ola, _ = run_ola_sum(y, -9, hop, False, hop, t)
        np.testing.assert_array_equal(ola, merged)
        # merge(split(x)) = 2*(x - zp): every one of the T samples lies in exactly two chunks.
        ola, _ = run_ola_sum(got, -9, hop, False, hop, t)
        np.testing.assert_array_equal(ola, 2 * (x.astype(np.int64) + 9))


def test_dptnet_full_extra_chunk_when_aligned():
    # (hop + T) % chunk == 0 -> gap == chunk: DPTNet pads a whole extra chunk; we reproduce it.
    assert kf.dptnet_padding(5, 10) == (5, 15, 10)
    assert kf.frame_count(5, 10, 5, 5, 15) == 4


# --- overlap-add kernels ---------------------------------------------------------------------

ola_cases = dict(lead=st.lists(st.integers(1, 3), min_size=1, max_size=2), n_frames=st.integers(1, 9),
                 width=st.integers(1, 9), hop=st.integers(1, 10), frames_last=st.booleans(),
                 zp=st.integers(-128, 127), crop=st.integers(0, 5), extra=st.integers(-5, 5))


@settings(max_examples=80, deadline=None)
@given(**ola_cases)
def test_overlap_add_sum_equals_reference(lead, n_frames, width, hop, frames_last, zp, crop, extra):
    rng = np.random.default_rng(n_frames * 17 + width)
    shape = (*lead, n_frames, width) if frames_last else (*lead, width, n_frames)
    x = codes(rng, shape)
    full = kf.overlap_add_length(n_frames, width, hop)
    length = max(0, full - crop + extra)  # extra > 0: positions past the end, which sum to 0
    want = ref.overlap_add_ref(x, zp, hop, frames_last, crop, length)
    got, sat = run_ola_sum(x, zp, hop, frames_last, crop, length)
    np.testing.assert_array_equal(got, want)
    assert sat == 0
    got_p, _ = run_ola_sum(x, zp, hop, frames_last, crop, length, parallel=True)
    np.testing.assert_array_equal(got_p, want)


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(sorted(TEST_PATHS)), **ola_cases)
def test_overlap_add_requant_equals_reference(path, lead, n_frames, width, hop, frames_last, zp, crop, extra):
    rng = np.random.default_rng(n_frames * 31 + width + hop)
    shape = (*lead, n_frames, width) if frames_last else (*lead, width, n_frames)
    x = codes(rng, shape)
    full = kf.overlap_add_length(n_frames, width, hop)
    length = max(0, full - crop + extra)
    rq = random_requant(rng, 1, TEST_PATHS[path], scale_range=(0.05, 2.0))
    acc = ref.overlap_add_ref(x, zp, hop, frames_last, crop, length)
    want, want_ovf, want_sat = ref.requantize_array(acc, rq, np.int8)
    got, ovf, sat = run_ola_requant(x, zp, hop, frames_last, crop, length, rq)
    np.testing.assert_array_equal(got, want)
    assert (ovf, sat) == (want_ovf, want_sat)
    got_p, ovf_p, sat_p = run_ola_requant(x, zp, hop, frames_last, crop, length, rq, parallel=True)
    np.testing.assert_array_equal(got_p, want)
    assert (ovf_p, sat_p) == (ovf, sat)


def test_overlap_add_sum_saturates_and_counts():
    x = np.full((1, 4, 3), 127, np.int8)  # [M, width 4, n_frames 3], hop 1 -> up to 3 overlaps of 255
    got, sat = run_ola_sum(x, -128, 1, False, 0, 6, dtype=np.int8)
    np.testing.assert_array_equal(got, [[127] * 6])
    assert sat == 6


def test_decoder_overlap_add_equals_torch_fold():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for width, hop in [(2, 1), (20, 10), (16, 8), (5, 3), (4, 6)]:
        x = codes(rng, (2, 3, 11, width))  # [N, S, frames, W]
        got, _ = run_ola_sum(x, 3, hop, True, 0, kf.overlap_add_length(11, width, hop))
        d = torch.from_numpy(x.astype(np.float64) - 3).reshape(6, 11, width).transpose(1, 2)  # [M, W, K]
        full = kf.overlap_add_length(11, width, hop)
        folded = torch.nn.functional.fold(d, output_size=(1, full), kernel_size=(1, width), stride=(1, hop))
        np.testing.assert_array_equal(got.reshape(6, full), folded.reshape(6, full).numpy().astype(np.int64))


# --- op adapters -----------------------------------------------------------------------------

QX = Quant([0.02], [-5])


def one_node(op, inputs, outputs, attrs, constants=None, profile="tflm"):
    tensors = {s.name: s for s in [*inputs, *outputs]}
    consts = constants or {}
    node = Node("n", op, [s.name for s in inputs], [s.name for s in outputs], attrs)
    names = list(dict.fromkeys(s.name for s in inputs if s.name not in consts))
    return Model(Graph(tensors, [node], names, [s.name for s in outputs], consts), profile=profile)


def requant_consts(real, names=("m", "s", "f")):
    mult, shift = quantize_multiplier(real)
    consts = {names[0]: np.array([mult], np.int32), names[1]: np.array([shift], np.int32),
              names[2]: np.array([real], np.float32)}
    specs = [TensorSpec(names[0], "int32", [1]), TensorSpec(names[1], "int32", [1]),
             TensorSpec(names[2], "float32", [1])]
    return specs, consts


def test_frame_and_overlap_add_ops_dptnet_roundtrip():
    rng = np.random.default_rng(3)
    x = codes(rng, (2, 4, 37))
    xs = TensorSpec("x", "int8", [None, 4, None], QX)
    seg = TensorSpec("seg", "int8", [None, 4, 10, None], QX)
    m = one_node("frame", [xs], [seg], {"chunk": 10, "padding": "dptnet"})
    chunks = m.run(x)["seg"]
    want, rest = ref.dptnet_split_feature(x, 10, -5)
    np.testing.assert_array_equal(chunks, want)
    # merge with a reference tensor for T, wide output with zero point 0 and the input's scale
    wide = TensorSpec("y", "int16", [None, 4, None], Quant([0.02], [0]))
    m = one_node("overlap_add", [seg, xs], [wide], {"hop": 5, "padding": "dptnet"})
    y = m.run({"seg": chunks, "x": x})["y"]
    np.testing.assert_array_equal(y, 2 * (x.astype(np.int64) + 5))
    # requantized merge (DPTNet's AddQ of the two views): s_in / s_out = 0.02 / 0.05; no reference
    # input ("") but the attribute 'length'
    specs, consts = requant_consts(0.4)
    q8 = TensorSpec("y", "int8", [None, 4, 37], Quant([0.05], [3]))
    tensors = {s.name: s for s in [seg, *specs, q8]}
    node = Node("n", "overlap_add", ["seg", "", "m", "s", "f"], ["y"], {"hop": 5, "padding": "dptnet", "length": 37})
    m = Model(Graph(tensors, [node], ["seg"], ["y"], consts))
    y8 = m.run(chunks)["y"]
    path = PROFILES["tflm"].int8
    rq = requant_params(consts["m"], consts["s"], consts["f"], path.rounding_code, path.mult_bits, path.acc_bits,
                        path.acc_saturating, 3, -128, 127)
    want8, _, want_sat = ref.requantize_array(ref.dptnet_merge_feature(chunks, rest, -5), rq, np.int8)
    np.testing.assert_array_equal(y8, want8)
    assert m.counts["n"].saturations == want_sat


def test_overlap_add_op_decoder_frames():
    rng = np.random.default_rng(4)
    x = codes(rng, (1, 2, 9, 20))  # [N, S, frames, W], hop W/2
    xs = TensorSpec("x", "int8", [None, 2, None, 20], QX)
    ys = TensorSpec("y", "int16", [None, 2, 100], Quant([0.02], [0]))
    m = one_node("overlap_add", [xs], [ys], {"hop": 10, "layout": "frames"})
    y = m.run(x)["y"]
    np.testing.assert_array_equal(y, ref.overlap_add_ref(x, -5, 10, True, 0, 100))
    # edges: one frame (n_overlap 1), inside: two frames; zero point removed per contribution
    d = x.astype(np.int64) + 5
    np.testing.assert_array_equal(y[..., :10], d[:, :, 0, :10])
    np.testing.assert_array_equal(y[..., 10:20], d[:, :, 0, 10:] + d[:, :, 1, :10])
    np.testing.assert_array_equal(y[..., 90:], d[:, :, 8, 10:])


def test_frame_op_explicit_padding_and_code():
    x = np.arange(10, dtype=np.int16).reshape(1, 10)
    xs = TensorSpec("x", "int16", [1, 10], None)
    ys = TensorSpec("y", "int16", [1, 4, 4], None)
    m = one_node("frame", [xs], [ys], {"chunk": 4, "hop": 3, "padding": [1, 2], "pad_code": -1})
    np.testing.assert_array_equal(m.run(x)["y"], ref.frame_ref(x, 4, 3, 1, 2, -1))


@pytest.mark.parametrize("attrs, message", [
    ({"chunk": 0}, "'chunk' = 0 must be >= 1"),
    ({"chunk": 4, "hop": 0}, "'hop' = 0 must be >= 1"),
    ({"chunk": 5, "padding": "dptnet"}, "needs an even 'chunk' and hop = chunk / 2, got chunk 5"),
    ({"chunk": 4, "hop": 1, "padding": "dptnet"}, "hop = chunk / 2"),
    ({"chunk": 4, "padding": [1]}, "'padding' must be \"dptnet\" or \\[left, right\\]"),
    ({"chunk": 4, "pad_code": 200}, "'pad_code' = 200 is outside the int8 range"),
])
def test_frame_op_errors(attrs, message):
    xs = TensorSpec("x", "int8", [1, 2, None], QX)
    ys = TensorSpec("y", "int8", [1, 2, None, None], QX)
    with pytest.raises(OpError, match=message) as e:
        one_node("frame", [xs], [ys], attrs)
    assert "node 'n' (frame)" in str(e.value)


def test_frame_op_shape_errors():
    xs = TensorSpec("x", "int8", [1, None], QX)
    m = one_node("frame", [xs], [TensorSpec("y", "int8", [1, 8, None], QX)], {"chunk": 8, "hop": 4})
    with pytest.raises(OpError, match="input of 5 samples \\(padding 0\\+0\\) is shorter than 'chunk' = 8 at run time"):
        m.run(np.zeros((1, 5), np.int8))
    with pytest.raises(OpError, match=r"declared with shape \[1, 8, 3\], but the op gives \[1, 8, 2\]"):
        one_node("frame", [TensorSpec("x", "int8", [1, 12], QX)], [TensorSpec("y", "int8", [1, 8, 3], QX)],
                 {"chunk": 8, "hop": 4})
    with pytest.raises(OpError, match="must have the input's dtype and quantization"):
        one_node("frame", [xs], [TensorSpec("y", "int8", [1, 8, None], Quant([0.02], [0]))], {"chunk": 8})


def test_overlap_add_op_errors():
    xs = TensorSpec("x", "int8", [1, 300, None], QX)
    y16 = TensorSpec("y", "int16", [1, None], Quant([0.02], [0]))
    with pytest.raises(OpError, match="int16 cannot hold a sum of up to 300 frames"):
        one_node("overlap_add", [xs], [y16], {"hop": 1})
    ok = TensorSpec("x", "int8", [1, 8, None], QX)
    with pytest.raises(OpError, match="zero-point-free sum has the input's scale 0.02 and zero point 0"):
        one_node("overlap_add", [ok], [TensorSpec("y", "int16", [1, None], QX)], {"hop": 4})
    with pytest.raises(OpError, match="needs one of"):
        one_node("overlap_add", [ok], [TensorSpec("y", "int8", [1, None], Quant([0.02], [0]))], {"hop": 4})
    with pytest.raises(OpError, match="'hop' is missing"):
        one_node("overlap_add", [ok], [y16], {})
    with pytest.raises(OpError, match="needs the output length"):
        one_node("overlap_add", [ok], [y16], {"hop": 4, "padding": "dptnet"})
    with pytest.raises(OpError, match="'layout' = 'rows'"):
        one_node("overlap_add", [ok], [y16], {"hop": 4, "layout": "rows"})
    m = one_node("overlap_add", [ok], [y16], {"hop": 4, "padding": "dptnet", "length": 37})
    with pytest.raises(OpError, match=r"5 chunks do not match DPTNet segmentation of 37 samples \(chunk 8 gives 12\) "
                                      "at run time"):
        m.run(np.zeros((1, 8, 5), np.int8))
    m = one_node("overlap_add", [TensorSpec("x", "int8", [1, None, None], QX)], [y16], {"hop": 4, "padding": "dptnet",
                                                                                          "length": 37})
    with pytest.raises(OpError, match="needs hop = width / 2 \\(even width\\), got width 6, hop 4 at run time"):
        m.run(np.zeros((1, 6, 10), np.int8))
