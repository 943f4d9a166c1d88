"""Cost report: per-node MACs, weight and activation bytes, and an activation arena plan.

``cost_report(graph, length)`` gives, per node in graph order,

* ``macs``: multiply-accumulates, by the formulas of ``intsim.inspect`` (``MAC_RULES``);
* ``weight_bytes``: bytes of the constant tensors the node reads (weights, biases, multipliers,
  shifts, scales, tables);
* ``input_bytes`` / ``output_bytes``: bytes of its non-constant input and output tensors for an
  input of ``length`` samples/frames (dynamic shapes resolved as ``intsim.inspect`` does: by a dry
  run on zeros), and their sum ``activation_bytes``;

and the activation memory a firmware needs with a TensorFlow Lite Micro style arena:

* every non-constant tensor (graph inputs and node outputs) is a buffer live from the node that
  produces it (graph inputs: node 0) to the last node that reads it (graph outputs: the last
  node); a node's inputs and outputs are live at the same time (no in-place ops);
* sizes are rounded up to ``align`` bytes (TFLM's ``kBufferAlignment`` is 16);
* ``greedy_plan`` is TFLM's ``GreedyMemoryPlanner``: buffers sorted by size, largest first (ties
  in tensor order), each placed at the lowest offset where it overlaps no already-placed buffer
  whose lifetime intersects its own (first fit);
* ``arena_bytes`` = max(offset + size); ``peak_live_bytes`` = the most bytes live at one node, a
  lower bound no plan can beat; ``no_reuse_bytes`` = every buffer in its own place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from intsim import inspect as ins
from intsim.ir import Graph

DEFAULT_ALIGN = 16
PLANNER = "greedy first fit, largest first (TFLite Micro GreedyMemoryPlanner)"


@dataclass(frozen=True)
class Buffer:
    """A tensor to place in the arena: ``size`` bytes live during nodes ``first..last`` inclusive."""

    name: str
    size: int
    first: int
    last: int

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return not (self.last < other.first or other.last < self.first)


def align_up(n: int, align: int) -> int:
    return -(-n // align) * align if align > 1 else n


def greedy_plan(buffers: list[Buffer], align: int = 1) -> tuple[dict[str, int], int]:
    """First-fit offsets, largest buffer first (stable in list order); ({name: offset}, arena bytes).

    Sizes are rounded up to ``align``; offsets are multiples of ``align``.
    """
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    order = sorted(range(len(buffers)), key=lambda i: -align_up(buffers[i].size, align))  # stable
    return first_fit(buffers, order, align)


def first_fit(buffers: list[Buffer], order, align: int = 1) -> tuple[dict[str, int], int]:
    """Place ``buffers`` in ``order`` (indices), each at the lowest offset that is free of every
    placed buffer live at the same time; ({name: offset}, arena bytes)."""
    placed: list[tuple[int, int, Buffer]] = []  # (offset, aligned size, buffer)
    offsets: dict[str, int] = {}
    arena = 0
    for i in order:
        buf = buffers[i]
        size = align_up(buf.size, align)
        if size == 0:
            offsets[buf.name] = 0
            continue
        candidate = 0
        for off, sz, other in sorted((p for p in placed if p[2].overlaps_in_time(buf)), key=lambda p: p[0]):
            if candidate + size <= off:
                break  # the gap below `other` holds it
            candidate = max(candidate, off + sz)
        offsets[buf.name] = candidate
        placed.append((candidate, size, buf))
        arena = max(arena, candidate + size)
    return offsets, arena


def peak_live_bytes(buffers: list[Buffer], align: int = 1) -> int:
    """Largest sum of (aligned) sizes live at one time step: a lower bound on any arena."""
    if not buffers:
        return 0
    steps = sorted({b.first for b in buffers})
    return max(sum(align_up(b.size, align) for b in buffers if b.first <= t <= b.last) for t in steps)


def plan_conflicts(buffers: list[Buffer], offsets: dict[str, int], align: int = 1) -> list[tuple[str, str]]:
    """Pairs of buffers live at the same time whose byte ranges overlap (empty for a valid plan)."""
    bad = []
    for i, a in enumerate(buffers):
        sa = align_up(a.size, align)
        for b in buffers[i + 1:]:
            sb = align_up(b.size, align)
            if sa and sb and a.overlaps_in_time(b):
                oa, ob = offsets[a.name], offsets[b.name]
                if oa < ob + sb and ob < oa + sa:
                    bad.append((a.name, b.name))
    return bad


def activation_buffers(graph: Graph, shapes: dict[str, list[int]]) -> list[Buffer]:
    """Buffers of the graph's non-constant tensors: graph inputs first, then node outputs in order."""
    n = len(graph.nodes)
    last_node = max(n - 1, 0)
    first: dict[str, int] = {name: 0 for name in graph.inputs}
    order = list(graph.inputs)
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name and name not in graph.constants:
                last[name] = i
        for name in node.outputs:
            if name not in first:
                first[name] = i
                order.append(name)
    buffers = []
    for name in order:
        end = last_node if name in graph.outputs else max(last.get(name, first[name]), first[name])
        buffers.append(Buffer(name, tensor_bytes(graph, shapes, name), first[name], end))
    return buffers


