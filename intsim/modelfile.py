"""Reading and writing ``model.npz``: a zip of ``graph.json`` plus one ``.npy`` per constant.

The reader treats the file as hostile: member names are checked against a fixed pattern (no paths),
sizes are bounded before anything is decompressed, ``.npy`` headers are parsed and checked against
the declared dtype and shape before their data is read, and ``np.load`` is never called with
``allow_pickle=True``.  Every failure raises ``ModelFileError`` naming the file, member and field.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from intsim.ir import FORMAT_NAME, FORMAT_VERSION, Graph, GraphError, Node, Quant, TensorSpec

GRAPH_MEMBER = "graph.json"
MEMBER_PATTERN = re.compile(r"^c[0-9]{1,6}\.npy$")
MAX_GRAPH_JSON_BYTES = 64 << 20
MAX_MEMBER_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_MEMBERS = 100_000
MAX_COMPRESSION_RATIO = 1000


class ModelFileError(ValueError):
    """A model file cannot be read; the message names the file, member and field at fault."""


def save(graph: Graph, path) -> None:
    """Validate ``graph`` and write it to ``path`` (a zip with deflated members)."""
    graph.validate()
    members = {name: f"c{i:06d}.npy" for i, name in enumerate(sorted(graph.constants))}
    doc = graph.to_json_dict(members)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_fixed_info(GRAPH_MEMBER), json.dumps(doc, indent=1, sort_keys=False, allow_nan=False))
        for name, member in members.items():
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(graph.constants[name]), allow_pickle=False)
            zf.writestr(_fixed_info(member), buf.getvalue())
    tmp.replace(path)


def _fixed_info(name: str) -> zipfile.ZipInfo:
    # A fixed timestamp makes files byte-identical across runs.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def load(path) -> Graph:
    """Read and validate a model file; raise ModelFileError on anything malformed."""
    path = Path(path)
    where = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ModelFileError(f"{where}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ModelFileError(f"{where}: not a readable model file (zip): {e}") from None
    with zf:
        infos = _check_members(where, zf)
        doc = _read_graph_json(where, zf, infos)
        try:
            graph = _graph_from_doc(doc)
        except GraphError as e:
            raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: {e}") from None
        members = _constant_members(where, doc)
        for tensor, member in members.items():
            if member not in infos:
                raise ModelFileError(f"{where}: tensor {tensor!r} field 'data' names member {member!r}, which is missing")
            graph.constants[tensor] = _read_array(where, zf, infos[member], graph.tensors[tensor])
        unused = set(infos) - set(members.values()) - {GRAPH_MEMBER}
        if unused:
            raise ModelFileError(f"{where}: unexpected members {sorted(unused)[:5]}")
    try:
        graph.validate()
    except GraphError as e:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: {e}") from None
    return graph


def _check_members(where: str, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
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
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{where}: member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"{where}: member {name!r} uses an unsupported compression method {info.compress_type}")
        if info.file_size > MAX_MEMBER_BYTES:
            raise ModelFileError(f"{where}: member {name!r} declares {info.file_size} bytes (at most {MAX_MEMBER_BYTES})")
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + 4096:
            raise ModelFileError(f"{where}: member {name!r} has a compression ratio above {MAX_COMPRESSION_RATIO}")
        total += info.file_size
        by_name[name] = info
    if total > MAX_TOTAL_BYTES:
        raise ModelFileError(f"{where}: members declare {total} bytes in all (at most {MAX_TOTAL_BYTES})")
    if GRAPH_MEMBER not in by_name:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER} is missing")
    return by_name


def _read_member(where: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise ModelFileError(f"{where}: member {info.filename!r} is {info.file_size} bytes (at most {limit})")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{where}: member {info.filename!r} is corrupt: {e}") from None
    except Exception as e:  # zlib.error and friends
        raise ModelFileError(f"{where}: member {info.filename!r} is corrupt: {e}") from None
    if len(data) != info.file_size:
        raise ModelFileError(f"{where}: member {info.filename!r} holds {len(data)} bytes, declared {info.file_size}")
    return data


def _read_graph_json(where: str, zf: zipfile.ZipFile, infos) -> dict:
    raw = _read_member(where, zf, infos[GRAPH_MEMBER], MAX_GRAPH_JSON_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as e:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: top level must be an object")
    if doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: field 'format' is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
        raise ModelFileError(f"{where}: member {GRAPH_MEMBER}: field 'version' is {version!r}; this intsim reads versions 1..{FORMAT_VERSION}")
    return doc


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} is not allowed")


def _constant_members(where: str, doc: dict) -> dict[str, str]:
    members = {}
    for name, t in doc["tensors"].items():
        if "data" in t:
            member = t["data"]
            if not isinstance(member, str) or not MEMBER_PATTERN.match(member):
                raise ModelFileError(f"{where}: tensor {name!r} field 'data' is {member!r}, not a member name")
            if member in members.values():
                raise ModelFileError(f"{where}: tensor {name!r} field 'data' reuses member {member!r}")
            members[name] = member
    return members


def _graph_from_doc(doc: dict) -> Graph:
    def need(obj, key, kind, where):
        if key not in obj:
            raise GraphError(f"{where}: field {key!r} is missing")
        if not isinstance(obj[key], kind):
            raise GraphError(f"{where}: field {key!r} must be {kind.__name__ if isinstance(kind, type) else kind}")
        return obj[key]

    tensors_doc = need(doc, "tensors", dict, "graph")
    tensors = {}
    for name, t in tensors_doc.items():
        where = f"tensor {name!r}"
        if not isinstance(t, dict):
            raise GraphError(f"{where}: must be an object")
        unknown = set(t) - {"dtype", "shape", "quant", "data"}
        if unknown:
            raise GraphError(f"{where}: unknown fields {sorted(unknown)}")
        quant = None
        if "quant" in t:
            q = t["quant"]
            if not isinstance(q, dict) or set(q) - {"scale", "zero_point", "axis"}:
                raise GraphError(f"{where}: field 'quant' must be an object with scale, zero_point, axis")
            quant = Quant(q.get("scale"), q.get("zero_point"), q.get("axis"))
        tensors[name] = TensorSpec(name, need(t, "dtype", str, where), need(t, "shape", list, where), quant)
    nodes = []
    for i, n in enumerate(need(doc, "nodes", list, "graph")):
        where = f"node #{i}"
        if not isinstance(n, dict):
            raise GraphError(f"{where}: must be an object")
        unknown = set(n) - {"name", "op", "inputs", "outputs", "attrs"}
        if unknown:
            raise GraphError(f"{where}: unknown fields {sorted(unknown)}")
        name = need(n, "name", str, where)
        where = f"node {name!r}"
        ins = need(n, "inputs", list, where)
        outs = need(n, "outputs", list, where)
        if not all(isinstance(s, str) for s in ins + outs):
            raise GraphError(f"{where}: inputs and outputs must be tensor names")
        nodes.append(Node(name, need(n, "op", str, where), ins, outs, n.get("attrs", {})))
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


def _read_array(where: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, spec: TensorSpec) -> np.ndarray:
    member = info.filename
    label = f"{where}: member {member!r} (tensor {spec.name!r})"
    if any(d is None for d in spec.shape):
        raise ModelFileError(f"{label}: a constant must have a fully known shape, declared {spec.shape}")
    expected_bytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
    if expected_bytes > MAX_MEMBER_BYTES:
        raise ModelFileError(f"{label}: declared shape {spec.shape} needs {expected_bytes} bytes (at most {MAX_MEMBER_BYTES})")
    raw = _read_member(where, zf, info, expected_bytes + 65536)
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise ModelFileError(f"{label}: not a valid .npy array: {e}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise ModelFileError(f"{label}: dtype {dtype} is not allowed (object or structured)")
    if dtype.newbyteorder("=") != np.dtype(spec.dtype) or dtype.byteorder == ">":
        raise ModelFileError(f"{label}: dtype {dtype} differs from declared {spec.dtype}")
    if list(shape) != spec.shape:
        raise ModelFileError(f"{label}: shape {list(shape)} differs from declared {spec.shape}")
    payload = raw[buf.tell():]
    if len(payload) != expected_bytes:
        raise ModelFileError(f"{label}: holds {len(payload)} data bytes, shape {spec.shape} needs {expected_bytes}")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(array)
