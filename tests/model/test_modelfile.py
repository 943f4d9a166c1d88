"""model.npz: round trips, and hostile or broken files.

Every broken file must raise ``ModelFileError`` (never another exception, a crash, a hang or code
execution) with a message naming the member or field at fault.  Each load runs under a 5 s alarm.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import intsim
from intsim import modelfile
from intsim.ir import Graph, GraphError, TensorSpec
from intsim.modelfile import ModelFileError
from tests.model import (time_limit, conv_graph, constants_graph, graphs_equal, model_parts, npy_bytes, npy_with_header,
                         patch_sizes, write_model, write_zip)

GRAPH = modelfile.GRAPH_MEMBER


def expect_error(path, *fragments, seconds=5.0) -> str:
    """Load ``path``: it must raise ModelFileError whose message contains every fragment."""
    with time_limit(seconds):
        with pytest.raises(ModelFileError) as info:
            modelfile.load(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def parts():
    """graph.json document and members of a valid conv graph (mutate copies of them)."""
    return model_parts(conv_graph())


def fresh(parts):
    doc, members = parts
    return json.loads(json.dumps(doc)), dict(members)


def first_constant(doc):
    """(tensor name, member name) of the first tensor carrying data."""
    return next((name, t["data"]) for name, t in doc["tensors"].items() if "data" in t)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: conv_graph(),
    lambda: conv_graph(seed=3, dtype="int16", batch=1, time=32, profile="onnx"),
    lambda: conv_graph(seed=4, second_input=True, profile={"name": "dsp", "base": "tflm", "acc_bits": 24,
                                                           "acc_overflow": "saturate"}),
    lambda: constants_graph(),
], ids=["conv", "conv-int16", "conv-two-inputs", "constants"])
def test_round_trip(tmp_path, make):
    graph = make()
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    modelfile.save(graph, a)
    modelfile.save(graph, b)
    assert a.read_bytes() == b.read_bytes(), "two saves of one graph must be byte-identical"
    loaded = modelfile.load(a)
    assert graphs_equal(graph, loaded)
    modelfile.save(loaded, c)
    assert c.read_bytes() == a.read_bytes(), "save(load(f)) must reproduce f byte for byte"
    for array in loaded.constants.values():
        assert array.flags.c_contiguous and not array.flags.writeable
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_round_trip_runs_identically(tmp_path):
    graph = conv_graph(seed=5, second_input=True)
    modelfile.save(graph, tmp_path / "m.npz")
    x = {"x": np.random.default_rng(0).integers(-128, 128, (2, 4, 30)).astype(np.int8),
         "x2": np.random.default_rng(1).integers(-128, 128, (2, 3, 30)).astype(np.int8)}
    direct = intsim.Model(graph).run(x)
    loaded = intsim.load(tmp_path / "m.npz").run(x)
    assert direct.keys() == loaded.keys()
    for k in direct:
        assert np.array_equal(direct[k], loaded[k])


def test_saved_members_are_plain_regular_files(tmp_path):
    modelfile.save(conv_graph(), tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        infos = zf.infolist()
    assert infos[0].filename == GRAPH
    assert all(modelfile.MEMBER_PATTERN.match(i.filename) for i in infos[1:])
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert stat.S_ISREG(info.external_attr >> 16) and info.create_system == 3
        assert info.compress_type == zipfile.ZIP_DEFLATED


def test_large_zero_constant_round_trips(tmp_path):
    """Deflate reaches ~1030:1 on zeros: the ratio guard must not refuse what save writes."""
    zeros = np.zeros((4096, 1024), np.int8)
    graph = Graph({"z": TensorSpec("z", "int8", [4096, 1024])}, [], [], ["z"], {"z": zeros})
    modelfile.save(graph, tmp_path / "z.npz")
    with zipfile.ZipFile(tmp_path / "z.npz") as zf:
        info = zf.getinfo("c000000.npy")
    assert info.file_size / info.compress_size > 1000
    assert np.array_equal(modelfile.load(tmp_path / "z.npz").constants["z"], zeros)


@pytest.mark.parametrize("attrs, fragment", [
    ({"stride": np.int64(2)}, "int64"),
    ({"stride": 1, "bad": float("nan")}, "non-finite"),
    ({"stride": 1, "nested": {3: 1}}, "key 3"),
    ({"stride": 1, "obj": object()}, "object"),
])
def test_save_rejects_non_json_attrs(tmp_path, attrs, fragment):
    graph = conv_graph()
    graph.nodes[1].attrs.update(attrs)
    target = tmp_path / "m.npz"
    target.write_bytes(b"previous")
    with pytest.raises(GraphError) as info:
        modelfile.save(graph, target)
    assert "conv1" in str(info.value) and "attrs" in str(info.value) and fragment in str(info.value)
    assert target.read_bytes() == b"previous", "a failed save must not touch the existing file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"], "no temporary file left behind"


def test_save_rejects_invalid_graph(tmp_path):
    graph = conv_graph()
    graph.nodes[0].inputs[0] = "nope"
    with pytest.raises(GraphError, match="'nope' is not a declared tensor"):
        modelfile.save(graph, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_save_tuple_attrs_become_lists(tmp_path):
    graph = conv_graph()
    graph.nodes[0].attrs["padding"] = (1, 1)
    modelfile.save(graph, tmp_path / "m.npz")
    assert modelfile.load(tmp_path / "m.npz").nodes[0].attrs["padding"] == [1, 1]


# ---------------------------------------------------------------------------------------------
# Not a model file at all
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.npz", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"")
    expect_error(tmp_path / "e.npz", "empty file")


def test_directory(tmp_path):
    expect_error(tmp_path, "not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    expect_error(fifo, "not a regular file", seconds=2)


@pytest.mark.parametrize("content", [
    b"hello, I am not a zip",
    bytes(range(256)) * 10,
    b"PK\x03\x04" + b"\x00" * 100,
    b"PK\x05\x06" + b"\x00" * 18,  # an empty zip: no graph.json
    npy_bytes(np.arange(10)),
    b"\x1f\x8b\x08\x00" + b"\x00" * 50,  # gzip magic
], ids=["text", "bytes", "local-header-only", "empty-zip", "npy", "gzip"])
def test_not_a_zip(tmp_path, content):
    (tmp_path / "m.npz").write_bytes(content)
    message = expect_error(tmp_path / "m.npz")
    assert "zip" in message or GRAPH in message


def test_truncated_zip(tmp_path):
    modelfile.save(conv_graph(), tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    for cut in sorted({1, 4, 30, 100, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1}):
        (tmp_path / "t.npz").write_bytes(data[:cut])
        expect_error(tmp_path / "t.npz")


def test_truncated_member_inside_valid_directory(tmp_path, parts):
    """Central directory intact, a member's compressed bytes cut short: the member is named."""
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    path = write_model(tmp_path / "m.npz", doc, members)
    data = path.read_bytes()
    data = patch_sizes(data, member, compress_size=10_000_000)
    path.write_bytes(data)
    expect_error(path, member)


