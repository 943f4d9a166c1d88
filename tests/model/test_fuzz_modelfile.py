"""Fuzzing the model-file reader.

Starting from a few valid model files (conv1d graphs and a constants-only graph written by
``modelfile.save``), every case applies one to three mutations -- raw-byte ones (bit flips, byte
overwrites, truncation, insertion, deletion, duplication, header-field forgery) and
structure-aware ones (members removed / added / duplicated / renamed / re-compressed, graph.json
fields deleted / retyped / replaced, JSON text edits, .npy header and payload edits) -- and loads the
result.  Each load must either

* raise ``ModelFileError``, or
* succeed, after which preparing the model (``intsim.Model``) must succeed or raise one of
  intsim's own errors (ModelFileError, GraphError, OpError, ProfileError);

anything else (IndexError, KeyError, TypeError, MemoryError, RecursionError, zlib.error, ...) fails
the test, as does a case taking longer than ``CASE_SECONDS``.  ``N_CASES`` cases come from a fixed
seed (reproducible: a failure names its case index and mutations); hypothesis adds more.
"""

from __future__ import annotations

import copy
import io
import json
import random
import struct
import time
import traceback
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import intsim
from intsim import modelfile
from intsim.ir import GraphError
from intsim.modelfile import ModelFileError
from intsim.ops import OpError
from intsim.profile import ProfileError
from tests.model import CaseTimeout, constants_graph, conv_graph, npy_with_header, time_limit

SEED = 20240607
N_CASES = 1200
CASE_SECONDS = 2.0
ALLOWED_AFTER_LOAD = (ModelFileError, GraphError, OpError, ProfileError)
GRAPH = modelfile.GRAPH_MEMBER


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def _seed_files(tmp_dir) -> list[bytes]:
    graphs = [
        conv_graph(),
        conv_graph(seed=2, dtype="int16", second_input=True, profile="onnx"),
        conv_graph(seed=3, batch=1, time=24, profile={"name": "dsp", "base": "tflm", "acc_bits": 24}),
        constants_graph(),
    ]
    files = []
    for i, graph in enumerate(graphs):
        path = tmp_dir / f"seed{i}.npz"
        modelfile.save(graph, path)
        files.append(path.read_bytes())
    return files


def _members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    """Members of a (possibly already mutated) file, for structure-aware mutations."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if sum(info.file_size for info in infos) > 20 << 20:
            raise ValueError("declared sizes too large to re-pack")
        return [(info, zf.read(info)) for info in infos]


def _zip(entries, method=None) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            for info, data in entries:
                info = copy.copy(info)
                if method is not None:
                    info.compress_type = method
                zf.writestr(info, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Random values
# ---------------------------------------------------------------------------------------------


def _deep(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


JSON_VALUES = [
    None, True, False, 0, 1, -1, 3, 7, 255, 256, -129, 2**31 - 1, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**30,
    0.5, -0.0, 1e-320, 1e308, -1.5, 3.0, "", "x", "h0", "y", "int8", "int16", "int64", "float32", "object",
    "conv1d", "nosuch", "tflm", "onnx", "c000000.npy", "c000001.npy", "../c000000.npy", "/etc/passwd", "\u0000",
    "\udcff", "a" * 300, [], [1], [None], [1, 1], [0, 0], [2, 2], [-1], [1.5], ["x"], [[1]], {}, {"a": 1},
    {"scale": [0.1], "zero_point": [0]}, {"dtype": "int8", "shape": [1]}, {"base": "nosuch"}, {"rounding": []},
    _deep(30), _deep(70), list(range(2000)),
]


def _walk(value, path=()):
    """Every (path, value) inside a JSON document."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


# ---------------------------------------------------------------------------------------------
# Mutations: each takes (rng, data) and returns (new data, description)
# ---------------------------------------------------------------------------------------------


def m_bitflip(rng, data):
    data = bytearray(data)
    spots = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
    for i in spots:
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data), f"bitflip@{spots}"


def m_overwrite(rng, data):
    data = bytearray(data)
    i = rng.randrange(len(data))
    n = rng.randint(1, 16)
    fill = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", None])
    chunk = bytes(rng.randrange(256) for _ in range(n)) if fill is None else fill * n
    data[i:i + n] = chunk
    return bytes(data), f"overwrite@{i}+{n}"


def m_truncate(rng, data):
    n = rng.randrange(len(data))
    return data[:n], f"truncate@{n}"


