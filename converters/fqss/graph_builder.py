"""A small helper for converters: declare tensors, constants and nodes, then emit an ``intsim.ir.Graph``.

Names are made unique on request (``unique=True`` appends ``#1``, ``#2``... is not used: names
must match ``intsim.ir.NAME_PATTERN``, so a ``:N`` suffix is appended instead).  Nothing here knows
about FQSS; ``convert.py`` uses it to write the graph in execution order.

    gb = GraphBuilder()
    x = gb.input("audio", "float32", [1, None])
    w = gb.const("enc.weight", np.zeros((512, 2, 16), np.int8))
    y = gb.tensor("enc.out", "int8", [1, 512, None], quant=(0.05, -3))
    gb.node("conv1d", [x, w, ...], [y], {"stride": 8}, name="encoder")
    graph = gb.build(outputs=[y], metadata={...})
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from intsim.ir import Graph, GraphError, Node, Quant, TensorSpec


def make_quant(quant) -> Quant | None:
    """``None``, a ``Quant``, or ``(scale, zero_point)`` for per-tensor quantization."""
    if quant is None or isinstance(quant, Quant):
        return quant
    scale, zero_point = quant
    return Quant([float(np.float32(scale))], [int(zero_point)])


class GraphBuilder:
    """Accumulates tensors, constants and nodes in execution order."""

    def __init__(self):
        self.tensors: dict[str, TensorSpec] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self._node_names: set[str] = set()

    # -- names --------------------------------------------------------------------------------
    def fresh(self, name: str, taken) -> str:
        if name not in taken:
            return name
        i = 1
        while f"{name}:{i}" in taken:
            i += 1
        return f"{name}:{i}"

    # -- declarations -------------------------------------------------------------------------
    def tensor(self, name: str, dtype: str, shape: Sequence, quant=None, unique: bool = True) -> str:
        """Declare a tensor; returns its (possibly suffixed) name."""
        if unique:
            name = self.fresh(name, self.tensors)
        elif name in self.tensors:
            raise GraphError(f"tensor {name!r} declared twice")
        self.tensors[name] = TensorSpec(name, str(dtype), [None if d is None else int(d) for d in shape],
                                        make_quant(quant))
        return name

    def input(self, name: str, dtype: str, shape: Sequence, quant=None) -> str:
        name = self.tensor(name, dtype, shape, quant, unique=False)
        self.inputs.append(name)
        return name

    def const(self, name: str, data, dtype=None, quant=None) -> str:
        """A constant tensor (C-contiguous copy of ``data``, cast to ``dtype`` if given)."""
        arr = np.ascontiguousarray(np.asarray(data, dtype=dtype))
        name = self.tensor(name, arr.dtype.name, list(arr.shape), quant)
        self.constants[name] = arr
        return name

    def like(self, name: str, other: str, shape=None, dtype=None, quant=...) -> str:
        """A new tensor with ``other``'s dtype / quant (overridable) and ``shape``."""
        spec = self.tensors[other]
        return self.tensor(name, dtype or spec.dtype, spec.shape if shape is None else shape,
                           spec.quant if quant is ... else quant)

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], attrs: dict | None = None,
             name: str | None = None) -> Node:
        name = self.fresh(name or f"{op}_{len(self.nodes)}", self._node_names)
        self._node_names.add(name)
        node = Node(name, op, list(inputs), list(outputs), dict(attrs or {}))
        self.nodes.append(node)
        return node

    def spec(self, name: str) -> TensorSpec:
        return self.tensors[name]

    # -- output -------------------------------------------------------------------------------
    def build(self, outputs: Sequence[str], profile="tflm", metadata: dict | None = None) -> Graph:
        """The validated graph (tensors nobody uses are dropped)."""
        used = set(self.inputs) | set(outputs)
        for n in self.nodes:
            used.update(i for i in n.inputs if i)
            used.update(n.outputs)
        tensors = {k: v for k, v in self.tensors.items() if k in used}
        constants = {k: v for k, v in self.constants.items() if k in used}
        graph = Graph(tensors, list(self.nodes), list(self.inputs), list(outputs), constants, profile,
                      dict(metadata or {}))
        return graph.validate()