# ---------------------------------------------------------------------------------------------
# Members: names, kinds, counts, sizes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x.npy", "/etc/passwd", "a/../../b", "../c000001.npy", "c000001.npy/",
                                  "sub/c000001.npy", "..\\c000001.npy", "C:/c000001.npy", "c000001.npy\n",
                                  "c1.npy.exe", "GRAPH.JSON", "c\u0661.npy", ""])
def test_member_name_not_allowed(tmp_path, parts, name):
    doc, members = fresh(parts)
    path = write_model(tmp_path / "m.npz", doc, members, extra=[(name, b"data")])
    expect_error(path, "member name", "not allowed")


def test_member_name_with_nul(tmp_path, parts):
    """zipfile cuts names at NUL: 'c000001.npy\\0evil' arrives as a second 'c000001.npy'."""
    doc, members = fresh(parts)
    path = write_model(tmp_path / "m.npz", doc, members, extra=[("c000001.npy\x00/../../evil", b"data")])
    expect_error(path, "c000001.npy")


def test_data_field_with_path_traversal(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    doc["tensors"][tensor]["data"] = "../" + member
    expect_error(write_model(tmp_path / "m.npz", doc, members), tensor, "field 'data'", "not a member name")


@pytest.mark.parametrize("target", ["constant", "graph"])
def test_symlink_member(tmp_path, parts, target):
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    name = member if target == "constant" else GRAPH
    link = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    entries = [(GRAPH, json.dumps(doc))] + list(members.items())
    entries = [(link, "/etc/passwd") if n == name else (n, d) for n, d in entries]
    expect_error(write_zip(tmp_path / "m.npz", entries), name, "symbolic link")


def test_directory_and_device_members(tmp_path, parts):
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    dev = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    dev.external_attr = (stat.S_IFCHR | 0o644) << 16
    entries = [(GRAPH, json.dumps(doc))] + [((dev if n == member else n), d) for n, d in members.items()]
    expect_error(write_zip(tmp_path / "m.npz", entries), member, "not a regular file")
    expect_error(write_model(tmp_path / "d.npz", doc, members, extra=[("c000123/", b"")]), "c000123/", "not allowed")


@pytest.mark.parametrize("which", ["graph", "constant"])
def test_duplicate_members(tmp_path, parts, which):
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    dup = (GRAPH, json.dumps(doc)) if which == "graph" else (member, members[member])
    name = GRAPH if which == "graph" else member
    expect_error(write_model(tmp_path / "m.npz", doc, members, extra=[dup]), name, "appears twice")


def test_missing_graph_json(tmp_path, parts):
    _, members = fresh(parts)
    expect_error(write_zip(tmp_path / "m.npz", list(members.items())), GRAPH, "missing")


def test_missing_constant_member(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    del members[member]
    expect_error(write_model(tmp_path / "m.npz", doc, members), tensor, member, "missing")


def test_extra_member(tmp_path, parts):
    doc, members = fresh(parts)
    expect_error(write_model(tmp_path / "m.npz", doc, members, extra=[("c999999.npy", npy_bytes(np.zeros(3)))]),
                 "unexpected members", "c999999.npy")


def test_member_reused_by_two_tensors(tmp_path, parts):
    doc, members = fresh(parts)
    names = [n for n, t in doc["tensors"].items() if "data" in t]
    doc["tensors"][names[1]]["data"] = doc["tensors"][names[0]]["data"]
    expect_error(write_model(tmp_path / "m.npz", doc, members), names[1], "reuses member")


@pytest.mark.parametrize("bit", [0x1, 0x40])
def test_encrypted_flag(tmp_path, parts, bit):
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    path = write_model(tmp_path / "m.npz", doc, members)
    path.write_bytes(patch_sizes(path.read_bytes(), member, set_flags=bit))
    expect_error(path, member, "encrypted")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_unsupported_compression(tmp_path, parts, method):
    doc, members = fresh(parts)
    path = write_zip(tmp_path / "m.npz", [(GRAPH, json.dumps(doc)), *members.items()], compression=method)
    expect_error(path, "unsupported compression method")


def test_declared_size_over_limit(tmp_path, parts):
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    path = write_model(tmp_path / "m.npz", doc, members)
    path.write_bytes(patch_sizes(path.read_bytes(), member, file_size=0xFFFFFFF0))
    expect_error(path, member, "declares")


def test_zip_bomb_declared_ratio(tmp_path, parts):
    """A member declaring 100 MB from a few hundred compressed bytes is refused before inflating."""
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    path = write_model(tmp_path / "m.npz", doc, members)
    path.write_bytes(patch_sizes(path.read_bytes(), member, file_size=100_000_000))
    expect_error(path, member, "ratio")


def test_zip_bomb_actual_data_larger_than_declared(tmp_path, parts):
    """64 MiB of zeros inflating from a member that declares 1 kB: reading stops at the declared size."""
    doc, members = fresh(parts)
    bomb = np.zeros(64 << 20, np.uint8).tobytes()
    path = write_model(tmp_path / "m.npz", doc, members, extra=[("c777777.npy", bomb)])
    path.write_bytes(patch_sizes(path.read_bytes(), "c777777.npy", file_size=1000))
    # Refused either as corrupt (reading stops at the declared size; CRC mismatch) or as unexpected.
    expect_error(path, "c777777.npy", seconds=3)
    doc["tensors"]["bomb"] = {"dtype": "uint8", "shape": [1000], "data": "c777777.npy"}
    path = write_model(tmp_path / "b.npz", doc, members, extra=[("c777777.npy", bomb)])
    path.write_bytes(patch_sizes(path.read_bytes(), "c777777.npy", file_size=1000))
    expect_error(path, "c777777.npy", seconds=3)


def test_zip_bomb_overlapping_members(tmp_path, parts):
    """Two central-directory entries sharing one member's compressed bytes."""
    doc, members = fresh(parts)
    _, member = first_constant(doc)
    path = write_model(tmp_path / "m.npz", doc, members)
    data = bytearray(path.read_bytes())
    # Copy the central-directory entry of `member` under another name of the same length.
    entry, start = None, 0
    while (i := data.find(b"PK\x01\x02", start)) >= 0:
        start = i + 4
        n, m, k = struct.unpack_from("<HHH", data, i + 28)
        if data[i + 46:i + 46 + n] == member.encode():
            entry = bytearray(data[i:i + 46 + n + m + k])
            break
    assert entry is not None
    entry[46:46 + len(member)] = b"c888888.npy"
    eocd = data.rfind(b"PK\x05\x06")
    count_disk, count_total, cd_size, cd_offset = struct.unpack_from("<HHII", data, eocd + 8)
    data[eocd:eocd] = entry  # the forged entry goes at the end of the central directory
    struct.pack_into("<HHII", data, eocd + len(entry) + 8, count_disk + 1, count_total + 1, cd_size + len(entry),
                     cd_offset)
    path.write_bytes(bytes(data))
    expect_error(path, "overlap")


# ---------------------------------------------------------------------------------------------
# .npy members
# ---------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling this creates a marker file: evidence of code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickled_npy_never_executes(tmp_path, parts):
    marker = tmp_path / "PWNED"
    payload = np.empty(1, dtype=object)
    payload[0] = _Touch(marker)
    evil = npy_bytes(payload, allow_pickle=True)
    assert b"PWNED" in evil
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    members[member] = evil
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, tensor)
    # The same payload declared with a matching-looking header and raw pickle bytes as graph.json.
    expect_error(write_model(tmp_path / "g.npz", doc, members, graph_text=pickle.dumps(_Touch(marker))), GRAPH)
    assert not marker.exists(), "a pickle payload was executed"


def test_object_array_npy(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    shape = tuple(doc["tensors"][tensor]["shape"])
    members[member] = npy_with_header(f"{{'descr': '|O', 'fortran_order': False, 'shape': {shape}, }}", b"\x00" * 64)
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, "not allowed")


def test_npy_header_code_is_not_evaluated(tmp_path, parts):
    marker = tmp_path / "PWNED"
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    members[member] = npy_with_header(f"{{'descr': __import__('pathlib').Path('{marker}').touch(), "
                                      "'fortran_order': False, 'shape': (3,), }")
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, "not a valid .npy")
    assert not marker.exists()


