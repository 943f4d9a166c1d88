"""Comparing two golden dumps (or a golden dump and a firmware dump) node by node.

``compare_dirs(golden_dir, candidate_dir)`` walks the golden ``manifest.json`` in graph order and,
for every tensor file of every node, reads the golden values and the candidate's:

* the candidate's own ``manifest.json``, when it has one (an intsim golden dump), maps node names
  and roles to its files, so two dumps of differently laid-out graphs still compare by name;
* otherwise the candidate follows the golden layout: the same relative path with ``.npy`` or
  ``.hex`` (a firmware dump may hold only one of the two; ``.npy`` is preferred when both exist).
  ``.hex`` files are read with the golden tensor's dtype and shape (one value per line, two's
  complement at the dtype's width, ``0x`` prefixes, blank lines and ``//`` / ``#`` comments allowed).

Per tensor: ``status`` (``ok``, ``differ``, ``missing``, ``unreadable``, ``shape_mismatch``,
``dtype_mismatch``, ``golden_unreadable``), the number of differing elements, the max absolute
difference in LSBs (codes; float32 tensors: the real difference), and the index of the first
differing element.  Per node: the same totals and its status; the report names the first
diverging node in graph order.  ``identical`` is true when every compared tensor is ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from intsim.golden import FORMAT_NAME, MANIFEST

#: candidate file suffixes tried, in order
CANDIDATE_SUFFIXES = (".npy", ".hex")
MAX_MANIFEST_BYTES = 256 << 20
_HEX = re.compile(r"[0-9a-fA-F]+")
_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32")
_STATUS_ORDER = ("ok", "differ", "dtype_mismatch", "shape_mismatch", "unreadable", "missing", "golden_unreadable")


class CompareError(ValueError):
    """A directory cannot be compared (missing, no readable manifest)."""


def read_manifest(directory, role: str = "golden") -> dict:
    """The manifest of a golden dump; CompareError naming the directory otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CompareError(f"{role} directory {directory} does not exist or is not a directory")
    path = directory / MANIFEST
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise CompareError(f"{role} directory {directory} has no {MANIFEST} (not a golden dump)") from None
    except OSError as e:
        raise CompareError(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CompareError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CompareError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CompareError(f"{path}: field 'format' is not {FORMAT_NAME!r}")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise CompareError(f"{path}: field 'nodes' must be a list")
    for i, node in enumerate(nodes):
        _check_node(path, i, node)
    return doc


def _check_node(path, i, node):
    where = f"{path}: node #{i}"
    if not isinstance(node, dict) or not isinstance(node.get("name"), str) or not isinstance(node.get("tensors"), list):
        raise CompareError(f"{where}: needs fields 'name' (string) and 'tensors' (list)")
    for j, t in enumerate(node["tensors"]):
        ok = (isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("dtype"), str)
              and isinstance(t.get("shape"), list) and all(isinstance(d, int) and d >= 0 for d in t["shape"])
              and isinstance(t.get("files"), dict) and t["dtype"] in _DTYPES)
        if not ok:
            raise CompareError(f"{where} ({node['name']!r}): tensor #{j} needs 'role', 'dtype' (one of {_DTYPES}), 'shape' and 'files'")
        for fmt, f in t["files"].items():
            rel = f.get("path") if isinstance(f, dict) else None
            if not _safe_relpath(rel):
                raise CompareError(f"{where} ({node['name']!r}): tensor {t['role']!r} file {fmt!r} has no safe relative path")


def _safe_relpath(rel) -> bool:
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


# ---------------------------------------------------------------------------------------------
# Reading tensors
# ---------------------------------------------------------------------------------------------


class ReadError(Exception):
    pass


