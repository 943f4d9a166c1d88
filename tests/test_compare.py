"""compare_dirs: golden vs candidate dumps, firmware-style dumps (.npy only / .hex only), errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import intsim
from intsim import compare, golden, modelfile
from tests.test_golden import NODE_NAMES, build_graph, make_input


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """A golden dump (all formats) of the five-node test graph, and its model file."""
    root = tmp_path_factory.mktemp("cmp")
    model_path = root / "model.npz"
    modelfile.save(build_graph(), model_path)
    ref = root / "golden"
    manifest = golden.write_golden(intsim.load(model_path), make_input(), ref, model_path=model_path)
    return root, ref, manifest


@pytest.fixture
def golden_dir(dumps):
    return dumps[1]


@pytest.fixture
def manifest(dumps):
    return dumps[2]


def copy_tree(src, dst, keep=(".npy", ".hex", ".h"), with_manifest=True):
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if "." in n and not n.endswith(keep)
                                                          and not (with_manifest and n == golden.MANIFEST)])
    if not with_manifest and (dst / golden.MANIFEST).exists():
        (dst / golden.MANIFEST).unlink()
    return dst


def entry(manifest, node_index, role):
    return next(t for t in manifest["nodes"][node_index]["tensors"] if t["role"] == role)


def test_identical_to_itself(golden_dir):
    report = compare.compare_dirs(golden_dir, golden_dir)
    assert report["identical"] and report["first_diverging_node"] is None
    assert report["summary"]["nodes"] == 5 and report["summary"]["by_status"] == {"ok": report["summary"]["tensors"]}
    assert report["candidate_has_manifest"] and report["notes"] == []
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("keep", [(".npy",), (".hex",)])
def test_firmware_dump_with_only_npy_or_only_hex(golden_dir, tmp_path, keep):
    cand = copy_tree(golden_dir, tmp_path / "fw", keep=keep, with_manifest=False)
    assert {p.suffix for p in cand.rglob("*") if p.is_file()} == set(keep)
    report = compare.compare_dirs(golden_dir, cand)
    assert report["identical"] and not report["candidate_has_manifest"]
    files = {t["candidate_file"] for n in report["nodes"] for t in n["tensors"]}
    assert all(f.endswith(keep[0]) for f in files)


def test_one_changed_output_is_the_first_divergence(golden_dir, manifest, tmp_path):
    cand = copy_tree(golden_dir, tmp_path / "fw", keep=(".npy",), with_manifest=False)
    # node 3 ('a.b') output: 3 elements off by +1, -2, +5 LSB; node 4's copy of it (its input) too
    out = entry(manifest, 3, "output0")
    data = np.load(cand / out["files"]["npy"]["path"])
    changed = data.astype(np.int64)
    changed[0, 0, 4] += 1
    changed[0, 1, 0] -= 2
    changed[0, 2, 7] += 5
    changed = np.clip(changed, -128, 127).astype(np.int8)
    n_diff = int(np.count_nonzero(changed != data))
    max_diff = int(np.max(np.abs(changed.astype(int) - data.astype(int))))
    np.save(cand / out["files"]["npy"]["path"], changed)
    np.save(cand / entry(manifest, 4, "input0")["files"]["npy"]["path"], changed)
    report = compare.compare_dirs(golden_dir, cand)
    assert not report["identical"]
    first = report["first_diverging_node"]
    assert (first["index"], first["name"], first["op"], first["tensors"]) == (3, "a.b", "conv1d", ["output0"])
    assert first["differing_elements"] == n_diff and first["max_abs_diff"] == max_diff
    node3 = report["nodes"][3]
    t = next(t for t in node3["tensors"] if t["role"] == "output0")
    assert t["status"] == "differ" and t["differing_elements"] == n_diff and t["first_diff_index"] == [0, 0, 4]
    assert [n["status"] for n in report["nodes"]] == ["ok", "ok", "ok", "differ", "differ"]
    assert report["summary"] == {"nodes": 5, "nodes_differing": 2, "tensors": report["summary"]["tensors"],
                                 "tensors_differing": 2, "by_status": {"ok": report["summary"]["tensors"] - 2, "differ": 2}}


def test_missing_shape_dtype_and_unreadable(golden_dir, manifest, tmp_path):
    cand = copy_tree(golden_dir, tmp_path / "fw", keep=(".npy", ".hex"), with_manifest=False)
    w = entry(manifest, 0, "weights")  # missing: both .npy and .hex removed
    for f in w["files"].values():
        (cand / f["path"]).unlink(missing_ok=True)
    b = entry(manifest, 0, "bias")  # dtype mismatch with the same values
    np.save(cand / b["files"]["npy"]["path"], np.load(golden_dir / b["files"]["npy"]["path"]).astype(np.int64))
    y = entry(manifest, 1, "output0")  # shape mismatch
    np.save(cand / y["files"]["npy"]["path"], np.load(golden_dir / y["files"]["npy"]["path"])[..., :-1])
    t = entry(manifest, 1, "table")  # unreadable .npy (the .hex next to it is not used: .npy comes first)
    (cand / t["files"]["npy"]["path"]).write_bytes(b"\x93NUMPY junk")
    report = compare.compare_dirs(golden_dir, cand)
    status = {(n["index"], x["role"]): x for n in report["nodes"] for x in n["tensors"]}
    assert status[(0, "weights")]["status"] == "missing"
    assert status[(0, "bias")]["status"] == "dtype_mismatch" and status[(0, "bias")]["differing_elements"] == 0
    assert status[(0, "bias")]["candidate_dtype"] == "int64"
    assert status[(1, "output0")]["status"] == "shape_mismatch"
    assert status[(1, "table")]["status"] == "unreadable" and "npy" in status[(1, "table")]["error"]
    assert report["first_diverging_node"]["name"] == NODE_NAMES[0]
    assert report["first_diverging_node"]["status"] == "missing"
    assert report["summary"]["by_status"]["missing"] == 1


def test_hex_reader(golden_dir, manifest, tmp_path):
    cand = copy_tree(golden_dir, tmp_path / "fw", keep=(".hex",), with_manifest=False)
    b = entry(manifest, 0, "bias")
    path = cand / b["files"]["hex"]["path"]
    values = np.load(golden_dir / b["files"]["npy"]["path"])
    # firmware style: upper case, 0x prefix, comments and blank lines are accepted
    lines = ["// bias dump", ""] + [f"0x{int(v) & 0xffffffff:08X}  # c{i}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    assert compare.compare_dirs(golden_dir, cand)["identical"]
    path.write_text("\n".join(lines[:-1]) + "\n")
    got = compare.compare_dirs(golden_dir, cand)["nodes"][0]["tensors"]
    assert next(t for t in got if t["role"] == "bias")["status"] == "shape_mismatch"
    path.write_text("\n".join(lines[:-1] + ["1ffffffff"]) + "\n")
    got = compare.compare_dirs(golden_dir, cand)["nodes"][0]["tensors"]
    bias = next(t for t in got if t["role"] == "bias")
    assert bias["status"] == "unreadable" and "32 bits" in bias["error"]
    path.write_text("zz\n")
    bias = next(t for t in compare.compare_dirs(golden_dir, cand)["nodes"][0]["tensors"] if t["role"] == "bias")
    assert bias["status"] == "unreadable" and "line 1" in bias["error"]
    np.testing.assert_array_equal(compare.read_hex(golden_dir / b["files"]["hex"]["path"], "int32", [len(values)]), values)


def test_outputs_only_ignores_inputs_and_constants(golden_dir, manifest, tmp_path):
    cand = tmp_path / "fw"
    for node in manifest["nodes"]:
        f = entry(manifest, node["index"], "output0")["files"]["hex"]["path"]
        (cand / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(golden_dir / f, cand / f)
    assert not compare.compare_dirs(golden_dir, cand)["identical"]
    report = compare.compare_dirs(golden_dir, cand, outputs_only=True)
    assert report["identical"] and report["summary"]["tensors"] == 5


def test_candidate_manifest_maps_by_node_name_and_notes_differences(dumps, tmp_path):
    root, ref, manifest = dumps
    other = root / "model.npz"
    cand = tmp_path / "single"
    profile = {"name": "narrow", "base": "single", "mult_bits": 8}
    golden.write_golden(intsim.load(other, profile=profile), make_input(), cand, formats="hex", model_path=other)
    report = compare.compare_dirs(ref, cand)
    assert any("profile differs: golden 'tflm', candidate 'narrow'" in n for n in report["notes"])
    assert report["candidate_has_manifest"] and not report["identical"]
    first = report["first_diverging_node"]
    assert first["index"] == 0 and first["tensors"] == ["output0"]
    # a candidate whose directories were renumbered is still matched through its manifest
    doc = json.loads((cand / golden.MANIFEST).read_text())
    for node in doc["nodes"]:
        for t in node["tensors"]:
            for f in t["files"].values():
                new = f["path"].replace("nodes/", "layers/")
                (cand / new).parent.mkdir(parents=True, exist_ok=True)
                (cand / f["path"]).rename(cand / new)
                f["path"] = new
    (cand / golden.MANIFEST).write_text(json.dumps(doc))
    again = compare.compare_dirs(ref, cand)
    assert again["summary"] == report["summary"] and again["first_diverging_node"] == first


def test_golden_file_modified_is_reported(golden_dir, manifest, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(golden_dir, ref)
    w = entry(manifest, 0, "weights")
    data = np.load(ref / w["files"]["npy"]["path"])
    np.save(ref / w["files"]["npy"]["path"], data[::-1].copy())
    (ref / w["files"]["hex"]["path"]).unlink()
    report = compare.compare_dirs(ref, golden_dir)
    got = report["nodes"][0]["tensors"][1]
    assert got["status"] == "golden_unreadable" and "sha256" in got["error"]


@pytest.mark.parametrize("damage, message", [
    ("no_dir", "does not exist"),
    ("no_manifest", "no manifest.json"),
    ("bad_json", "not valid JSON"),
    ("wrong_format", "field 'format'"),
    ("unsafe_path", "safe relative path"),
    ("bad_dtype", "dtype"),
])
def test_unreadable_golden_dir(golden_dir, tmp_path, damage, message):
    ref = tmp_path / "ref"
    if damage != "no_dir":
        shutil.copytree(golden_dir, ref)
    doc = json.loads((golden_dir / golden.MANIFEST).read_text())
    if damage == "no_manifest":
        (ref / golden.MANIFEST).unlink()
    elif damage == "bad_json":
        (ref / golden.MANIFEST).write_text("{")
    elif damage == "wrong_format":
        doc["format"] = "other"
    elif damage == "unsafe_path":
        doc["nodes"][0]["tensors"][0]["files"]["npy"]["path"] = "../../etc/passwd"
    elif damage == "bad_dtype":
        doc["nodes"][0]["tensors"][0]["dtype"] = "object"
    if damage in ("wrong_format", "unsafe_path", "bad_dtype"):
        (ref / golden.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(compare.CompareError, match=message):
        compare.compare_dirs(ref, golden_dir)
    with pytest.raises(compare.CompareError, match="candidate"):
        compare.compare_dirs(golden_dir, tmp_path / "nothing")


@pytest.mark.parametrize("a, b, n, max_diff", [
    (np.array([1, 2, 3], np.int8), np.array([1, -2, 3], np.int8), 1, 4),
    (np.array([-(2**63), 0], np.int64), np.array([2**63 - 1, 0], np.int64), 1, 2**64 - 1),
    (np.array([0, 255], np.uint8), np.array([0, 255], np.int16), 0, 0),
    (np.array([0.5, np.nan], np.float32), np.array([0.75, np.nan], np.float32), 1, 0.25),
])
def test_compare_arrays(a, b, n, max_diff):
    got = compare.compare_arrays(a, b)
    assert got["differing_elements"] == n and got["max_abs_diff"] == max_diff


def test_hex_only_golden_dump(dumps, tmp_path):
    root, ref, _ = dumps
    hex_ref = tmp_path / "hex"
    golden.write_golden(intsim.load(root / "model.npz"), make_input(), hex_ref, formats="hex")
    assert compare.compare_dirs(hex_ref, hex_ref)["identical"]
    assert compare.compare_dirs(hex_ref, ref)["identical"] and compare.compare_dirs(ref, hex_ref)["identical"]
