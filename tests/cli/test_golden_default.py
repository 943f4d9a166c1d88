"""golden / compare / info --cost on a converted FQSS Conv-TasNet (the bundled default model)."""

import json

import numpy as np
from click.testing import CliRunner

from intsim.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def test_golden_is_deterministic_and_compare_finds_a_changed_value(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 2000)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("golden", "default", tmp_path / "x.npy", "-o", a, "--format", "npy").exit_code == 0
    assert invoke("golden", "default", tmp_path / "x.npy", "-o", b, "--format", "npy", "--serial").exit_code == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    same = invoke("compare", a, b, "--json")
    assert same.exit_code == 0 and json.loads(same.stdout)["identical"] is True

    manifest = json.loads((a / "manifest.json").read_text())
    node = manifest["nodes"][len(manifest["nodes"]) // 2]
    out = next(t for t in node["tensors"] if t["role"].startswith("output"))
    path = b / out["files"]["npy"]["path"]
    data = np.load(path)
    data.flat[0] = data.flat[0] + 1 if data.flat[0] < np.iinfo(data.dtype).max else data.flat[0] - 1
    np.save(path, data)
    diff = invoke("compare", a, b, "--json")
    assert diff.exit_code == 1
    assert json.loads(diff.stdout)["first_diverging_node"]["name"] == node["name"]


def test_info_cost_on_the_converted_model():
    result = invoke("info", "default", "--cost", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    memory = doc["cost"]["memory"]
    assert memory["no_reuse_bytes"] >= memory["arena_bytes"] >= memory["peak_live_bytes"] > 0


def test_eval_on_the_converted_model_with_a_profile(tmp_path):
    from intsim.defaults import DEMO_MIX, DEMO_REFERENCES

    manifest = tmp_path / "items.csv"
    manifest.write_text("id,mixture,s1,s2\n" + "".join(
        f"item{i},{DEMO_MIX},{DEMO_REFERENCES[0]},{DEMO_REFERENCES[1]}\n" for i in range(2)))
    result = invoke("eval", manifest, "default", "-o", tmp_path / "res", "-p", "single", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["count"] == 2 and doc["summary"]["failures"] == 0 and doc["profile"]["name"] == "single"
    assert (tmp_path / "res" / "results.csv").is_file()