@pytest.mark.parametrize("header, fragment", [
    ("{'descr': '<i2', 'fortran_order': False, 'shape': SHAPE, }", "differs from declared"),
    ("{'descr': '>i1', 'fortran_order': False, 'shape': SHAPE, }", None),  # '>i1' is '|i1': allowed
    ("{'descr': [('a', '<i1')], 'fortran_order': False, 'shape': SHAPE, }", "structured"),
    ("{'descr': ('<i1', (2,)), 'fortran_order': False, 'shape': SHAPE, }", "not allowed"),
    ("{'descr': '<i1', 'fortran_order': 1, 'shape': SHAPE, }", "not a valid .npy"),
    ("{'descr': '<i1', 'fortran_order': False, 'shape': (3, 3, 3, 3), }", "shape"),
    ("{'descr': '<i1', 'fortran_order': False, 'shape': (-1,), }", "field 'shape'"),
    ("{'descr': '<i1', 'fortran_order': False}", "not a valid .npy"),
    ("{'descr': '<i1', 'fortran_order': False, 'shape': SHAPE, 'extra': 1}", "not a valid .npy"),
    ("[1, 2, 3]", "not a valid .npy"),
    ("(" * 5000 + ")" * 5000, "not a valid .npy"),
    ("{'descr': '<i1', 'fortran_order': False, 'shape': SHAPE, }" + " " * 20000, "bytes"),
], ids=["int16-for-int8", "byteorder-int8", "structured", "subarray", "fortran-not-bool", "wrong-shape",
        "negative-shape", "missing-key", "extra-key", "not-a-dict", "deep-parens", "huge-header"])
