"""Firmware golden references: every node's integer inputs, constants and outputs, on disk.

``write_golden(model, inputs, out_dir)`` runs a prepared ``Model`` once, capturing each node's
arrays with ``Model.run``'s hook, and writes them in up to three formats next to a
``manifest.json`` (schema in ``docs/golden.md``):

* ``npy``: one ``.npy`` per tensor (little-endian, C order, format version 1.0);
* ``c``: one C header per tensor holding a ``const`` array of the exact C type (``int8_t`` ...
  ``int64_t``, ``float``), plus per node a ``config.h`` with the layer's geometry, quantization
  and arithmetic as ``#define``\\ s and a ``test_data.h`` including them all -- the layout of
  CMSIS-NN's unit-test data (``Tests/UnitTest/TestCases/TestData/<case>/``);
* ``hex``: one value per line, lowercase two's complement at the dtype's width (2 digits for
  8-bit, 4 for 16-bit, 8 for 32-bit, 16 for 64-bit; float32 as its IEEE-754 bit pattern),
  C order, no header (``$readmemh``-compatible).

Layout::

    DIR/manifest.json
    DIR/nodes/<index>_<node>/<role>.{npy,h,hex}   role: input<i>, output<i>, weights, bias,
                                                  multiplier, shift, scale, table, alpha, ...,
                                                  multiplier_effective (derived, see below)
    DIR/nodes/<index>_<node>/config.h, test_data.h (format c)

Each node directory is self-contained (a tensor produced by one node and read by the next is
written in both directories), as a per-layer firmware unit test wants it.  Node names are
sanitised for file names (``[A-Za-z0-9_-]``) and C identifiers (``[A-Za-z0-9_]``, prefixed
``n<index>_``); the zero-padded graph index keeps both unique, and the manifest maps every node
name to its directory and C prefix.

``multiplier_effective``: when the profile's multiplier width is below 31 bits, the kernel
requantizes with ``intsim.fixedpoint.reduce_multiplier`` of the stored Q0.31 multiplier (TFLite's
16x8 "reduced multiplier"); firmware needs that value, so it is dumped as a derived constant.

The output is byte-identical for the same model, input, profile, formats and intsim version:
no timestamps, absolute paths or thread counts are written, files are built in memory and
their sha256 recorded in the manifest, and parallel and serial kernels give the same bits.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path

import numpy as np

import intsim
from intsim.inspect import file_sha256
from intsim.profile import ROUNDING_BY_CODE

MANIFEST = "manifest.json"
FORMAT_NAME = "intsim-golden"
FORMAT_VERSION = 1

#: Output formats in their canonical order, with the file suffix each writes per tensor.
FORMATS = {"npy": ".npy", "c": ".h", "hex": ".hex"}

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "uint16": "uint16_t", "int32": "int32_t",
           "int64": "int64_t", "float32": "float"}

_LINEAR = {1: "weights", 2: "bias", 3: "multiplier", 4: "shift", 5: "scale", 6: "neg_multiplier", 7: "neg_shift",
           8: "neg_scale", 9: "pos_offset", 10: "neg_offset"}
_RQ_TAIL = {2: "multiplier", 3: "shift", 4: "scale"}
#: Names of constant node inputs by op and input position (see each op module's docstring).
#: Constants of other ops are called ``const<i>``; non-constant inputs are ``input<i>``.
CONSTANT_ROLES = {
    "conv1d": _LINEAR, "conv2d": _LINEAR, "conv_transpose1d": _LINEAR, "conv_transpose2d": _LINEAR,
    "linear": _LINEAR,
    "batch_matmul": {1: "weights", **_RQ_TAIL},
    "requantize": {1: "multiplier", 2: "shift", 3: "scale"},
    "add": {**_RQ_TAIL, 5: "offset"}, "sub": {**_RQ_TAIL, 5: "offset"}, "mul": {**_RQ_TAIL, 5: "offsets"},
    "conv1d_dynamic": {2: "weights", 3: "weight_scale", 4: "bias16"},
    "prelu": {1: "alpha", **_RQ_TAIL},
    "lut8": {1: "table"}, "lut16": {1: "table"},
    "group_norm": {1: "multiplier", 2: "shift", 3: "bias"},
    "layer_norm": {1: "multiplier", 2: "shift", 3: "bias"},
    "overlap_add": {1: "reference", **_RQ_TAIL},
    "combiner": _RQ_TAIL,
}

HEX_ENCODING = ("one value per line, C (row-major) order, lowercase two's complement at the dtype's width "
                "(itemsize*2 digits); float32 as its IEEE-754 bit pattern")


class GoldenError(ValueError):
    """A golden dump cannot be written (bad formats, output directory in the way, ...)."""


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def file_token(name: str, limit: int = 64) -> str:
    """``name`` made safe as one path component: ``[A-Za-z0-9_-]`` only (deterministic)."""
    token = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    token = re.sub(r"_+", "_", token).strip("_") or "node"
    return token[:limit]


def c_token(name: str, limit: int = 48) -> str:
    """``name`` made safe inside a C identifier: ``[A-Za-z0-9_]``, no ``__`` runs (reserved in C++)."""
    token = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "node"
    return token[:limit].rstrip("_") or "node"


def node_names(index: int, name: str, n_nodes: int) -> tuple[str, str]:
    """(directory name, C prefix) of node ``index``: unique through the zero-padded index."""
    width = max(3, len(str(max(n_nodes - 1, 0))))
    return f"{index:0{width}d}_{file_token(name)}", f"n{index:0{width}d}_{c_token(name)}"


def tensor_roles(node, constants) -> list[tuple[int, str, str]]:
    """[(input position, role, kind)] for the node's non-empty inputs; kind 'input' or 'constant'."""
    roles = []
    table = CONSTANT_ROLES.get(node.op, {})
    for i, name in enumerate(node.inputs):
        if not name:
            continue
        if name in constants:
            roles.append((i, table.get(i, f"const{i}"), "constant"))
        else:
            roles.append((i, f"input{i}", "input"))
    return roles


