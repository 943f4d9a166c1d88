"""Shared builders for the model-file and executor tests: small conv1d graphs and raw zip crafting.

``conv_graph`` builds a multi-node graph of ``conv1d`` nodes (the op that exists for sure) with
valid requantization constants; ``constants_graph`` a node-less graph whose outputs are constants of
every dtype (model-file round trips).  ``write_zip`` writes arbitrary members (names, attributes,
compression) so tests can build files ``modelfile.save`` never would, and ``patch_sizes`` forges
the size fields of a member's local and central headers.
"""

from __future__ import annotations

import io
import json
import signal
import stat
import struct
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from intsim import modelfile
from intsim.fixedpoint import quantize_multiplier
from intsim.ir import Graph, Node, Quant, TensorSpec

class CaseTimeout(Exception):
    """A guarded block ran past its time limit."""


@contextmanager
def time_limit(seconds):
    """Raise CaseTimeout if the block runs longer than ``seconds`` (SIGALRM; main thread only)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise CaseTimeout(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


#: name, input tensor, output tensor, (c_in, c_out, kernel, stride, padding, dilation, groups), out scale
CHAIN = [
    ("conv0", "x", "h0", (4, 8, 3, 1, [1, 1], 1, 1), 0.08),
    ("conv1", "h0", "h1", (8, 8, 3, 1, [2, 2], 2, 2), 0.06),
    ("conv2", "h1", "y", (8, 4, 1, 1, [0, 0], 1, 1), 0.05),
    ("conv3", "h0", "y2", (8, 2, 5, 2, [2, 2], 1, 1), 0.05),  # branch from h0: second output
]
SECOND_INPUT = ("conv4", "x2", "y3", (3, 4, 3, 1, [1, 1], 1, 1), 0.04)


def conv_constants(rng, prefix, c_in, c_out, k, groups, s_in, s_out, dtype="int8"):
    """Weight, bias, multiplier, shift, scale for one conv1d node (per-channel weight scales)."""
    s_w = np.exp(rng.uniform(np.log(0.002), np.log(0.02), c_out))
    real = (s_in * s_w / s_out).astype(np.float32)
    mult, shift = zip(*(quantize_multiplier(float(r)) for r in real))
    bias_dtype = np.int32 if dtype == "int8" else np.int64
    bound = 3000 if dtype == "int8" else 3_000_000
    return {
        f"{prefix}.w": rng.integers(-127, 128, (c_out, c_in // groups, k)).astype(np.int8),
        f"{prefix}.b": rng.integers(-bound, bound, c_out).astype(bias_dtype),
        f"{prefix}.m": np.array(mult, np.int32),
        f"{prefix}.s": np.array(shift, np.int32),
        f"{prefix}.f": real,
    }


def conv_graph(seed=0, dtype="int8", batch=None, time=None, second_input=False, profile="tflm", metadata=None,
               x_zp=3) -> Graph:
    """x [batch, 4, time] -> conv0 -> h0 -> conv1 -> h1 -> conv2 -> y, and h0 -> conv3 -> y2.

    With ``second_input``: x2 [batch, 3, time] -> conv4 -> y3 (a third output).  int16 graphs
    are symmetric (zero points 0) with int64 biases.
    """
    rng = np.random.default_rng(seed)
    zp = x_zp if dtype == "int8" else 0
    scales = {"x": 0.05, "x2": 0.03}
    tensors = {"x": TensorSpec("x", dtype, [batch, 4, time], Quant([0.05], [zp]))}
    inputs = ["x"]
    layers = list(CHAIN)
    if second_input:
        tensors["x2"] = TensorSpec("x2", dtype, [batch, 3, time], Quant([0.03], [-zp]))
        inputs.append("x2")
        layers.append(SECOND_INPUT)
    nodes, constants = [], {}
    for name, src, dst, (c_in, c_out, k, stride, pad, dil, groups), s_out in layers:
        consts = conv_constants(rng, name, c_in, c_out, k, groups, scales[src], s_out, dtype)
        for cname, data in consts.items():
            tensors[cname] = TensorSpec(cname, str(data.dtype), list(data.shape))
        constants.update(consts)
        out_zp = (-2 if dst.startswith("y") else 1) if dtype == "int8" else 0
        tensors[dst] = TensorSpec(dst, dtype, [batch, c_out, None], Quant([s_out], [out_zp]))
        scales[dst] = s_out
        nodes.append(Node(name, "conv1d", [src, *consts], [dst],
                          {"stride": stride, "padding": list(pad), "dilation": dil, "groups": groups}))
    outputs = ["y", "y2"] + (["y3"] if second_input else [])
    meta = {"sample_rate": 8000, "stems": ["a", "b"], "nested": {"k": [1, 2.5, None, True, "s"]}}
    return Graph(tensors, nodes, inputs, outputs, constants, profile, meta if metadata is None else metadata)


def constants_graph(seed=0) -> Graph:
    """A node-less graph whose outputs are constants of every dtype and odd shapes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "i8": rng.integers(-128, 128, (3, 5)).astype(np.int8),
        "u8": rng.integers(0, 256, (7,)).astype(np.uint8),
        "i16": rng.integers(-(2**15), 2**15, (2, 3, 4)).astype(np.int16),
        "i32": rng.integers(-(2**31), 2**31, (4,)).astype(np.int32),
        "i64": rng.integers(-(2**62), 2**62, (2, 2)).astype(np.int64),
        "f32": rng.standard_normal((3, 1)).astype(np.float32),
        "scalar": np.array(-7, np.int32),
        "empty": np.zeros((0,), np.int8),
        "empty2": np.zeros((3, 0, 2), np.int16),
        "fortran": np.asfortranarray(rng.integers(-100, 100, (3, 4)).astype(np.int8)),
    }
    tensors = {k: TensorSpec(k, str(v.dtype), list(v.shape)) for k, v in arrays.items()}
    tensors["i8"].quant = Quant([0.5], [-3])
    tensors["i16"].quant = Quant([0.1, 0.2, 0.3], [0, 0, 0], axis=1)
    return Graph(tensors, [], [], list(arrays), arrays, {"name": "narrow", "base": "single", "acc_bits": 24},
                 {"note": "constants only", "unicode": "\u00e9\u4e2d"})


