"""Batch evaluation: separate a set of mixtures with references and score every item, resumably.

Items (``discover(path, stems)`` -> ``[Item(id, mixture, references)]``), references in the
model's stem order (``stems`` = the model's stem names, e.g. ``s1, s2`` or ``vocals, drums``):

* a CSV manifest (``*.csv``) with a header row: ``id``, ``mixture`` (or ``mix``), then either one
  column per reference in stem order (any names, e.g. ``s1,s2``) or one ``references`` column
  holding the paths separated by ``;``.  An empty ``id`` is the mixture's file stem.
* a JSON manifest (``*.json``): a list, or ``{"items": [...]}``, of
  ``{"id": ..., "mixture": PATH, "references": [PATH, ...]}``.
  Relative paths in a manifest are relative to the manifest's folder.
* a folder of per-source folders (LibriMix / wsj0-2mix style), matched by file name:
  ``DIR/<mixdir>/<item>.wav`` with ``<mixdir>`` one of ``mix``, ``mix_clean``, ``mix_both``,
  ``mix_single``, ``mixture`` (the first present), and ``DIR/<stem>/<item>.wav`` for every stem.
* a folder of per-item folders: ``DIR/<item>/mix.wav`` (or ``mixture.*``) and
  ``DIR/<item>/<stem>.wav`` for every stem.
  In folders any extension in ``AUDIO_SUFFIXES`` is accepted; an item lacking a reference is still
  listed (its reference path is the expected one) and fails with a clear error when evaluated.

Per item (``evaluate_item``): read and convert the audio as ``intsim run`` does (channel mean for
mono models, scipy ``resample_poly`` to the model rate unless ``strict_rate``), ``separate``, then
``metrics.evaluate`` (permutation-invariant assignment for speaker models).  Any error reading,
converting, separating or scoring an item makes a ``failed`` record with the error message; the
run goes on.

Results (``Results(dir)``), all in RESULTS_DIR:
    items.jsonl   the journal: one JSON record per evaluated item, appended with one ``write`` on
                  an ``O_APPEND`` descriptor and fsync'd, so an interrupted run loses at most the
                  item in progress (a torn last line is ignored on reading).  The latest record of
                  a key wins.
    results.csv   one row per recorded item of the run's selection, in selection order
                  (``CSV_FIELDS``, then per-stem columns ``<stem>_si_sdr``, ``<stem>_si_sdri``,
                  ``<stem>_sdr``, ``<stem>_sdri``, ``<stem>_reference``: the reference index).
    results.json  ``{"model", "profile", "settings", "metrics", "run", "summary", "items", "files"}``.
    Both are rebuilt from the journal and written atomically (temporary file + rename) at the end of
    every run, also one interrupted by an exception or Ctrl-C; a killed run leaves the journal, and
    the next run rewrites them.
A record's key is ``id | model sha256 | profile fingerprint | separation settings`` (segment and
overlap: they change the stems); a rerun skips keys already done with status ``ok`` and retries
failed ones.  The profile fingerprint is the sha256 of the profile's canonical JSON (name and
arithmetic), so two profile files with the same arithmetic share results.

Summary (``summarize``): ``count`` (items ok), ``failures``, ``recorded`` (their sum), ``pending``
(items of the selection not evaluated yet, e.g. after ``limit``), and mean and median of the
per-item mean SI-SDR, SI-SDRi, SDR and SDRi over the items ok.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from intsim import audio as au
from intsim import metrics as mt
from intsim import separate as sp

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".mp3")
MIX_DIRS = ("mix", "mix_clean", "mix_both", "mix_single", "mixture")
MIX_NAMES = ("mix", "mixture")
JOURNAL = "items.jsonl"
CSV_FILE = "results.csv"
JSON_FILE = "results.json"
METRIC_KEYS = ("si_sdr", "si_sdri", "sdr", "sdri")
CSV_FIELDS = ("id", "status", "mixture", "seconds", "si_sdr", "si_sdri", "sdr", "sdri", "assignment", "run_s",
              "rtf", "input_saturations", "acc_overflows", "saturations", "error", "model_sha256", "profile")


class ManifestError(ValueError):
    """The manifest or folder cannot be read as a list of items."""


@dataclass(frozen=True)
class Item:
    id: str
    mixture: Path
    references: tuple[Path, ...]


# --- discovering items ----------------------------------------------------------------------------

def discover(path, stems: list[str]) -> list[Item]:
    """Items of a CSV/JSON manifest or a folder (see the module docstring), in a stable order."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: no such file or folder")
    if path.is_dir():
        items = _discover_dir(path, stems)
    elif path.suffix.lower() == ".csv":
        items = _read_csv(path)
    elif path.suffix.lower() == ".json":
        items = _read_json(path)
    else:
        raise ManifestError(f"{path}: not a folder, .csv or .json manifest")
    if not items:
        raise ManifestError(f"{path}: no items found")
    ids = [it.id for it in items]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ManifestError(f"{path}: duplicate item ids {dup[:5]}")
    return items