# ---------------------------------------------------------------------------------------------
# Encoders: array -> bytes
# ---------------------------------------------------------------------------------------------


def _canonical(array: np.ndarray) -> np.ndarray:
    """Little-endian, C-contiguous copy semantics (no copy when already so)."""
    array = np.asarray(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, _canonical(array), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def _unsigned_codes(array: np.ndarray) -> tuple[np.ndarray, int]:
    """(values as unsigned two's-complement codes in a uint64 array, hex digits per value)."""
    array = _canonical(array)
    if array.dtype.kind not in "iuf":
        raise GoldenError(f"cannot encode dtype {array.dtype} as hex")
    bits = array.dtype.itemsize * 8
    unsigned = array.view(np.dtype(f"<u{array.dtype.itemsize}"))
    return unsigned.reshape(-1).astype(np.uint64), bits // 4


def encode_hex(array: np.ndarray) -> bytes:
    codes, digits = _unsigned_codes(array)
    if codes.size == 0:
        return b""
    fmt = f"{{:0{digits}x}}".format
    return ("\n".join(map(fmt, codes.tolist())) + "\n").encode("ascii")


def _c_int(v: int, dtype: str) -> str:
    if dtype == "int64":
        return "(-9223372036854775807LL - 1)" if v == -(2**63) else f"{v}LL"
    if dtype == "int32" and v == -(2**31):
        return "(-2147483647 - 1)"
    return str(v)


def _c_float(v: float, suffix: str = "f") -> str:
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    return float(v).hex() + suffix


def _comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


def encode_c_array(array: np.ndarray, c_name: str, comment_lines: list[str]) -> bytes:
    """A CMSIS-NN style header: ``const <ctype> <c_name>[N] = {...};`` with a size define."""
    array = _canonical(array)
    dtype = str(array.dtype.newbyteorder("="))
    if dtype not in C_TYPES:
        raise GoldenError(f"no C type for dtype {dtype}")
    ctype = C_TYPES[dtype]
    flat = array.reshape(-1)
    if dtype == "float32":
        values = [_c_float(v) for v in flat.astype(np.float64).tolist()]
    else:
        values = [_c_int(v, dtype) for v in flat.tolist()]
    per_line = 16 if array.dtype.itemsize <= 2 else 8
    out = [f"/* Generated by intsim {intsim.__version__} (golden reference). Do not edit."]
    out += [f" * {_comment(line)}" for line in comment_lines]
    out += [" */", "#pragma once", "#include <stdint.h>"]
    if any(v in ("NAN", "INFINITY", "(-INFINITY)") for v in values):
        out.append("#include <math.h>")
    out.append("")
    out.append(f"#define {c_name.upper()}_SIZE {flat.size}")
    out.append("")
    if flat.size == 0:  # C has no zero-length arrays
        out.append(f"const {ctype} {c_name}[1] = {{0}}; /* empty tensor: {c_name.upper()}_SIZE is 0 */")
    else:
        out.append(f"const {ctype} {c_name}[{flat.size}] = {{")
        for start in range(0, len(values), per_line):
            out.append("    " + ", ".join(values[start:start + per_line]) + ",")
        out.append("};")
    return ("\n".join(out) + "\n").encode("ascii")


# ---------------------------------------------------------------------------------------------
# Config header (#defines per layer)
# ---------------------------------------------------------------------------------------------


def _define_value(value) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            return None
        text = _c_int(value, "int64") if abs(value) >= 2**31 else str(value)
        return f"({text})" if value < 0 and not text.startswith("(") else text
    if isinstance(value, float):
        text = _c_float(value, "")
        return f"({text})" if text.startswith("-") else text
    if isinstance(value, str):
        safe = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in value)
        return f'"{safe}"'
    return None


