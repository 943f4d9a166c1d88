"""``intsim eval MANIFEST_OR_DIR MODEL.npz``: summary on stdout, progress on stderr, files, resumption, exit codes."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from intsim import evaluate as ev
from intsim import inspect as ins
from intsim import modelfile
from intsim.cli import main
from tests.test_evaluate import write_dataset
from tests.test_separate import fir_graph


@pytest.fixture
def work(tmp_path, monkeypatch):
    """tmp_path as the working directory with bands.npz and a LibriMix-style folder data/ of 2 items."""
    monkeypatch.chdir(tmp_path)
    modelfile.save(fir_graph(), tmp_path / "bands.npz")
    write_dataset(tmp_path / "data", 2)
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_eval_json_summary_files_and_resume(work):
    result = invoke("eval", "data", "bands.npz", "-o", "res", "--json", "--limit", "1")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)  # stdout is the JSON document only
    assert doc["model"]["sha256"] == ins.file_sha256(work / "bands.npz")
    assert doc["profile"]["name"] == "tflm" and doc["failed"] == []
    assert doc["run"]["evaluated"] == 1 and doc["run"]["pending"] == 1
    assert doc["summary"]["count"] == 1 and doc["summary"]["si_sdri"]["mean"] > 5
    assert "eval 1/2 item0: SI-SDRi" in result.stderr and "item1" not in result.stderr  # progress on stderr
    assert "items" not in doc  # the per-item records live in RESULTS_DIR

    result = invoke("eval", "data", "bands.npz", "-o", "res", "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0
    assert doc["run"]["evaluated"] == 1 and doc["run"]["skipped"] == 1 and doc["summary"]["count"] == 2
    rows = list(csv.DictReader(open(work / "res" / "results.csv")))
    assert [r["id"] for r in rows] == ["item0", "item1"]
    assert {"si_sdr", "si_sdri", "sdr", "sdri", "s1_si_sdri", "s2_sdr", "s1_reference"} <= set(rows[0])
    saved = json.loads((work / "res" / "results.json").read_text())
    assert saved["summary"] == doc["summary"] and [r["id"] for r in saved["items"]] == ["item0", "item1"]
    assert saved["items"][0]["mean"]["si_sdri"] == float(rows[0]["si_sdri"])


def test_eval_failed_item_exit_1_and_text_summary(work):
    (work / "data" / "s1" / "item1.wav").write_bytes(b"garbage")
    result = invoke("eval", "data", "bands.npz", "-o", "res")
    assert result.exit_code == 1
    assert "scored    1 ok, 1 failed" in result.stdout
    assert "failed    item1: AudioError:" in result.stdout and "SI-SDRi" in result.stdout
    assert "eval 2/2 item1: FAILED" in result.stderr and "Traceback" not in result.output
    rows = list(csv.DictReader(open(work / "res" / "results.csv")))
    assert [r["status"] for r in rows] == ["ok", "failed"]


def test_eval_manifest_profile_and_quiet(work):
    (work / "list.csv").write_text("id,mixture,s1,s2\n"
                                   "one,data/mix_clean/item0.wav,data/s1/item0.wav,data/s2/item0.wav\n")
    result = invoke("-q", "eval", "list.csv", "bands.npz", "--profile", "single", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["profile"]["name"] == "single" and doc["summary"]["count"] == 1
    assert (work / "eval_results" / ev.JSON_FILE).is_file()  # the default RESULTS_DIR


@pytest.mark.parametrize("args,fragment", [
    (("nowhere", "bands.npz"), "no such file or folder"),
    (("data", "missing.npz"), "missing.npz"),
    (("data", "bands.npz", "--profile", "nosuch"), "nosuch"),
])
def test_eval_user_errors(work, args, fragment):
    result = invoke("eval", *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and fragment in result.stderr


def test_eval_usage_error(work):
    assert invoke("eval", "data", "bands.npz", "--limit", "-1").exit_code == 2
