#!/usr/bin/env python
"""Build the real-speech corpus for training small FQSS separators (8 kHz mono PCM16 + manifest).

Sources (details, licences and measurements: ``shared/reference/real-speech-sources.md``):

* LibriSpeech (CC BY 4.0) from ``shared/data/librispeech`` when present: train-clean-100 (251
  speakers, 1 utterance each) and test-other (10 speakers x 10 utterances);
* Debian bookworm packages, fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
  (nothing is installed): Tux Paint stamp descriptions (volunteer voices, one per language),
  KLettres letters/syllables (one voice per language), asterisk prompts (Allison Smith en, June
  Wallack fr, Carlo Flora it, ivrvoice.ru ru, Paola Dal Zot it), festvox-ru source recordings
  (Nickolay Shmyrev), Fish Fillets cs/nl dialogue (the big and small fish of each language),
  Drascula voice acting (characters labelled by file-name prefix).

Every clip is mixed to mono, resampled to 8 kHz (``scipy.signal.resample_poly``), trimmed of
leading/trailing silence (20 ms frames more than 40 dB below the clip's loudest frame), dropped
if shorter than 0.25 s, and written as ``OUT/<source>/<speaker>/<name>.wav``. Speakers with less
than ``--min-speaker-s`` seconds are dropped (the sampler draws speakers uniformly). The split
of each speaker comes from ``intsim.converters.fqss.data.split_of`` (speaker-disjoint).

Outputs in OUT: ``manifest.csv`` (path, source, speaker, split, lang, licence, dur_s),
``PROVENANCE.json`` (package versions, .deb SHA-256, licences, per-source and per-split totals,
command line). Audio is not for the git repository: keep OUT outside it (default /work/data/corpus8k).

Usage::

    python benchmarks/data/build_corpus.py --out /work/data/corpus8k --cache /work/data/cache
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from math import gcd
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from intsim.converters.fqss.data import SAMPLE_RATE, split_of

PACKAGES = {
    # package: (version pinned in the research, licence)
    "tuxpaint-stamps-default": ("2022.06.04-1", "GPL-2"),
    "klettres-data": ("4:22.12.3-1", "GPL-2+"),
    "asterisk-core-sounds-en-wav": ("1.6.1-1", "CC-BY-SA-3.0"),
    "asterisk-core-sounds-fr-wav": ("1.6.1-1", "CC-BY-SA-3.0"),
    "asterisk-core-sounds-it-wav": ("1.6.1-1", "CC-BY-SA-3.0"),
    "asterisk-core-sounds-ru-wav": ("1.6.1-1", "CC-BY-3.0"),
    "asterisk-prompt-it-menardi-wav": ("1:1.4.22+mm20110907-3.1", "CC-BY-SA-3.0"),
    "festvox-ru": ("0.5+dfsg-6", "BSD-like (festvox-ru copyright)"),
    "fillets-ng-data": ("1.0.1-1.1", "GPL-2+"),
    "fillets-ng-data-cs": ("1.0.1-1.1", "GPL-2+"),
    "fillets-ng-data-nl": ("1.0.1-1.1", "GPL-2+"),
    "drascula": ("1.0+ds4-2", "Drascula freeware licence (free redistribution)"),
}
LIBRI_LICENCE = "CC-BY-4.0"
TOP_DB, FRAME, MARGIN = 40.0, 160, 400  # trim: threshold below loudest frame, 20 ms, 50 ms margin


# ------------------------------------------------------------------------------------------
# Fetching


def fetch_debs(cache: Path) -> dict:
    """apt-get download + dpkg-deb -x each package into cache/x/<pkg>; returns provenance."""
    debs, xdir = cache / "deb", cache / "x"
    debs.mkdir(parents=True, exist_ok=True)
    xdir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        print(f"apt-get download {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    prov = {}
    for pkg, (pinned, licence) in PACKAGES.items():
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        if not (xdir / pkg).is_dir():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(xdir / pkg)], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        prov[pkg] = {"version": version, "pinned": pinned, "licence": licence, "deb": deb.name,
                     "sha256": hashlib.sha256(deb.read_bytes()).hexdigest()}
        if version != pinned:
            print(f"warning: {pkg} is {version}, the corpus research used {pinned}", file=sys.stderr)
    return prov


# ------------------------------------------------------------------------------------------
# Listing clips: (source, speaker, lang, licence, input path, output name)


def _fillets_speakers(x: Path) -> dict:
    """dialog id -> 'big' | 'small' from the English dialog scripts (other fonts are dropped)."""
    out = {}
    pat = re.compile(r'dialogId\("([^"]+)",\s*"font_(\w+)"')
    for lua in (x / "fillets-ng-data/usr/share/games/fillets-ng/script").glob("*/*dialogs_en.lua"):
        for m in pat.finditer(lua.read_text(errors="replace")):
            if m.group(2) in ("big", "small"):
                out[m.group(1)] = m.group(2)
    return out


def list_clips(x: Path, libri: Path | None) -> list[tuple]:
    clips = []
    if libri is not None and libri.is_dir():
        for p in sorted((libri / "librispeech_train-clean-100").glob("*.flac")):
            clips.append(("librispeech-train-clean-100", p.name.split("-")[0], "en", LIBRI_LICENCE, p, p.stem))
        for p in sorted((libri / "librispeech_test-other").glob("*/*.flac")):
            clips.append(("librispeech-test-other", p.parent.name, "en", LIBRI_LICENCE, p, p.stem))
    lic = {k: v[1] for k, v in PACKAGES.items()}
    stamps = x / "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
    for p in sorted(stamps.rglob("*_desc*.ogg")):
        m = re.search(r"_desc(?:_([a-z]{2,3}))?(?:\.ogg)+$", p.name)
        if m:
            lang = m.group(1) or "en"
            clips.append(("tuxpaint", lang, lang, lic["tuxpaint-stamps-default"], p,
                          f"{p.parent.name}-{p.name.split('.')[0]}"))
    for p in sorted((x / "klettres-data/usr/share/klettres").glob("*/*/*.ogg")):
        lang = p.parent.parent.name
        clips.append(("klettres", lang, lang, lic["klettres-data"], p, f"{p.parent.name}-{p.stem}"))
    asterisk = {
        "asterisk-en": ("asterisk-core-sounds-en-wav", "en_US_f_Allison", "en"),
        "asterisk-fr": ("asterisk-core-sounds-fr-wav", "fr_CA_f_June", "fr"),
        "asterisk-it": ("asterisk-core-sounds-it-wav", "it_IT_m_Carlo", "it"),
        "asterisk-ru": ("asterisk-core-sounds-ru-wav", "ru_RU_f_IvrvoiceRU", "ru"),
        "asterisk-it-menardi": ("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "it"),
    }
    for source, (pkg, voice, lang) in asterisk.items():
        root = x / pkg / "usr/share/asterisk/sounds" / voice
        for p in sorted(root.rglob("*.wav")):
            rel = p.relative_to(root)
            if rel.parts[0] == "silence":
                continue
            clips.append((source, voice, lang, lic[pkg], p, "-".join(rel.with_suffix("").parts)))
    for p in sorted((x / "festvox-ru/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav").glob("*.wav")):
        clips.append(("festvox-ru", "nsh", "ru", lic["festvox-ru"], p, p.stem))
    fish = _fillets_speakers(x)
    for lang in ("cs", "nl"):
        root = x / f"fillets-ng-data-{lang}/usr/share/games/fillets-ng/sound"
        for p in sorted(root.glob(f"*/{lang}/*.ogg")):
            spk = fish.get(p.stem)
            if spk:
                clips.append((f"fillets-{lang}", spk, lang, lic[f"fillets-ng-data-{lang}"], p, p.stem))
    for p in sorted((x / "drascula/usr/share/scummvm/drascula/en").glob("*.ALS")):
        prefix = re.match(r"([A-Z]*)", p.stem).group(1)
        if prefix == "S":  # sound effects
            continue
        clips.append(("drascula", prefix or "hacker", "en", lic["drascula"], p, p.stem))
    return clips


# ------------------------------------------------------------------------------------------
# Conversion


def _read(path: Path) -> tuple[np.ndarray, int]:
    if path.suffix == ".ALS":  # Drascula: 32-byte header + unsigned 8-bit PCM at 11025 Hz
        b = np.fromfile(path, np.uint8)[32:]
        return (b.astype(np.float32) - 128) / 128, 11025
    a, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return a.mean(axis=1), sr


def trim(a: np.ndarray) -> np.ndarray:
    """Drop leading/trailing 20-ms frames more than TOP_DB below the loudest frame (+50 ms margin)."""
    n = len(a) // FRAME
    if n == 0:
        return a[:0]
    e = 10 * np.log10(np.mean(a[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(e > max(e.max() - TOP_DB, -70.0))
    if len(active) == 0:
        return a[:0]
    lo = max(0, active[0] * FRAME - MARGIN)
    hi = min(len(a), (active[-1] + 1) * FRAME + MARGIN)
    return a[lo:hi]


def convert(job) -> tuple | None:
    src_path, dst, min_dur = job
    try:
        a, sr = _read(Path(src_path))
    except Exception as e:  # noqa: BLE001 - report and skip unreadable clips
        return ("error", str(src_path), f"{type(e).__name__}: {e}")
    if sr != SAMPLE_RATE:
        g = gcd(SAMPLE_RATE, sr)
        a = resample_poly(a, SAMPLE_RATE // g, sr // g).astype(np.float32)
    a = trim(a)
    if len(a) < min_dur * SAMPLE_RATE:
        return None
    clipped = float(np.mean(np.abs(a) >= 0.999))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, np.clip(a, -1, 32767 / 32768), SAMPLE_RATE, subtype="PCM_16")
    return ("ok", dst, len(a) / SAMPLE_RATE, clipped)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/work/data/corpus8k"))
    ap.add_argument("--cache", type=Path, default=Path("/work/data/cache"),
                    help=".debs (deb/) and unpacked packages (x/)")
    ap.add_argument("--librispeech", type=Path,
                    default=Path(__file__).resolve().parents[3] / "shared/data/librispeech",
                    help="folder with librispeech_train-clean-100/ and librispeech_test-other/ (optional)")
    ap.add_argument("--min-dur", type=float, default=0.25, help="drop clips shorter than this (s)")
    ap.add_argument("--min-speaker-s", type=float, default=30.0, help="drop speakers with less audio (s)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.time()
    prov = fetch_debs(args.cache)
    libri = args.librispeech if args.librispeech.is_dir() else None
    if libri is None:
        print(f"note: no LibriSpeech at {args.librispeech}; building from Debian sources only", file=sys.stderr)
    clips = list_clips(args.cache / "x", libri)
    print(f"{len(clips)} candidate clips; converting with {args.jobs} processes", flush=True)
    jobs = []
    for source, spk, lang, licence, path, name in clips:
        jobs.append((str(path), str(args.out / source / spk / f"{name}.wav"), args.min_dur))
    rows, errors = [], []
    with Pool(args.jobs) as pool:
        for (source, spk, lang, licence, path, name), res in zip(clips, pool.imap(convert, jobs, chunksize=16)):
            if res is None:
                continue
            if res[0] == "error":
                errors.append(res[1:])
                continue
            rows.append(dict(path=str(Path(res[1]).relative_to(args.out)), source=source, speaker=spk,
                             split=split_of(source, spk), lang=lang, licence=licence,
                             dur_s=round(res[2], 3), clipped=round(res[3], 5)))
    per_spk = defaultdict(float)
    for r in rows:
        per_spk[(r["source"], r["speaker"])] += r["dur_s"]
    # LibriSpeech speakers are always kept (one utterance each, but 251 distinct voices)
    keep = {k for k, d in per_spk.items() if d >= args.min_speaker_s or k[0].startswith("librispeech")}
    dropped = sorted(f"{s}/{k} ({d:.1f} s)" for (s, k), d in per_spk.items() if (s, k) not in keep)
    rows = [r for r in rows if (r["source"], r["speaker"]) in keep]
    for r in rows:
        r.pop("clipped")
    with open(args.out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "source", "speaker", "split", "lang", "licence", "dur_s"])
        w.writeheader()
        w.writerows(rows)
    totals = {"sources": defaultdict(lambda: {"files": 0, "minutes": 0.0, "speakers": set()}),
              "splits": defaultdict(lambda: {"files": 0, "minutes": 0.0, "speakers": set()})}
    for r in rows:
        for key, name in (("sources", r["source"]), ("splits", r["split"])):
            t = totals[key][name]
            t["files"] += 1
            t["minutes"] += r["dur_s"] / 60
            t["speakers"].add(f"{r['source']}/{r['speaker']}")
    summary = {k: {n: {"files": t["files"], "minutes": round(t["minutes"], 1), "speakers": len(t["speakers"])}
                   for n, t in sorted(v.items())} for k, v in totals.items()}
    provenance = {
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
        "sample_rate": SAMPLE_RATE, "format": "mono PCM_16 WAV",
        "processing": f"mono mix, resample_poly to 8 kHz, trim frames < peak-{TOP_DB:g} dB, "
                      f"drop clips < {args.min_dur} s and speakers < {args.min_speaker_s} s",
        "debian_packages": prov,
        "librispeech": {"path": str(libri) if libri else None, "licence": LIBRI_LICENCE,
                        "origin": "LibriSpeech (openslr.org/12) via resemble-ai/Resemblyzer audio_data/"},
        "total": {"files": len(rows), "minutes": round(sum(r["dur_s"] for r in rows) / 60, 1)},
        **summary, "dropped_speakers": dropped, "errors": errors[:50], "n_errors": len(errors),
        "build_seconds": round(time.time() - t0, 1),
    }
    (args.out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1) + "\n")
    print(json.dumps({k: provenance[k] for k in ("total", "splits", "sources", "n_errors", "build_seconds")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
