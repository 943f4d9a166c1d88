"""Build the files intsim ships as its default: intsim/data/default.npz and the demo mixture.

    python benchmarks/make_default_model.py --checkpoint RUN/qat/best_model.pth --config RUN/qat/config.json \
        [--history RUN/history.jsonl] [--librispeech ../shared/data/librispeech]

* default.npz: the checkpoint converted with intsim's FQSS converter (nudged, tflm profile), with
  metadata ``training`` = {trained, checkpoint sha256, validation SI-SDRi from the run's history}.
* demo_mix.wav, demo_s1.wav, demo_s2.wav: two LibriSpeech test-other utterances (speakers 1998 and
  2609, CC BY 4.0; neither speaker is in the training split), resampled to 8 kHz, 4 s, mixed at
  0 dB; PCM16, with the mixture exactly the sum of the two PCM16 sources.
"""

from __future__ import annotations

import argparse
import json
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from intsim import modelfile
from intsim.defaults import DATA, DEFAULT_MODEL, DEMO_MIX, DEMO_REFERENCES

DEMO_UTTERANCES = ("librispeech_test-other/1998/1998-15444-0000.flac", "librispeech_test-other/2609/2609-156975-0000.flac")
RATE = 8000
SECONDS = 4.0


def last_validation(history: Path) -> dict | None:
    """The last and best validation entries of a training run's history.jsonl."""
    evals = [e for e in map(json.loads, history.read_text().splitlines()) if e.get("eval") == "valid"]
    if not evals:
        return None
    keys = ("phase", "step", "si_sdri", "si_sdri_median", "n")
    qat = [e for e in evals if e["phase"] != "float"] or evals
    return {"set": "held-out LibriSpeech test-other speakers, 4 s two-speaker mixtures (torch QAT model)",
            "last": {k: qat[-1].get(k) for k in keys},
            "best": {k: max(qat, key=lambda e: e["si_sdri"]).get(k) for k in keys}}


def active_window(x: np.ndarray, n: int) -> np.ndarray:
    """The n-sample window of x with the most energy (hop n/8)."""
    if len(x) <= n:
        return np.pad(x, (0, n - len(x)))
    hop = n // 8
    starts = range(0, len(x) - n + 1, hop)
    best = max(starts, key=lambda s: float(np.sum(x[s:s + n] ** 2)))
    return x[best:best + n]


def make_demo(librispeech: Path) -> None:
    n = int(SECONDS * RATE)
    sources = []
    for rel in DEMO_UTTERANCES:
        x, rate = sf.read(librispeech / rel, dtype="float64")
        g = gcd(RATE, rate)
        y = active_window(resample_poly(x, RATE // g, rate // g), n)
        sources.append(y / np.sqrt(np.mean(y**2)))  # 0 dB mixture
    peak = np.max(np.abs(sources[0] + sources[1]))
    pcm = [np.round(s * 0.9 / peak * 32767).astype(np.int16) for s in sources]
    mix = pcm[0].astype(np.int32) + pcm[1].astype(np.int32)
    assert np.abs(mix).max() <= 32767
    for path, data in ((DEMO_REFERENCES[0], pcm[0]), (DEMO_REFERENCES[1], pcm[1]), (DEMO_MIX, mix.astype(np.int16))):
        sf.write(path, data, RATE, subtype="PCM_16")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--history", type=Path, help="the run's history.jsonl (validation SI-SDRi)")
    ap.add_argument("--untrained", action="store_true", help="mark the model as random weights")
    ap.add_argument("--librispeech", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/librispeech")
    args = ap.parse_args(argv)

    import hashlib

    from intsim.converters.fqss.convert import convert_fqss

    graph, report = convert_fqss(args.checkpoint, args.config)
    graph.metadata["training"] = {
        "trained": not args.untrained,
        "checkpoint_sha256": hashlib.sha256(args.checkpoint.read_bytes()).hexdigest(),
        "recipe": "benchmarks/train_small.py (docs/training.md): float pretraining then FQSS QAT on real speech",
        "validation": last_validation(args.history) if args.history else None,
    }
    DATA.mkdir(parents=True, exist_ok=True)
    modelfile.save(graph, DEFAULT_MODEL)
    make_demo(args.librispeech)
    print(report.format())
    print(f"wrote {DEFAULT_MODEL} ({DEFAULT_MODEL.stat().st_size} bytes), {DEMO_MIX}, {DEMO_REFERENCES}")


if __name__ == "__main__":
    main()