def _audio_files(folder: Path) -> dict[str, Path]:
    """file stem -> path of the audio files directly in ``folder``."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."):
            out.setdefault(p.stem, p)
    return out


def _discover_dir(root: Path, stems: list[str]) -> list[Item]:
    mix_dir = next((root / d for d in MIX_DIRS if (root / d).is_dir()), None)
    if mix_dir is not None:  # per-source folders: mix_clean/<item>.wav, s1/<item>.wav, ...
        stem_files = {s: (_audio_files(root / s) if (root / s).is_dir() else {}) for s in stems}
        items = []
        for key, mix in _audio_files(mix_dir).items():
            refs = tuple(stem_files[s].get(key, root / s / mix.name) for s in stems)
            items.append(Item(key, mix, refs))
        return items
    items = []  # per-item folders: <item>/mix.wav, <item>/s1.wav, ...
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _audio_files(sub)
        mix = next((files[n] for n in MIX_NAMES if n in files), None)
        if mix is None:
            continue
        refs = tuple(files.get(s, sub / f"{s}{mix.suffix}") for s in stems)
        items.append(Item(sub.name, mix, refs))
    if not items:
        raise ManifestError(f"{root}: no items: expected {'/, '.join(MIX_DIRS[:2])}/ ... with one folder per stem "
                            f"({', '.join(stems)}), or one folder per item holding mix.wav and "
                            f"{', '.join(s + '.wav' for s in stems)}")
    return items


def _resolve(base: Path, value, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: missing path")
    p = Path(value.strip())
    return p if p.is_absolute() else base / p


def _item(base: Path, ident, mixture, refs, where: str) -> Item:
    mix = _resolve(base, mixture, f"{where}: mixture")
    paths = tuple(_resolve(base, r, f"{where}: reference") for r in refs)
    if not paths:
        raise ManifestError(f"{where}: no reference paths")
    ident = str(ident).strip() if ident not in (None, "") else mix.stem
    return Item(ident, mix, paths)


def _read_csv(path: Path) -> list[Item]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ManifestError(f"{path}: empty manifest")
    header = [h.strip().lower() for h in rows[0]]
    mix_col = next((header.index(n) for n in ("mixture", "mix", "mixture_path", "mix_path") if n in header), None)
    if "id" not in header or mix_col is None:
        raise ManifestError(f"{path}: the header must name 'id' and 'mixture' columns (then the reference columns), "
                            f"got {rows[0]}")
    id_col = header.index("id")
    ref_cols = [i for i in range(len(header)) if i not in (id_col, mix_col)]
    base = path.parent
    items = []
    for n, row in enumerate(rows[1:], start=2):
        row = row + [""] * (len(header) - len(row))
        where = f"{path}:{n}"
        if "references" in header:
            refs = [r for r in row[header.index("references")].split(";") if r.strip()]
        else:
            refs = [row[i] for i in ref_cols if row[i].strip()]
        items.append(_item(base, row[id_col], row[mix_col], refs, where))
    return items


def _read_json(path: Path) -> list[Item]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e})") from None
    entries = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ManifestError(f"{path}: expected a list of items or {{\"items\": [...]}}")
    items = []
    for n, e in enumerate(entries):
        where = f"{path}: item {n}"
        if not isinstance(e, dict):
            raise ManifestError(f"{where}: expected an object with id, mixture, references")
        refs = e.get("references", e.get("sources"))
        if not isinstance(refs, list):
            raise ManifestError(f"{where}: 'references' must be a list of paths")
        items.append(_item(path.parent, e.get("id"), e.get("mixture", e.get("mix")), refs, where))
    return items


# --- evaluating one item --------------------------------------------------------------------------

def evaluate_item(model, io: sp.AudioIO, item: Item, *, segment=sp.AUTO, overlap: float = sp.DEFAULT_OVERLAP,
                  strict_rate: bool = False) -> dict:
    """Separate and score one item; the ``ok`` record (raises on any failure)."""
    if io.stems and len(item.references) != len(io.stems):
        raise ValueError(f"{len(item.references)} reference(s) for a model with {len(io.stems)} stems {io.stems}")
    mix, _ = sp.conform(au.read_audio(item.mixture), io, strict_rate)
    refs = []
    for path in item.references:
        r, _ = sp.conform(au.read_audio(path), io, strict_rate)
        if r.shape[1] != mix.shape[1]:
            raise ValueError(f"{path}: {r.shape[1]} samples at {io.sample_rate} Hz, the mixture has {mix.shape[1]}")
        refs.append(r)
    sep = sp.separate(model, mix, segment=segment, overlap=overlap, io=io)
    scores = mt.evaluate(references=np.stack(refs), estimates=sep.stems, mixture=mix,
                         permutation_invariant=io.permutation_invariant)
    stems = {name: {"reference": e["reference"], **{k: round(e[k], 4) for k in METRIC_KEYS}}
             for name, e in zip(sep.names, scores["stems"])}
    return {
        "status": "ok",
        "seconds": round(sep.audio_s, 6),
        "mean": {k: round(v, 4) for k, v in scores["mean"].items()},
        "stems": stems,
        "assignment": scores["assignment"],
        "mode": sep.mode,
        "run_s": round(sep.run_s, 6),
        "rtf": round(sep.rtf, 6),
        "counts": {k: sep.counts[k] for k in ("input_saturations", "acc_overflows", "saturations")},
        "error": None,
    }


# --- results --------------------------------------------------------------------------------------

def profile_fingerprint(profile) -> str:
    """First 16 hex digits of the sha256 of the profile's canonical JSON."""
    text = json.dumps(profile.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_doc(segment, overlap: float) -> dict:
    return {"segment": segment, "overlap": overlap}


def record_key(item_id: str, model_sha: str, profile_fp: str, settings: dict) -> str:
    return "|".join([item_id, model_sha, profile_fp, json.dumps(settings, sort_keys=True)])


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Results:
    """The journal and result files in one RESULTS_DIR (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root}: exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self.journal = self.root / JOURNAL
        self.records: dict[str, dict] = {}
        if self.journal.exists():
            for line in self.journal.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by an interruption
                if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                    self.records[rec["key"]] = rec

    def done(self, key: str) -> bool:
        rec = self.records.get(key)
        return rec is not None and rec.get("status") == "ok"

    def append(self, rec: dict) -> None:
        line = (json.dumps(rec, allow_nan=False, sort_keys=True) + "\n").encode()
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # a torn last line (no newline) from an interrupted run must not swallow this record
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[rec["key"]] = rec

    def _ends_with_newline(self) -> bool:
        with open(self.journal, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def write_csv(self, records: list[dict], stems: list[str]) -> Path:
        fields = list(CSV_FIELDS) + [f"{s}_{k}" for s in stems for k in (*METRIC_KEYS, "reference")]
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for rec in records:
            w.writerow(csv_row(rec))
        path = self.root / CSV_FILE
        _atomic_write(path, buf.getvalue())
        return path

    def write_json(self, doc: dict) -> Path:
        path = self.root / JSON_FILE
        _atomic_write(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        return path


def csv_row(rec: dict) -> dict:
    row = {k: rec.get(k) for k in ("id", "status", "mixture", "seconds", "assignment", "run_s", "rtf", "error",
                                  "model_sha256")}
    row["profile"] = rec.get("profile", {}).get("name") if isinstance(rec.get("profile"), dict) else rec.get("profile")
    for k in METRIC_KEYS:
        row[k] = (rec.get("mean") or {}).get(k)
    for k in ("input_saturations", "acc_overflows", "saturations"):
        row[k] = (rec.get("counts") or {}).get(k)
    for stem, e in (rec.get("stems") or {}).items():
        for k in (*METRIC_KEYS, "reference"):
            row[f"{stem}_{k}"] = e.get(k)
    return {k: ("" if v is None else v) for k, v in row.items()}


def summarize(records: list[dict]) -> dict:
    ok = [r for r in records if r.get("status") == "ok"]
    out = {"recorded": len(records), "count": len(ok), "failures": len(records) - len(ok)}
    for k in METRIC_KEYS:
        vals = [r["mean"][k] for r in ok]
        out[k] = {"mean": round(float(np.mean(vals)), 4) if vals else None,
                  "median": round(float(np.median(vals)), 4) if vals else None}
    return out


# --- the run --------------------------------------------------------------------------------------

def run(model, model_path, items: list[Item], results: Results, *, model_sha: str, segment=sp.AUTO,
        overlap: float = sp.DEFAULT_OVERLAP, strict_rate: bool = False, limit: int | None = None,
        progress: Callable[[int, int, Item, dict | None], None] | None = None) -> dict:
    """Evaluate ``items`` not yet done into ``results``; the results document (also written as JSON).

    ``limit``: evaluate at most this many items not yet done (the rest stay pending; a rerun goes on).
    ``progress(done, total, item, record)``: after each item (``record`` None for a skipped one).
    ``results.json`` is written at the end, also when the run is interrupted (KeyboardInterrupt).
    """
    io = sp.audio_io(model)
    fp = profile_fingerprint(model.profile)
    settings = settings_doc(segment, overlap)
    keys = [record_key(it.id, model_sha, fp, settings) for it in items]
    stats = {"evaluated": 0, "skipped": 0, "pending": 0}
    stems = list(io.stems)
    try:
        for n, (item, key) in enumerate(zip(items, keys), start=1):
            if results.done(key):
                stats["skipped"] += 1
                if progress:
                    progress(n, len(items), item, None)
                continue
            if limit is not None and stats["evaluated"] >= limit:
                stats["pending"] += 1
                continue
            base = {"key": key, "id": item.id, "mixture": str(item.mixture),
                    "references": [str(r) for r in item.references], "model_sha256": model_sha,
                    "profile": {"name": model.profile.name, "fingerprint": fp}, "settings": settings,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            try:
                rec = {**base, **evaluate_item(model, io, item, segment=segment, overlap=overlap,
                                               strict_rate=strict_rate)}
            except (ValueError, OSError, ArithmeticError, RuntimeError) as e:
                message = " ".join(str(e).split()) or type(e).__name__
                rec = {**base, "status": "failed", "error": f"{type(e).__name__}: {message}"}
            results.append(rec)
            stats["evaluated"] += 1
            if progress:
                progress(n, len(items), item, rec)
    finally:
        selected = [results.records[k] for k in keys if k in results.records]
        results.write_csv(selected, stems)
        doc = {
            "model": {"path": str(model_path), "sha256": model_sha, "stems": stems, "sample_rate": io.sample_rate,
                      "permutation_invariant": io.permutation_invariant},
            "profile": {**model.profile.to_dict(), "fingerprint": fp},
            "settings": settings,
            "metrics": mt.CONVENTION,
            "run": {**stats, "items": len(items)},
            "summary": {**summarize(selected), "pending": len(items) - len(selected)},
            "items": selected,
            "files": {"csv": str(results.root / CSV_FILE), "json": str(results.root / JSON_FILE),
                      "journal": str(results.journal)},
        }
        results.write_json(doc)
    return doc
