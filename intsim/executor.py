"""Running a graph: prepare every node once, then feed arrays through them in order.

The executor allocates nothing but what ops return, does no arithmetic, and frees each
intermediate tensor after its last use (unless a hook keeps it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from intsim import modelfile
from intsim.ir import Graph
from intsim.ops import OPS, NodeCounts, OpError, PrepareContext
from intsim.profile import ProfileError, get_profile

#: hook(node, inputs, outputs) is called after each node with the arrays it read and wrote.
Hook = Callable[[object, list, list], None]


class Model:
    """A prepared integer graph.  Build with ``intsim.load(path)`` or ``Model(graph)``."""

    def __init__(self, graph: Graph, ops: Mapping | None = None, profile=None, parallel: bool = True, source: str | None = None):
        graph.validate()
        self.graph = graph
        self.source = source
        spec = profile if profile is not None else graph.profile
        try:
            self.profile = get_profile(spec)
        except TypeError as e:  # e.g. an unhashable value where a rounding name belongs
            raise ProfileError(f"invalid profile {spec!r}: {e}") from None
        self.ops = dict(OPS if ops is None else ops)
        ctx = PrepareContext(graph, self.profile, parallel)
        self.prepared = []
        for node in graph.nodes:
            if node.op not in self.ops:
                where = f"{source}: " if source else ""
                raise OpError(f"{where}{node.label()}: unknown op {node.op!r}; known ops: {', '.join(sorted(self.ops))}")
            self.prepared.append(self.ops[node.op](node, ctx))
        self.counts = {node.name: NodeCounts() for node in graph.nodes}
        self._last_use = self._last_uses()

    @property
    def inputs(self):
        return list(self.graph.inputs)

    @property
    def outputs(self):
        return list(self.graph.outputs)

    @property
    def metadata(self):
        return self.graph.metadata

    def _last_uses(self):
        """Index of the last node reading each tensor; a node output nobody reads maps to its producer."""
        last = {}
        for i, node in enumerate(self.graph.nodes):
            for name in node.inputs:
                last[name] = i
            for name in node.outputs:
                last.setdefault(name, i)
        return last

    def reset_counts(self):
        for c in self.counts.values():
            c.acc_overflows = 0
            c.saturations = 0

    def run(self, inputs, hook: Hook | None = None) -> dict[str, np.ndarray]:
        """Run the graph.  ``inputs``: one array (single-input graphs), a list, or a dict by name.

        Integer inputs must have the declared dtype.  Float inputs to an integer tensor are
        quantized like ONNX QuantizeLinear (ONNX Runtime and onnx.reference agree on it):
        ``x`` is converted to float32, ``q = round_half_even(float32(x) / float32(scale))`` in float32,
        saturated to ``[qmin - zero_point, qmax - zero_point]``, then ``+ zero_point``.  Float
        inputs must be finite (NaN and infinities raise ValueError), also for float32 tensors.
        Every output is checked against its declared dtype and static dims (OpError otherwise).
        Per-node overflow and saturation counts accumulate in ``self.counts``.
        """
        env = dict(self.graph.constants)
        env.update(self._bind_inputs(inputs))
        keep = set(self.graph.outputs)
        for i, (node, op) in enumerate(zip(self.graph.nodes, self.prepared)):
            args = [env[name] if name else None for name in node.inputs]
            outs = op.run(args, self.counts[node.name])
            if len(outs) != len(node.outputs):
                raise OpError(f"{node.label()}: returned {len(outs)} outputs, expected {len(node.outputs)}")
            for name, array in zip(node.outputs, outs):
                spec = self.graph.tensors[name]
                if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec.dtype):
                    got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                    raise OpError(f"{node.label()}: output {name!r} has dtype {got}, declared {spec.dtype}")
                if array.ndim != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, array.shape)):
                    raise OpError(f"{node.label()}: output {name!r} has shape {list(array.shape)}, declared {spec.shape}")
                env[name] = array
            if hook is not None:
                hook(node, args, outs)
            for name in (*node.inputs, *node.outputs):
                if self._last_use.get(name) == i and name not in keep and name not in self.graph.constants:
                    env.pop(name, None)
        return {name: env[name] for name in self.graph.outputs}

    def _bind_inputs(self, inputs) -> dict[str, np.ndarray]:
        names = self.graph.inputs
        if isinstance(inputs, Mapping):
            missing = [n for n in names if n not in inputs]
            extra = [n for n in inputs if n not in names]
            if missing or extra:
                raise ValueError(f"graph inputs are {names}; missing {missing}, unexpected {extra}")
            given = [inputs[n] for n in names]
        elif isinstance(inputs, (list, tuple)):
            given = list(inputs)
        else:
            given = [inputs]
        if len(given) != len(names):
            raise ValueError(f"graph has {len(names)} inputs {names}, got {len(given)} arrays")
        return {name: self._coerce(name, np.asarray(a)) for name, a in zip(names, given)}

    def _coerce(self, name, array):
        spec = self.graph.tensors[name]
        dtype = np.dtype(spec.dtype)
        if len(array.shape) != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, array.shape)):
            raise ValueError(f"input {name!r} has shape {list(array.shape)}, declared {spec.shape}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ValueError(f"input {name!r} contains NaN or infinite values")
        if array.dtype == dtype:
            return np.ascontiguousarray(array)
        if dtype.kind == "f":
            if array.dtype.kind not in "fiu":
                raise ValueError(f"input {name!r} has dtype {array.dtype}, expected {dtype}")
            with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf: refused below
                converted = np.ascontiguousarray(array, dtype=dtype)
            if not np.all(np.isfinite(converted)):
                raise ValueError(f"input {name!r} has values outside the {dtype} range")
            return converted
        if array.dtype.kind == "f":
            if spec.quant is None or spec.quant.axis is not None:
                raise ValueError(f"input {name!r} is {dtype} without per-tensor quantization; pass integers")
            return quantize_linear(array, spec.quant.scale[0], spec.quant.zero_point[0], dtype)
        raise ValueError(f"input {name!r} has dtype {array.dtype}, expected {dtype} or float")


def quantize_linear(x, scale, zero_point, dtype) -> np.ndarray:
    """ONNX QuantizeLinear: float32 division, round half to even, saturate, + zero point."""
    info = np.iinfo(dtype)
    with np.errstate(over="ignore"):
        scale32 = np.float32(scale)
    if not np.isfinite(scale32) or scale32 <= 0:
        raise ValueError(f"quantization scale {scale!r} is not a positive float32")
    with np.errstate(over="ignore"):  # float64 -> float32 overflow becomes inf and saturates
        q = np.rint(np.asarray(x, dtype=np.float32) / scale32)
    q = np.clip(q, np.float32(-(2.0**40)), np.float32(2.0**40)).astype(np.int64)  # exact bounds, safe cast
    return np.clip(q + int(zero_point), info.min, info.max).astype(dtype)


def load(path, ops: Mapping | None = None, profile=None, parallel: bool = True) -> Model:
    """Load ``model.npz`` and prepare it.  ``profile`` overrides the one stored in the file."""
    graph = modelfile.load(path)
    try:
        return Model(graph, ops=ops, profile=profile, parallel=parallel, source=str(path))
    except OpError as e:
        msg = str(e)
        raise OpError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
