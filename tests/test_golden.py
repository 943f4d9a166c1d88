"""Golden dumps: layout, manifest, encodings (npy / C / hex), names, determinism, counts."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import intsim
from intsim import golden, modelfile
from intsim.fixedpoint import quantize_multiplier, reduce_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec
from intsim.quantize import add_params, make_lut8, requantize_params

#: node names chosen to need sanitising; "a.b" and "a/b" sanitise to the same token
NODE_NAMES = ["enc/conv[0]", "act:lut", "sum", "a.b", "a/b"]


def _const(tensors, constants, name, value):
    tensors[name] = TensorSpec(name, str(value.dtype), list(value.shape))
    constants[name] = value


def _conv(tensors, constants, nodes, rng, name, x, y, c_in, c_out, k, pad, real, y_quant, stride=1):
    m, sh = quantize_multiplier(real)
    data = {"w": rng.integers(-127, 128, (c_out, c_in, k)).astype(np.int8),
            "b": rng.integers(-3000, 3000, c_out).astype(np.int32),
            "m": np.full(c_out, m, np.int32), "s": np.full(c_out, sh, np.int32), "f": np.full(c_out, real, np.float32)}
    names = []
    for key, value in data.items():
        _const(tensors, constants, f"{name}.{key}", value)
        names.append(f"{name}.{key}")
    tensors[y] = TensorSpec(y, "int8", [1, c_out, None], y_quant)
    nodes.append(Node(name, "conv1d", [x] + names, [y], {"padding": pad, "stride": stride}))


def build_graph(seed=0, real=0.004, profile="tflm") -> Graph:
    """x -> conv1d -> lut8 -> add(conv, lut) -> conv1d -> requantize: five ops, odd names."""
    rng = np.random.default_rng(seed)
    tensors, constants, nodes = {}, {}, []
    tensors["x"] = TensorSpec("x", "int8", [1, 2, None], Quant([0.05], [3]))
    q0, q1, q2, q3, q4 = Quant([0.1], [-2]), Quant([1 / 128], [0]), Quant([0.12], [1]), Quant([0.2], [0]), Quant([0.25], [5])
    _conv(tensors, constants, nodes, rng, NODE_NAMES[0], "x", "enc/y.0", 2, 4, 3, [1, 1], real, q0)
    _const(tensors, constants, "act:table", make_lut8(np.tanh, 0.1, -2, 1 / 128, 0))
    tensors["act/y"] = TensorSpec("act/y", "int8", [1, 4, None], q1)
    nodes.append(Node(NODE_NAMES[1], "lut8", ["enc/y.0", "act:table"], ["act/y"]))
    p = add_params(0.1, 1 / 128, 0.12)
    for key, value in (("m", p.multiplier), ("s", p.shift), ("f", p.scale)):
        _const(tensors, constants, f"sum.{key}", value)
    tensors["sum/y"] = TensorSpec("sum/y", "int8", [1, 4, None], q2)
    nodes.append(Node("sum", "add", ["enc/y.0", "act/y", "sum.m", "sum.s", "sum.f"], ["sum/y"],
                      {"left_shift": p.left_shift}))
    _conv(tensors, constants, nodes, rng, NODE_NAMES[3], "sum/y", "out", 4, 3, 1, [0, 0], real * 4, q3)
    r = requantize_params(0.2, 0.25)
    for key, value in (("m", r.multiplier), ("s", r.shift), ("f", r.scale)):
        _const(tensors, constants, f"rq.{key}", value)
    tensors["out2"] = TensorSpec("out2", "int8", [1, 3, None], q4)
    nodes.append(Node(NODE_NAMES[4], "requantize", ["out", "rq.m", "rq.s", "rq.f"], ["out2"]))
    return Graph(tensors, nodes, ["x"], ["out2"], constants, profile, {"sample_rate": 8000})


def make_input(t=37, seed=1):
    return np.random.default_rng(seed).integers(-128, 128, (1, 2, t)).astype(np.int8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    modelfile.save(build_graph(), path)
    return path


@pytest.fixture(scope="module")
def dump(model_file, tmp_path_factory):
    """(directory, manifest, captured {node name: (inputs, outputs)}) of one dump in all formats."""
    out = tmp_path_factory.mktemp("golden") / "dump"
    x = make_input()
    model = intsim.load(model_file)
    captured = {}
    model.run(x, hook=lambda node, args, outs: captured.__setitem__(node.name, ([None if a is None else a.copy() for a in args],
                                                                               [o.copy() for o in outs])))
    manifest = golden.write_golden(intsim.load(model_file), x, out, model_path=model_file)
    return out, manifest, captured


def all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def decode_hex(text: str, dtype) -> np.ndarray:
    dt = np.dtype(dtype)
    values = [int(v, 16) for v in text.split()]
    return np.array(values, dtype=np.uint64).astype(f"<u{dt.itemsize}").view(dt)


def parse_c_array(text: str):
    """(C type, name, values as Python numbers) of the one array in a generated header."""
    m = re.search(r"const (\w+) (\w+)\[(\d+)\] = \{(.*?)\};", text, re.S)
    body = m.group(4)
    body = body.replace("(-2147483647 - 1)", str(-(2**31))).replace("(-9223372036854775807LL - 1)", str(-(2**63)))
    values = []
    for token in (t.strip() for t in body.split(",")):
        if not token:
            continue
        if token.startswith(("0x", "-0x")) and token.endswith("f"):
            values.append(float.fromhex(token[:-1]))
        else:
            values.append(int(token.rstrip("L")))
    return m.group(1), m.group(2), values


# --- manifest and layout ------------------------------------------------------------------------

def test_manifest_schema(dump, model_file):
    out, manifest, _ = dump
    on_disk = json.loads((out / golden.MANIFEST).read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["format"] == "intsim-golden" and manifest["version"] == 1
    assert manifest["intsim"] == intsim.__version__
    assert manifest["model"] == {"file": "model.npz", "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()}
    assert manifest["profile"] == intsim.get_profile("tflm").to_dict()
    assert manifest["formats"] == ["npy", "c", "hex"]
    assert [n["name"] for n in manifest["nodes"]] == NODE_NAMES
    assert [n["op"] for n in manifest["nodes"]] == ["conv1d", "lut8", "add", "conv1d", "requantize"]
    conv = manifest["nodes"][0]
    assert conv["attrs"] == {"padding": [1, 1], "stride": 1}
    assert conv["inputs"] == ["x"] + [f"enc/conv[0].{k}" for k in "wbmsf"] and conv["outputs"] == ["enc/y.0"]
    roles = [(t["role"], t["kind"], t["tensor"]) for t in conv["tensors"]]
    assert roles == [("input0", "input", "x"), ("weights", "constant", "enc/conv[0].w"), ("bias", "constant", "enc/conv[0].b"),
                     ("multiplier", "constant", "enc/conv[0].m"), ("shift", "constant", "enc/conv[0].s"),
                     ("scale", "constant", "enc/conv[0].f"), ("output0", "output", "enc/y.0")]
    x = conv["tensors"][0]
    assert x["dtype"] == "int8" and x["shape"] == [1, 2, 37] and x["quant"] == {"scale": [0.05], "zero_point": [3], "axis": None}
    assert conv["requant"] == {"rounding": "double", "mult_bits": 31, "acc_bits": 32, "acc_overflow": "wrap",
                               "output_zero_point": -2, "act_min": -128, "act_max": 127}
    assert [t["role"] for t in manifest["nodes"][1]["tensors"]] == ["input0", "table", "output0"]
    assert [t["role"] for t in manifest["nodes"][2]["tensors"]] == ["input0", "input1", "multiplier", "shift", "scale", "output0"]
    assert manifest["tensors"]["x"]["kind"] == "graph_input" and manifest["tensors"]["out2"]["graph_output"]
    assert manifest["tensors"]["enc/y.0"]["producer"] == "enc/conv[0]"
    assert manifest["tensors"]["enc/y.0"]["consumers"] == ["act:lut", "sum"]
    assert set(manifest["counts"]) == {"acc_overflows", "saturations"}


def test_every_listed_file_exists_with_its_sha256_and_nothing_else(dump):
    out, manifest, _ = dump
    listed = {}
    for node in manifest["nodes"]:
        for t in node["tensors"]:
            assert set(t["files"]) == {"npy", "c", "hex"}
            listed.update({f["path"]: f for f in t["files"].values()})
        assert set(node["files"]) == {"config", "test_data"}
        listed.update({f["path"]: f for f in node["files"].values()})
    files = all_files(out)
    assert set(files) == set(listed) | {golden.MANIFEST}
    for path, f in listed.items():
        assert hashlib.sha256(files[path]).hexdigest() == f["sha256"] and len(files[path]) == f["bytes"]


def test_npy_and_hex_hold_the_captured_tensors(dump):
    out, manifest, captured = dump
    for node in manifest["nodes"]:
        args, outs = captured[node["name"]]
        for t in node["tensors"]:
            expected = outs[t["position"]] if t["kind"] == "output" else args[t["position"]]
            got = np.load(out / t["files"]["npy"]["path"])
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
            text = (out / t["files"]["hex"]["path"]).read_text()
            width = expected.dtype.itemsize * 2
            assert all(len(line) == width for line in text.splitlines())
            np.testing.assert_array_equal(decode_hex(text, expected.dtype).reshape(expected.shape), expected)
            ctype, cname, values = parse_c_array((out / t["files"]["c"]["path"]).read_text())
            assert ctype == golden.C_TYPES[str(expected.dtype)] and cname == t["c_name"]
            assert values == expected.reshape(-1).tolist()


def test_names_are_sanitised_uniquely_and_mapped(dump):
    _, manifest, _ = dump
    dirs = [n["dir"] for n in manifest["nodes"]]
    assert dirs == ["nodes/000_enc_conv_0", "nodes/001_act_lut", "nodes/002_sum", "nodes/003_a_b", "nodes/004_a_b"]
    prefixes = [n["c_prefix"] for n in manifest["nodes"]]
    assert len(set(prefixes)) == len(prefixes)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9_]*", p) and "__" not in p for p in prefixes)
    assert manifest["names"] == {n["name"]: {"dir": n["dir"], "c_prefix": n["c_prefix"]} for n in manifest["nodes"]}
    assert golden.file_token("../../etc/passwd") == "etc_passwd"
    assert golden.c_token("9 lives..x") == "9_lives_x"


def test_config_header_geometry_and_quantization(dump):
    out, manifest, _ = dump
    text = (out / manifest["nodes"][0]["files"]["config"]["path"]).read_text()
    defines = dict(re.findall(r"^#define (\w+) (\S+)", text, re.M))
    p = "N000_ENC_CONV_0_"
    expected = {"OP": '"conv1d"', "INPUT_BATCHES": "1", "IN_CH": "2", "INPUT_W": "37", "OUT_CH": "4", "OUTPUT_W": "37",
                "FILTER_X": "3", "STRIDE_X": "1", "PAD_X": "1", "PAD_X_RIGHT": "1", "DILATION_X": "1",
                "INPUT_OFFSET": "(-3)", "OUTPUT_OFFSET": "(-2)", "OUT_ACTIVATION_MIN": "(-128)",
                "OUT_ACTIVATION_MAX": "127", "ROUNDING": "0", "MULT_BITS": "31", "ACC_BITS": "32", "ACC_SATURATE": "0",
                "WEIGHTS_DIM_0": "4", "WEIGHTS_SIZE": "24", "INPUT0_ZERO_POINT": "3", "ATTR_PADDING_1": "1"}
    for key, value in expected.items():
        assert defines[p + key] == value, key
    assert float.fromhex(defines[p + "INPUT0_SCALE"]) == 0.05


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_headers_compile_and_hold_the_values(dump, tmp_path):
    """Every node's test_data.h compiles (C99, -Wall -Werror) and a program printing the arrays
    reproduces the .npy data exactly."""
    out, manifest, _ = dump
    for node in manifest["nodes"][:3]:
        tensors = node["tensors"]
        prints = "\n".join(
            f'for (int i = 0; i < {t["c_name"].upper()}_SIZE; i++) printf("{"%a" if t["dtype"] == "float32" else "%lld"}\\n", '
            f'{"(double)" if t["dtype"] == "float32" else "(long long)"}{t["c_name"]}[i]);' for t in tensors)
        src = tmp_path / "main.c"
        src.write_text(f'#include <stdio.h>\n#include "test_data.h"\nint main(void) {{\n{prints}\nreturn {node["c_prefix"].upper()}_NODE_INDEX;\n}}\n')
        exe = tmp_path / "main"
        subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(out / node["dir"]), str(src),
                        "-o", str(exe)], check=True, capture_output=True)
        proc = subprocess.run([str(exe)], capture_output=True, text=True)
        assert proc.returncode == node["index"]
        lines = proc.stdout.split()
        expected = []
        for t in tensors:
            data = np.load(out / t["files"]["npy"]["path"]).reshape(-1)
            expected += [float(v).hex() if t["dtype"] == "float32" else str(v) for v in data.tolist()]
        got = [str(float.fromhex(v).hex()) if "p" in v else v for v in lines]
        assert got == expected


# --- encoders -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, values, lines", [
    ("int8", [-128, -1, 0, 127], ["80", "ff", "00", "7f"]),
    ("uint8", [0, 255], ["00", "ff"]),
    ("int16", [-32768, -2, 300], ["8000", "fffe", "012c"]),
    ("int32", [-(2**31), -1, 2**31 - 1], ["80000000", "ffffffff", "7fffffff"]),
    ("int64", [-(2**63), -1], ["8000000000000000", "ffffffffffffffff"]),
    ("float32", [1.0, -2.5], ["3f800000", "c0200000"]),
])
def test_hex_is_twos_complement_at_dtype_width(dtype, values, lines):
    array = np.array(values, dtype=dtype)
    assert golden.encode_hex(array).decode().splitlines() == lines
    assert golden.encode_hex(array.astype(array.dtype.newbyteorder(">"))) == golden.encode_hex(array)


def test_c_array_literals_for_extremes_and_empty():
    text = golden.encode_c_array(np.array([-(2**31), 5], np.int32), "t_a", []).decode()
    assert "const int32_t t_a[2] = {" in text and "(-2147483647 - 1), 5," in text
    text = golden.encode_c_array(np.array([-(2**63), 2**62], np.int64), "t_b", []).decode()
    assert "(-9223372036854775807LL - 1), 4611686018427387904LL," in text
    text = golden.encode_c_array(np.array([0.1, -3.0], np.float32), "t_c", []).decode()
    assert "const float t_c[2]" in text and f"{float(np.float32(0.1)).hex()}f" in text
    text = golden.encode_c_array(np.zeros((0, 3), np.int8), "t_d", []).decode()
    assert "#define T_D_SIZE 0" in text and "t_d[1] = {0};" in text
    assert golden.encode_npy(np.zeros((2, 2), ">i2")) == golden.encode_npy(np.zeros((2, 2), "<i2"))


def test_parse_formats():
    assert golden.parse_formats("hex, NPY") == ("npy", "hex")
    assert golden.parse_formats("all") == ("npy", "c", "hex")
    for bad in ("", "npy,csv", ",,"):
        with pytest.raises(golden.GoldenError, match="--format"):
            golden.parse_formats(bad)


# --- behaviour ----------------------------------------------------------------------------------

def test_byte_identical_serial_parallel_and_repeated(model_file, tmp_path):
    x = make_input(t=29, seed=5)
    trees = []
    for i, parallel in enumerate((True, False, True)):
        out = tmp_path / f"d{i}"
        golden.write_golden(intsim.load(model_file, parallel=parallel), x, out, model_path=model_file)
        trees.append(all_files(out))
    assert trees[0] == trees[1] == trees[2]


def test_overflow_and_saturation_counts_and_effective_multiplier(model_file, tmp_path):
    profile = {"name": "narrow", "base": "single", "acc_bits": 16, "acc_overflow": "saturate", "mult_bits": 12}
    model = intsim.load(model_file, profile=profile)
    x = make_input(t=200, seed=2)
    manifest = golden.write_golden(model, x, tmp_path / "d", formats="npy")
    ref = intsim.load(model_file, profile=profile)
    ref.run(x)
    counts = {n["name"]: n["counts"] for n in manifest["nodes"]}
    assert counts == {k: {"acc_overflows": c.acc_overflows, "saturations": c.saturations} for k, c in ref.counts.items()}
    assert counts["enc/conv[0]"]["acc_overflows"] > 0 and sum(c["saturations"] for c in counts.values()) > 0
    assert manifest["counts"]["acc_overflows"] == sum(c["acc_overflows"] for c in counts.values())
    conv = manifest["nodes"][0]
    assert conv["requant"]["mult_bits"] == 12 and conv["requant"]["acc_overflow"] == "saturate"
    derived = next(t for t in conv["tensors"] if t["role"] == "multiplier_effective")
    assert derived["kind"] == "derived" and derived["tensor"] is None
    stored = model.graph.constants["enc/conv[0].m"]
    np.testing.assert_array_equal(np.load(tmp_path / "d" / derived["files"]["npy"]["path"]),
                                  [reduce_multiplier(int(m), 12) for m in stored])
    assert not any(t["role"] == "multiplier_effective" for n in golden.write_golden(
        intsim.load(model_file), x, tmp_path / "e", formats="npy")["nodes"] for t in n["tensors"])


def test_float_input_is_recorded_quantized(model_file, tmp_path):
    x = make_input(t=17)
    xf = (x.astype(np.float32) - 3) * np.float32(0.05)
    m = golden.write_golden(intsim.load(model_file), xf, tmp_path / "d", formats="npy")
    np.testing.assert_array_equal(np.load(tmp_path / "d" / m["nodes"][0]["tensors"][0]["files"]["npy"]["path"]), x)


def test_destination_rules(model_file, tmp_path):
    x = make_input(t=9)
    model = intsim.load(model_file)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(golden.GoldenError, match="not empty"):
        golden.write_golden(model, x, busy, formats="npy")
    assert (busy / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    golden.write_golden(model, x, empty, formats="npy")
    with pytest.raises(golden.GoldenError, match="--force"):
        golden.write_golden(model, x, empty, formats="hex")
    golden.write_golden(model, x, empty, formats="hex", overwrite=True)
    assert not list(empty.rglob("*.npy")) and list(empty.rglob("*.hex"))
    with pytest.raises(golden.GoldenError, match="parent"):
        golden.write_golden(model, x, tmp_path / "no" / "dir", formats="npy")
    with pytest.raises(ValueError, match="shape"):  # a failing run leaves nothing behind
        golden.write_golden(model, np.zeros((1, 3, 9), np.int8), tmp_path / "fail", formats="npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]
