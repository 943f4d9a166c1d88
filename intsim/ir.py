"""The integer graph: tensors, nodes, constants, and their schema.

A ``Graph`` is what a model file holds and what the executor runs.  Tensors are described by
``TensorSpec`` (dtype, shape with ``None`` for dynamic dimensions, quantization parameters);
constant tensors carry their data in ``Graph.constants``.  Nodes name an op from the op registry,
their input and output tensors and a dict of JSON-serialisable attributes.

Validation here is structural (names, dtypes, shapes of constants, references between nodes and
tensors, topological order); each op checks its own attributes when it is prepared.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

FORMAT_NAME = "intsim-graph"
FORMAT_VERSION = 1

#: Dtypes a tensor may have.  float32 is allowed for graph inputs/outputs and float-domain glue
#: (the FQSS splitter reads float audio); everything inside the network is integer.
DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32")

#: Tensor and node names.  ``\Z``, not ``$``: ``$`` also matches before a trailing newline.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:/\-\[\]]{1,200}\Z")


class GraphError(ValueError):
    """The graph is malformed; the message names the tensor, node and field at fault."""


@dataclass
class Quant:
    """Affine quantization ``real = scale * (q - zero_point)``, per tensor or along ``axis``."""

    scale: list[float]
    zero_point: list[int]
    axis: int | None = None

    def to_dict(self) -> dict:
        return {"scale": [float(s) for s in self.scale], "zero_point": [int(z) for z in self.zero_point], "axis": self.axis}


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int | None]
    quant: Quant | None = None

    def to_dict(self) -> dict:
        d = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.quant is not None:
            d["quant"] = self.quant.to_dict()
        return d


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "outputs": list(self.outputs), "attrs": self.attrs}

    def label(self) -> str:
        return f"node {self.name!r} ({self.op})"


@dataclass
class Graph:
    tensors: dict[str, TensorSpec]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    profile: str | dict = "tflm"
    metadata: dict = field(default_factory=dict)

    def spec(self, name: str) -> TensorSpec:
        return self.tensors[name]

    def validate(self) -> "Graph":
        """Check structure and references; raise GraphError naming what is wrong."""
        if not isinstance(self.tensors, dict):
            raise GraphError("graph: field 'tensors' must be a dict of name -> TensorSpec")
        for name, spec in self.tensors.items():
            check_tensor_spec(name, spec)
        if not isinstance(self.constants, dict):
            raise GraphError("graph: field 'constants' must be a dict of name -> array")
        for name, data in self.constants.items():
            where = f"constant {name!r}"
            if name not in self.tensors:
                raise GraphError(f"{where}: no tensor declares it")
            if not isinstance(data, np.ndarray):
                raise GraphError(f"{where}: data must be a numpy array, got {type(data).__name__}")
            spec = self.tensors[name]
            if data.dtype != np.dtype(spec.dtype):
                raise GraphError(f"{where}: data dtype {data.dtype} differs from declared {spec.dtype}")
            if list(data.shape) != spec.shape:
                raise GraphError(f"{where}: data shape {list(data.shape)} differs from declared {spec.shape}")
        for field_name in ("inputs", "outputs"):
            names = getattr(self, field_name)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise GraphError(f"graph: field {field_name!r} must be a list of tensor names")
            if len(set(names)) != len(names):
                dup = next(n for i, n in enumerate(names) if n in names[:i])
                raise GraphError(f"graph {field_name[:-1]} {dup!r}: listed twice in field {field_name!r}")
        produced = set(self.inputs) | set(self.constants)
        for name in self.inputs:
            if name not in self.tensors:
                raise GraphError(f"graph input {name!r}: no such tensor")
            if name in self.constants:
                raise GraphError(f"graph input {name!r}: is a constant")
        if not isinstance(self.nodes, list):
            raise GraphError("graph: field 'nodes' must be a list of Node")
        seen_nodes = set()
        for i, node in enumerate(self.nodes):
            if not isinstance(node, Node):
                raise GraphError(f"node #{i}: must be a Node, got {type(node).__name__}")
            if not isinstance(node.name, str) or not isinstance(node.op, str):
                raise GraphError(f"node #{i}: fields 'name' and 'op' must be strings")
            where = node.label()
            if not _valid_name(node.name) or node.name in seen_nodes:
                raise GraphError(f"{where}: invalid or duplicate node name")
            seen_nodes.add(node.name)
            if not isinstance(node.attrs, dict):
                raise GraphError(f"{where}: field 'attrs' must be an object")
            for key in ("inputs", "outputs"):
                names = getattr(node, key)
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise GraphError(f"{where}: field {key!r} must be a list of tensor names")
            for name in node.inputs:
                if name == "":
                    continue  # optional input left out
                if name not in self.tensors:
                    raise GraphError(f"{where}: input {name!r} is not a declared tensor")
                if name not in produced:
                    raise GraphError(f"{where}: input {name!r} is used before any node produces it")
            for name in node.outputs:
                if name not in self.tensors:
                    raise GraphError(f"{where}: output {name!r} is not a declared tensor")
                if name in produced:
                    raise GraphError(f"{where}: output {name!r} is produced twice")
                produced.add(name)
        for name in self.outputs:
            if name not in produced:
                raise GraphError(f"graph output {name!r}: no node produces it")
        if not isinstance(self.profile, (str, dict)):
            raise GraphError("graph: field 'profile' must be a profile name or an object")
        if not isinstance(self.metadata, dict):
            raise GraphError("graph: field 'metadata' must be an object")
        return self

    def to_json_dict(self, constant_members: dict[str, str]) -> dict:
        tensors = {}
        for name, spec in self.tensors.items():
            d = spec.to_dict()
            if name in constant_members:
                d["data"] = constant_members[name]
            tensors[name] = d
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "profile": self.profile,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "tensors": tensors,
            "nodes": [n.to_dict() for n in self.nodes],
            "metadata": self.metadata,
        }


def _valid_name(name) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def check_tensor_spec(name, spec) -> None:
    """Validate one tensor declaration (name, dtype, shape, quant); raise GraphError naming it.

    Run before any constant data is read, so that a model file's declared dtype and shape can be
    trusted by the reader.
    """
    where = f"tensor {name!r}"
    if not _valid_name(name):
        raise GraphError(f"{where}: invalid tensor name (allowed: 1-200 of A-Z a-z 0-9 _ . : / - [ ])")
    if not isinstance(spec, TensorSpec):
        raise GraphError(f"{where}: must be a TensorSpec, got {type(spec).__name__}")
    if spec.name != name:
        raise GraphError(f"{where}: TensorSpec is named {spec.name!r}")
    if not isinstance(spec.dtype, str) or spec.dtype not in DTYPES:
        raise GraphError(f"{where}: field 'dtype' is {spec.dtype!r}, expected one of {DTYPES}")
    if not isinstance(spec.shape, list) or not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31) for d in spec.shape):
        raise GraphError(f"{where}: field 'shape' must be a list of non-negative ints or null, got {spec.shape!r}")
    if len(spec.shape) > 8:
        raise GraphError(f"{where}: field 'shape' has {len(spec.shape)} dims (at most 8)")
    if spec.quant is not None:
        _validate_quant(where, spec)


#: zero points must be representable in the tensor's own integer type
_ZP_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int32": (-(2**31), 2**31 - 1),
              "int64": (-(2**31), 2**31 - 1), "float32": (-(2**31), 2**31 - 1)}


def _finite_positive(s) -> bool:
    if isinstance(s, bool) or not isinstance(s, (int, float)):
        return False
    try:
        return math.isfinite(float(s)) and float(s) > 0
    except OverflowError:  # an int too large for a float
        return False


def _validate_quant(where: str, spec: TensorSpec) -> None:
    q = spec.quant
    if not isinstance(q, Quant):
        raise GraphError(f"{where}: field 'quant' must be a Quant, got {type(q).__name__}")
    if not isinstance(q.scale, list) or not isinstance(q.zero_point, list) or not q.scale:
        raise GraphError(f"{where}: field 'quant' needs non-empty lists 'scale' and 'zero_point'")
    if len(q.scale) != len(q.zero_point):
        raise GraphError(f"{where}: quant 'scale' has {len(q.scale)} entries, 'zero_point' {len(q.zero_point)}")
    for s in q.scale:
        if not _finite_positive(s):
            raise GraphError(f"{where}: quant scale {s!r} must be a positive finite number")
    lo, hi = _ZP_RANGES[spec.dtype]
    for z in q.zero_point:
        if not isinstance(z, int) or isinstance(z, bool) or not lo <= z <= hi:
            raise GraphError(f"{where}: quant zero_point {z!r} must be an integer in [{lo}, {hi}] for {spec.dtype}")
    if q.axis is None:
        if len(q.scale) != 1:
            raise GraphError(f"{where}: per-tensor quant must have one scale, got {len(q.scale)}")
    else:
        if not isinstance(q.axis, int) or isinstance(q.axis, bool) or not 0 <= q.axis < len(spec.shape):
            raise GraphError(f"{where}: quant axis {q.axis!r} out of range for shape {spec.shape}")
        dim = spec.shape[q.axis]
        if dim is not None and dim != len(q.scale):
            raise GraphError(f"{where}: quant has {len(q.scale)} scales for axis {q.axis} of size {dim}")
