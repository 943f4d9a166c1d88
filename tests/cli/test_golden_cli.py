"""`intsim golden` and `intsim compare`; profile files (TOML / JSON) on `run` and `golden`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import intsim
from intsim import modelfile
from intsim.cli import main
from tests.test_golden import build_graph, make_input

DSP_TOML = """\
name = "dsp16"
base = "tflm"

[int8]
acc_bits = 16
acc_overflow = "saturate"
"""


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "model.npz"
    modelfile.save(build_graph(real=0.02), model)
    mix = tmp_path / "mix.npy"
    np.save(mix, make_input(t=41, seed=3))
    return model, mix


def invoke(runner, *args):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments):
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_help_lists_commands(runner):
    text = invoke(runner, "--help").stdout
    assert "golden" in text and "compare" in text
    assert "Exit status" in invoke(runner, "compare", "--help").stdout
    assert "--format" in invoke(runner, "golden", "--help").stdout


def test_golden_json_summary_and_files(runner, files, tmp_path):
    model, mix = files
    out = tmp_path / "g"
    result = invoke(runner, "golden", model, mix, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = tree(out)
    assert doc["output_dir"] == str(out) and doc["nodes"] == 5 and doc["formats"] == ["npy", "c", "hex"]
    assert doc["files"] == len(on_disk) and doc["bytes"] == sum(len(b) for b in on_disk.values())
    assert doc["model"] == manifest["model"] and doc["profile"]["name"] == "tflm"
    assert manifest["input"]["file"] == "mix.npy"
    assert "writing" in result.stderr and "writing" not in result.stdout


def test_golden_byte_identical_across_processes_and_thread_counts(files, tmp_path, runner):
    """Two subprocess runs with NUMBA_NUM_THREADS=1 and 2 (and an in-process serial run) write
    the same tree byte for byte."""
    model, mix = files
    trees = []
    for threads in ("1", "2"):
        out = tmp_path / f"t{threads}"
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        proc = subprocess.run([sys.executable, "-m", "intsim", "-q", "golden", str(model), str(mix), "-o", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        trees.append(tree(out))
    assert invoke(runner, "-q", "golden", model, mix, "-o", tmp_path / "serial", "--serial").exit_code == 0
    trees.append(tree(tmp_path / "serial"))
    assert len(trees[0]) > 50
    assert trees[0] == trees[1] == trees[2]


def test_profile_files_on_run_and_golden(runner, files, tmp_path):
    model, mix = files
    toml = tmp_path / "dsp.toml"
    toml.write_text(DSP_TOML)
    as_json = tmp_path / "dsp.json"
    as_json.write_text(json.dumps({"name": "dsp16", "base": "tflm", "int8": {"acc_bits": 16, "acc_overflow": "saturate"}}))
    x = np.load(mix)
    ref = intsim.load(model, profile={"name": "dsp16", "base": "tflm", "int8": {"acc_bits": 16, "acc_overflow": "saturate"}})
    expected = ref.run(x)["out2"]
    runs = []
    for spec in (toml, as_json):
        out = tmp_path / f"{spec.suffix[1:]}.npz"
        result = invoke(runner, "run", model, mix, "-o", out, "--profile", spec, "--json")
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["profile"]["name"] == "dsp16" and doc["profile"]["int8"]["acc_bits"] == 16
        with np.load(out) as saved:
            np.testing.assert_array_equal(saved["out2"], expected)
        runs.append(doc["counts"])
    assert runs[0] == runs[1] and runs[0]["acc_overflows"] > 0
    result = invoke(runner, "golden", model, mix, "-o", tmp_path / "g", "-p", toml, "--format", "npy", "--json")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["profile"] == ref.profile.to_dict()
    # the manifest records per-node overflow and saturation counts, as `run` reports them
    per_node = {n["name"]: n["counts"] for n in manifest["nodes"]}
    assert {k: v for k, v in per_node.items() if any(v.values())} == \
        {k: {"acc_overflows": v["acc_overflows"], "saturations": v["saturations"]} for k, v in runs[0]["nodes"].items()}
    assert manifest["counts"] == {"acc_overflows": runs[0]["acc_overflows"], "saturations": runs[0]["saturations"]}
    text = invoke(runner, "golden", model, mix, "-o", tmp_path / "g2", "-p", toml, "-f", "hex")
    assert "accumulator overflows" in text.stdout and "enc/conv[0]" in text.stdout


def test_bad_profile_files(runner, files, tmp_path):
    model, mix = files
    bad = tmp_path / "bad.toml"
    bad.write_text("acc_bits = [")
    assert_user_error(invoke(runner, "run", model, mix, "-p", bad), "not valid TOML")
    bad.write_text("acc_bits = 99\n")
    assert_user_error(invoke(runner, "golden", model, mix, "-o", tmp_path / "g", "-p", bad), "acc_bits", "bad.toml")
    assert_user_error(invoke(runner, "golden", model, mix, "-o", tmp_path / "g", "-p", tmp_path / "none.toml"), "does not exist")
    assert not (tmp_path / "g").exists()


def test_golden_default_dir_force_and_errors(runner, files, tmp_path, monkeypatch):
    model, mix = files
    monkeypatch.chdir(tmp_path)
    assert invoke(runner, "-q", "golden", model, mix, "-f", "npy").exit_code == 0
    default = tmp_path / "golden" / "model" / "mix"
    assert (default / "manifest.json").is_file()
    assert_user_error(invoke(runner, "golden", model, mix, "-f", "npy"), "--force")
    assert invoke(runner, "-q", "golden", model, mix, "-f", "hex", "--force").exit_code == 0
    assert json.loads((default / "manifest.json").read_text())["formats"] == ["hex"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert_user_error(invoke(runner, "golden", model, mix, "-o", tmp_path / "busy"), "not empty")
    assert_user_error(invoke(runner, "golden", tmp_path / "nope.npz", mix), "no such file")
    assert_user_error(invoke(runner, "golden", model, tmp_path / "nope.npy"), "no such file")
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 10), np.int8))
    assert_user_error(invoke(runner, "golden", model, tmp_path / "wrong.npy", "-o", tmp_path / "w"), "shape")
    assert not (tmp_path / "w").exists()
    result = invoke(runner, "golden", model, mix, "-f", "npy,bmp")
    assert result.exit_code == 2 and "--format" in result.stderr


def test_compare_cli(runner, files, tmp_path):
    model, mix = files
    ref, same, other = tmp_path / "ref", tmp_path / "same", tmp_path / "other"
    for out, extra in ((ref, []), (same, ["-f", "hex"]), (other, ["-p", "single", "-f", "npy"])):
        assert invoke(runner, "-q", "golden", model, mix, "-o", out, *extra).exit_code == 0
    result = invoke(runner, "compare", ref, same)
    assert result.exit_code == 0 and "identical" in result.stdout
    doc = json.loads(invoke(runner, "compare", ref, same, "--json").stdout)
    assert doc["identical"] and doc["first_diverging_node"] is None
    # a firmware-style dump: the golden layout, outputs only, as hex, one value changed in node 3
    fw = tmp_path / "fw"
    manifest = json.loads((ref / "manifest.json").read_text())
    for node in manifest["nodes"]:
        t = next(t for t in node["tensors"] if t["role"] == "output0")
        path = fw / t["files"]["hex"]["path"]
        path.parent.mkdir(parents=True)
        lines = (ref / t["files"]["hex"]["path"]).read_text().splitlines()
        if node["index"] == 3:
            lines[5] = f"{(int(lines[5], 16) + 1) % 256:02x}"
        path.write_text("\n".join(lines) + "\n")
    result = invoke(runner, "compare", ref, fw, "--outputs-only", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["first_diverging_node"]["index"] == 3 and doc["first_diverging_node"]["differing_elements"] == 1
    assert doc["first_diverging_node"]["max_abs_diff"] in (1, 255)
    text = invoke(runner, "compare", ref, fw, "--outputs-only")
    assert text.exit_code == 1 and "first      node #3 'a.b' (conv1d): output0" in text.stdout
    missing = invoke(runner, "compare", ref, fw)  # inputs and constants are missing from the firmware dump
    assert missing.exit_code == 1 and "missing" in missing.stdout
    notes = json.loads(invoke(runner, "compare", ref, other, "--json").stdout)["notes"]
    assert "profile differs: golden 'tflm', candidate 'single'" in notes
    assert_user_error(invoke(runner, "compare", tmp_path / "nope", ref), "does not exist")
    assert_user_error(invoke(runner, "compare", fw, ref), "no manifest.json")
    assert_user_error(invoke(runner, "compare", ref, tmp_path / "nope"), "candidate")
