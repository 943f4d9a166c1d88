"""The intsim command line: results on stdout, errors as one `error:` line, exit codes 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import intsim
from intsim import modelfile
from intsim.cli import main
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.kernels.conv import conv1d_output_length

# (c_in, c_out, kernel, stride, padding, dilation, groups) of the two conv1d layers.
LAYERS = [(2, 8, 5, 2, [2, 1], 1, 1), (8, 8, 3, 1, [2, 2], 2, 4)]


def build_graph(layers=LAYERS, time=None, real=0.004, metadata=None, two_outputs=False, seed=0):
    """int8 conv1d chain x -> conv0 -> ... ; constants drawn at random; dynamic time unless `time`."""
    rng = np.random.default_rng(seed)
    tensors, nodes, constants = {}, [], {}
    q = Quant([0.05], [3])
    tensors["x"] = TensorSpec("x", "int8", [1, layers[0][0], time], q)
    prev, t = "x", time
    for i, (c_in, c_out, k, stride, pad, dil, groups) in enumerate(layers):
        m, sh = quantize_multiplier(real)
        data = {
            "w": rng.integers(-127, 128, (c_out, c_in // groups, k)).astype(np.int8),
            "b": rng.integers(-2000, 2000, c_out).astype(np.int32),
            "m": np.full(c_out, m, np.int32),
            "s": np.full(c_out, sh, np.int32),
            "f": np.full(c_out, real, np.float32),
        }
        names = []
        for key, value in data.items():
            name = f"l{i}.{key}"
            tensors[name] = TensorSpec(name, str(value.dtype), list(value.shape))
            constants[name] = value
            names.append(name)
        t = None if t is None else conv1d_output_length(t, k, stride, pad[0], pad[1], dil)
        y = f"y{i}"
        tensors[y] = TensorSpec(y, "int8", [1, c_out, t], Quant([0.1], [-2]))
        nodes.append(Node(f"conv{i}", "conv1d", [prev] + names, [y],
                          {"stride": stride, "padding": pad, "dilation": dil, "groups": groups}))
        prev = y
    outputs = [prev, "y0"] if two_outputs else [prev]
    return Graph(tensors, nodes, ["x"], outputs, constants, "tflm", metadata or {})


def expected_macs(length, layers=LAYERS):
    total, per_node, t = 0, [], length
    for c_in, c_out, k, stride, pad, dil, groups in layers:
        t = conv1d_output_length(t, k, stride, pad[0], pad[1], dil)
        macs = t * c_out * (c_in // groups) * k
        per_node.append(macs)
        total += macs
    return total, per_node


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.npz"
    modelfile.save(build_graph(metadata={"sample_rate": 8000, "stems": ["a", "b"]}), path)
    return path


@pytest.fixture
def mix(tmp_path):
    path = tmp_path / "mix.npy"
    np.save(path, np.random.default_rng(1).integers(-128, 128, (1, 2, 301)).astype(np.int8))
    return path


def invoke(runner, *args):
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, *fragments):
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()  # notices may precede the one error line
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- version and help ------------------------------------------------------------------------

def test_version(runner):
    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"intsim {intsim.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["info", "--help"], ["run", "--help"], ["-h"]])
def test_help(runner, args):
    result = invoke(runner, *args)
    assert result.exit_code == 0
    assert "Usage:" in result.stdout and result.stderr == ""


def test_help_documents_exit_codes_and_default_output(runner):
    assert "Exit status" in invoke(runner, "--help").stdout
    assert "<input>_out.npz" in invoke(runner, "run", "--help").stdout


# --- info ---------------------------------------------------------------------------------------

def test_info_json(runner, model):
    result = invoke(runner, "info", model, "--json", "--length", 1000)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    graph = modelfile.load(model)
    assert doc["ops"] == {"conv1d": 2}
    assert doc["nodes"] == 2
    assert doc["tensors"] == {"total": len(graph.tensors), "constants": 10, "activations": 3}
    assert doc["parameters"] == sum(a.size for a in graph.constants.values())
    assert doc["weight_bytes"] == sum(a.nbytes for a in graph.constants.values())
    assert doc["constants_by_dtype"]["int8"]["elements"] == 8 * 2 * 5 + 8 * 2 * 3
    total, per_node = expected_macs(1000)
    assert doc["macs"]["total"] == total
    assert [n["macs"] for n in doc["macs"]["per_node"]] == per_node
    assert doc["macs"]["input_length"] == 1000
    assert doc["macs"]["input_shapes"] == {"x": [1, 2, 1000]}
    assert doc["macs"]["shape_inference"]["method"] == "dry-run"
    assert doc["macs"]["by_op"] == {"conv1d": total}
    assert doc["profile"] == intsim.get_profile("tflm").to_dict()
    assert doc["metadata"] == {"sample_rate": 8000, "stems": ["a", "b"]}
    assert doc["inputs"][0] == {"name": "x", "dtype": "int8", "shape": [1, 2, None],
                                "quant": {"scale": [0.05], "zero_point": [3], "axis": None}}
    assert doc["model"]["sha256"] == intsim.inspect.file_sha256(model)


def test_info_default_length_is_one_second_at_sample_rate(runner, model):
    doc = json.loads(invoke(runner, "info", model, "--json").stdout)
    assert doc["macs"]["input_length"] == 8000
    assert doc["macs"]["total"] == expected_macs(8000)[0]


def test_info_default_length_without_sample_rate(runner, tmp_path):
    path = tmp_path / "m.npz"
    modelfile.save(build_graph(), path)
    doc = json.loads(invoke(runner, "info", path, "--json").stdout)
    assert doc["macs"]["input_length"] == intsim.inspect.DEFAULT_LENGTH
    assert doc["macs"]["total"] == expected_macs(intsim.inspect.DEFAULT_LENGTH)[0]


def test_info_static_graph_needs_no_dry_run(runner, tmp_path):
    path = tmp_path / "m.npz"
    modelfile.save(build_graph(time=500), path)
    result = invoke(runner, "info", path, "--json", "--length", 99)
    doc = json.loads(result.stdout)
    assert doc["macs"]["shape_inference"]["method"] == "static"
    assert doc["macs"]["total"] == expected_macs(500)[0]
    assert doc["macs"]["input_length"] is None
    assert "--length is ignored" in result.stderr


def test_info_no_macs_skips_the_dry_run(runner, tmp_path):
    graph = build_graph()
    graph.nodes[1].op = "not_an_op"  # an op intsim cannot run: info still describes the file
    path = tmp_path / "m.npz"
    modelfile.save(graph, path)
    doc = json.loads(invoke(runner, "info", path, "--json", "--no-macs").stdout)
    assert "macs" not in doc and doc["ops"] == {"conv1d": 1, "not_an_op": 1}
    assert_user_error(invoke(runner, "info", path), "not_an_op", "--no-macs")


def test_info_table(runner, model):
    result = invoke(runner, "info", model, "--length", 1000, "--nodes")
    assert result.exit_code == 0
    total, per_node = expected_macs(1000)
    assert f"{total:,}" in result.stdout
    assert f"{per_node[1]:,}" in result.stdout
    assert "conv1d" in result.stdout and "tflm" in result.stdout and "sample_rate" in result.stdout
    assert "dry run" in result.stderr and "dry run" not in result.stdout


def test_info_quiet_silences_notices(runner, model):
    result = invoke(runner, "-q", "info", model, "--json")
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.parametrize("op, x, w, y, attrs, macs", [
    # conv_transpose1d: N * T_in * C_in * C_out/groups * K (Conv-TasNet decoder)
    ("conv_transpose1d", [1, 512, 100], [512, 1, 16], [1, 1, 808], {"stride": 8}, 100 * 512 * 16),
    ("conv_transpose1d", [2, 8, 10], [8, 3, 4], [2, 6, 22], {"stride": 2, "groups": 2}, 2 * 10 * 8 * 3 * 4),
    # conv2d: N * OH * OW * C_out * C_in/groups * KH * KW
    ("conv2d", [1, 4, 10, 12], [6, 2, 3, 3], [1, 6, 8, 10], {"groups": 2}, 8 * 10 * 6 * 2 * 9),
    ("conv_transpose2d", [1, 4, 5, 6], [4, 2, 3, 3], [1, 2, 7, 8], {}, 5 * 6 * 4 * 2 * 9),
    # linear: rows * in * out, any leading dims
    ("linear", [2, 100, 128], [512, 128], [2, 100, 512], {}, 200 * 128 * 512),
])
def test_mac_formulas_static(op, x, w, y, attrs, macs):
    """MAC formulas of the other MAC-counting ops, on static graphs (no dry run, so no kernel runs)."""
    q = Quant([0.1], [0])
    consts = {"w": np.zeros(w, np.int8)}
    tensors = {"x": TensorSpec("x", "int8", x, q), "w": TensorSpec("w", "int8", w), "y": TensorSpec("y", "int8", y, q)}
    graph = Graph(tensors, [Node("n", op, ["x", "w"], ["y"], attrs)], ["x"], ["y"], consts)
    got = intsim.inspect.count_macs(graph)
    assert got["total"] == macs and got["shape_inference"]["method"] == "static"


@pytest.mark.parametrize("a, b, y, attrs", [
    ([3, 7, 5], [3, 5, 4], [3, 7, 4], {}),
    ([3, 5, 7], [3, 5, 4], [3, 7, 4], {"transpose_a": 1}),
    ([3, 7, 5], [3, 4, 5], [3, 7, 4], {"transpose_b": 1}),
    ([2, 3, 7, 5], [5, 4], [2, 3, 7, 4], {}),  # broadcast batch
])
def test_mac_formula_batch_matmul(a, b, y, attrs):
    q = Quant([0.1], [0])
    tensors = {"a": TensorSpec("a", "int8", a, q), "b": TensorSpec("b", "int8", b, q), "y": TensorSpec("y", "int32", y)}
    graph = Graph(tensors, [Node("n", "batch_matmul", ["a", "b"], ["y"], attrs)], ["a", "b"], ["y"])
    assert intsim.inspect.count_macs(graph)["total"] == int(np.prod(y)) * 5  # K = 5


# --- run ----------------------------------------------------------------------------------------

def run_json(runner, *args):
    result = invoke(runner, "run", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_run_writes_npz_and_reports(runner, model, mix, tmp_path):
    out = tmp_path / "est.npz"
    doc = run_json(runner, model, mix, "-o", out)
    expected = intsim.load(model).run(np.load(mix))
    t_out = expected["y1"].shape[2]
    assert doc["outputs"] == {"y1": {"shape": [1, 8, t_out], "dtype": "int8"}}
    assert doc["output_path"] == str(out)
    assert doc["profile"]["name"] == "tflm" and doc["parallel"] is True
    assert doc["timing"]["wall_s"] >= doc["timing"]["jit_s"] >= 0
    with np.load(out) as saved:
        assert saved.files == ["y1"]
        np.testing.assert_array_equal(saved["y1"], expected["y1"])


def test_run_default_output_next_to_input(runner, model, mix):
    doc = run_json(runner, model, mix)
    default = mix.with_name("mix_out.npz")
    assert doc["output_path"] == str(default) and default.is_file()


def test_run_npy_output_and_plain_summary(runner, model, mix, tmp_path):
    out = tmp_path / "est.npy"
    result = invoke(runner, "run", model, mix, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert np.load(out).shape == intsim.load(model).run(np.load(mix))["y1"].shape
    assert "y1" in result.stdout and "int8" in result.stdout and "accumulator overflows" in result.stdout


def test_run_counts_overflows_and_saturations(runner, tmp_path, mix):
    # A huge multiplier saturates most outputs; a 20-bit accumulator overflows.
    graph = build_graph(real=0.5, seed=3)
    graph.profile = {"name": "narrow", "base": "single", "acc_bits": 20, "mult_bits": 16}
    path = tmp_path / "loud.npz"
    modelfile.save(graph, path)
    doc = run_json(runner, path, mix)
    model = intsim.load(path)
    model.run(np.load(mix))
    expected = {name: (c.acc_overflows, c.saturations) for name, c in model.counts.items()}
    assert sum(s for _, s in expected.values()) > 0
    counts = doc["counts"]
    assert counts["saturations"] == sum(s for _, s in expected.values())
    assert counts["acc_overflows"] == sum(o for o, _ in expected.values())
    assert {k: (v["acc_overflows"], v["saturations"]) for k, v in counts["nodes"].items()} == \
        {k: v for k, v in expected.items() if any(v)}
    assert all(v["op"] == "conv1d" for v in counts["nodes"].values())


def test_run_profile_name_file_and_serial(runner, model, mix, tmp_path):
    a = run_json(runner, model, mix, "-o", tmp_path / "a.npz", "--profile", "single", "--serial")
    assert a["profile"]["name"] == "single" and a["parallel"] is False
    spec = tmp_path / "dsp.json"
    spec.write_text(json.dumps({"name": "dsp24", "base": "tflm", "int8": {"acc_bits": 24, "acc_overflow": "saturate"}}))
    b = run_json(runner, model, mix, "-o", tmp_path / "b.npz", "-p", spec)
    assert b["profile"]["name"] == "dsp24" and b["profile"]["int8"]["acc_bits"] == 24
    c = run_json(runner, model, mix, "-o", tmp_path / "c.npz", "--profile", "single")
    with np.load(tmp_path / "a.npz") as sa, np.load(tmp_path / "c.npz") as sc:
        np.testing.assert_array_equal(sa["y1"], sc["y1"])  # serial == parallel


def test_run_npz_input_by_name_and_float_input(runner, tmp_path, mix):
    graph = build_graph(two_outputs=True)
    path = tmp_path / "two.npz"
    modelfile.save(graph, path)
    x = np.load(mix)
    np.savez(tmp_path / "in.npz", x=x)
    doc = run_json(runner, path, tmp_path / "in.npz", "-o", tmp_path / "o.npz")
    assert set(doc["outputs"]) == {"y1", "y0"}
    xf = (x.astype(np.float32) - 3) * 0.05  # float input is quantized with the input's scale/zp
    np.save(tmp_path / "f.npy", xf)
    run_json(runner, path, tmp_path / "f.npy", "-o", tmp_path / "of.npz")
    with np.load(tmp_path / "o.npz") as a, np.load(tmp_path / "of.npz") as b:
        np.testing.assert_array_equal(a["y1"], b["y1"])


# --- errors: exit 1, one `error:` line, no traceback ------------------------------------------

def test_error_missing_model(runner, tmp_path, mix):
    assert_user_error(invoke(runner, "info", tmp_path / "nope.npz"), "no such file")
    assert_user_error(invoke(runner, "run", tmp_path / "nope.npz", mix), "no such file")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad_json", "bad_constant"])
def test_error_corrupt_model(runner, model, mix, damage):
    raw = model.read_bytes()
    if damage == "garbage":
        model.write_bytes(b"\x00not a zip" * 50)
    elif damage == "truncated":
        model.write_bytes(raw[: len(raw) // 2])
    else:
        with zipfile.ZipFile(model) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        if damage == "bad_json":
            members["graph.json"] = members["graph.json"][:-10]
        else:
            members["c000000.npy"] = b"\x93NUMPY garbage"
        with zipfile.ZipFile(model, "w") as zf:
            for n, data in members.items():
                zf.writestr(n, data)
    assert_user_error(invoke(runner, "info", model), str(model))
    assert_user_error(invoke(runner, "run", model, mix), str(model))


def test_error_bad_profile(runner, model, mix, tmp_path):
    assert_user_error(invoke(runner, "run", model, mix, "--profile", "tflm2"), "unknown profile 'tflm2'")
    bad = tmp_path / "p.json"
    bad.write_text('{"acc_bits": 99}')
    assert_user_error(invoke(runner, "run", model, mix, "--profile", bad), "acc_bits")
    bad.write_text("{not json")
    assert_user_error(invoke(runner, "run", model, mix, "--profile", bad), "not valid JSON")
    assert_user_error(invoke(runner, "run", model, mix, "--profile", tmp_path / "missing.json"), "does not exist")


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((1, 3, 100), np.int8), "shape"),            # wrong channel count
    (np.zeros((2, 100), np.int8), "shape"),               # wrong rank
    (np.zeros((1, 2, 100), np.int32), "dtype"),           # wrong integer dtype
    (np.zeros((1, 2, 100), np.complex64), "dtype"),
    (np.full((1, 2, 100), np.nan, np.float32), "NaN"),
    (np.zeros((1, 2, 1), np.int8), "conv0"),              # too short for the first conv
])
def test_error_bad_input_array(runner, model, tmp_path, array, fragment):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    assert_user_error(invoke(runner, "run", model, path), fragment)


def test_error_bad_input_files(runner, model, tmp_path):
    assert_user_error(invoke(runner, "run", model, tmp_path / "missing.npy"), "no such file")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    assert_user_error(invoke(runner, "run", model, tmp_path / "junk.npy"), "junk.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_user_error(invoke(runner, "run", model, tmp_path / "obj.npy"), "pickle")
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    assert_user_error(invoke(runner, "run", model, tmp_path / "x.wav"), ".npy or .npz")
    np.savez(tmp_path / "wrong.npz", a=np.zeros((1, 2, 10), np.int8), b=np.zeros(1))
    assert_user_error(invoke(runner, "run", model, tmp_path / "wrong.npz"), "missing ['x']")


def test_error_bad_output_path(runner, model, mix, tmp_path):
    assert_user_error(invoke(runner, "run", model, mix, "-o", tmp_path / "o.txt"), ".npz or .npy")
    assert_user_error(invoke(runner, "run", model, mix, "-o", tmp_path / "no" / "o.npz"), "does not exist")
    assert_user_error(invoke(runner, "run", model, mix, "-o", mix), "overwrite the input")
    path = tmp_path / "two.npz"
    modelfile.save(build_graph(two_outputs=True), path)
    assert_user_error(invoke(runner, "run", path, mix, "-o", tmp_path / "o.npy"), "2 outputs")
    assert not (tmp_path / "o.npy").exists()


def test_error_info_length_too_short(runner, model):
    assert_user_error(invoke(runner, "info", model, "--length", 1), "conv0", "--length")


# --- usage errors: exit 2 -----------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["info", "m.npz", "--frobnicate"],
    ["run", "m.npz"],
    ["info"],
    ["info", "m.npz", "--length", "0"],
    ["info", "m.npz", "--length", "ten"],
    ["bogus-command"],
])
def test_usage_errors_exit_2(runner, args):
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Usage:" in result.stderr and "Traceback" not in result.stderr


# --- the installed entry point --------------------------------------------------------------------

def test_installed_entry_point(model, mix, tmp_path):
    exe = Path(sys.executable).with_name("intsim")
    assert exe.is_file(), f"entry point not installed at {exe}"
    ok = subprocess.run([exe, "info", model, "--json", "--length", "500"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["macs"]["total"] == expected_macs(500)[0]
    bad = subprocess.run([exe, "run", model, tmp_path / "missing.npy"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    usage = subprocess.run([exe, "run", "--nope"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2