def _flatten_attrs(prefix: str, value, out: list[tuple[str, str]], depth: int = 0) -> None:
    if depth > 4:
        return
    if isinstance(value, dict):
        for key in value:
            _flatten_attrs(f"{prefix}_{c_token(str(key)).upper()}", value[key], out, depth + 1)
    elif isinstance(value, (list, tuple)):
        out.append((f"{prefix}_LEN", str(len(value))))
        for i, item in enumerate(value[:64]):
            _flatten_attrs(f"{prefix}_{i}", item, out, depth + 1)
    else:
        text = _define_value(value)
        if text is not None:
            out.append((prefix, text))


def _conv_geometry(op, x_shape, y_shape, w_shape) -> list[tuple[str, int]]:
    """CMSIS-NN config names for the convolutions, from the prepared op's parsed attributes."""
    stride = list(getattr(op, "stride", []))
    dilation = list(getattr(op, "dilation", []))
    pads = list(getattr(op, "pads", []))
    spatial = len(x_shape) - 2
    if spatial not in (1, 2) or len(stride) != spatial or len(dilation) != spatial or len(pads) != spatial:
        return []
    if spatial == 1:  # conv1d is CMSIS's 1 x N convolution: H = 1, the time axis is W
        stride, dilation, pads = [1] + stride, [1] + dilation, [(0, 0)] + pads
        x_hw, y_hw, k_hw = [1, x_shape[2]], [1, y_shape[2]], [1, w_shape[2]]
    else:
        x_hw, y_hw, k_hw = list(x_shape[2:]), list(y_shape[2:]), list(w_shape[2:])
    geometry = [
        ("INPUT_BATCHES", x_shape[0]), ("IN_CH", x_shape[1]), ("INPUT_H", x_hw[0]), ("INPUT_W", x_hw[1]),
        ("OUT_CH", y_shape[1]), ("OUTPUT_H", y_hw[0]), ("OUTPUT_W", y_hw[1]),
        ("FILTER_Y", k_hw[0]), ("FILTER_X", k_hw[1]), ("STRIDE_Y", stride[0]), ("STRIDE_X", stride[1]),
        ("PAD_Y", pads[0][0]), ("PAD_Y_BOTTOM", pads[0][1]), ("PAD_X", pads[1][0]), ("PAD_X_RIGHT", pads[1][1]),
        ("DILATION_Y", dilation[0]), ("DILATION_X", dilation[1]), ("GROUPS", int(getattr(op, "groups", 1))),
    ]
    if getattr(op, "transposed", False):
        out_pad = list(getattr(op, "output_padding", []))
        out_pad = ([0] + out_pad) if spatial == 1 else out_pad
        if len(out_pad) == 2:
            geometry += [("OUTPUT_PADDING_Y", out_pad[0]), ("OUTPUT_PADDING_X", out_pad[1])]
    return geometry


def _geometry(node, op, entries) -> list[tuple[str, int]]:
    shapes = {e["role"]: e["shape"] for e in entries}
    x, y, w = shapes.get("input0"), shapes.get("output0"), shapes.get("weights")
    if node.op in ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d") and x and y and w:
        return _conv_geometry(op, x, y, w)
    if node.op == "linear" and x and y and w:
        return [("INPUT_BATCHES", math.prod(x[:-1])), ("ACCUMULATION_DEPTH", x[-1]), ("IN_CH", x[-1]),
                ("OUT_CH", y[-1])]
    return []


