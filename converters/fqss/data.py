"""On-the-fly 2-speaker 8 kHz mixtures from a manifest of real-speech utterances (numpy only).

The corpus (built by ``benchmarks/data/build_corpus.py``) is a folder of 8 kHz mono PCM16 WAVs plus
``manifest.csv`` with the columns ``path, source, speaker, split, lang, licence, dur_s`` (``path``
relative to the manifest). ``split`` is ``train`` / ``valid`` / ``test`` and is decided per
*speaker* by ``split_of`` (so the splits are speaker-disjoint by construction):

* LibriSpeech train-clean-100 (251 speakers, one utterance each) -> train;
* LibriSpeech test-other (10 speakers x 10 utterances) -> valid: 367, 533, 1688, 2033, 2414
  (2 F, 3 M); test: 1998, 2609, 3005, 3080, 3331 (3 F, 2 M);
* Debian sources (see ``shared/reference/real-speech-sources.md``): Tux Paint, KLettres, asterisk
  en/ru/Menardi, Fish Fillets cs -> train; Drascula, Fish Fillets nl -> valid; asterisk fr (June
  Wallack), asterisk it (Carlo Flora), festvox-ru (Nickolay Shmyrev) -> test.

``MixtureSampler`` draws a mixture as follows (all from one ``numpy.random.Generator``):

1. two distinct speakers, uniformly over the speakers of the split (or with ``speaker_p``, e.g.
   ``group_weights`` to give LibriSpeech a fixed share); speaker-level sampling caps the weight of
   the few speakers with hours of audio;
2. for each speaker a ``segment``-sample excerpt: a random utterance (duration-weighted) from a
   random offset; short utterances are concatenated with further random utterances of the same
   speaker (50-250 ms gaps) until the segment is full (a natural way to use 1-s prompts);
3. each excerpt scaled to unit RMS, then source 2 to ``snr ~ U(-snr_db, +snr_db)`` dB relative to
   source 1 (Libri2Mix-like level differences);
4. mixture = s1 + s2, then mixture and sources scaled together to a random peak ``U(peak_lo,
   peak_hi)`` (the FQSS model max-normalises its input anyway; the float model does not).

``fixed_mixtures`` gives a deterministic evaluation set (same seed -> same mixtures).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "SAMPLE_RATE", "LIBRI_VALID", "LIBRI_TEST", "split_of", "read_manifest", "load_split",
    "SpeakerPool", "MixtureSampler", "group_weights", "fixed_mixtures", "toy_pool",
]

SAMPLE_RATE = 8000
LIBRI_VALID = frozenset({"367", "533", "1688", "2033", "2414"})
LIBRI_TEST = frozenset({"1998", "2609", "3005", "3080", "3331"})
_SOURCE_SPLIT = {
    "tuxpaint": "train", "klettres": "train", "asterisk-en": "train", "asterisk-ru": "train",
    "asterisk-it-menardi": "train", "fillets-cs": "train",
    "drascula": "valid", "fillets-nl": "valid",
    "asterisk-fr": "test", "asterisk-it": "test", "festvox-ru": "test",
}


def split_of(source: str, speaker: str) -> str:
    """The split of a (source, speaker): ``train`` / ``valid`` / ``test`` (rules in the module doc)."""
    if source == "librispeech-train-clean-100":
        return "train"
    if source == "librispeech-test-other":
        if speaker in LIBRI_VALID:
            return "valid"
        if speaker in LIBRI_TEST:
            return "test"
        raise ValueError(f"LibriSpeech test-other speaker {speaker!r} is in no split")
    try:
        return _SOURCE_SPLIT[source]
    except KeyError:
        raise ValueError(f"unknown corpus source {source!r}") from None


def read_manifest(path) -> list[dict]:
    """Rows of ``manifest.csv`` as dicts; ``path`` made absolute, ``dur_s`` a float."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = str((path.parent / r["path"]).resolve())
        r["dur_s"] = float(r["dur_s"])
    return rows


@dataclass
class SpeakerPool:
    """Audio of one split in memory: ``speakers[i]`` is a list of int16 arrays (8 kHz)."""

    names: list            # "source/speaker"
    speakers: list         # list[list[np.ndarray int16]]

    @property
    def n_speakers(self) -> int:
        return len(self.names)

    def seconds(self) -> float:
        return sum(len(a) for utts in self.speakers for a in utts) / SAMPLE_RATE