def test_npy_header_checks(tmp_path, parts, header, fragment):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    spec = doc["tensors"][tensor]
    assert spec["dtype"] == "int8"
    shape = tuple(spec["shape"])
    n = int(np.prod(shape))
    members[member] = npy_with_header(header.replace("SHAPE", repr(shape)), b"\x01" * n)
    path = write_model(tmp_path / "m.npz", doc, members)
    if fragment is None:
        assert modelfile.load(path).constants[tensor].dtype == np.int8
    else:
        expect_error(path, member, tensor, fragment)


def test_npy_big_endian_int32(tmp_path, parts):
    doc, members = fresh(parts)
    name = next(n for n, t in doc["tensors"].items() if "data" in t and t["dtype"] == "int32")
    member = doc["tensors"][name]["data"]
    members[member] = npy_bytes(np.zeros(doc["tensors"][name]["shape"], ">i4"))
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, "differs from declared int32")


@pytest.mark.parametrize("version", [(2, 0), (3, 0), (9, 9), (0, 0)])
def test_npy_versions(tmp_path, parts, version):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    shape = tuple(doc["tensors"][tensor]["shape"])
    members[member] = npy_with_header(f"{{'descr': '|i1', 'fortran_order': False, 'shape': {shape}, }}",
                                      b"\x02" * int(np.prod(shape)), version=version)
    path = write_model(tmp_path / "m.npz", doc, members)
    if version in ((2, 0), (3, 0)):
        assert (modelfile.load(path).constants[tensor] == 2).all()
    else:
        expect_error(path, member, "not a valid .npy")


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_npy_payload_size(tmp_path, parts, delta):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    members[member] = members[member][:delta] if delta < 0 else members[member] + b"\x00" * delta
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, "data bytes")