def m_insert(rng, data):
    i = rng.randrange(len(data) + 1)
    chunk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return data[:i] + chunk + data[i:], f"insert@{i}+{len(chunk)}"


def m_delete(rng, data):
    i = rng.randrange(len(data))
    n = rng.randint(1, 64)
    return data[:i] + data[i + n:], f"delete@{i}+{n}"


def m_duplicate_chunk(rng, data):
    i = rng.randrange(len(data))
    n = rng.randint(1, 256)
    return data[:i + n] + data[i:i + n] + data[i + n:], f"dupchunk@{i}+{n}"


def m_header_field(rng, data):
    """Forge a field of a local / central / end-of-directory header."""
    sigs = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"]
    sig = rng.choice(sigs)
    spots = [i for i in range(len(data)) if data.startswith(sig, i)]
    if not spots:
        return m_bitflip(rng, data)
    at = rng.choice(spots)
    data = bytearray(data)
    off = at + rng.randrange(4, 30 if sig != b"PK\x01\x02" else 46)
    width = rng.choice([1, 2, 4])
    value = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(2**32)])
    fmt = {1: "<B", 2: "<H", 4: "<I"}[width]
    if off + width <= len(data):
        struct.pack_into(fmt, data, off, value & ((1 << (8 * width)) - 1))
    return bytes(data), f"header{sig[2:]!r}@{off}w{width}={value}"


def m_remove_member(rng, data):
    entries = _members(data)
    k = rng.randrange(len(entries))
    name = entries[k][0].filename
    del entries[k]
    return _zip(entries), f"remove:{name}"


def _random_member_bytes(rng, entries):
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if choice == 1:
        dtype = rng.choice(["i1", "u1", "i2", "i4", "i8", "f4", "f8", "O", "?"])
        shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 3)))
        n = int(np.prod(shape)) * (8 if dtype in ("O", "f8", "i8") else 4)
        header = f"{{'descr': '{'|' if dtype in ('i1', 'u1', '?', 'O') else '<'}{dtype}', 'fortran_order': {rng.choice(['False', 'True'])}, 'shape': {shape}, }}"
        return npy_with_header(header, b"\x00" * n)
    if choice == 2:
        return json.dumps({"format": "intsim-graph", "version": 1}).encode()
    if choice == 3:
        return rng.choice(entries)[1]
    if choice == 4:
        return b"\x00" * rng.choice([0, 1, 5000, 200_000])
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", rng.choice([0, 6, 118, 65535])) + b"{'descr'"


NAMES = ["c000000.npy", "c000001.npy", "c000999.npy", "c123456.npy", "c1.npy", GRAPH, "../c000000.npy",
         "/etc/passwd", "a/../../b", "dir/", "c000000.npy\n", "graph.JSON", "model.npz"]


def m_add_member(rng, data):
    entries = _members(data)
    name = rng.choice(NAMES)
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    entries.insert(rng.randrange(len(entries) + 1), (info, _random_member_bytes(rng, entries)))
    return _zip(entries), f"add:{name!r}"


def m_duplicate_member(rng, data):
    entries = _members(data)
    entry = rng.choice(entries)
    entries.insert(rng.randrange(len(entries) + 1), entry)
    return _zip(entries), f"dupmember:{entry[0].filename}"


def m_rename_member(rng, data):
    entries = _members(data)
    k = rng.randrange(len(entries))
    info = copy.copy(entries[k][0])
    old = info.filename
    info.filename = info.orig_filename = rng.choice(NAMES)
    entries[k] = (info, entries[k][1])
    return _zip(entries), f"rename:{old}->{info.filename!r}"


def m_member_attrs(rng, data):
    """Change a member's compression method, mode bits or flags (rewritten by zipfile, CRC valid)."""
    entries = _members(data)
    k = rng.randrange(len(entries))
    info = copy.copy(entries[k][0])
    what = rng.randrange(3)
    if what == 0:
        return _zip(entries, method=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                                zipfile.ZIP_LZMA])), "method"
    if what == 1:
        info.external_attr = rng.choice([0o120777, 0o040755, 0o020644, 0o100644, 0o010644, 0xFFFF]) << 16
    else:
        info.create_system = rng.choice([0, 3, 19])
    entries[k] = (info, entries[k][1])
    return _zip(entries), f"attrs:{info.filename}"


def m_member_bytes(rng, data):
    """Mutate the *decompressed* bytes of one member (so CRC and sizes stay valid)."""
    entries = _members(data)
    k = rng.randrange(len(entries))
    info, payload = entries[k]
    if payload:
        payload, how = rng.choice([m_bitflip, m_overwrite, m_truncate, m_insert, m_delete])(rng, payload)
    else:
        how = "empty"
    entries[k] = (info, payload)
    return _zip(entries), f"memberbytes:{info.filename}:{how}"