def graphs_equal(a: Graph, b: Graph) -> bool:
    """Field-by-field equality, arrays compared by dtype, shape and value."""
    if a.tensors != b.tensors or a.nodes != b.nodes or a.inputs != b.inputs or a.outputs != b.outputs:
        return False
    if a.profile != b.profile or a.metadata != b.metadata or set(a.constants) != set(b.constants):
        return False
    return all(a.constants[k].dtype == b.constants[k].dtype and np.array_equal(a.constants[k], b.constants[k])
               and a.constants[k].shape == b.constants[k].shape for k in a.constants)


# ---------------------------------------------------------------------------------------------
# Raw files
# ---------------------------------------------------------------------------------------------


def model_parts(graph: Graph) -> tuple[dict, dict[str, bytes]]:
    """(graph.json document, {member name: bytes}) exactly as ``modelfile.save`` writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.npz"
        modelfile.save(graph, p)
        with zipfile.ZipFile(p) as zf:
            members = {info.filename: zf.read(info) for info in zf.infolist()}
    doc = json.loads(members.pop(modelfile.GRAPH_MEMBER))
    return doc, members


def npy_bytes(array, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_with_header(header: str, payload: bytes = b"", version=(1, 0)) -> bytes:
    """A .npy file with an arbitrary header text (padded as NumPy does) and payload."""
    text = header.encode("latin1")
    if version == (1, 0):
        pad = 16 - (10 + len(text) + 1) % 16
        text = text + b" " * pad + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload
    pad = 16 - (12 + len(text) + 1) % 16
    text = text + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<I", len(text)) + text + payload


def write_zip(path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    """Write ``members``: a list of (name or ZipInfo, bytes or str); names are not checked."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members:
                if isinstance(data, str):
                    data = data.encode("utf-8")
                if isinstance(name, zipfile.ZipInfo):
                    zf.writestr(name, data)
                else:
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = compression
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    zf.writestr(info, data)
    return path


def write_model(path, doc, members: dict[str, bytes], extra=(), graph_text: str | bytes | None = None) -> Path:
    """A model file from a (possibly mutated) document and members, plus ``extra`` raw members."""
    text = graph_text if graph_text is not None else json.dumps(doc)
    return write_zip(path, [(modelfile.GRAPH_MEMBER, text), *members.items(), *extra])


def patch_sizes(data: bytes, name: str, file_size=None, compress_size=None, set_flags=0) -> bytes:
    """Overwrite the declared sizes (and OR general-purpose flag bits) of member ``name`` in its
    local and central headers."""
    raw = bytearray(data)
    encoded = name.encode("utf-8")
    for sig, name_len_at, csize_at, size_at, name_at, flags_at in ((b"PK\x03\x04", 26, 18, 22, 30, 6),
                                                                   (b"PK\x01\x02", 28, 20, 24, 46, 8)):
        start = 0
        while (i := raw.find(sig, start)) >= 0:
            start = i + 4
            (n,) = struct.unpack_from("<H", raw, i + name_len_at)
            if bytes(raw[i + name_at:i + name_at + n]) != encoded:
                continue
            if compress_size is not None:
                struct.pack_into("<I", raw, i + csize_at, compress_size)
            if file_size is not None:
                struct.pack_into("<I", raw, i + size_at, file_size)
            if set_flags:
                (flags,) = struct.unpack_from("<H", raw, i + flags_at)
                struct.pack_into("<H", raw, i + flags_at, flags | set_flags)
    return bytes(raw)