def test_npy_bad_magic(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    members[member] = b"\x93NUMPZ" + members[member][6:]
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, "not a valid .npy")


def test_fortran_order_member(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    shape = doc["tensors"][tensor]["shape"]
    data = np.arange(np.prod(shape), dtype=np.int8).reshape(shape)
    members[member] = npy_bytes(np.asfortranarray(data))
    loaded = modelfile.load(write_model(tmp_path / "m.npz", doc, members)).constants[tensor]
    assert np.array_equal(loaded, data) and loaded.flags.c_contiguous and not loaded.flags.writeable


# ---------------------------------------------------------------------------------------------
# Declared shapes and dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, fragments", [
    ([2**20, 2**20], ["needs 1099511627776 bytes"]),  # 2^40 elements
    ([2**30, 2**30, 2**30, 2**30, 2**30, 2**30, 2**30, 2**30], ["needs"]),  # would wrap an int64 product
    ([2**31, 1], ["field 'shape'"]),
    ([-1, 3], ["field 'shape'"]),
    ([3.0, 3], ["field 'shape'"]),
    ([True, 3], ["field 'shape'"]),
    (["3", 3], ["field 'shape'"]),
    ([[3], 3], ["field 'shape'"]),
    ([None, 3], ["fully known shape"]),
    ([1] * 9, ["at most 8"]),
    ({"0": 3}, ["field 'shape'"]),
])
def test_declared_constant_shape(tmp_path, parts, shape, fragments):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    doc["tensors"][tensor]["shape"] = shape
    expect_error(write_model(tmp_path / "m.npz", doc, members), tensor, *fragments)