def read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - truncated data, bad header, pickle refusal
        raise ReadError(f"not a readable .npy file: {type(e).__name__}: {e}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        getattr(array, "close", lambda: None)()
        raise ReadError("is not a single .npy array")
    if array.dtype.kind not in "iuf" or array.dtype.fields is not None:
        raise ReadError(f"holds dtype {array.dtype}, not integer or float")
    return array


def read_hex(path: Path, dtype: str, shape: list[int]) -> np.ndarray:
    """Values of a ``.hex`` file as ``dtype`` with ``shape`` (ReadError on malformed content)."""
    dt = np.dtype(dtype)
    bits = dt.itemsize * 8
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise ReadError("is not ASCII text") from None
    except OSError as e:
        raise ReadError(f"cannot be read: {e.strerror or e}") from None
    values = []
    limit = 1 << bits
    for lineno, line in enumerate(text.splitlines(), 1):
        token = line.split("//", 1)[0].split("#", 1)[0].strip()
        if not token:
            continue
        if token[:2].lower() == "0x":
            token = token[2:]
        if not _HEX.fullmatch(token):
            raise ReadError(f"line {lineno}: {line.strip()[:40]!r} is not a hex value")
        value = int(token, 16)
        if value >= limit:
            raise ReadError(f"line {lineno}: {token} does not fit in {bits} bits ({dtype})")
        values.append(value)
    expected = int(np.prod(shape, dtype=np.int64))
    if len(values) != expected:
        raise ShapeMismatch([len(values)], f"holds {len(values)} values, shape {shape} needs {expected}")
    unsigned = np.array(values, dtype=np.uint64).astype(np.dtype(f"<u{dt.itemsize}"))
    return unsigned.view(dt.newbyteorder("<")).astype(dt).reshape(shape)


class ShapeMismatch(ReadError):
    def __init__(self, shape, message):
        super().__init__(message)
        self.shape = shape


def _golden_array(golden_dir: Path, entry: dict) -> np.ndarray:
    """The golden tensor from its .npy (checked against the manifest's sha256), else its .hex."""
    files = entry["files"]
    errors = []
    for fmt in ("npy", "hex"):
        f = files.get(fmt)
        if not isinstance(f, dict):
            continue
        path = golden_dir / f["path"]
        try:
            raw = path.read_bytes()
        except OSError as e:
            errors.append(f"{f['path']}: {e.strerror or e}")
            continue
        if f.get("sha256") and hashlib.sha256(raw).hexdigest() != f["sha256"]:
            errors.append(f"{f['path']}: sha256 differs from the manifest (file modified)")
            continue
        try:
            array = read_npy(path) if fmt == "npy" else read_hex(path, entry["dtype"], entry["shape"])
        except ReadError as e:
            errors.append(f"{f['path']}: {e}")
            continue
        if str(array.dtype) != entry["dtype"] or list(array.shape) != entry["shape"]:
            errors.append(f"{f['path']}: {array.dtype} {list(array.shape)} differs from the manifest")
            continue
        return array
    raise ReadError("; ".join(errors) or "no .npy or .hex file listed in the manifest")


def _candidate_stem(entry: dict) -> str:
    for fmt in ("npy", "hex", "c"):
        f = entry["files"].get(fmt)
        if isinstance(f, dict):
            path = f["path"]
            return path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    return ""


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------


def compare_arrays(golden: np.ndarray, candidate: np.ndarray) -> dict:
    """Differing elements, max |difference| and the first differing index of two same-shape arrays."""
    if golden.dtype.kind == "f" or candidate.dtype.kind == "f":
        g = golden.astype(np.float64)
        c = candidate.astype(np.float64)
        if golden.dtype == candidate.dtype:  # bitwise equality (NaN == NaN, -0 != +0)
            width = f"<u{golden.dtype.itemsize}"
            differ = golden.astype(golden.dtype.newbyteorder("<")).view(width) != \
                candidate.astype(candidate.dtype.newbyteorder("<")).view(width)
        else:
            differ = ~((g == c) | (np.isnan(g) & np.isnan(c)))
        with np.errstate(invalid="ignore"):
            diff = np.abs(g - c)
        max_diff = float(np.nanmax(diff[differ])) if differ.any() and not np.all(np.isnan(diff[differ])) else 0.0
    else:
        differ = golden != candidate  # NumPy compares mixed integer dtypes exactly
        if not differ.any():
            max_diff = 0
        elif golden.dtype.itemsize < 8 and candidate.dtype.itemsize < 8:
            max_diff = int(np.max(np.abs(golden[differ].astype(np.int64) - candidate[differ].astype(np.int64))))
        else:  # 64-bit codes: exact Python ints (the difference may not fit in int64)
            max_diff = max(abs(int(a) - int(b)) for a, b in zip(golden[differ].tolist(), candidate[differ].tolist()))
    n = int(np.count_nonzero(differ))
    first = [int(i) for i in np.unravel_index(int(np.argmax(differ)), differ.shape)] if n else None
    return {"differing_elements": n, "max_abs_diff": max_diff, "first_diff_index": first}


def _compare_tensor(golden_dir: Path, cand_dir: Path, entry: dict, cand_entry: dict | None, has_cand_manifest: bool) -> dict:
    result = {"role": entry["role"], "kind": entry.get("kind"), "tensor": entry.get("tensor"),
              "dtype": entry["dtype"], "shape": entry["shape"], "elements": int(np.prod(entry["shape"], dtype=np.int64)),
              "status": "ok", "candidate_file": None, "differing_elements": 0, "max_abs_diff": 0,
              "first_diff_index": None}
    try:
        golden = _golden_array(golden_dir, entry)
    except ReadError as e:
        return {**result, "status": "golden_unreadable", "error": str(e)}
    # locate the candidate file
    candidates = []
    if has_cand_manifest:
        if cand_entry is not None:
            for fmt, suffix in (("npy", ".npy"), ("hex", ".hex")):
                f = cand_entry["files"].get(fmt)
                if isinstance(f, dict):
                    candidates.append((f["path"], suffix, cand_entry["dtype"], cand_entry["shape"]))
    else:
        stem = _candidate_stem(entry)
        for suffix in CANDIDATE_SUFFIXES:
            candidates.append((stem + suffix, suffix, entry["dtype"], entry["shape"]))
    found = [(rel, suffix, dt, sh) for rel, suffix, dt, sh in candidates if (cand_dir / rel).is_file()]
    if not found:
        tried = ", ".join(rel for rel, *_ in candidates) or "(no entry in the candidate manifest)"
        return {**result, "status": "missing", "error": f"no candidate file: {tried}"}
    rel, suffix, hex_dtype, hex_shape = found[0]
    result["candidate_file"] = rel
    try:
        if suffix == ".npy":
            cand = read_npy(cand_dir / rel)
        else:
            cand = read_hex(cand_dir / rel, hex_dtype, hex_shape)
    except ShapeMismatch as e:
        return {**result, "status": "shape_mismatch", "candidate_shape": e.shape, "error": str(e)}
    except ReadError as e:
        return {**result, "status": "unreadable", "error": str(e)}
    result["candidate_dtype"] = str(cand.dtype)
    result["candidate_shape"] = [int(d) for d in cand.shape]
    if list(cand.shape) != list(golden.shape):
        return {**result, "status": "shape_mismatch",
                "error": f"shape {list(cand.shape)} differs from golden {list(golden.shape)}"}
    diff = compare_arrays(golden, cand)
    result.update(diff)
    if str(cand.dtype) != str(golden.dtype):
        result["status"] = "dtype_mismatch"
        result["error"] = f"dtype {cand.dtype} differs from golden {golden.dtype}"
    elif diff["differing_elements"]:
        result["status"] = "differ"
    return result


def compare_dirs(golden_dir, candidate_dir, outputs_only: bool = False) -> dict:
    """Compare ``candidate_dir`` against the golden dump in ``golden_dir``; a JSON-ready report.

    ``outputs_only``: compare only the nodes' output tensors (for firmware that dumps only those).
    Raises CompareError when a directory or manifest cannot be read.
    """
    golden_dir, candidate_dir = Path(golden_dir), Path(candidate_dir)
    golden = read_manifest(golden_dir, "golden")
    if not candidate_dir.is_dir():
        raise CompareError(f"candidate directory {candidate_dir} does not exist or is not a directory")
    cand_manifest = read_manifest(candidate_dir, "candidate") if (candidate_dir / MANIFEST).exists() else None
    cand_nodes = {n["name"]: n for n in cand_manifest["nodes"]} if cand_manifest else {}
    notes = []
    if cand_manifest is not None:
        for key, label in (("model", "model"), ("input", "input"), ("profile", "profile"), ("intsim", "intsim version")):
            g, c = golden.get(key), cand_manifest.get(key)
            if g != c:
                if key == "profile" and _describe(key, g) == _describe(key, c):
                    notes.append(f"profile differs: both are named {_describe(key, g)} but their fields differ")
                    continue
                notes.append(f"{label} differs: golden {_describe(key, g)}, candidate {_describe(key, c)}")
        missing_nodes = [n["name"] for n in golden["nodes"] if n["name"] not in cand_nodes]
        if missing_nodes:
            notes.append(f"{len(missing_nodes)} golden nodes are not in the candidate manifest")
    nodes = []
    for i, node in enumerate(golden["nodes"]):
        cand_node = cand_nodes.get(node["name"])
        cand_roles = {t["role"]: t for t in cand_node["tensors"]} if cand_node else {}
        tensors = []
        for entry in node["tensors"]:
            if outputs_only and entry.get("kind") != "output":
                continue
            tensors.append(_compare_tensor(golden_dir, candidate_dir, entry, cand_roles.get(entry["role"]),
                                           cand_manifest is not None))
        status = max((t["status"] for t in tensors), key=_STATUS_ORDER.index, default="ok")
        nodes.append({
            "index": node.get("index", i), "name": node["name"], "op": node.get("op"), "dir": node.get("dir"),
            "status": status,
            "differing_elements": sum(t["differing_elements"] for t in tensors),
            "max_abs_diff": max((t["max_abs_diff"] for t in tensors), default=0),
            "output_differing_elements": sum(t["differing_elements"] for t in tensors if t["kind"] == "output"),
            "tensors": tensors,
        })
    bad_nodes = [n for n in nodes if n["status"] != "ok"]
    all_tensors = [t for n in nodes for t in n["tensors"]]
    first = None
    if bad_nodes:
        n = bad_nodes[0]
        first = {"index": n["index"], "name": n["name"], "op": n["op"], "status": n["status"],
                 "differing_elements": n["differing_elements"], "max_abs_diff": n["max_abs_diff"],
                 "tensors": [t["role"] for t in n["tensors"] if t["status"] != "ok"]}
    counts = {s: sum(t["status"] == s for t in all_tensors) for s in _STATUS_ORDER}
    return {
        "golden": str(golden_dir),
        "candidate": str(candidate_dir),
        "candidate_has_manifest": cand_manifest is not None,
        "outputs_only": outputs_only,
        "identical": not bad_nodes,
        "first_diverging_node": first,
        "summary": {"nodes": len(nodes), "nodes_differing": len(bad_nodes), "tensors": len(all_tensors),
                    "tensors_differing": len(all_tensors) - counts["ok"],
                    "by_status": {s: c for s, c in counts.items() if c}},
        "notes": notes,
        "nodes": nodes,
    }


def _describe(key, value) -> str:
    if isinstance(value, dict):
        if key == "profile" and isinstance(value.get("name"), str):
            return repr(value["name"])
        if key in ("model", "input") and "sha256" in value:
            return f"{value.get('file')!r} (sha256 {str(value.get('sha256'))[:16]})"
    return _short(value)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 100 else text[:97] + "..."
