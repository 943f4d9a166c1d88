"""``intsim run MODEL.npz MIX.wav``: stems on disk, JSON report, notices, errors, no partial output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import intsim
from intsim import audio as au
from intsim import modelfile
from intsim import separate as sp
from intsim.cli import main
from intsim.cli_run import _Progress
from tests.test_separate import RATE, fir_graph, two_tones
from tests.util import SHARED


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def work(tmp_path, monkeypatch):
    """tmp_path as the working directory, holding model.npz and a 16 kHz stereo mixture of two tones."""
    monkeypatch.chdir(tmp_path)
    modelfile.save(fir_graph(), tmp_path / "bands.npz")
    a, b = two_tones(1.0, rate=16000)
    sf.write(tmp_path / "a.wav", a, 16000, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", b, 16000, subtype="PCM_16")
    sf.write(tmp_path / "mix.flac", np.stack([a + b, a + b], 1), 16000, subtype="PCM_16")
    return tmp_path


def invoke(runner, *args):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def run_json(runner, *args):
    result = invoke(runner, "run", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def files_under(path: Path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_user_error(result, *fragments):
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- success ----------------------------------------------------------------------------------

def test_separates_into_model_track_stem_files(runner, work):
    doc, err = run_json(runner, "bands.npz", "mix.flac", "-r", "a.wav", "-r", "b.wav")
    out = work / "separated" / "bands" / "mix"
    assert sorted(p.name for p in out.iterdir()) == ["s1.wav", "s2.wav"]
    for name in ("s1", "s2"):
        info = sf.info(out / f"{name}.wav")
        assert info.subtype == "FLOAT" and info.samplerate == RATE and info.channels == 1 and info.frames == RATE
    # the stems on disk are exactly what intsim.separate gives for the resampled, downmixed mixture
    mix = au.resample(au.convert_channels(au.read_audio(work / "mix.flac").data, 1)[0], 16000, RATE)
    sep = sp.separate(intsim.load(work / "bands.npz"), mix)
    np.testing.assert_array_equal(sf.read(out / "s1.wav", dtype="float32")[0], sep.stems[0, 0])
    # notices on stderr only
    assert "resampled 16000 Hz -> 8000 Hz" in err and "downmixed to mono" in err
    # the JSON document
    assert doc["model"]["sha256"] == intsim.inspect.file_sha256(work / "bands.npz")
    assert doc["model"]["stems"] == ["s1", "s2"] and doc["model"]["name"] == "bands"
    assert doc["sample_rate"] == RATE and doc["seconds"] == pytest.approx(1.0)
    assert doc["input"]["resampled"] and doc["input"]["resample"]["up"] == 1 and doc["input"]["resample"]["down"] == 2
    assert doc["input"]["channel_policy"] == "downmix-mean" and doc["input"]["channels"] == 2
    assert doc["separation"]["mode"] == "whole" and doc["separation"]["calls"] == 1
    assert doc["output"]["format"] == "float32" and doc["output"]["gain"] == 1.0
    assert doc["output"]["stems"]["s1"]["path"] == str(Path("separated/bands/mix/s1.wav"))
    t = doc["timing"]
    assert t["rtf"] == pytest.approx(t["run_s"] / t["audio_s"], rel=1e-3) and t["run_s"] >= t["jit_s"] >= 0
    assert doc["counts"]["saturations"] == 0 and doc["counts"]["input_saturations"] == 0
    m = doc["metrics"]
    assert m["stems"]["s1"]["reference"] == "a.wav" and m["stems"]["s2"]["reference"] == "b.wav"
    for e in m["stems"].values():
        assert e["si_sdr"] > 20 and e["si_sdri"] == pytest.approx(e["si_sdr"] - e["mixture_si_sdr"], abs=2e-4)
        assert e["sdri"] == pytest.approx(e["sdr"] - e["mixture_sdr"], abs=2e-4)
    assert "BSS-eval v3" in m["convention"]["sdr"]


def test_permutation_and_plain_summary(runner, work):
    result = invoke(runner, "run", "bands.npz", "mix.flac", "--reference", "b.wav", "--reference", "a.wav",
                    "-o", "out")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    s1 = next(line for line in lines if line.strip().startswith("s1"))
    assert s1.strip().endswith("a.wav")  # s1 (low band) matched to a.wav, given second
    assert "SI-SDR" in result.stdout and "RTF" in result.stdout and "note:" not in result.stdout
    assert (work / "out" / "bands" / "mix" / "s2.wav").is_file()


def test_quiet_segmented_and_pcm16(runner, work):
    result = invoke(runner, "-q", "run", "bands.npz", "mix.flac", "--segment", "0.3", "--pcm16", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    s = doc["separation"]
    assert s["mode"] == "segmented" and s["segment_samples"] == 2400 and s["calls"] == 5
    assert s["segment_gain"] == "input-peak" and s["overlap"] == 0.25
    o = doc["output"]
    assert o["format"] == "pcm16" and o["gain"] > 0 and all(v["clipped"] == 0 for v in o["stems"].values())
    peak = max(v["peak"] for v in o["stems"].values())
    assert peak == pytest.approx(doc["input"]["peak"], rel=1e-6)  # stems brought to the mixture's peak
    assert sf.info(work / "separated" / "bands" / "mix" / "s1.wav").subtype == "PCM_16"


def test_pcm16_counts_clipping_of_a_loud_float_mixture(runner, work):
    a, b = two_tones(0.5)
    sf.write(work / "loud.wav", 3.0 * (a + b), RATE, subtype="FLOAT")  # peak above 1.0: kept, not clipped on input
    doc, err = run_json(runner, "bands.npz", "loud.wav", "--pcm16")
    assert "resampled" not in err and doc["input"]["peak"] > 1.0
    assert sum(v["clipped"] for v in doc["output"]["stems"].values()) > 0


def test_existing_outputs_replaced_others_kept(runner, work):
    target = work / "separated" / "bands" / "mix"
    target.mkdir(parents=True)
    (target / "s1.wav").write_bytes(b"old")
    (target / "notes.txt").write_text("mine")
    run_json(runner, "bands.npz", "mix.flac")
    assert sf.info(target / "s1.wav").frames == RATE and (target / "notes.txt").read_text() == "mine"
    assert files_under(work / "separated") == ["bands", "bands/mix", "bands/mix/notes.txt", "bands/mix/s1.wav",
                                               "bands/mix/s2.wav"]


def test_strict_rate(runner, work):
    assert_user_error(invoke(runner, "run", "bands.npz", "mix.flac", "--strict-rate"),
                      "16000 Hz differs from the model's 8000 Hz")
    assert not (work / "separated").exists()
    a, b = two_tones(0.5)
    sf.write(work / "m8.wav", a + b, RATE)
    doc, err = run_json(runner, "bands.npz", "m8.wav", "--strict-rate")
    assert not doc["input"]["resampled"] and "resampled" not in err


# --- failures: exit 1, `error:`, nothing written ------------------------------------------------

def _write_bad(work, kind):
    path = work / f"{kind}.wav"
    if kind == "empty":
        sf.write(path, np.zeros((0, 1), np.float32), RATE)
    elif kind == "silent":
        sf.write(path, np.zeros(800, np.float32), RATE)
    elif kind == "nan":
        x = np.full(800, 0.1, np.float32)
        x[5] = np.nan
        sf.write(path, x, RATE, subtype="FLOAT")
    elif kind == "unreadable":
        path.write_bytes(b"RIFF....WAVEjunk")
    return path


@pytest.mark.parametrize("kind, fragment", [
    ("empty", "no audio samples"),
    ("silent", "silent"),
    ("nan", "NaN or infinite"),
    ("unreadable", "not a readable audio file"),
    ("missing", "no such file"),
])
def test_bad_input_audio(runner, work, kind, fragment):
    path = _write_bad(work, kind)
    assert_user_error(invoke(runner, "run", "bands.npz", path), fragment)
    assert not (work / "separated").exists()
    # the same for a reference file
    if kind != "missing":
        assert_user_error(invoke(runner, "run", "bands.npz", "mix.flac", "-r", path, "-r", "b.wav"), fragment)
        assert not (work / "separated").exists()


def test_reference_mismatches(runner, work):
    assert_user_error(invoke(runner, "run", "bands.npz", "mix.flac", "-r", "a.wav"), "one reference per stem")
    a, _ = two_tones(0.5, rate=16000)
    sf.write(work / "short.wav", a, 16000)
    assert_user_error(invoke(runner, "run", "bands.npz", "mix.flac", "-r", "short.wav", "-r", "b.wav"),
                      "references must cover the mixture")
    assert not (work / "separated").exists()


def test_model_without_audio_metadata(runner, work):
    g = fir_graph()
    g.metadata.pop("sample_rate")
    modelfile.save(g, work / "norate.npz")
    assert_user_error(invoke(runner, "run", "norate.npz", "mix.flac"), "no sample_rate")
    assert not (work / "separated").exists()


def test_failure_while_writing_leaves_nothing(runner, work, monkeypatch):
    calls, original = [], au.write_stem

    def failing(path, x, rate, pcm16=False):  # the first stem is written, the second fails
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(path, x, rate, pcm16)

    monkeypatch.setattr(au, "write_stem", failing)
    assert_user_error(invoke(runner, "run", "bands.npz", "mix.flac", "-o", "deep/out"), "disk full")
    assert len(calls) == 2 and calls[0].is_file() is False  # written into a temporary folder, then removed
    assert not (work / "deep").exists()


def test_array_options_with_audio_only_flags_are_usage_errors(runner, work):
    np.save(work / "x.npy", np.zeros((1, 800), np.float32))
    result = invoke(runner, "run", "bands.npz", "x.npy", "--reference", "a.wav")
    assert result.exit_code == 2 and "audio inputs only" in result.stderr
    result = invoke(runner, "run", "bands.npz", "mix.flac", "--segment", "-1")
    assert result.exit_code == 2


def test_output_path_that_is_a_file(runner, work):
    (work / "taken").write_text("x")
    assert_user_error(invoke(runner, "run", "bands.npz", "mix.flac", "-o", "taken"), "not a directory")


# --- progress ----------------------------------------------------------------------------------

class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_tty_and_plain():
    tty = FakeTTY()
    bar = _Progress(8000, enabled=True, stream=tty)
    bar(4000, 8000)
    bar(8000, 8000)
    bar.close()
    text = tty.getvalue()
    assert text.count("\rseparating [") == 2 and "1.0/1.0 s audio" in text and text.endswith("\n")
    plain = io.StringIO()
    bar = _Progress(8000, enabled=True, stream=plain)
    bar(4000, 8000)  # a short run on a non-TTY prints nothing
    bar.close()
    assert plain.getvalue() == ""
    bar.last -= 3600  # ... a long one prints a plain line now and then
    bar(4000, 8000)
    assert plain.getvalue().startswith("separating: 0.5/1.0 s audio")
    off = FakeTTY()
    _Progress(8000, enabled=False, stream=off)(1, 2)
    assert off.getvalue() == ""


# --- end to end: the shared random FQSS checkpoint on LibriSpeech ------------------------------

def test_fqss_checkpoint_on_librispeech_mixture(runner, tmp_path):
    ckpt = SHARED / "fqss" / "convtasnet_random"
    speech = SHARED / "data" / "librispeech" / "librispeech_test-other"
    if not (ckpt / "checkpoint.pth").is_file() or not speech.is_dir():
        pytest.skip(f"shared FQSS checkpoint or LibriSpeech not found under {SHARED}")
    pytest.importorskip("torch")
    from intsim.converters.fqss.convert import convert_fqss

    files = sorted(speech.glob("*/*.flac"))
    first = files[0]
    second = next(f for f in files if f.parent != first.parent)  # another speaker
    n = 16000 * 3 + 10  # 3 s at 16 kHz, + 5 samples at 8 kHz the model's stride leaves out
    s1, s2 = (sf.read(f, dtype="float32")[0][:n] for f in (first, second))
    s2 = s2 * (np.sqrt(np.sum(s1**2) / np.sum(s2**2)))  # 0 dB
    mix = s1 + s2
    scale = 0.9 / np.abs(mix).max()
    for name, x in (("s1", s1), ("s2", s2), ("mix", mix)):
        sf.write(tmp_path / f"{name}.wav", x * scale, 16000, subtype="FLOAT")
    graph, _ = convert_fqss(ckpt)
    modelfile.save(graph, tmp_path / "ctn_random.npz")
    doc, err = run_json(runner, tmp_path / "ctn_random.npz", tmp_path / "mix.wav", "-r", tmp_path / "s1.wav",
                        "-r", tmp_path / "s2.wav", "-o", tmp_path / "out")
    assert "resampled 16000 Hz -> 8000 Hz" in err
    t = 24005
    assert doc["sample_rate"] == 8000 and doc["seconds"] == pytest.approx(t / 8000)
    assert doc["separation"]["mode"] == "whole" and doc["separation"]["output_samples_per_call"] == 24000
    out = tmp_path / "out" / "ctn_random" / "mix"
    assert sorted(p.name for p in out.iterdir()) == ["s1.wav", "s2.wav"]
    stems = np.stack([sf.read(out / f"{s}.wav", dtype="float32")[0] for s in ("s1", "s2")])
    assert stems.shape == (2, t) and np.all(np.isfinite(stems))
    assert np.all(stems[:, 24000:] == 0) and np.any(stems[:, :24000] != 0)  # T' = ((T-16)//8)*8 + 16, zero-padded
    for e in doc["metrics"]["stems"].values():  # a random, untrained model: only finite, consistent numbers
        assert np.isfinite(e["si_sdr"]) and e["si_sdri"] == pytest.approx(e["si_sdr"] - e["mixture_si_sdr"], abs=2e-4)
