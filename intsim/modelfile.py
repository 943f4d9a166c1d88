"""Reading and writing ``model.npz``: a zip of ``graph.json`` plus one ``.npy`` per constant.

The reader treats the file as hostile:

* only a regular file is opened (a FIFO or device could block or never end);
* member names must be ``graph.json`` or ``cNNNNNN.npy`` (no paths, no duplicates), members must be
  regular files (no symlink / directory / device entries), unencrypted, stored or deflated, must not
  overlap one another in the archive, and their declared sizes and compression ratios are bounded
  before anything is decompressed; a member is never read past its declared size;
* ``graph.json`` must be UTF-8 JSON of bounded size and nesting depth, without NaN / Infinity /
  overflowing numbers and without duplicate keys; every tensor declaration is validated before any
  constant is read, so the declared dtype and shape can be trusted;
* ``.npy`` headers are parsed (NumPy's literal parser, never ``allow_pickle``) and checked against
  the declared dtype and shape before the data is used; object and structured dtypes are refused.

Every failure raises ``ModelFileError`` naming the file, the member and the field at fault; no other
exception escapes ``load`` for any file content.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import stat
import zipfile
from pathlib import Path

import numpy as np

from intsim.ir import FORMAT_NAME, FORMAT_VERSION, Graph, GraphError, Node, Quant, TensorSpec, check_tensor_spec
from intsim.profile import ProfileError, get_profile

GRAPH_MEMBER = "graph.json"
MEMBER_PATTERN = re.compile(r"^c[0-9]{1,6}\.npy\Z")
MAX_GRAPH_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64
MAX_MEMBER_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_MEMBERS = 100_000
#: Deflate cannot compress better than about 1032:1, so an honest member never exceeds this ratio;
#: a member declaring more is lying about its size (or is a bomb) and is refused before decompression.
MAX_COMPRESSION_RATIO = 1100
#: Slack for tiny members whose fixed deflate overhead dominates.
RATIO_SLACK_BYTES = 4096
#: Longest .npy header accepted (NumPy's own default limit).
MAX_NPY_HEADER = 10_000
_LOCAL_HEADER_BYTES = 30


class ModelFileError(ValueError):
    """A model file cannot be read; the message names the file, member and field at fault."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def save(graph: Graph, path) -> None:
    """Validate ``graph`` and write it to ``path`` (a zip with deflated members).

    The file is written to a temporary file next to ``path`` and renamed into place.  Two saves of
    the same graph give byte-identical files (fixed timestamps, attributes and member order).
    Node attributes and metadata must be JSON values (dicts with string keys, lists / tuples,
    str, int, finite float, bool, None; tuples are written as lists); GraphError otherwise.
    """
    graph.validate()
    for node in graph.nodes:
        _check_json_value(node.attrs, f"{node.label()}: field 'attrs'")
    _check_json_value(graph.metadata, "graph: field 'metadata'")
    _check_json_value(graph.profile, "graph: field 'profile'")
    members = {name: f"c{i:06d}.npy" for i, name in enumerate(sorted(graph.constants))}
    if len(members) + 1 > MAX_MEMBERS:
        raise GraphError(f"graph: {len(members)} constants (a model file holds at most {MAX_MEMBERS - 1})")
    doc = graph.to_json_dict(members)
    text = json.dumps(doc, indent=1, sort_keys=False, allow_nan=False)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_fixed_info(GRAPH_MEMBER), text.encode("utf-8"))
            for name, member in members.items():
                buf = io.BytesIO()
                # np.asarray(order="C") keeps 0-d arrays 0-d (ascontiguousarray makes them 1-d).
                np.save(buf, np.asarray(graph.constants[name], order="C"), allow_pickle=False)
                zf.writestr(_fixed_info(member), buf.getvalue())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fixed_info(name: str) -> zipfile.ZipInfo:
    # Fixed timestamp, creator system and permissions make files byte-identical across runs.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the writing platform
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _check_json_value(value, where: str, depth: int = 0) -> None:
    """GraphError unless ``value`` is a JSON value that ``load`` accepts back unchanged."""
    if depth > MAX_JSON_DEPTH - 8:  # leave room for the document levels above attrs / metadata
        raise GraphError(f"{where}: nested deeper than {MAX_JSON_DEPTH - 8} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if len(str(abs(value))) > 4000:
            raise GraphError(f"{where}: integer with more than 4000 digits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphError(f"{where}: non-finite number {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise GraphError(f"{where}: key {key!r} is not a string")
            _check_json_value(item, f"{where}[{key!r}]", depth + 1)
        return
    raise GraphError(f"{where}: {type(value).__name__} value {value!r} is not a JSON value (use plain int/float/str/list/dict)")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load(path) -> Graph:
    """Read and validate a model file; raise ModelFileError on anything malformed."""
    path = Path(path)
    where = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{where}: no such file") from None
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{where}: cannot be read: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{where}: not a regular file")
    if st.st_size == 0:
        raise ModelFileError(f"{where}: empty file, not a model file (zip)")
    try:
        zf = zipfile.ZipFile(path)
    except Exception as e:  # noqa: BLE001 - zipfile parsing hostile bytes: BadZipFile, struct.error, ...
        raise ModelFileError(f"{where}: not a readable model file (zip): {type(e).__name__}: {e}") from None
    with zf:
        infos = _check_members(where, zf, st.st_size)
        doc = _read_graph_json(where, zf, infos)
        try:
            graph = _graph_from_doc(doc)
        except GraphError as e:
            raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: {e}") from None
        _check_profile(where, graph.profile)
        members = _constant_members(where, doc)
        for tensor, member in members.items():
            if member not in infos:
                raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: tensor {tensor!r} field 'data' names member {member!r}, which is missing")
            graph.constants[tensor] = _read_array(where, zf, infos[member], graph.tensors[tensor])
        unused = set(infos) - set(members.values()) - {GRAPH_MEMBER}
        if unused:
            raise ModelFileError(f"{where}: unexpected members {sorted(unused)[:5]} (no tensor's field 'data' names them)")
    try:
        graph.validate()
    except GraphError as e:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: {e}") from None
    return graph


def _check_members(where: str, zf: zipfile.ZipFile, file_size: int) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelFileError(f"{where}: {len(infos)} members (at most {MAX_MEMBERS})")
    by_name: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if name != GRAPH_MEMBER and not MEMBER_PATTERN.match(name):
            raise ModelFileError(f"{where}: member name {name!r} is not allowed (expected graph.json or cNNNNNN.npy)")
        if name in by_name:
            raise ModelFileError(f"{where}: member {name!r} appears twice")
        mode = info.external_attr >> 16
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise ModelFileError(f"{where}: member {name!r} is {kind} (mode {mode:o})")
        if info.flag_bits & 0x41:  # bit 0: encrypted, bit 6: strong encryption
            raise ModelFileError(f"{where}: member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{where}: member {name!r} uses an unsupported compression method {info.compress_type}")
        if info.file_size > MAX_MEMBER_BYTES:
            raise ModelFileError(f"{where}: member {name!r} declares {info.file_size} bytes (at most {MAX_MEMBER_BYTES})")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise ModelFileError(f"{where}: member {name!r} is stored but declares {info.compress_size} compressed and {info.file_size} uncompressed bytes")
        if info.file_size > MAX_COMPRESSION_RATIO * info.compress_size + RATIO_SLACK_BYTES:
            raise ModelFileError(f"{where}: member {name!r} declares {info.file_size} bytes from {info.compress_size} compressed bytes (ratio above {MAX_COMPRESSION_RATIO})")
        if info.header_offset + _LOCAL_HEADER_BYTES + info.compress_size > file_size:
            raise ModelFileError(f"{where}: member {name!r} extends past the end of the file (truncated?)")
        total += info.file_size
        by_name[name] = info
    if total > MAX_TOTAL_BYTES:
        raise ModelFileError(f"{where}: members declare {total} bytes in all (at most {MAX_TOTAL_BYTES})")
    # Members must not share compressed bytes (the "overlapping files" zip bomb).
    spans = sorted((info.header_offset, info.header_offset + _LOCAL_HEADER_BYTES + len(info.filename.encode("utf-8"))
                    + info.compress_size, info.filename) for info in infos)
    for (_, end, name), (start, _, next_name) in zip(spans, spans[1:]):
        if start < end:
            raise ModelFileError(f"{where}: members {name!r} and {next_name!r} overlap in the archive")
    if GRAPH_MEMBER not in by_name:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER} is missing")
    return by_name


def _read_member(where: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, label: str | None = None) -> bytes:
    """The bytes of a member, never more than its declared size; ``label`` names it in errors."""
    label = label or f"{where}: member {info.filename!r}"
    if info.file_size > limit:
        raise ModelFileError(f"{label} is {info.file_size} bytes (at most {limit} expected)")
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, struct.error ... on hostile bytes
        raise ModelFileError(f"{label} is corrupt: {type(e).__name__}: {e}") from None
    if len(data) != info.file_size:
        raise ModelFileError(f"{label} holds {len(data)} bytes, declared {info.file_size}")
    return data


def _read_graph_json(where: str, zf: zipfile.ZipFile, infos) -> dict:
    raw = _read_member(where, zf, infos[GRAPH_MEMBER], MAX_GRAPH_JSON_BYTES)
    label = f"{where}: member {GRAPH_MEMBER}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{label} is not UTF-8: {e}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float,
                         object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ModelFileError(f"{label} is not valid JSON: nested too deeply") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise ModelFileError(f"{label} is not valid JSON: {e}") from None
    depth_error = _json_too_deep(doc)
    if depth_error:
        raise ModelFileError(f"{label}: {depth_error}")
    if not isinstance(doc, dict):
        raise ModelFileError(f"{label}: top level must be an object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{label}: field 'format' is {_short(doc.get('format'))}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(f"{label}: field 'version' is {_short(version)}; this intsim reads versions 1..{FORMAT_VERSION}")
    return doc


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} is not allowed")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a double")
    return value


def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:100]!r} in an object")
        obj[key] = value
    return obj


