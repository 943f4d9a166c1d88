"""FQSS ConvTasNetMusicQ -> intsim (``converters/fqss/convert_music.py``, docs/fqss-conversion.md §8).

Random calibrated music checkpoints (44.1 kHz stereo, 4 stems, dynamic splitter delta): conversion,
metadata and the audio contract, end-to-end parity against the torch QAT model (SNR / SI-SDR), the
teacher-forced per-tensor parity, silence, and the variants that are still refused.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the FQSS torch reference needs torch")

import intsim  # noqa: E402
from intsim import modelfile  # noqa: E402
from intsim.converters.fqss import build_reference, random_checkpoint  # noqa: E402
from intsim.converters.fqss.convert import ConversionError, convert_fqss, convert_state_dict  # noqa: E402
from intsim.converters.fqss.convert_music import MUSIC_CONVERTER_VERSION, music_codes_layout  # noqa: E402
from intsim.converters.fqss.convert_parity import qat_codes, run_graph, si_sdr_db, snr_db, tensor_parity  # noqa: E402
from intsim.converters.fqss.fresh import as_config  # noqa: E402
from intsim.executor import Model  # noqa: E402
from intsim.separate import audio_io  # noqa: E402

torch.set_num_threads(2)

MUSIC = "ConvTasNetMusicQ"
#: (config, engine SNR threshold dB).  Measured on 0.25 s (amplitude 0.1 / 3.0): MA 26.73 / 32.76 dB SNR,
#: min per-stem SI-SDR 26.20 / 32.48; MC 26.66 / 32.10, 25.39 / 30.99 (0.5 s table: docs/fqss-conversion.md §8).
CONFIGS = {
    "MA_N32_X2R2_k20s10": (dict(n_filters=32, bn_chan=32, hid_chan=32, n_blocks=2, n_repeats=2), 25.0),
    "MC_N32_P5_k12s8_split3": (dict(n_filters=32, bn_chan=16, hid_chan=40, n_blocks=2, n_repeats=2, conv_kernel=5,
                                    kernel_size=12, stride=8, n_splitter=3), 25.0),
}
N_SAMPLES = 11025  # 0.25 s at 44.1 kHz
TEACHER_FORCED_MAX_MISMATCH = 0.01


@functools.lru_cache(maxsize=None)
def make_model(name, amplitude=0.1):
    kwargs, threshold = CONFIGS[name]
    state_dict, config = random_checkpoint(dict(model=MUSIC, **kwargs), seed=1)
    cfg = as_config(config)
    ref = build_reference(cfg)
    ref.load_state_dict(state_dict)
    x = (amplitude * np.random.default_rng(5).standard_normal((1, 2, N_SAMPLES))).astype(np.float32)
    codes, y_ref = qat_codes(ref, x)
    return state_dict, config, cfg, ref, x, codes, y_ref, threshold


def check_teacher_forced(results, n_expected):
    assert len(results) == n_expected  # every FQSS activation quantizer
    for r in results:
        assert r.max_abs <= 1, (r.tensor, r.max_abs)
        assert r.mismatch <= TEACHER_FORCED_MAX_MISMATCH, (r.tensor, r.mismatch)
        if r.tensor.endswith("norm") or r.tensor == "mul":
            assert r.mismatch <= 1e-3, (r.tensor, r.mismatch)  # cLN, mask multiply: (nearly) exact
        if r.tensor.endswith("net.2"):
            assert r.mismatch <= 3e-3, (r.tensor, r.mismatch)  # GroupNorm: measured <= 0.14 %
        if r.tensor == "encoder.0":
            assert r.mismatch <= 1e-3, (r.tensor, r.mismatch)  # the dynamic-delta encoder: measured <= 0.0015 %


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("amplitude", [0.1, 3.0])
def test_music_end_to_end_and_teacher_forced(name, amplitude):
    state_dict, config, cfg, ref, x, codes, y_ref, threshold = make_model(name, amplitude)
    graph, report = convert_state_dict(state_dict, cfg)
    model = Model(graph)
    y = run_graph(graph, x, model=model)
    assert y.shape == y_ref.shape == (1, 4, 2, cfg.output_length(N_SAMPLES))
    assert snr_db(y_ref, y) >= threshold, name
    for i in range(4):
        for c in range(2):
            assert si_sdr_db(y_ref[0, i, c], y[0, i, c]) >= threshold - 1.5
    assert sum(c.acc_overflows for c in model.counts.values()) == 0
    n_quant = sum(1 for k in state_dict if k.endswith("activation_fake_quantize.min_range")) + 1  # + residual
    check_teacher_forced(tensor_parity(graph, ref, x, codes=music_codes_layout(codes)), n_quant)


def test_music_converts_saves_loads_with_the_audio_contract(tmp_path):
    state_dict, config, cfg, ref, x, codes, y_ref, _ = make_model("MA_N32_X2R2_k20s10")
    ckpt = tmp_path / "music.pth"
    torch.save(state_dict, ckpt)
    (tmp_path / "music.json").write_text(json.dumps(config))
    graph, report = convert_fqss(ckpt, tmp_path / "music.json")
    path = tmp_path / "music.npz"
    modelfile.save(graph, path)
    model = intsim.load(path)
    meta = model.metadata
    assert meta["stems"] == ["drums", "bass", "other", "vocals"]
    assert (meta["sample_rate"], meta["channels"]) == (44100, 2)
    assert meta["converter"] == MUSIC_CONVERTER_VERSION
    assert meta["model"] == MUSIC
    io = audio_io(model)
    assert (io.channels, io.stems, io.normalizes_input, io.output_rank) == (2, ["drums", "bass", "other", "vocals"], False, 4)
    assert not io.permutation_invariant
    out = model.run(x)[model.outputs[0]]
    assert out.dtype == np.int32 and out.shape == y_ref.shape
    assert [n.op for n in graph.nodes][:2] == ["splitter", "conv1d_dynamic"]
    ops = {n.op for n in graph.nodes}
    assert {"layer_norm", "overlap_add", "combiner"} <= ops
    text = report.format()
    assert "per-call" in text and "conv1d_dynamic" in text and "overlap_add" in text
    assert any(f.where.startswith("encoder.0") for f in report.float_ops)


def test_music_silence_is_defined():
    """FQSS gives NaN for an all-zero input (0/0 in its splitter); the engine defines delta = 0: the
    encoder outputs its code for a zero input, and the output is finite and constant in time."""
    state_dict, config, cfg, ref, *_ = make_model("MA_N32_X2R2_k20s10")
    graph, _ = convert_state_dict(state_dict, cfg)
    z = np.zeros((1, 2, 2000), np.float32)
    with torch.no_grad():
        assert torch.isnan(ref(torch.from_numpy(z))).any()
    seen = {}

    def hook(node, inputs, outputs):
        if node.name in ("splitter", "encoder.0"):
            seen[node.name] = outputs

    model = Model(graph)
    out = model.run(z, hook=hook)[graph.outputs[0]]
    assert seen["splitter"][1][0] == 0.0  # delta = 0
    enc = seen["encoder.0"][0]
    assert np.all(enc == enc[..., :1])  # every frame: the encoder's output for a zero input
    assert out.shape == (1, 4, 2, cfg.output_length(2000))
    np.testing.assert_array_equal(model.run(z)[graph.outputs[0]], out)  # deterministic


def test_music_exact_offsets_mode_converts_and_matches():
    state_dict, config, cfg, ref, x, codes, y_ref, threshold = make_model("MA_N32_X2R2_k20s10")
    graph, report = convert_state_dict(state_dict, cfg, exact_offsets=True)
    assert graph.metadata["offset_mode"] == "exact"
    y = run_graph(graph, x)
    assert snr_db(y_ref, y) >= threshold


def test_music_variants_still_refused():
    base = dict(model=MUSIC, n_filters=16, bn_chan=8, hid_chan=16, n_blocks=2, n_repeats=1, kernel_size=8, stride=4)
    for extra, message in ((dict(n_combiner=1), "n_combiner"), (dict(mask_act="sigmoid"), "mask_act")):
        state_dict, config = random_checkpoint({**base, **extra}, seed=5, calib_passes=1, calib_samples=400)
        with pytest.raises(ConversionError, match=message):
            convert_state_dict(state_dict, as_config(config))