def m_npy_header(rng, data):
    """Rewrite the header dict of one .npy member."""
    entries = _members(data)
    npys = [i for i, (info, _) in enumerate(entries) if info.filename.endswith(".npy")]
    if not npys:
        return m_json_field(rng, data)
    k = rng.choice(npys)
    info, payload = entries[k]
    header_len = struct.unpack_from("<H", payload, 8)[0]
    body = payload[10 + header_len:]
    header = payload[10:10 + header_len].decode("latin1").strip()
    edits = [
        ("'descr': '", "'descr': '>"), ("|i1", "|O"), ("<i4", "<f4"), ("<i4", "<i8"), ("False", "True"),
        ("False", "0"), ("(", "(2, "), ("(", "(0, "), ("(", "(-1, "), ("(", "(99999999999, "), (")", ", 1)"),
        ("'shape'", "'shape2'"), ("}", ", 'x': 1}"), ("{", "["), ("'descr'", "'descr': 1, 'descr'"),
    ]
    old, new = rng.choice(edits)
    entries[k] = (info, npy_with_header(header.replace(old, new, 1), body))
    return _zip(entries), f"npyheader:{info.filename}:{old}->{new}"


def _json_doc(data):
    entries = _members(data)
    k = next((i for i, (info, _) in enumerate(entries) if info.filename == GRAPH), None)
    return entries, k


def m_json_field(rng, data):
    """Structure-aware: delete, replace or retype one value somewhere in graph.json."""
    entries, k = _json_doc(data)
    if k is None:
        return m_bitflip(rng, data)
    doc = json.loads(entries[k][1])
    paths = [p for p, _ in _walk(doc) if p]
    path = rng.choice(paths)
    parent = _get(doc, path[:-1])
    key = path[-1]
    op = rng.randrange(6)
    if op == 0:
        del parent[key]
        how = "delete"
    elif op == 1:
        parent[key] = copy.deepcopy(rng.choice(JSON_VALUES))
        how = "replace"
    elif op == 2 and isinstance(parent[key], list) and parent[key]:
        parent[key].append(copy.deepcopy(rng.choice(parent[key])))
        how = "append-dup"
    elif op == 3 and isinstance(parent, dict):
        parent[rng.choice(["name", "x", "h0", "extra", "data", "axis", "conv0", "c000000.npy"])] = parent.pop(key)
        how = "rename-key"
    elif op == 4 and isinstance(parent[key], list) and len(parent[key]) > 1:
        rng.shuffle(parent[key])
        how = "shuffle"
    else:
        value = parent[key]
        parent[key] = [value] if not isinstance(value, list) else {"v": value}
        how = "wrap"
    entries[k] = (entries[k][0], json.dumps(doc).encode())
    return _zip(entries), f"json:{'/'.join(map(str, path))}:{how}"


def m_json_text(rng, data):
    """Raw edits of graph.json text (recompressed, so they reach the JSON parser)."""
    entries, k = _json_doc(data)
    if k is None:
        return m_bitflip(rng, data)
    text = entries[k][1].decode("utf-8", errors="replace")
    i = rng.randrange(len(text) + 1)
    snippet = rng.choice(["", "{", "}", "[", "]", ",", ":", "\"", "NaN", "Infinity", "-Infinity", "1e999", "-0",
                          "null", "\\u0000", "\\ud800", "\u00e9", "[" * 500, "{\"a\":" * 80, "9" * 5000,
                          "\"format\": \"intsim-graph\", "])
    cut = rng.choice([0, 0, 1, 5])
    text = text[:i] + snippet + text[i + cut:]
    raw = text.encode("utf-8", errors="surrogatepass") if rng.random() < 0.9 else text.encode("utf-16")
    entries[k] = (entries[k][0], raw)
    return _zip(entries), f"jsontext@{i}:{snippet[:12]!r}-{cut}"


RAW_MUTATIONS = [m_bitflip, m_overwrite, m_truncate, m_insert, m_delete, m_duplicate_chunk, m_header_field]
STRUCTURED_MUTATIONS = [m_remove_member, m_add_member, m_duplicate_member, m_rename_member, m_member_attrs,
                        m_member_bytes, m_npy_header, m_json_field, m_json_field, m_json_field, m_json_text]