def _json_too_deep(doc) -> str | None:
    """A message if ``doc`` nests containers deeper than MAX_JSON_DEPTH (iterative walk)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_profile(where: str, profile) -> None:
    try:
        get_profile(profile)
    except (ProfileError, TypeError, ValueError) as e:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: field 'profile': {e}") from None


def _constant_members(where: str, doc: dict) -> dict[str, str]:
    members: dict[str, str] = {}
    used: set[str] = set()
    for name, t in doc["tensors"].items():
        if "data" in t:
            member = t["data"]
            if not isinstance(member, str) or not MEMBER_PATTERN.match(member):
                raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: tensor {name!r} field 'data' is {_short(member)}, not a member name (cNNNNNN.npy)")
            if member in used:
                raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: tensor {name!r} field 'data' reuses member {member!r}")
            used.add(member)
            members[name] = member
    return members


def _graph_from_doc(doc: dict) -> Graph:
    def need(obj, key, kind, where):
        if key not in obj:
            raise GraphError(f"{where}: field {key!r} is missing")
        if not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            raise GraphError(f"{where}: field {key!r} must be {_kind_name(kind)}, got {_short(obj[key])}")
        return obj[key]

    unknown = set(doc) - {"format", "version", "profile", "inputs", "outputs", "tensors", "nodes", "metadata"}
    if unknown:
        raise GraphError(f"graph: unknown fields {sorted(unknown)[:5]}")
    tensors_doc = need(doc, "tensors", dict, "graph")
    tensors = {}
    for name, t in tensors_doc.items():
        where = f"tensor {name!r}"
        if not isinstance(t, dict):
            raise GraphError(f"{where}: must be an object")
        unknown = set(t) - {"dtype", "shape", "quant", "data"}
        if unknown:
            raise GraphError(f"{where}: unknown fields {sorted(unknown)[:5]}")
        quant = None
        if "quant" in t:
            q = t["quant"]
            if not isinstance(q, dict) or set(q) - {"scale", "zero_point", "axis"}:
                raise GraphError(f"{where}: field 'quant' must be an object with scale, zero_point, axis")
            quant = Quant(q.get("scale"), q.get("zero_point"), q.get("axis"))
        spec = TensorSpec(name, need(t, "dtype", str, where), need(t, "shape", list, where), quant)
        check_tensor_spec(name, spec)
        tensors[name] = spec
    nodes = []
    for i, n in enumerate(need(doc, "nodes", list, "graph")):
        where = f"node #{i}"
        if not isinstance(n, dict):
            raise GraphError(f"{where}: must be an object")
        unknown = set(n) - {"name", "op", "inputs", "outputs", "attrs"}
        if unknown:
            raise GraphError(f"{where}: unknown fields {sorted(unknown)[:5]}")
        name = need(n, "name", str, where)
        where = f"node {_short(name)}"
        ins = need(n, "inputs", list, where)
        outs = need(n, "outputs", list, where)
        if not all(isinstance(s, str) for s in ins + outs):
            raise GraphError(f"{where}: fields 'inputs' and 'outputs' must list tensor names")
        attrs = n.get("attrs", {})
        if not isinstance(attrs, dict):
            raise GraphError(f"{where}: field 'attrs' must be an object")
        nodes.append(Node(name, need(n, "op", str, where), ins, outs, attrs))
    inputs = need(doc, "inputs", list, "graph")
    outputs = need(doc, "outputs", list, "graph")
    if not all(isinstance(s, str) for s in inputs + outputs):
        raise GraphError("graph: fields 'inputs' and 'outputs' must list tensor names")
    profile = doc.get("profile", "tflm")
    if not isinstance(profile, (str, dict)):
        raise GraphError("graph: field 'profile' must be a name or an object")
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise GraphError("graph: field 'metadata' must be an object")
    return Graph(tensors, nodes, inputs, outputs, {}, profile, metadata)


def _kind_name(kind) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer"}.get(kind, getattr(kind, "__name__", str(kind)))


def _read_array(where: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, spec: TensorSpec) -> np.ndarray:
    """The constant of ``spec`` from member ``info``; ``spec`` has passed ``check_tensor_spec``."""
    member = info.filename
    label = f"{where}: member {member!r} (tensor {spec.name!r})"
    if any(d is None for d in spec.shape):
        raise ModelFileError(f"{label}: a constant must have a fully known shape, declared {spec.shape}")
    expected_bytes = math.prod(spec.shape) * np.dtype(spec.dtype).itemsize  # exact: Python ints
    if expected_bytes > MAX_MEMBER_BYTES:
        raise ModelFileError(f"{label}: declared shape {spec.shape} needs {expected_bytes} bytes (at most {MAX_MEMBER_BYTES})")
    raw = _read_member(where, zf, info, expected_bytes + MAX_NPY_HEADER + 16, label)
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf, max_header_size=MAX_NPY_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf, max_header_size=MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:  # noqa: BLE001 - NumPy's header parser on hostile bytes
        raise ModelFileError(f"{label}: not a valid .npy array: {type(e).__name__}: {e}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelFileError(f"{label}: field 'descr': dtype {dtype} is not allowed (object, structured or subarray)")
    if dtype.byteorder == ">" or dtype.newbyteorder("=") != np.dtype(spec.dtype):
        raise ModelFileError(f"{label}: field 'descr': dtype {dtype.str} differs from declared {spec.dtype}")
    if not isinstance(fortran, bool):
        raise ModelFileError(f"{label}: field 'fortran_order' must be a bool")
    if list(shape) != spec.shape:
        raise ModelFileError(f"{label}: field 'shape': {list(shape)} differs from declared {spec.shape}")
    payload = memoryview(raw)[buf.tell():]
    if len(payload) != expected_bytes:
        raise ModelFileError(f"{label}: holds {len(payload)} data bytes, shape {spec.shape} needs {expected_bytes}")
    array = np.frombuffer(payload, dtype=np.dtype(spec.dtype)).reshape(shape, order="F" if fortran else "C")
    array = np.asarray(array, order="C")  # copies Fortran-order data; keeps 0-d arrays 0-d
    array.flags.writeable = False  # constants are shared by every run: nobody may modify them
    return array
