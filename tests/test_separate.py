"""Separating audio with small FIR "separation" graphs built here: whole file, segments, I/O specs.

The test models split a mixture into a low band and a high band with two complementary 31-tap
FIR filters (int8 conv1d, requantized to int8 codes with a scale): mixtures of a low and a high
tone separate well, so metrics are meaningful, and the conv's left-only padding makes the output
15 samples shorter than the input, like FQSS's ``T' < T``.
"""

from __future__ import annotations

import numpy as np
import pytest

import intsim
from intsim import metrics
from intsim import separate as sp
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.ops.fqss import to_audio

RATE = 8000
TAPS = 31


def lowpass(k=TAPS, cutoff=0.25):
    n = np.arange(k) - (k - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(k)
    return h / h.sum()


def band_filters(k=TAPS):
    """[low-pass, complementary high-pass] taps."""
    lp = lowpass(k)
    hp = -lp
    hp[(k - 1) // 2] += 1.0
    return np.stack([lp, hp])


def fir_graph(filters=None, *, channels=1, splitter=True, stems=None, out_scale=1 / 32, rate=RATE, metadata=None):
    """input "audio" -> [splitter (normalize)] -> conv1d (stem s, channel c: FIR on channel c) -> [reshape].

    splitter=True: float32 [1, T] (or [1, C, T]) input, max-normalised per call like FQSS.
    splitter=False: int8 [1, C, T] input on scale 1/128 (no normalisation: the executor quantizes).
    Output int8 codes on ``out_scale``: [1, S, T'] (mono) or [1, S, C, T'], T' = T - (K - 1) / 2.
    """
    filters = np.asarray(band_filters() if filters is None else filters, np.float64)
    s, k = filters.shape
    tensors, nodes, consts = {}, [], {}
    in_scale = 1 / 128
    if splitter:
        shape = [1, None] if channels == 1 else [1, channels, None]
        tensors["audio"] = TensorSpec("audio", "float32", shape)
        tensors["codes"] = TensorSpec("codes", "int8", [1, 2 * channels, None], Quant([in_scale], [0]))
        nodes.append(Node("split", "splitter", ["audio"], ["codes"], {"n_splitter": 2, "normalize": True}))
        x, c_in = "codes", 2 * channels
    else:
        tensors["audio"] = TensorSpec("audio", "int8", [1, channels, None], Quant([in_scale], [0]))
        x, c_in = "audio", channels
    c_out = s * channels
    w_real = np.zeros((c_out, c_in, k))
    for si in range(s):
        for c in range(channels):
            w_real[si * channels + c, c] = filters[si]  # channel c = the high byte of audio channel c
    s_w = np.abs(w_real).reshape(c_out, -1).max(axis=1) / 127
    real = (in_scale * s_w / out_scale).astype(np.float32)
    mult, shift = zip(*(quantize_multiplier(float(r)) for r in real))
    data = {"w": np.clip(np.rint(w_real / s_w[:, None, None]), -128, 127).astype(np.int8),
            "b": np.zeros(c_out, np.int32), "m": np.array(mult, np.int32), "s": np.array(shift, np.int32), "f": real}
    for key, value in data.items():
        tensors[key] = TensorSpec(key, str(value.dtype), list(value.shape))
        consts[key] = value
    conv_out = "y" if channels == 1 else "y_flat"
    tensors[conv_out] = TensorSpec(conv_out, "int8", [1, c_out, None], Quant([out_scale], [0]))
    nodes.append(Node("fir", "conv1d", [x, *data], [conv_out], {"padding": [(k - 1) // 2, 0]}))
    if channels > 1:
        tensors["y"] = TensorSpec("y", "int8", [1, s, channels, None], Quant([out_scale], [0]))
        nodes.append(Node("to_stems", "reshape", [conv_out], ["y"], {"shape": [1, s, channels, -1]}))
    meta = {"sample_rate": rate, "stems": stems or [f"s{i + 1}" for i in range(s)]}
    meta.update(metadata or {})
    return Graph(tensors, nodes, ["audio"], ["y"], consts, "tflm", meta)


def two_tones(seconds=1.0, rate=RATE, lo=300.0, hi=3100.0):
    t = np.arange(int(seconds * rate)) / rate
    a = 0.4 * np.sin(2 * np.pi * lo * t)
    b = 0.3 * np.sin(2 * np.pi * hi * t + 1.0)
    return a.astype(np.float32), b.astype(np.float32)


class Recorder:
    """Wraps a Model: records each call's input length; ``swap_every`` swaps the stems of odd calls."""

    def __init__(self, model, swap=False):
        self.model, self.swap, self.lengths = model, swap, []
        self.graph, self.counts = model.graph, model.counts

    def reset_counts(self):
        self.model.reset_counts()

    def run(self, inputs):
        (x,) = inputs.values()
        self.lengths.append(x.shape[-1])
        out = self.model.run(inputs)
        if self.swap and len(self.lengths) % 2 == 0:
            out = {k: v[:, ::-1].copy() for k, v in out.items()}
        return out


@pytest.fixture(scope="module")
def fir_model():
    return intsim.Model(fir_graph())


@pytest.fixture(scope="module")
def plain_model():
    """No per-call normalisation: int8 input on a fixed scale."""
    return intsim.Model(fir_graph(splitter=False))


# --- what the graph declares ----------------------------------------------------------------------

def test_audio_io_reads_the_graph(fir_model, plain_model):
    io = sp.audio_io(fir_model)
    assert (io.input_name, io.input_rank, io.channels, io.input_dtype, io.input_quant) == ("audio", 2, 1, "float32", None)
    assert (io.output_name, io.output_rank, io.output_quant) == ("y", 3, (1 / 32, 0))
    assert io.stems == ["s1", "s2"] and io.sample_rate == RATE
    assert io.normalizes_input and io.permutation_invariant and io.min_samples == 1
    io = sp.audio_io(plain_model)
    assert io.input_rank == 3 and io.input_quant == (1 / 128, 0) and not io.normalizes_input
    named = sp.audio_io(intsim.Model(fir_graph(stems=["bass", "treble"], channels=2)))
    assert named.channels == 2 and named.output_rank == 4 and not named.permutation_invariant


def test_min_samples_from_metadata():
    assert sp.min_samples({"min_samples": 40}) == 40
    assert sp.min_samples({"min_frames": 5, "fqss_config": {"model_cfg": {"kernel_size": 16, "stride": 8}}}) == 48
    assert sp.min_samples({"fqss_config": {"model_cfg": {"kernel_size": 16, "stride": 8}}}) == 16
    assert sp.min_samples({}) == 1


@pytest.mark.parametrize("change, fragment", [
    (lambda g: g.metadata.pop("sample_rate"), "sample_rate"),
    (lambda g: g.metadata.update(stems=["a", "b", "c"]), "names 3 stems"),
    (lambda g: g.metadata.update(stems=["../x", "b"]), "file names"),
    (lambda g: g.outputs.append("codes"), "one input and one output"),
])
def test_audio_io_refuses_non_audio_models(change, fragment):
    g = fir_graph()
    change(g)
    with pytest.raises(ValueError, match=fragment):
        sp.audio_io(intsim.Model(g))


# --- whole file -----------------------------------------------------------------------------------

def test_whole_file_equals_direct_run_padded(fir_model):
    a, b = two_tones()
    mix = (a + b)[None]
    sep = sp.separate(fir_model, mix)
    assert sep.mode == "whole" and sep.segments == [(0, mix.shape[1])] and sep.segment_gain == "none"
    direct = fir_model.run({"audio": mix})["y"][0]
    assert direct.shape[-1] == mix.shape[1] - (TAPS - 1) // 2 == sep.output_samples
    expected = np.zeros((2, 1, mix.shape[1]), np.float32)
    expected[:, 0, : direct.shape[-1]] = to_audio(direct, 1 / 32)
    np.testing.assert_array_equal(sep.stems, expected)
    assert sep.names == ["s1", "s2"] and sep.sample_rate == RATE
    assert sep.run_s > 0 and sep.rtf == pytest.approx(sep.run_s / 1.0)
    assert sep.counts == {"acc_overflows": 0, "saturations": 0, "input_saturations": 0, "nodes": {}}
    res = metrics.evaluate(references=np.stack([a, b])[:, None], estimates=sep.stems, mixture=mix)
    assert res["mean"]["si_sdr"] > 20 and res["mean"]["si_sdri"] > 20


def test_stereo_model_and_counts(plain_model):
    model = intsim.Model(fir_graph(channels=2, stems=["low", "high"]))
    a, b = two_tones(0.5)
    mix = np.stack([a + b, 0.5 * (a + b)])
    sep = sp.separate(model, mix)
    assert sep.stems.shape == (2, 2, mix.shape[1]) and sep.names == ["low", "high"]
    np.testing.assert_allclose(sep.stems[:, 1], 0.5 * sep.stems[:, 0], atol=1 / 32)
    loud = np.clip(np.linspace(-2, 2, 4000, dtype=np.float32), -3, 3)[None]  # int8 input saturates beyond [-1, 127/128]
    sep = sp.separate(plain_model, loud)
    assert sep.counts["input_saturations"] == int(np.sum((np.rint(loud * 128) > 127) | (np.rint(loud * 128) < -128)))


def test_short_input_is_padded_to_the_minimum():
    model = intsim.Model(fir_graph(metadata={"min_samples": 64}))
    rec = Recorder(model)
    x = two_tones(0.004)[0][None] + 0.1  # 32 samples
    sep = sp.separate(rec, x, io=sp.audio_io(model))
    assert rec.lengths == [64] and sep.stems.shape == (2, 1, 32)
    with pytest.raises(ValueError, match="shorter than the model's minimum"):
        sp.separate(model, np.ones((1, 1000), np.float32), segment=32)


def test_bad_mixtures(fir_model):
    with pytest.raises(ValueError, match=r"float32 \[1, T\]"):
        sp.separate(fir_model, np.ones((2, 100), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        sp.separate(fir_model, np.full((1, 100), np.nan, np.float32))
    with pytest.raises(ValueError, match="overlap"):
        sp.separate(fir_model, np.ones((1, 100), np.float32), segment=50, overlap=1.0)


# --- segments -------------------------------------------------------------------------------------

def test_plan_and_bounded_calls(fir_model):
    assert sp.plan_segments(10, 4, 0.25) == [(0, 4), (3, 4), (6, 4)]
    assert sp.plan_segments(10, 4, 0.0) == [(0, 4), (4, 4), (8, 2)]
    assert sp.plan_segments(4, 4, 0.5) == [(0, 4)]
    w = sp.triangle(6)
    np.testing.assert_allclose(w, np.array([1, 2, 3, 3, 2, 1]) / 3)
    rec = Recorder(fir_model)
    x = (two_tones(2.5)[0] + two_tones(2.5)[1])[None]
    progress = []
    sep = sp.separate(rec, x, segment=4000, progress=lambda d, t: progress.append((d, t)), io=sp.audio_io(fir_model))
    plan = sp.plan_segments(20000, 4000, 0.25)
    assert sep.mode == "segmented" and sep.segments == plan and len(plan) == 7
    assert rec.lengths == [4000] * 7  # every call gets exactly one segment: memory bounded by the segment
    assert progress[-1] == (20000, 20000) and len(progress) == 7


def test_segmented_equals_whole_away_from_segment_starts(plain_model):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(12000)).astype(np.float32)[None]
    whole = sp.separate(plain_model, x)
    seg = sp.separate(plain_model, x, segment=2000)
    assert seg.segment_gain == "none" and len(seg.segments) == 8
    diff = np.abs(whole.stems - seg.stems).max(axis=(0, 1))
    near = np.zeros(x.shape[1], bool)  # the receptive field reaches 15 samples back past a segment start
    for start, _ in seg.segments[1:]:
        near[start:start + (TAPS - 1) // 2] = True
    near[-((TAPS - 1) // 2):] = True  # whole-file output ends 15 samples early (zero-padded)
    assert np.all(diff[~near] < 1e-6)
    assert diff[near].max() > 0  # the edges do differ


def test_segment_gain_puts_normalised_segments_on_the_whole_file_scale(fir_model):
    a, b = two_tones(2.0)
    env = np.where(np.arange(a.size) < a.size // 2, 0.1, 1.0).astype(np.float32)  # a quiet half, a loud half
    x = ((a + b) * env)[None]
    whole = sp.separate(fir_model, x)
    seg = sp.separate(fir_model, x, segment=3000)
    assert seg.segment_gain == "input-peak"
    inner = slice(200, x.shape[1] - 200)
    err = whole.stems[..., inner] - seg.stems[..., inner]
    snr = 10 * np.log10(np.sum(whole.stems[..., inner] ** 2) / np.sum(err**2))
    assert snr > 25, snr


def test_speaker_order_is_aligned_across_segments(fir_model):
    a, b = two_tones(2.0)
    x = (a + b)[None]
    ref = sp.separate(fir_model, x, segment=4000)
    swapped = Recorder(fir_model, swap=True)  # odd calls return the stems in the other order
    sep = sp.separate(swapped, x, segment=4000, io=sp.audio_io(fir_model))
    assert sep.reordered == len(sep.segments) // 2
    np.testing.assert_allclose(sep.stems, ref.stems, atol=1e-6)
    io = sp.audio_io(fir_model)
    io.permutation_invariant = False  # named stems: never reordered
    sep = sp.separate(Recorder(fir_model, swap=True), x, segment=4000, io=io)
    assert sep.reordered == 0 and not np.allclose(sep.stems, ref.stems, atol=1e-3)


def test_auto_segment_rule(fir_model):
    io = sp.audio_io(fir_model)
    limit = int(sp.WHOLE_MAX_SECONDS * RATE)
    assert sp.resolve_segment(io, limit, sp.AUTO) is None
    assert sp.resolve_segment(io, limit + 1, sp.AUTO) == int(sp.DEFAULT_SEGMENT_SECONDS * RATE)
    io.default_segment = 12 * RATE
    assert sp.resolve_segment(io, limit + 1, sp.AUTO) == 12 * RATE
    assert sp.resolve_segment(io, 1000, None) is None
    assert sp.resolve_segment(io, 1000, 4000) is None  # a segment longer than the file: one call
    assert sp.resolve_segment(io, 10000, 4000) == 4000
