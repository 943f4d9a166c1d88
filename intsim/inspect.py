"""Model statistics and instrumented runs: what ``intsim info`` and ``intsim run`` report.

``model_stats(graph, length)`` counts ops, tensors, parameters and constant bytes, and multiply-
accumulates (MACs) per node for an input of ``length`` samples/frames.

MACs.  One MAC is one weight x activation product.  Counted ops, with activations channels-first
(``[N, C, *spatial]``) as in intsim's conv ops; the formulas use only the product of the weight
shape, so they hold whichever order the weight axes are stored in:

    conv1d, conv2d                  N * prod(out spatial) * prod(weight.shape)
                                    (= N * T_out * C_out * C_in/groups * K for conv1d)
    conv_transpose1d, _transpose2d  N * prod(in spatial) * prod(weight.shape)
                                    (every input position meets every weight once; taps later
                                    cropped by padding are counted, as ptflops/thop do)
    linear                          prod(out.shape[:-1]) * prod(weight.shape)   (rows x in x out)
    batch_matmul                    prod(out.shape) * K, with K the contracted size, recovered from
                                    the operand shapes (K^2 = |A[-2:]| * |B[-2:]| / |out[-2:]|),
                                    so transposition flags do not matter

Every other op counts 0 MACs (table lookups, elementwise, norms, requantization, layout).

Dynamic dimensions.  When a tensor these formulas need has a dynamic (``null``) dimension, shapes
are resolved by a *dry run*: the graph runs once on zeros with the last dynamic dimension of each
graph input set to ``length`` and any other dynamic dimension set to 1, and the executor hook
records every tensor's shape.  This is exact for any op the executor can run (framing, strides,
padding), at the cost of one run of ``length`` samples; fully static graphs need no run.

``run_with_report(model, inputs)`` runs a model and reports wall time, the part of it spent in
Numba's compiler (compiling or loading cached machine code), and per-node overflow/saturation
counts.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from intsim.ir import Graph
from intsim.profile import get_profile

#: Input length used when neither ``length`` nor ``metadata.sample_rate`` is given: 1 s at 16 kHz.
DEFAULT_LENGTH = 16000

MAC_OPS = ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "linear", "batch_matmul")


class StatsError(ValueError):
    """Statistics cannot be computed (e.g. the dry run that resolves shapes failed)."""


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_length(graph: Graph) -> tuple[int, str]:
    """(length, why): one second at ``metadata.sample_rate``, else DEFAULT_LENGTH."""
    rate = graph.metadata.get("sample_rate")
    if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0:
        return rate, f"1 s at the model's sample_rate {rate} Hz"
    return DEFAULT_LENGTH, f"default {DEFAULT_LENGTH} (metadata has no sample_rate)"


def _prod(shape) -> int:
    return math.prod(int(d) for d in shape)


def _macs_conv(shapes, node):
    out, w = shapes[node.outputs[0]], shapes[node.inputs[1]]
    return out[0] * _prod(out[2:]) * _prod(w)


def _macs_conv_transpose(shapes, node):
    x, w = shapes[node.inputs[0]], shapes[node.inputs[1]]
    return x[0] * _prod(x[2:]) * _prod(w)


def _macs_linear(shapes, node):
    out, w = shapes[node.outputs[0]], shapes[node.inputs[1]]
    return _prod(out[:-1]) * _prod(w)


def _macs_batch_matmul(shapes, node):
    a, b, out = shapes[node.inputs[0]], shapes[node.inputs[1]], shapes[node.outputs[0]]
    mn = _prod(out[-2:])
    if mn == 0:
        return 0
    k = math.isqrt(_prod(a[-2:]) * _prod(b[-2:]) // mn)
    return _prod(out) * k


MAC_RULES = {
    "conv1d": _macs_conv,
    "conv2d": _macs_conv,
    "conv_transpose1d": _macs_conv_transpose,
    "conv_transpose2d": _macs_conv_transpose,
    "linear": _macs_linear,
    "batch_matmul": _macs_batch_matmul,
}


def _mac_tensors(node) -> list[str]:
    if node.op in ("conv1d", "conv2d", "linear"):
        return [node.inputs[1], node.outputs[0]]
    if node.op in ("conv_transpose1d", "conv_transpose2d"):
        return [node.inputs[0], node.inputs[1]]
    return [node.inputs[0], node.inputs[1], node.outputs[0]]


def dry_run_inputs(graph: Graph, length: int) -> dict[str, np.ndarray]:
    """Zeros for every graph input: last dynamic dim = ``length``, other dynamic dims = 1."""
    arrays = {}
    for name in graph.inputs:
        spec = graph.tensors[name]
        dynamic = [i for i, d in enumerate(spec.shape) if d is None]
        shape = [d if d is not None else (length if i == dynamic[-1] else 1) for i, d in enumerate(spec.shape)]
        arrays[name] = np.zeros(shape, dtype=spec.dtype)
    return arrays


def resolve_shapes(graph: Graph, length: int, profile=None, ops=None) -> tuple[dict[str, list[int]], float]:
    """Shapes of all tensors for ``length``-long inputs by a dry run on zeros; (shapes, seconds)."""
    from intsim.executor import Model  # imported here: info on static graphs needs no ops

    inputs = dry_run_inputs(graph, length)
    shapes = {name: list(a.shape) for name, a in graph.constants.items()}
    shapes.update({name: list(a.shape) for name, a in inputs.items()})

    def record(node, args, outs):
        for name, array in zip(node.outputs, outs):
            shapes[name] = list(array.shape)

    t0 = time.perf_counter()
    try:
        Model(graph, ops=ops, profile=profile).run(inputs, hook=record)
    except (ValueError, ArithmeticError) as e:  # OpError, GraphError, ProfileError are ValueErrors
        shown = {k: list(v.shape) for k, v in inputs.items()}
        raise StatsError(f"cannot resolve shapes for inputs {shown}: {e}") from None
    return shapes, time.perf_counter() - t0


def model_stats(graph: Graph, length: int | None = None, ops=None, macs: bool = True) -> dict:
    """Statistics of ``graph`` as a JSON-ready dict (see the module docstring for MACs).

    ``length``: samples/frames along the last dynamic dimension of each graph input (default:
    ``default_length(graph)``).  ``macs=False`` skips MAC counting (and any dry run).
    """
    constants = graph.constants
    by_dtype: dict[str, dict] = {}
    for data in constants.values():
        d = by_dtype.setdefault(str(data.dtype), {"tensors": 0, "elements": 0, "bytes": 0})
        d["tensors"] += 1
        d["elements"] += int(data.size)
        d["bytes"] += int(data.nbytes)
    ops_count = Counter(node.op for node in graph.nodes)
    stats = {
        "nodes": len(graph.nodes),
        "ops": dict(sorted(ops_count.items(), key=lambda kv: (-kv[1], kv[0]))),
        "tensors": {"total": len(graph.tensors), "constants": len(constants),
                    "activations": len(graph.tensors) - len(constants)},
        "parameters": sum(d["elements"] for d in by_dtype.values()),
        "weight_bytes": sum(d["bytes"] for d in by_dtype.values()),
        "constants_by_dtype": dict(sorted(by_dtype.items())),
        "inputs": [_io_entry(graph, n) for n in graph.inputs],
        "outputs": [_io_entry(graph, n) for n in graph.outputs],
        "profile": get_profile(graph.profile).to_dict(),
        "metadata": graph.metadata,
    }
    if macs:
        stats["macs"] = count_macs(graph, length, ops)
    return stats


def _io_entry(graph, name):
    spec = graph.tensors[name]
    entry = {"name": name, "dtype": spec.dtype, "shape": list(spec.shape)}
    if spec.quant is not None:
        entry["quant"] = spec.quant.to_dict()
    return entry


def has_dynamic_inputs(graph: Graph) -> bool:
    return any(d is None for n in graph.inputs for d in graph.tensors[n].shape)


def needs_dry_run(graph: Graph) -> bool:
    """Whether counting MACs needs a dry run: a tensor some MAC formula reads has a dynamic dim."""
    needed = {t for node in graph.nodes if node.op in MAC_RULES for t in _mac_tensors(node)}
    return any(d is None for t in needed for d in graph.tensors[t].shape)


def count_macs(graph: Graph, length: int | None = None, ops=None) -> dict:
    """MACs per node and in total (see the module docstring), as a JSON-ready dict."""
    dynamic_inputs = has_dynamic_inputs(graph)
    why = "given"
    if length is None:
        length, why = default_length(graph)
    if length < 1:
        raise StatsError(f"input length must be >= 1, got {length}")
    if not needs_dry_run(graph):
        shapes = {name: list(spec.shape) for name, spec in graph.tensors.items()}
        method, seconds = "static", 0.0
    else:
        shapes, seconds = resolve_shapes(graph, length, ops=ops)
        method = "dry-run"
    per_node = []
    by_op: Counter = Counter()
    for node in graph.nodes:
        rule = MAC_RULES.get(node.op)
        n = int(rule(shapes, node)) if rule is not None else 0
        by_op[node.op] += n
        per_node.append({"name": node.name, "op": node.op, "macs": n,
                         "output_shapes": [shapes.get(t, graph.tensors[t].shape) for t in node.outputs]})
    return {
        "total": sum(by_op.values()),
        "input_length": length if dynamic_inputs else None,
        "input_length_source": why if dynamic_inputs else "graph inputs are static",
        "input_shapes": {n: shapes.get(n, graph.tensors[n].shape) for n in graph.inputs},
        "shape_inference": {"method": method, "seconds": round(seconds, 6)},
        "by_op": {op: n for op, n in sorted(by_op.items(), key=lambda kv: (-kv[1], kv[0])) if n},
        "per_node": per_node,
    }


def run_with_report(model, inputs) -> tuple[dict[str, np.ndarray], dict]:
    """Run ``model`` on ``inputs``; return (outputs, report).

    report: ``wall_s`` (the whole ``model.run``), ``jit_s`` (part of it spent in Numba's compiler:
    compiling, or loading machine code from its cache; 0 once a process has warmed up), and
    ``counts``: totals and the nodes with non-zero accumulator overflow or output saturation counts.
    """
    from numba.core import event

    model.reset_counts()
    jit = []
    with event.install_timer("numba:compiler_lock", jit.append):
        t0 = time.perf_counter()
        outputs = model.run(inputs)
        wall = time.perf_counter() - t0
    ops = {node.name: node.op for node in model.graph.nodes}
    nodes = {name: {"op": ops[name], "acc_overflows": c.acc_overflows, "saturations": c.saturations}
             for name, c in model.counts.items() if c.acc_overflows or c.saturations}
    report = {
        "wall_s": wall,
        "jit_s": sum(jit),
        "counts": {
            "acc_overflows": sum(c.acc_overflows for c in model.counts.values()),
            "saturations": sum(c.saturations for c in model.counts.values()),
            "nodes": nodes,
        },
    }
    return outputs, report


def load_array_file(path) -> dict[str, np.ndarray] | np.ndarray:
    """An ``.npy`` array or an ``.npz`` dict of arrays, read without pickle; ValueError otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: unsupported input format {path.suffix or '(none)'!r}; expected .npy or .npz")
    try:
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory") from None
    except Exception as e:  # BadZipFile, pickle refusal, truncated data, bad header
        raise ValueError(f"{path}: not a readable {suffix} file: {e}") from None


