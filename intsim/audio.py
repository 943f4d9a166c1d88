"""Audio files in and out: reading, rate and channel conversion, writing stems.

Everything here is float glue around the integer graph: nothing is normalised, clipped or
rescaled unless a function says so and reports it.

``read_audio(path)``       any format/rate/channel count soundfile (libsndfile) reads
                           -> ``Audio(data float32 [C, T], rate, ...)``.  PCM is read as
                           ``code / 2^(bits-1)`` (exact for 16-bit PCM); float files as stored, values
                           above 1.0 included.  ``AudioError`` (a ValueError) for a missing,
                           unreadable or empty file and for NaN/inf samples.
``check_not_silent(x)``    ``AudioError`` for all-zero audio (a max-normalising splitter would
                           divide by zero; there is nothing to separate).
``resample(x, a, b)``      ``scipy.signal.resample_poly`` from ``a`` Hz to ``b`` Hz (polyphase FIR,
                           Kaiser window beta 5.0, scipy's defaults; ``up/down`` = the reduced
                           fraction b/a).  Output length ``ceil(T * b / a)``.
``convert_channels(x, n)`` mono model: the mean of all channels; n-channel model: mono input is
                           duplicated, n-channel input kept; anything else is an AudioError.
                           Returns ``(x, policy)`` with policy ``"as-is"``, ``"downmix-mean"`` or
                           ``"duplicate"``.
``write_stem(path, x, rate, pcm16=False)``  float32 WAV by default: every value, also above 1.0,
                           is kept.  ``pcm16=True``: ``code = round_half_even(32768 * x)`` saturated
                           to [-32768, 32767]; returns the number of saturated samples.  The caller
                           chooses and reports any gain first (``pcm16_gain``).
``pcm16_gain(mix, stems)`` the documented rescaling used before PCM16: one gain for all stems,
                           ``peak(mix) / peak(stems)`` (1.0 when the stems are silent), so the
                           loudest stem sample reaches the mixture's peak and the stems keep their
                           relative levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Subtypes written: float WAV keeps every value (FQSS outputs exceed 1.0); PCM16 after an explicit gain.
FLOAT_SUBTYPE = "FLOAT"
PCM16_SUBTYPE = "PCM_16"


class AudioError(ValueError):
    """An audio file cannot be used: the message names the file and the reason."""


@dataclass
class Audio:
    data: np.ndarray  # float32 [C, T]
    rate: int
    format: str = ""
    subtype: str = ""
    path: str = ""

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def seconds(self) -> float:
        return self.samples / self.rate


def read_audio(path) -> Audio:
    """Read an audio file as float32 ``[C, T]`` (see the module docstring)."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory")
    try:
        with sf.SoundFile(str(path)) as f:
            fmt, subtype, rate = f.format, f.subtype, int(f.samplerate)
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = " ".join(str(e).split())
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if rate <= 0:
        raise AudioError(f"{path}: invalid sample rate {rate}")
    x = np.ascontiguousarray(data.T)
    bad = ~np.isfinite(x)
    if bad.any():
        c, t = np.argwhere(bad)[0]
        raise AudioError(f"{path}: {int(bad.sum())} NaN or infinite samples (first at channel {c}, sample {t})")
    return Audio(x, rate, fmt, subtype, str(path))


def check_not_silent(x: np.ndarray, what: str) -> float:
    """Peak |x|; AudioError if it is 0 (all-zero audio)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        raise AudioError(f"{what}: the audio is silent (all samples are 0); a max-normalising model input "
                         "would divide by zero and there is nothing to separate")
    return peak


def resample_ratio(src: int, dst: int) -> tuple[int, int]:
    g = math.gcd(int(src), int(dst))
    return int(dst) // g, int(src) // g


def resampled_length(n: int, src: int, dst: int) -> int:
    up, down = resample_ratio(src, dst)
    return -(-n * up // down)


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """float32 ``[C, T]`` from ``src`` Hz to ``dst`` Hz with ``scipy.signal.resample_poly``."""
    if src == dst:
        return x
    from scipy.signal import resample_poly

    up, down = resample_ratio(src, dst)
    y = resample_poly(np.asarray(x, dtype=np.float64), up, down, axis=-1)
    return np.ascontiguousarray(y, dtype=np.float32)


def convert_channels(x: np.ndarray, channels: int, what: str = "input") -> tuple[np.ndarray, str]:
    """Adapt ``[C, T]`` audio to a model with ``channels`` channels; (audio, policy)."""
    c = x.shape[0]
    if c == channels:
        return x, "as-is"
    if channels == 1:
        return np.mean(x, axis=0, keepdims=True, dtype=np.float64).astype(np.float32), "downmix-mean"
    if c == 1:
        return np.repeat(x, channels, axis=0), "duplicate"
    raise AudioError(f"{what}: has {c} channels; the model takes {channels} (mono input is duplicated, "
                     "other channel counts are not converted)")


def pcm16_gain(mix: np.ndarray, stems: np.ndarray) -> float:
    """One gain for all stems: ``peak(mix) / peak(stems)``; 1.0 when either is silent."""
    peak_stems = float(np.max(np.abs(stems))) if stems.size else 0.0
    peak_mix = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak_stems == 0.0 or peak_mix == 0.0:
        return 1.0
    return peak_mix / peak_stems


def to_pcm16(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``round_half_even(32768 * x)`` saturated to int16; (codes, number of saturated samples)."""
    q = np.rint(np.asarray(x, dtype=np.float64) * 32768.0)
    clipped = int(np.count_nonzero((q > 32767) | (q < -32768)))
    return np.clip(q, -32768, 32767).astype(np.int16), clipped


def write_stem(path, x: np.ndarray, rate: int, pcm16: bool = False) -> int:
    """Write ``[C, T]`` audio as WAV (float32, or PCM16); returns the saturated-sample count."""
    import soundfile as sf

    x = np.asarray(x)
    frames = x.T  # soundfile wants [T, C]
    if pcm16:
        codes, clipped = to_pcm16(frames)
        sf.write(str(path), codes, int(rate), subtype=PCM16_SUBTYPE, format="WAV")
        return clipped
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{path}: refusing to write NaN or infinite samples")
    sf.write(str(path), np.ascontiguousarray(frames, dtype=np.float32), int(rate), subtype=FLOAT_SUBTYPE, format="WAV")
    return 0