@pytest.mark.parametrize("dtype", ["object", "O", "float64", "int8,int8", "V8", "", "S10", 5, None, ["int8"]])
def test_declared_dtype(tmp_path, parts, dtype):
    doc, members = fresh(parts)
    tensor, _ = first_constant(doc)
    doc["tensors"][tensor]["dtype"] = dtype
    expect_error(write_model(tmp_path / "m.npz", doc, members), tensor, "field 'dtype'")


def test_constant_dtype_differs_from_declared(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    doc["tensors"][tensor]["dtype"] = "int16"
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, tensor, "differs from declared int16")


def test_constant_shape_differs_from_declared(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    doc["tensors"][tensor]["shape"] = list(reversed(doc["tensors"][tensor]["shape"]))
    expect_error(write_model(tmp_path / "m.npz", doc, members), member, tensor, "shape")


# ---------------------------------------------------------------------------------------------
# graph.json: encoding and JSON
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, fragments", [
    (b"\xff\xfe{\x00}\x00", ["not UTF-8"]),
    ("{\"format\": \"intsim-graph\", \"version\": 1, \"tensors\": \xe9}".encode("latin1"), ["not UTF-8"]),
    ("not json at all", ["not valid JSON"]),
    ("", ["not valid JSON"]),
    ("{\"format\": \"intsim-graph\",", ["not valid JSON"]),
    ("{\"a\": NaN}", ["not valid JSON", "NaN"]),
    ("{\"a\": -Infinity}", ["not valid JSON", "Infinity"]),
    ("{\"a\": 1e400}", ["not valid JSON", "overflows"]),
    ("{\"a\": 1" + "0" * 5000 + "}", ["not valid JSON"]),
    ("[" * 100_000 + "]" * 100_000, ["not valid JSON", "nested"]),
    ("{\"a\":" * 100 + "1" + "}" * 100, ["nested deeper than 64"]),
    ("{\"format\": \"intsim-graph\", \"format\": \"intsim-graph\"}", ["duplicate key 'format'"]),
    ("\ufeff{}", ["not valid JSON"]),
    ("[1, 2]", ["top level must be an object"]),
    ("\"intsim-graph\"", ["top level must be an object"]),
    ("null", ["top level must be an object"]),
], ids=["utf16", "latin1", "garbage", "empty", "truncated", "nan", "infinity", "overflow", "huge-int",
        "deep-100k", "deep-100", "duplicate-key", "bom", "list", "string", "null"])
def test_graph_json_not_acceptable(tmp_path, parts, text, fragments):
    doc, members = fresh(parts)
    expect_error(write_model(tmp_path / "m.npz", doc, members, graph_text=text), GRAPH, *fragments)


def test_graph_json_too_large(tmp_path, parts, monkeypatch):
    doc, members = fresh(parts)
    monkeypatch.setattr(modelfile, "MAX_GRAPH_JSON_BYTES", 1000)
    expect_error(write_model(tmp_path / "m.npz", doc, members), GRAPH, "at most 1000")