def tensor_bytes(graph: Graph, shapes, name: str) -> int:
    shape = shapes.get(name, graph.tensors[name].shape)
    if any(d is None for d in shape):
        raise ins.StatsError(f"tensor {name!r} has unresolved shape {shape}")
    return math.prod(int(d) for d in shape) * np.dtype(graph.tensors[name].dtype).itemsize


def _activation_names(graph: Graph) -> set[str]:
    names = set(graph.inputs)
    for node in graph.nodes:
        names.update(node.outputs)
    return names


def resolve(graph: Graph, length: int | None, ops=None) -> tuple[dict[str, list[int]], dict]:
    """All tensor shapes for ``length``-long inputs (static, or by inspect's dry run); (shapes, info)."""
    dynamic_inputs = ins.has_dynamic_inputs(graph)
    why = "given"
    if length is None:
        length, why = ins.default_length(graph)
    if length < 1:
        raise ins.StatsError(f"input length must be >= 1, got {length}")
    needed = _activation_names(graph)
    if not any(d is None for t in needed for d in graph.tensors[t].shape):
        shapes = {name: list(spec.shape) for name, spec in graph.tensors.items()}
        method, seconds = "static", 0.0
    else:
        shapes, seconds = ins.resolve_shapes(graph, length, ops=ops)
        method = "dry-run"
    info = {"input_length": length if dynamic_inputs else None,
            "input_length_source": why if dynamic_inputs else "graph inputs are static",
            "shape_inference": {"method": method, "seconds": round(seconds, 6)}}
    return shapes, info


def cost_report(graph: Graph, length: int | None = None, align: int = DEFAULT_ALIGN, ops=None) -> dict:
    """Per-node cost and the arena plan as a JSON-ready dict (see the module docstring)."""
    if not isinstance(align, int) or align < 1:
        raise ValueError(f"align must be a positive integer, got {align!r}")
    shapes, info = resolve(graph, length, ops)
    constants = graph.constants
    nodes = []
    for i, node in enumerate(graph.nodes):
        rule = ins.MAC_RULES.get(node.op)
        macs = int(rule(shapes, node)) if rule is not None else 0
        consts = list(dict.fromkeys(n for n in node.inputs if n and n in constants))
        acts = [n for n in node.inputs if n and n not in constants]
        in_bytes = sum(tensor_bytes(graph, shapes, n) for n in acts)
        out_bytes = sum(tensor_bytes(graph, shapes, n) for n in node.outputs)
        nodes.append({"index": i, "name": node.name, "op": node.op, "macs": macs,
                      "weight_bytes": int(sum(constants[n].nbytes for n in consts)),
                      "input_bytes": in_bytes, "output_bytes": out_bytes, "activation_bytes": in_bytes + out_bytes,
                      "output_shapes": [list(shapes[n]) for n in node.outputs]})
    buffers = activation_buffers(graph, shapes)
    offsets, arena = greedy_plan(buffers, align)
    plan = [{"tensor": b.name, "bytes": b.size, "aligned_bytes": align_up(b.size, align), "offset": offsets[b.name],
             "first": b.first, "last": b.last} for b in buffers]
    return {
        **info,
        "nodes": nodes,
        "totals": {"macs": sum(n["macs"] for n in nodes),
                   "weight_bytes": int(sum(a.nbytes for a in constants.values())),
                   "activation_bytes": sum(b.size for b in buffers)},
        "memory": {"planner": PLANNER, "align": align, "arena_bytes": arena,
                   "peak_live_bytes": peak_live_bytes(buffers, align),
                   "no_reuse_bytes": sum(align_up(b.size, align) for b in buffers),
                   "plan": plan},
    }