def mutate(rng: random.Random, seed_data: bytes) -> tuple[bytes, list[str]]:
    data, steps = seed_data, []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        pool = STRUCTURED_MUTATIONS if rng.random() < 0.6 else RAW_MUTATIONS
        mutation = rng.choice(pool)
        try:
            data, how = mutation(rng, data) if data else (data, "empty")
        except Exception:  # noqa: BLE001 - a structure-aware mutation could not parse an already-broken file
            data, how = m_bitflip(rng, data)
        steps.append(how)
    return data, steps


# ---------------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------------


def check_case(path, data: bytes) -> tuple[str, float]:
    """Write ``data`` to ``path`` and load it; return (outcome, seconds) or raise AssertionError."""
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        with time_limit(CASE_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                graph = modelfile.load(path)
            except ModelFileError as e:
                assert str(path) in str(e), f"message does not name the file: {e}"
                return "rejected", time.perf_counter() - start
            try:
                intsim.Model(graph, parallel=False)
            except ALLOWED_AFTER_LOAD:
                return "loaded, prepare refused", time.perf_counter() - start
            return "loaded", time.perf_counter() - start
    except CaseTimeout:
        raise AssertionError(f"case took longer than {CASE_SECONDS} s") from None
    except AssertionError:
        raise
    except BaseException as e:  # noqa: BLE001 - anything else is the bug we are looking for
        if isinstance(e, KeyboardInterrupt):
            raise
        raise AssertionError(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}") from None


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return _seed_files(tmp_path_factory.mktemp("seeds"))


def test_seeds_are_valid(seeds, tmp_path):
    for data in seeds:
        assert check_case(tmp_path / "seed.npz", data)[0] == "loaded"


def test_fuzz_fixed_seed(seeds, tmp_path):
    rng = random.Random(SEED)
    path = tmp_path / "case.npz"
    outcomes: dict[str, int] = {}
    failures = []
    slowest = 0.0
    for case in range(N_CASES):
        base = rng.randrange(len(seeds))
        data, steps = mutate(rng, seeds[base])
        try:
            outcome, seconds = check_case(path, data)
        except AssertionError as e:
            failures.append(f"case {case} (seed file {base}, mutations {steps}): {e}")
            if len(failures) >= 10:
                break
            continue
        slowest = max(slowest, seconds)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert not failures, f"{len(failures)} failing cases (SEED {SEED}):\n" + "\n\n".join(failures)
    assert sum(outcomes.values()) == N_CASES
    print(f"\nfuzz: {N_CASES} cases, outcomes {outcomes}, slowest load {slowest * 1000:.1f} ms")
    # Sanity: the mutations reach every stage (rejections and successful loads both happen).
    assert outcomes.get("rejected", 0) > N_CASES // 4
    assert outcomes.get("loaded", 0) + outcomes.get("loaded, prepare refused", 0) > 20


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(seed_index=st.integers(0, 3), mutation_seed=st.integers(0, 2**32 - 1),
       patches=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
       cut=st.none() | st.floats(0, 1))
def test_fuzz_hypothesis(seeds, tmp_path, seed_index, mutation_seed, patches, cut):
    """Hypothesis-driven: a seeded structure-aware mutation plus raw byte patches and a truncation."""
    rng = random.Random(mutation_seed)
    data, steps = mutate(rng, seeds[seed_index])
    if data:
        raw = bytearray(data)
        for where, value in patches:
            raw[int(where * len(raw))] = value
        data = bytes(raw)
    if cut is not None:
        data = data[:int(cut * len(data))]
    try:
        check_case(tmp_path / "case.npz", data)
    except AssertionError as e:
        raise AssertionError(f"mutations {steps}, patches {patches}, cut {cut}: {e}") from None


def test_fuzz_every_truncation_of_a_small_file(tmp_path):
    """Each prefix of a small valid file is refused with ModelFileError (the full file loads)."""
    graph = constants_graph()
    graph.constants = {k: v for k, v in graph.constants.items() if k in ("i8", "scalar")}
    graph.tensors = {k: v for k, v in graph.tensors.items() if k in ("i8", "scalar")}
    graph.outputs = ["i8", "scalar"]
    modelfile.save(graph, tmp_path / "small.npz")
    data = (tmp_path / "small.npz").read_bytes()
    assert len(data) < 2000
    outcomes = {check_case(tmp_path / "cut.npz", data[:n])[0] for n in range(len(data))}
    assert outcomes == {"rejected"}
    assert check_case(tmp_path / "cut.npz", data)[0] == "loaded"