@pytest.mark.parametrize("field, value, fragment", [
    ("format", "onnx", "field 'format'"),
    ("format", None, "field 'format'"),
    ("version", 2, "field 'version'"),
    ("version", 0, "field 'version'"),
    ("version", "1", "field 'version'"),
    ("version", True, "field 'version'"),
    ("version", 1.0, "field 'version'"),
    ("tensors", [], "field 'tensors'"),
    ("nodes", {}, "field 'nodes'"),
    ("inputs", "x", "field 'inputs'"),
    ("outputs", [1], "'outputs'"),
    ("profile", 3, "field 'profile'"),
    ("profile", "nosuch", "field 'profile'"),
    ("profile", {"rounding": []}, "field 'profile'"),
    ("profile", {"acc_bits": 99}, "field 'profile'"),
    ("profile", {"base": {"base": "nosuch"}}, "field 'profile'"),
    ("metadata", [], "field 'metadata'"),
    ("surprise", 1, "unknown fields ['surprise']"),
])
def test_top_level_fields(tmp_path, parts, field, value, fragment):
    doc, members = fresh(parts)
    doc[field] = value
    expect_error(write_model(tmp_path / "m.npz", doc, members), GRAPH, fragment)


@pytest.mark.parametrize("field", ["format", "version", "tensors", "nodes", "inputs", "outputs"])
def test_top_level_field_missing(tmp_path, parts, field):
    doc, members = fresh(parts)
    del doc[field]
    expect_error(write_model(tmp_path / "m.npz", doc, members), GRAPH, f"field '{field}'")


# ---------------------------------------------------------------------------------------------
# graph.json: tensors, nodes, references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant, fragment", [
    ({"scale": [0.0], "zero_point": [0]}, "scale 0.0"),
    ({"scale": [-1.0], "zero_point": [0]}, "scale -1.0"),
    ({"scale": [10**400], "zero_point": [0]}, "scale"),
    ({"scale": ["1"], "zero_point": [0]}, "scale '1'"),
    ({"scale": [0.1], "zero_point": [128]}, "zero_point 128"),
    ({"scale": [0.1], "zero_point": [1.5]}, "zero_point 1.5"),
    ({"scale": [0.1], "zero_point": [True]}, "zero_point True"),
    ({"scale": [0.1, 0.2], "zero_point": [0]}, "'zero_point' 1"),
    ({"scale": [0.1, 0.2], "zero_point": [0, 0]}, "one scale"),
    ({"scale": [0.1, 0.2], "zero_point": [0, 0], "axis": 7}, "axis 7"),
    ({"scale": [0.1, 0.2], "zero_point": [0, 0], "axis": True}, "axis True"),
    ({"scale": [0.1, 0.2], "zero_point": [0, 0], "axis": 1}, "2 scales for axis 1 of size 4"),
    ({"scale": [], "zero_point": []}, "non-empty"),
    ({"scale": 0.1, "zero_point": 0}, "non-empty lists"),
    ({"scale": [0.1], "zero_point": [0], "extra": 1}, "field 'quant'"),
    ([0.1, 0], "field 'quant'"),
])
def test_bad_quant(tmp_path, parts, quant, fragment):
    doc, members = fresh(parts)
    doc["tensors"]["x"]["quant"] = quant
    expect_error(write_model(tmp_path / "m.npz", doc, members), "tensor 'x'", fragment)


