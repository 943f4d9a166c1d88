"""Audio I/O: formats, rates, channels, bad files, resampling, writing stems without hidden scaling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from intsim import audio as au


def tone(rate, seconds=0.5, freq=440.0, channels=1, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    x = np.stack([amp / (c + 1) * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)])
    return x.astype(np.float32)


@pytest.mark.parametrize("fmt, subtype, rate, channels", [
    ("WAV", "PCM_16", 8000, 1),
    ("WAV", "FLOAT", 22050, 3),
    ("FLAC", "PCM_24", 16000, 2),
    ("OGG", "VORBIS", 44100, 2),
])
def test_read_formats_rates_channels(tmp_path, fmt, subtype, rate, channels):
    x = tone(rate, channels=channels)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x.T, rate, format=fmt, subtype=subtype)
    a = au.read_audio(path)
    assert a.data.dtype == np.float32 and a.data.shape == x.shape
    assert a.rate == rate and a.channels == channels and a.format == fmt and a.subtype == subtype
    assert a.seconds == pytest.approx(0.5)
    if fmt == "OGG":  # lossy: close, not equal
        assert np.corrcoef(a.data[0], x[0])[0, 1] > 0.99
    else:
        np.testing.assert_allclose(a.data, x, atol=2.0**-15)


def test_pcm16_is_read_exactly_and_float_beyond_one_kept(tmp_path):
    codes = np.array([-32768, -1, 0, 1, 12345, 32767], np.int16)
    sf.write(tmp_path / "p.wav", codes, 8000, subtype="PCM_16")
    np.testing.assert_array_equal(au.read_audio(tmp_path / "p.wav").data[0], codes / np.float32(32768))
    loud = np.array([0.0, 3.5, -21.0, 0.25], np.float32)
    sf.write(tmp_path / "f.wav", loud, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(au.read_audio(tmp_path / "f.wav").data[0], loud)


def test_bad_files(tmp_path):
    with pytest.raises(au.AudioError, match="no such file"):
        au.read_audio(tmp_path / "missing.wav")
    with pytest.raises(au.AudioError, match="is a directory"):
        au.read_audio(tmp_path)
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 3)
    with pytest.raises(au.AudioError, match="not a readable audio file"):
        au.read_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(au.AudioError, match="no audio samples"):
        au.read_audio(tmp_path / "empty.wav")
    bad = np.array([0.1, np.nan, 0.2, np.inf], np.float32)
    sf.write(tmp_path / "nan.wav", bad, 8000, subtype="FLOAT")
    with pytest.raises(au.AudioError, match="2 NaN or infinite samples.*sample 1"):
        au.read_audio(tmp_path / "nan.wav")
    assert issubclass(au.AudioError, ValueError)


def test_silence_check():
    with pytest.raises(au.AudioError, match="silent"):
        au.check_not_silent(np.zeros((2, 100), np.float32), "mix.wav")
    assert au.check_not_silent(np.array([[0.0, -0.5, 0.25]]), "x") == 0.5


@pytest.mark.parametrize("src, dst", [(16000, 8000), (44100, 8000), (8000, 44100), (48000, 16000)])
def test_resample_length_and_content(src, dst):
    x = tone(src, seconds=0.3, freq=300.0, channels=2)
    y = au.resample(x, src, dst)
    assert y.dtype == np.float32 and y.shape == (2, au.resampled_length(x.shape[1], src, dst))
    up, down = au.resample_ratio(src, dst)
    assert y.shape[1] == -(-x.shape[1] * up // down)
    expected = tone(dst, seconds=y.shape[1] / dst, freq=300.0, channels=2)[:, : y.shape[1]]
    inner = slice(y.shape[1] // 10, -y.shape[1] // 10)  # away from the filter's edge transients
    np.testing.assert_allclose(y[:, inner], expected[:, inner], atol=5e-3)
    assert au.resample(x, src, src) is x


def test_convert_channels():
    x = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    y, policy = au.convert_channels(x, 1)
    np.testing.assert_array_equal(y, [[2.0, 1.0]])
    assert policy == "downmix-mean"
    y, policy = au.convert_channels(x[:1], 2)
    np.testing.assert_array_equal(y, [[1.0, 2.0], [1.0, 2.0]])
    assert policy == "duplicate"
    assert au.convert_channels(x, 2) == (x, "as-is")
    with pytest.raises(au.AudioError, match="3 channels"):
        au.convert_channels(np.zeros((3, 4), np.float32), 2)


def test_write_float_keeps_everything(tmp_path):
    x = np.array([[0.0, 21.5, -3.25, 1e-8], [1.0, -1.0, 0.5, 7.0]], np.float32)
    assert au.write_stem(tmp_path / "s.wav", x, 8000) == 0
    info = sf.info(tmp_path / "s.wav")
    assert info.subtype == "FLOAT" and info.samplerate == 8000 and info.channels == 2
    np.testing.assert_array_equal(au.read_audio(tmp_path / "s.wav").data, x)
    with pytest.raises(ValueError, match="NaN"):
        au.write_stem(tmp_path / "n.wav", np.array([[np.nan]], np.float32), 8000)


def test_write_pcm16_counts_saturation(tmp_path):
    x = np.array([[0.0, 0.5, -1.0, 0.99995, 1.0, -1.5, 2.0, 1 / 65536]], np.float32)
    clipped = au.write_stem(tmp_path / "p.wav", x, 8000, pcm16=True)
    assert clipped == 3  # 1.0 -> 32768, -1.5, 2.0
    data, _ = sf.read(tmp_path / "p.wav", dtype="int16")
    np.testing.assert_array_equal(data, [0, 16384, -32768, 32766, 32767, -32768, 32767, 0])  # 0.5 LSB: half to even
    assert sf.info(tmp_path / "p.wav").subtype == "PCM_16"


def test_pcm16_gain():
    mix = np.array([[0.2, -0.8]])
    stems = np.array([[[4.0, -16.0]], [[2.0, 1.0]]])
    assert au.pcm16_gain(mix, stems) == pytest.approx(0.05)
    assert au.pcm16_gain(mix, np.zeros_like(stems)) == 1.0