def load_split(manifest, split: str, sources: Optional[Sequence[str]] = None,
               min_dur: float = 0.25) -> SpeakerPool:
    """Read every utterance of ``split`` (optionally only ``sources``) into a ``SpeakerPool``."""
    import soundfile as sf

    rows = read_manifest(manifest) if not isinstance(manifest, list) else manifest
    groups = defaultdict(list)
    for r in rows:
        if r["split"] != split or r["dur_s"] < min_dur:
            continue
        if sources is not None and r["source"] not in sources:
            continue
        groups[f"{r['source']}/{r['speaker']}"].append(r["path"])
    names = sorted(groups)
    speakers = []
    for name in names:
        utts = []
        for p in sorted(groups[name]):
            a, sr = sf.read(p, dtype="int16")
            if sr != SAMPLE_RATE:
                raise ValueError(f"{p}: {sr} Hz, expected {SAMPLE_RATE}")
            utts.append(a)
        speakers.append(utts)
    if len(names) < 2:
        raise ValueError(f"split {split!r} (sources {sources}) has {len(names)} speakers; need >= 2")
    return SpeakerPool(names, speakers)


def toy_pool(n_speakers: int = 4, seconds: float = 2.0, seed: int = 0) -> SpeakerPool:
    """Synthetic 'speakers' (harmonic tones with per-speaker pitch and AM) for fast tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    speakers = []
    for i in range(n_speakers):
        f0 = 110.0 * 2 ** (i * 7 / 12)
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 5))
        x *= 0.6 + 0.4 * np.sin(2 * np.pi * (1.5 + i) * t)
        speakers.append([(x / np.abs(x).max() * 16000).astype(np.int16)])
    return SpeakerPool([f"toy/{i}" for i in range(n_speakers)], speakers)


class MixtureSampler:
    """Random 2-speaker mixtures from a ``SpeakerPool`` (see the module doc for the recipe)."""

    def __init__(self, pool: SpeakerPool, segment: int, snr_db: float = 5.0,
                 peak: tuple = (0.3, 0.9), n_src: int = 2, speaker_p: Optional[np.ndarray] = None):
        if segment < 1:
            raise ValueError("segment must be positive")
        self.pool, self.segment, self.snr_db, self.peak, self.n_src = pool, segment, snr_db, peak, n_src
        self.speaker_p = None if speaker_p is None else np.asarray(speaker_p, np.float64) / np.sum(speaker_p)
        self._weights = []
        for utts in pool.speakers:
            d = np.array([len(a) for a in utts], dtype=np.float64)
            self._weights.append(d / d.sum())

    def _excerpt(self, spk: int, rng: np.random.Generator) -> np.ndarray:
        utts, w = self.pool.speakers[spk], self._weights[spk]
        out = np.zeros(self.segment, np.float32)
        pos, first = 0, True
        while pos < self.segment:
            a = utts[rng.choice(len(utts), p=w)]
            start = int(rng.integers(0, max(1, len(a) - (self.segment - pos)))) if first else 0
            piece = a[start:start + self.segment - pos].astype(np.float32) / 32768
            out[pos:pos + len(piece)] = piece
            pos += len(piece) + int(rng.integers(int(0.05 * SAMPLE_RATE), int(0.25 * SAMPLE_RATE)))
            first = False
        return out

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One mixture: ``(mix [T], sources [n_src, T])`` float32."""
        spk = rng.choice(self.pool.n_speakers, size=self.n_src, replace=False, p=self.speaker_p)
        src = np.stack([self._excerpt(int(s), rng) for s in spk])
        src /= np.sqrt(np.mean(src**2, axis=1, keepdims=True)) + 1e-8
        gains_db = np.concatenate([[0.0], rng.uniform(-self.snr_db, self.snr_db, self.n_src - 1)])
        src *= (10 ** (gains_db / 20))[:, None].astype(np.float32)
        mix = src.sum(0)
        scale = rng.uniform(*self.peak) / (np.abs(mix).max() + 1e-8)
        return (mix * scale).astype(np.float32), (src * scale).astype(np.float32)

    def batch(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(mix [B, T], sources [B, n_src, T])``."""
        pairs = [self.sample(rng) for _ in range(batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def group_weights(pool: SpeakerPool, prefix: str, fraction: Optional[float]) -> Optional[np.ndarray]:
    """Speaker probabilities giving the speakers whose name starts with ``prefix`` a total share
    ``fraction`` (uniform inside each group); ``None`` (speaker-uniform) if ``fraction`` is None or
    a group is empty."""
    if fraction is None:
        return None
    inside = np.array([n.startswith(prefix) for n in pool.names])
    if inside.all() or not inside.any():
        return None
    return np.where(inside, fraction / inside.sum(), (1 - fraction) / (~inside).sum())


def fixed_mixtures(pool: SpeakerPool, n: int, segment: int, seed: int = 1234, **kwargs):
    """A deterministic evaluation set: ``(mix [n, T], sources [n, n_src, T])``."""
    return MixtureSampler(pool, segment, **kwargs).batch(n, np.random.default_rng(seed))