@pytest.mark.parametrize("mutate, fragments", [
    (lambda d: d["nodes"][0]["inputs"].__setitem__(0, "ghost"), ["conv0", "'ghost' is not a declared tensor"]),
    (lambda d: d["nodes"][1]["outputs"].__setitem__(0, "ghost"), ["conv1", "'ghost' is not a declared tensor"]),
    (lambda d: d["nodes"].reverse(), ["used before any node produces it"]),
    (lambda d: d["nodes"][0]["inputs"].__setitem__(0, "h1"), ["conv0", "'h1' is used before"]),  # cycle
    (lambda d: d["nodes"][0]["inputs"].__setitem__(0, "h0"), ["conv0", "'h0' is used before"]),  # self loop
    (lambda d: d["nodes"][3]["outputs"].__setitem__(0, "h1"), ["conv3", "'h1' is produced twice"]),
    (lambda d: d["nodes"][3]["outputs"].__setitem__(0, "x"), ["conv3", "'x' is produced twice"]),
    (lambda d: d["nodes"][2].__setitem__("name", "conv0"), ["'conv0'", "duplicate node name"]),
    (lambda d: d["nodes"][2].__setitem__("name", "bad name!"), ["'bad name!'", "invalid"]),
    (lambda d: d["nodes"][2].__setitem__("name", 5), ["node #2", "field 'name'"]),
    (lambda d: d["nodes"][2].__setitem__("op", None), ["conv2", "field 'op'"]),
    (lambda d: d["nodes"][2].__setitem__("attrs", [1]), ["conv2", "field 'attrs'"]),
    (lambda d: d["nodes"][2].__setitem__("inputs", "h1"), ["conv2", "field 'inputs'"]),
    (lambda d: d["nodes"][2].__setitem__("inputs", ["h1", 3]), ["conv2", "'inputs'"]),
    (lambda d: d["nodes"][2].pop("outputs"), ["conv2", "field 'outputs' is missing"]),
    (lambda d: d["nodes"][2].__setitem__("extra", 1), ["node #2", "unknown fields ['extra']"]),
    (lambda d: d["nodes"].__setitem__(1, "conv1"), ["node #1", "must be an object"]),
    (lambda d: d["outputs"].append("ghost"), ["graph output 'ghost'", "no node produces it"]),
    (lambda d: d["outputs"].append("y"), ["'y'", "listed twice"]),
    (lambda d: d["inputs"].append("x"), ["'x'", "listed twice"]),
    (lambda d: d["inputs"].append("ghost"), ["graph input 'ghost'", "no such tensor"]),
    (lambda d: d["inputs"].append("conv0.w"), ["graph input 'conv0.w'", "is a constant"]),
    (lambda d: d["tensors"].__setitem__("bad name", {"dtype": "int8", "shape": [1]}), ["'bad name'", "invalid tensor name"]),
    (lambda d: d["tensors"].__setitem__("t", []), ["tensor 't'", "must be an object"]),
    (lambda d: d["tensors"]["x"].__setitem__("extra", 1), ["tensor 'x'", "unknown fields"]),
    (lambda d: d["tensors"]["x"].pop("dtype"), ["tensor 'x'", "field 'dtype' is missing"]),
    (lambda d: d["tensors"]["x"].__setitem__("data", 7), ["tensor 'x'", "field 'data'"]),
], ids=lambda v: None)
def test_graph_structure(tmp_path, parts, mutate, fragments):
    doc, members = fresh(parts)
    mutate(doc)
    expect_error(write_model(tmp_path / "m.npz", doc, members), GRAPH, *fragments)


def test_constant_not_declared_is_unexpected(tmp_path, parts):
    doc, members = fresh(parts)
    tensor, member = first_constant(doc)
    del doc["tensors"][tensor]["data"]
    expect_error(write_model(tmp_path / "m.npz", doc, members), "unexpected members", member)


def test_wrong_attr_types_fail_at_prepare(tmp_path, parts):
    """attrs are free-form JSON in the file; the op refuses wrong types when the model is prepared."""
    doc, members = fresh(parts)
    doc["nodes"][1]["attrs"]["stride"] = "2"
    path = write_model(tmp_path / "m.npz", doc, members)
    modelfile.load(path)  # structurally fine
    with pytest.raises(intsim.OpError) as info:
        intsim.load(path)
    assert "conv1" in str(info.value) and "'stride'" in str(info.value) and str(path) in str(info.value)


def test_unknown_op_fails_at_prepare(tmp_path, parts):
    doc, members = fresh(parts)
    doc["nodes"][2]["op"] = "no_such_op"
    path = write_model(tmp_path / "m.npz", doc, members)
    with pytest.raises(intsim.OpError) as info:
        intsim.load(path)
    assert "conv2" in str(info.value) and "no_such_op" in str(info.value)


def test_every_error_is_a_modelfileerror_subclass_of_valueerror():
    assert issubclass(ModelFileError, ValueError)
    assert sys.modules["intsim"].ModelFileError is ModelFileError