def encode_config(node, index: int, prefix: str, op, entries: list[dict], requant: dict | None) -> bytes:
    """``config.h``: the node's geometry, quantization and arithmetic as ``#define``\\ s."""
    p = prefix.upper()
    lines = [f"/* Generated by intsim {intsim.__version__} (golden reference). Do not edit.",
             f" * node #{index} {_comment(repr(node.name))} ({_comment(node.op)}): geometry, quantization and",
             " * arithmetic of this layer.  Tensor data: the other headers in this directory (test_data.h).",
             " */", "#pragma once", ""]

    def define(name, text, note=None):
        lines.append(f"#define {p}_{name} {text}" + (f" /* {_comment(note)} */" if note else ""))

    define("NODE_INDEX", str(index))
    define("OP", _define_value(node.op))
    geometry = _geometry(node, op, entries)
    if geometry:
        lines += ["", "/* geometry (CMSIS-NN test-data names) */"]
        for name, value in geometry:
            define(name, _define_value(int(value)))
    attrs: list[tuple[str, str]] = []
    for key in node.attrs:
        _flatten_attrs(f"ATTR_{c_token(str(key)).upper()}", node.attrs[key], attrs)
    if attrs:
        lines += ["", "/* node attributes */"]
        for name, text in attrs:
            define(name, text)
    lines += ["", "/* quantization (CMSIS-NN convention: *_OFFSET of an input is -zero_point, of an output +zero_point) */"]
    first_in = next((e for e in entries if e["kind"] == "input"), None)
    first_out = next((e for e in entries if e["kind"] == "output"), None)
    if first_in is not None and first_in["quant"] is not None and first_in["quant"]["axis"] is None:
        define("INPUT_OFFSET", _define_value(-int(first_in["quant"]["zero_point"][0])))
    if first_out is not None and first_out["quant"] is not None and first_out["quant"]["axis"] is None:
        define("OUTPUT_OFFSET", _define_value(int(first_out["quant"]["zero_point"][0])))
    if requant is not None:
        define("OUT_ACTIVATION_MIN", _define_value(requant["act_min"]))
        define("OUT_ACTIVATION_MAX", _define_value(requant["act_max"]))
        lines += ["", "/* requantization arithmetic (profile path used by this node) */"]
        define("ROUNDING", str(requant["rounding_code"]), requant["rounding"])
        define("MULT_BITS", str(requant["mult_bits"]))
        define("ACC_BITS", str(requant["acc_bits"]))
        define("ACC_SATURATE", "1" if requant["acc_overflow"] == "saturate" else "0", requant["acc_overflow"])
    lines += ["", "/* tensors: dims, size, dtype width, quantization */"]
    for e in entries:
        r = e["role"].upper()
        what = f"tensor {e['tensor']!r}" if e["tensor"] is not None else "derived"
        define(f"{r}_DIMS", str(len(e["shape"])), f"{what} {e['dtype']} {e['shape']}")
        for i, d in enumerate(e["shape"]):
            define(f"{r}_DIM_{i}", str(d))
        define(f"{r}_SIZE", str(math.prod(e["shape"])))
        define(f"{r}_BITS", str(np.dtype(e["dtype"]).itemsize * 8))
        q = e["quant"]
        if q is not None:
            if q["axis"] is None:
                define(f"{r}_ZERO_POINT", _define_value(int(q["zero_point"][0])))
                define(f"{r}_SCALE", _define_value(float(q["scale"][0])), repr(float(q["scale"][0])))
            else:
                define(f"{r}_QUANT_AXIS", str(q["axis"]), f"{len(q['scale'])} per-channel scales in manifest.json")
    return ("\n".join(lines) + "\n").encode("ascii")


def encode_test_data(prefix: str, headers: list[str]) -> bytes:
    lines = [f"/* Generated by intsim {intsim.__version__} (golden reference). Do not edit. */", "#pragma once", ""]
    lines += [f'#include "{h}"' for h in headers]
    return ("\n".join(lines) + "\n").encode("ascii")


# ---------------------------------------------------------------------------------------------
# Dump
# ---------------------------------------------------------------------------------------------


def parse_formats(text) -> tuple[str, ...]:
    """'npy,c,hex' (any order, any subset; 'all') -> the canonical tuple; GoldenError otherwise."""
    if isinstance(text, str):
        items = [t.strip().lower() for t in text.split(",") if t.strip()]
    else:
        items = [str(t).lower() for t in text]
    if "all" in items:
        items = list(FORMATS)
    unknown = [t for t in items if t not in FORMATS]
    if unknown or not items:
        raise GoldenError(f"--format takes a comma-separated subset of {', '.join(FORMATS)}; got {text!r}")
    return tuple(f for f in FORMATS if f in items)


