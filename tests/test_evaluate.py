"""Batch evaluation (intsim.evaluate): item discovery, per-item scores, failures, resumption.

Items are mixtures of a low and a high tone; the model is the two-band FIR "separator" of
tests/test_separate.py (stems s1 = low band, s2 = high band, permutation-invariant).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

import intsim
from intsim import evaluate as ev
from intsim import inspect as ins
from intsim import metrics as mt
from intsim import modelfile
from intsim import separate as sp
from tests.test_separate import RATE, fir_graph, two_tones

SECONDS = 0.5
#: (low, high) tone frequencies of each item
TONES = [(300.0, 3100.0), (450.0, 2900.0), (600.0, 3300.0), (250.0, 2700.0), (500.0, 3500.0)]


def item_audio(k: int):
    lo, hi = TONES[k % len(TONES)]
    return two_tones(SECONDS, rate=RATE, lo=lo, hi=hi)


def write_dataset(root, n=4, layout="sources", ext="wav"):
    """``n`` items ``item0..`` as LibriMix-style folders (``sources``: mix_clean/, s1/, s2/) or one
    folder per item (``items``: <item>/mix.wav, s1.wav, s2.wav).  Returns the item ids."""
    ids = []
    for k in range(n):
        a, b = item_audio(k)
        name = f"item{k}"
        files = {"mix": a + b, "s1": a, "s2": b}
        for stem, x in files.items():
            if layout == "sources":
                path = root / ("mix_clean" if stem == "mix" else stem) / f"{name}.{ext}"
            else:
                path = root / name / f"{stem}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x, RATE, subtype="FLOAT" if ext == "wav" else "PCM_16")
        ids.append(name)
    return ids


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "bands.npz"
    modelfile.save(fir_graph(), path)
    return path


@pytest.fixture(scope="module")
def model(model_file):
    return intsim.load(model_file)


def run_eval(model, model_file, items, out, **kw):
    results = ev.Results(out)
    return ev.run(model, model_file, items, results, model_sha=ins.file_sha256(model_file), **kw)


# --- discovery ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["sources", "items"])
def test_discover_folders(tmp_path, layout):
    ids = write_dataset(tmp_path, 3, layout)
    items = ev.discover(tmp_path, ["s1", "s2"])
    assert [it.id for it in items] == ids
    for it in items:
        assert it.mixture.is_file() and all(r.is_file() for r in it.references)
        assert [r.parent.name if layout == "sources" else r.stem for r in it.references] == ["s1", "s2"]


def test_discover_librimix_names_and_missing_reference(tmp_path):
    write_dataset(tmp_path, 2, "sources", ext="flac")
    (tmp_path / "s2" / "item1.flac").unlink()
    items = ev.discover(tmp_path, ["s1", "s2"])
    assert [it.id for it in items] == ["item0", "item1"]
    assert items[1].references[1] == tmp_path / "s2" / "item1.flac"  # listed; fails when evaluated


def test_discover_manifests(tmp_path):
    write_dataset(tmp_path, 2, "items")
    (tmp_path / "list.csv").write_text("id,mixture,s1,s2\n"
                                       "a,item0/mix.wav,item0/s1.wav,item0/s2.wav\n"
                                       f",{tmp_path}/item1/mix.wav,item1/s1.wav,item1/s2.wav\n")
    items = ev.discover(tmp_path / "list.csv", ["s1", "s2"])
    assert [it.id for it in items] == ["a", "mix"]
    assert items[0].references == (tmp_path / "item0/s1.wav", tmp_path / "item0/s2.wav")
    (tmp_path / "semi.csv").write_text("id,mixture,references\nb,item1/mix.wav,item1/s1.wav;item1/s2.wav\n")
    assert ev.discover(tmp_path / "semi.csv", ["s1", "s2"])[0].references[1] == tmp_path / "item1/s2.wav"
    (tmp_path / "list.json").write_text(json.dumps(
        {"items": [{"id": "c", "mixture": "item0/mix.wav", "references": ["item0/s1.wav", "item0/s2.wav"]}]}))
    (item,) = ev.discover(tmp_path / "list.json", ["s1", "s2"])
    assert item == ev.Item("c", tmp_path / "item0/mix.wav", (tmp_path / "item0/s1.wav", tmp_path / "item0/s2.wav"))


@pytest.mark.parametrize("name,text,fragment", [
    ("bad.csv", "name,path\nx,y\n", "'id' and 'mixture'"),
    ("dup.csv", "id,mixture,s1\na,m.wav,r.wav\na,m2.wav,r.wav\n", "duplicate item ids"),
    ("noref.csv", "id,mixture\na,m.wav\n", "no reference paths"),
    ("bad.json", "{\"items\": 3}", "list of items"),
    ("broken.json", "[{", "cannot read"),
    ("list.txt", "", "not a folder"),
])
def test_manifest_errors(tmp_path, name, text, fragment):
    (tmp_path / name).write_text(text)
    with pytest.raises(ev.ManifestError, match=fragment):
        ev.discover(tmp_path / name, ["s1", "s2"])


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ev.ManifestError, match="no items"):
        ev.discover(tmp_path, ["s1", "s2"])


# --- scoring --------------------------------------------------------------------------------------

def test_item_scores_match_separate_and_metrics(tmp_path, model):
    write_dataset(tmp_path, 1, "items")
    # references given in swapped order: permutation-invariant assignment undoes it
    item = ev.Item("x", tmp_path / "item0/mix.wav", (tmp_path / "item0/s2.wav", tmp_path / "item0/s1.wav"))
    rec = ev.evaluate_item(model, sp.audio_io(model), item)
    a, b = item_audio(0)
    sep = sp.separate(model, (a + b)[None])
    want = mt.evaluate(references=np.stack([b[None], a[None]]), estimates=sep.stems, mixture=(a + b)[None])
    assert rec["status"] == "ok" and rec["assignment"] == "pit"
    assert rec["stems"]["s1"]["reference"] == 1 and rec["stems"]["s2"]["reference"] == 0
    for k in ev.METRIC_KEYS:
        assert rec["mean"][k] == pytest.approx(want["mean"][k], abs=1e-4)
        assert rec["stems"]["s1"][k] == pytest.approx(want["stems"][0][k], abs=1e-4)
    assert rec["mean"]["si_sdri"] > 5  # the band split separates the tones


def test_summary_statistics():
    recs = [{"status": "ok", "mean": {"si_sdr": v, "si_sdri": v + 1, "sdr": v, "sdri": v}} for v in (1.0, 2.0, 6.0)]
    recs.append({"status": "failed", "error": "x"})
    s = ev.summarize(recs)
    assert (s["recorded"], s["count"], s["failures"]) == (4, 3, 1)
    assert s["si_sdri"] == {"mean": 4.0, "median": 3.0}
    assert ev.summarize([])["sdr"] == {"mean": None, "median": None}


# --- runs, failures, resumption -------------------------------------------------------------------

def test_run_records_failures_and_resumes_after_limit(tmp_path, model, model_file):
    data, out = tmp_path / "data", tmp_path / "results"
    write_dataset(data, 4)
    (data / "mix_clean" / "item2.wav").write_bytes(b"not audio")  # unreadable mixture
    items = ev.discover(data, ["s1", "s2"])

    doc = run_eval(model, model_file, items, out, limit=2)
    assert doc["run"] == {"evaluated": 2, "skipped": 0, "pending": 2, "items": 4}
    assert [r["id"] for r in doc["items"]] == ["item0", "item1"]
    assert doc["summary"]["pending"] == 2 and doc["summary"]["count"] == 2

    seen = []
    doc = run_eval(model, model_file, items, out, progress=lambda n, t, it, rec: seen.append((it.id, rec is None)))
    assert doc["run"] == {"evaluated": 2, "skipped": 2, "pending": 0, "items": 4}
    assert seen == [("item0", True), ("item1", True), ("item2", False), ("item3", False)]
    by_id = {r["id"]: r for r in doc["items"]}
    assert by_id["item2"]["status"] == "failed" and "not a readable audio file" in by_id["item2"]["error"]
    assert doc["summary"]["count"] == 3 and doc["summary"]["failures"] == 1

    # the files: journal with one line per evaluation, CSV one row per item, JSON items + summary
    assert len((out / ev.JOURNAL).read_text().splitlines()) == 4
    rows = list(csv.DictReader(open(out / ev.CSV_FILE)))
    assert [r["id"] for r in rows] == ["item0", "item1", "item2", "item3"]
    assert rows[2]["status"] == "failed" and rows[2]["si_sdri"] == "" and "item2.wav" in rows[2]["error"]
    assert float(rows[0]["si_sdri"]) == by_id["item0"]["mean"]["si_sdri"]
    assert float(rows[3]["s2_sdr"]) == by_id["item3"]["stems"]["s2"]["sdr"]
    saved = json.loads((out / ev.JSON_FILE).read_text())
    assert saved["summary"] == doc["summary"] and len(saved["items"]) == 4

    # fixing the failed item: a rerun retries only it
    a, b = item_audio(2)
    sf.write(data / "mix_clean" / "item2.wav", a + b, RATE, subtype="FLOAT")
    doc = run_eval(model, model_file, items, out)
    assert doc["run"]["evaluated"] == 1 and doc["summary"]["failures"] == 0 and doc["summary"]["count"] == 4


def test_interrupted_run_keeps_finished_items(tmp_path, model, model_file, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "results"
    write_dataset(data, 2)
    items = ev.discover(data, ["s1", "s2"])
    real = ev.evaluate_item
    calls = []

    def interrupt_on_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(ev, "evaluate_item", interrupt_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_eval(model, model_file, items, out)
    # the finished item is in the journal and in the result files written on the way out
    assert [json.loads(line)["id"] for line in (out / ev.JOURNAL).read_text().splitlines()] == ["item0"]
    assert json.loads((out / ev.JSON_FILE).read_text())["summary"]["pending"] == 1
    # a torn journal line (a run killed mid-write) is ignored and does not swallow the next record
    with open(out / ev.JOURNAL, "a") as f:
        f.write('{"key": "item1|torn')
    monkeypatch.setattr(ev, "evaluate_item", real)
    doc = run_eval(model, model_file, items, out)
    assert doc["run"] == {"evaluated": 1, "skipped": 1, "pending": 0, "items": 2}
    assert ev.Results(out).records.keys() == {r["key"] for r in doc["items"]}


def test_key_includes_model_profile_and_settings(tmp_path, model, model_file):
    data, out = tmp_path / "data", tmp_path / "results"
    write_dataset(data, 1)
    items = ev.discover(data, ["s1", "s2"])
    assert run_eval(model, model_file, items, out)["run"]["evaluated"] == 1
    assert run_eval(model, model_file, items, out)["run"]["skipped"] == 1
    single = intsim.load(model_file, profile="single")
    assert run_eval(single, model_file, items, out)["run"]["evaluated"] == 1
    assert run_eval(model, model_file, items, out, segment=2000)["run"]["evaluated"] == 1
    doc = run_eval(model, model_file, items, out)
    assert doc["run"]["skipped"] == 1 and len(doc["items"]) == 1  # only this key's record is reported
    assert len(ev.Results(out).records) == 3


def test_item_errors_are_recorded(tmp_path, model, model_file):
    data, out = tmp_path / "data", tmp_path / "results"
    write_dataset(data, 3, "items")
    (data / "item0" / "s2.wav").unlink()
    sf.write(data / "item1" / "s1.wav", np.zeros(int(SECONDS * RATE), np.float32), RATE)
    sf.write(data / "item2" / "s1.wav", np.ones(100, np.float32), RATE)
    doc = run_eval(model, model_file, ev.discover(data, ["s1", "s2"]), out)
    errors = {r["id"]: r["error"] for r in doc["items"]}
    assert "no such file" in errors["item0"]
    assert "silent" in errors["item1"]
    assert "100 samples" in errors["item2"]
    assert doc["summary"]["failures"] == 3 and doc["summary"]["si_sdri"]["mean"] is None


def test_results_dir_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        ev.Results(tmp_path / "f")