def bind_input_file(graph: Graph, data) -> dict[str, np.ndarray]:
    """Match a loaded input file to the graph inputs (by name for .npz, or a lone array)."""
    names = list(graph.inputs)
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise ValueError(f"the model has {len(names)} inputs {names}; pass an .npz with one array per input name")
        return {names[0]: data}
    if len(data) == 1 and len(names) == 1:
        return {names[0]: next(iter(data.values()))}
    missing = [n for n in names if n not in data]
    extra = [k for k in data if k not in names]
    if missing or extra:
        raise ValueError(f"the model's inputs are {names}; the .npz is missing {missing} and has unexpected {extra}")
    return {n: data[n] for n in names}


def save_outputs(outputs: dict[str, np.ndarray], path) -> None:
    """Write outputs to ``.npz`` (one entry per output name) or ``.npy`` (a single output)."""
    path = Path(path)
    check_output_path(path, len(outputs))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if path.suffix.lower() == ".npy":
            np.save(f, next(iter(outputs.values())), allow_pickle=False)
        else:
            np.savez(f, **outputs)
    tmp.replace(path)


def check_output_path(path, n_outputs: int) -> None:
    """Raise ValueError before a run if ``path`` cannot receive ``n_outputs`` outputs."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise ValueError(f"{path}: output must end in .npz or .npy")
    if suffix == ".npy" and n_outputs != 1:
        raise ValueError(f"{path}: the model has {n_outputs} outputs; .npy holds one, use .npz")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