def _quant(spec):
    return None if spec.quant is None else spec.quant.to_dict()


def _requant_info(op) -> dict | None:
    """The arithmetic a requantizing op uses (from its kernel parameters), or None."""
    rq = getattr(op, "rq", None)
    if not isinstance(rq, tuple) or len(rq) < 10:
        return None
    try:
        rounding_code = int(rq[3])
        return {"rounding": ROUNDING_BY_CODE.get(rounding_code, str(rounding_code)), "rounding_code": rounding_code,
                "mult_bits": int(rq[4]), "acc_bits": int(rq[5]), "acc_overflow": "saturate" if int(rq[6]) else "wrap",
                "output_zero_point": int(rq[7]), "act_min": int(rq[8]), "act_max": int(rq[9])}
    except (TypeError, ValueError):
        return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Writer:
    """Collects files under a directory and records their hashes."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0
        self.bytes = 0

    def write(self, rel: str, data: bytes) -> dict:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
        self.count += 1
        self.bytes += len(data)
        return {"path": rel, "sha256": _sha(data), "bytes": len(data)}


def write_golden(model, inputs, out_dir, formats=tuple(FORMATS), model_path=None, input_path=None,
                 overwrite: bool = False) -> dict:
    """Run ``model`` on ``inputs`` and write the golden dump to ``out_dir``; return the manifest.

    ``inputs``: what ``Model.run`` takes.  ``formats``: a subset of ``FORMATS`` (or 'npy,c,hex').
    ``model_path`` / ``input_path``: files whose name and sha256 go into the manifest.
    ``out_dir`` must not exist, be empty, or (with ``overwrite``) be an earlier golden dump, which
    is replaced.  The dump is built in a temporary sibling directory and renamed into place, so a
    failed run leaves no partial dump.
    """
    formats = parse_formats(formats)
    out_dir = Path(os.path.abspath(out_dir))  # "." and ".." have no name to derive a sibling from
    _check_destination(out_dir, overwrite)
    if not out_dir.parent.is_dir():
        raise GoldenError(f"{out_dir}: parent directory {out_dir.parent} does not exist")
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    tmp.mkdir()
    try:
        manifest = _dump(model, inputs, tmp, formats, model_path, input_path)
        _install(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _is_golden_dir(path: Path) -> bool:
    try:
        doc = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise GoldenError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not _is_golden_dir(out_dir):
            raise GoldenError(f"{out_dir}: directory is not empty and holds no golden dump; choose another -o")
        if not overwrite:
            raise GoldenError(f"{out_dir}: holds a golden dump already; pass --force to replace it")


def _install(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            _check_destination(out_dir, overwrite)  # re-check: it may have changed during the run
            old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
            return
        out_dir.rmdir()
    tmp.rename(out_dir)


def _dump(model, inputs, root: Path, formats, model_path, input_path) -> dict:
    graph = model.graph
    constants = graph.constants
    writer = _Writer(root)
    n_nodes = len(graph.nodes)
    prepared = dict(zip((n.name for n in graph.nodes), model.prepared))
    index_of = {n.name: i for i, n in enumerate(graph.nodes)}
    consumers: dict[str, list[str]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            if name and node.name not in consumers.setdefault(name, []):
                consumers[name].append(node.name)
    tensors: dict[str, dict] = {}
    node_entries: list[dict] = []

    def note_tensor(name, array, producer):
        if name in tensors:
            return
        spec = graph.tensors[name]
        kind = "constant" if name in constants else ("graph_input" if name in graph.inputs else "activation")
        tensors[name] = {"kind": kind, "dtype": str(array.dtype), "shape": [int(d) for d in array.shape],
                         "quant": _quant(spec), "producer": producer, "consumers": consumers.get(name, []),
                         "graph_output": name in graph.outputs,
                         "data_sha256": _sha(_canonical(array).tobytes())}

    def write_tensor(rel_stem, array, c_name, comment):
        files = {}
        for fmt in formats:
            if fmt == "npy":
                data = encode_npy(array)
            elif fmt == "hex":
                data = encode_hex(array)
            else:
                data = encode_c_array(array, c_name, comment)
            files[fmt] = writer.write(rel_stem + FORMATS[fmt], data)
        return files

    def hook(node, args, outs):
        index = index_of[node.name]
        dir_name, prefix = node_names(index, node.name, n_nodes)
        rel_dir = f"nodes/{dir_name}"
        op = prepared[node.name]
        requant = _requant_info(op)
        items = []  # (role, kind, tensor name, position, array)
        for position, role, kind in tensor_roles(node, constants):
            items.append((role, kind, node.inputs[position], position, args[position]))
        for position, (name, array) in enumerate(zip(node.outputs, outs)):
            items.append((f"output{position}", "output", name, position, array))
        stored = next((a for r, k, _, _, a in items if r == "multiplier" and k == "constant"), None)
        effective = getattr(op, "rq", (None,))[0] if requant is not None else None
        if (stored is not None and isinstance(effective, np.ndarray) and effective.shape == stored.shape
                and not np.array_equal(effective.astype(np.int64), stored.astype(np.int64))):
            items.append(("multiplier_effective", "derived", None, None, np.asarray(effective, dtype=np.int32)))
        entries = []
        for role, kind, name, position, array in items:
            array = np.asarray(array)
            if name is not None:
                note_tensor(name, array, node.name if kind == "output" else None)
            if kind == "derived":
                what = (f"derived: the multiplier the kernel uses, reduce_multiplier(multiplier, {requant['mult_bits']})")
            else:
                what = f"{role}: tensor {name!r}"
            c_name = f"{prefix}_{role}"
            comment = [f"node #{index} {node.name!r} ({node.op}), {what}", f"{array.dtype} {list(array.shape)}"]
            entry = {"role": role, "kind": kind, "tensor": name, "position": position, "dtype": str(array.dtype),
                     "shape": [int(d) for d in array.shape],
                     "quant": _quant(graph.tensors[name]) if name is not None else None, "c_name": c_name,
                     "files": write_tensor(f"{rel_dir}/{role}", array, c_name, comment)}
            entries.append(entry)
        node_files = {}
        if "c" in formats:
            node_files["config"] = writer.write(f"{rel_dir}/config.h",
                                                encode_config(node, index, prefix, op, entries, requant))
            headers = ["config.h"] + [f"{e['role']}.h" for e in entries]
            node_files["test_data"] = writer.write(f"{rel_dir}/test_data.h", encode_test_data(prefix, headers))
        node_entries.append({
            "index": index, "name": node.name, "op": node.op, "dir": rel_dir, "c_prefix": prefix,
            "attrs": node.attrs, "inputs": list(node.inputs), "outputs": list(node.outputs),
            "requant": {k: v for k, v in requant.items() if k != "rounding_code"} if requant else None,
            "counts": None, "tensors": entries, "files": node_files,
        })

    model.reset_counts()
    model.run(inputs, hook=hook)
    for entry in node_entries:
        c = model.counts[entry["name"]]
        entry["counts"] = {"acc_overflows": int(c.acc_overflows), "saturations": int(c.saturations)}
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "intsim": intsim.__version__,
        "model": _file_entry(model_path, model.source),
        "input": _file_entry(input_path, None),
        "profile": model.profile.to_dict(),
        "formats": list(formats),
        "encodings": {"npy": "NumPy .npy format 1.0, little-endian, C order",
                      "c": "C99 header per tensor: const <int8_t|uint8_t|int16_t|int32_t|int64_t|float> <c_name>[size]; "
                           "per node config.h (#defines) and test_data.h",
                      "hex": HEX_ENCODING},
        "graph": {"inputs": list(graph.inputs), "outputs": list(graph.outputs), "nodes": n_nodes,
                  "metadata": graph.metadata},
        "counts": {"acc_overflows": sum(e["counts"]["acc_overflows"] for e in node_entries),
                   "saturations": sum(e["counts"]["saturations"] for e in node_entries)},
        "names": {e["name"]: {"dir": e["dir"], "c_prefix": e["c_prefix"]} for e in node_entries},
        "tensors": tensors,
        "nodes": node_entries,
    }
    text = json.dumps(manifest, indent=1, allow_nan=False, ensure_ascii=True) + "\n"
    writer.write(MANIFEST, text.encode("ascii"))
    return manifest


def _file_entry(path, fallback) -> dict | None:
    if path is None and fallback is None:
        return None
    if path is None:
        path = fallback
    path = Path(path)
    try:
        digest = file_sha256(path)
    except OSError:
        digest = None
    return {"file": path.name, "sha256": digest}


def node_file_stems(manifest: dict) -> dict:
    """{node name: {role: relative path without suffix}} from a manifest (for firmware dumps)."""
    return {n["name"]: {e["role"]: f"{n['dir']}/{e['role']}" for e in n["tensors"]} for n in manifest["nodes"]}
