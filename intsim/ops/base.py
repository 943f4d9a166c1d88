"""The op adapter contract: prepare once, run many.

An op adapter is a class constructed as ``Op(node, ctx)``.  The constructor (*prepare*) validates
the node's attributes, input dtypes and constant shapes, and builds frozen kernel parameters;
``run(inputs, counts)`` calls kernels on the input arrays and returns a list of output arrays.
Adapters know nothing of other nodes; kernels know nothing of adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from intsim.ir import Graph, Node
from intsim.profile import Profile


class OpError(ValueError):
    """A node cannot be prepared or run; the message names the node, field and value at fault."""


@dataclass
class NodeCounts:
    """Per-node event counters filled by ``run``."""

    acc_overflows: int = 0
    saturations: int = 0

    def add(self, overflows, saturations) -> None:
        self.acc_overflows += int(np.sum(overflows))
        self.saturations += int(np.sum(saturations))


@dataclass
class PrepareContext:
    """What an op may look at while preparing: the graph's specs and constants, and the profile."""

    graph: Graph
    profile: Profile
    parallel: bool = True
    extra: dict = field(default_factory=dict)

    def spec(self, name):
        return self.graph.tensors[name]

    def constant(self, name):
        return self.graph.constants.get(name)


class Op:
    """Base class with helpers for attribute and input checks."""

    #: number of inputs (None = variable) and outputs
    n_inputs: int | None = None
    n_outputs: int = 1

    def __init__(self, node: Node, ctx: PrepareContext):
        self.node = node
        self.ctx = ctx
        if self.n_inputs is not None and len(node.inputs) != self.n_inputs:
            self.fail(f"expects {self.n_inputs} inputs, got {len(node.inputs)}")
        if len(node.outputs) != self.n_outputs:
            self.fail(f"expects {self.n_outputs} outputs, got {len(node.outputs)}")

    def fail(self, message: str):
        raise OpError(f"{self.node.label()}: {message}")

    def attr(self, key, kind=int, default=...):
        """Attribute ``key`` of type ``kind`` (int/float/str/bool/list); ``default`` if absent."""
        if key not in self.node.attrs:
            if default is ...:
                self.fail(f"attribute {key!r} is missing")
            return default
        value = self.node.attrs[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.fail(f"attribute {key!r} must be {kind.__name__}, got {value!r}")
        return value

    def int_list(self, key, length=None, default=...):
        value = self.attr(key, list, default)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            self.fail(f"attribute {key!r} must be a list of ints, got {value!r}")
        if length is not None and len(value) != length:
            self.fail(f"attribute {key!r} must have {length} entries, got {value!r}")
        return value

    def input_spec(self, i):
        return self.ctx.spec(self.node.inputs[i])

    def output_spec(self, i=0):
        return self.ctx.spec(self.node.outputs[i])

    def require_dtype(self, what, spec, allowed):
        if spec.dtype not in allowed:
            self.fail(f"{what} {spec.name!r} has dtype {spec.dtype}, expected one of {list(allowed)}")

    def constant_input(self, i, dtype=None, shape=None):
        """The constant data of input ``i``; fails if it is not a constant or mismatches."""
        name = self.node.inputs[i]
        data = self.ctx.constant(name)
        if data is None:
            self.fail(f"input #{i} {name!r} must be a constant")
        if dtype is not None and data.dtype != np.dtype(dtype):
            self.fail(f"constant {name!r} has dtype {data.dtype}, expected {np.dtype(dtype)}")
        if shape is not None and tuple(data.shape) != tuple(shape):
            self.fail(f"constant {name!r} has shape {list(data.shape)}, expected {list(shape)}")
        return data

    def run(self, inputs: list[np.ndarray], counts: NodeCounts) -> list[np.ndarray]:
        raise NotImplementedError
