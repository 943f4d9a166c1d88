"""Frame-by-frame streaming of causal conv1d graphs, bit-equal to whole-file execution.

``Stream(graph, profile=None, parallel=True)`` accepts graphs whose every node is a ``conv1d`` with
stride 1 and left padding only (``padding = [P, 0]``, any kernel size, dilation and groups) and
constant weights: chains or DAGs of such convs, one graph input ``[1, C, T]`` (integer, per-tensor
quantized), any number of outputs.  Anything else (a right pad, a stride, a splitter that
normalises per call, a norm, a matmul, ...) is refused with a ``StreamError`` naming the node:
those ops see the future or the whole call, and their streamed output would differ.

``push(chunk)`` takes the next ``n >= 0`` samples (``[1, C, n]``, the input's integer dtype, or
float quantized as ``Model.run`` does: round half to even, saturated) and returns, per graph
output, the output frames that the samples seen so far determine (possibly none: ``[1, C_out, 0]``).
Concatenating the outputs of all pushes gives exactly (bit for bit) the whole-file output of
``Model(graph).run(whole_input)``, and the per-node overflow/saturation ``counts`` add up to the
whole-file ones, for any chunking.

How: each conv's padding is taken out of the graph and replaced by a history buffer.  A conv of
kernel span ``R = dilation * (K - 1) + 1`` keeps the last ``R - 1`` frames of its input; a new
call convolves ``history ++ chunk`` without padding, giving ``len(history ++ chunk) - R + 1``
frames, each from the same input frames as in the whole-file run (integer convolution and
requantization are computed per output frame, so the codes are the same).  The history starts as
``P`` frames of the input's zero point, which is what the padded whole-file conv sees (padding
contributes ``x - zero_point = 0``).  A conv whose buffer is still shorter than ``R`` emits nothing
and keeps the buffer.  Latency: output frame ``t`` of a conv is available once input frame
``t - P + R - 1`` has arrived (``R - 1 - P`` frames of look-ahead, 0 for a fully causal conv
``P = R - 1``).  ``reset()`` starts a new stream.
"""

from __future__ import annotations

import numpy as np

from intsim.executor import Model, quantize_linear
from intsim.ir import Graph, GraphError, Node


class StreamError(GraphError):
    """The graph cannot be streamed bit-exactly."""


def _int(value, default):
    value = default if value is None else value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Stream:
    def __init__(self, graph: Graph, profile=None, parallel: bool = True):
        graph.validate()
        if len(graph.inputs) != 1:
            raise StreamError(f"streaming needs one graph input, the graph has {graph.inputs}")
        x = graph.tensors[graph.inputs[0]]
        if len(x.shape) != 3 or x.shape[0] not in (1, None) or x.dtype == "float32":
            raise StreamError(f"streaming needs an integer input [1, C, T]; {x.name!r} is {x.dtype} {x.shape}")
        if x.shape[2] is not None:
            raise StreamError(f"input {x.name!r} has a static time dimension {x.shape}; streaming needs a dynamic one")
        if x.quant is None or x.quant.axis is not None or len(x.quant.scale) != 1:
            raise StreamError(f"input {x.name!r} needs per-tensor quantization")
        self.input_name, self.input_spec = x.name, x
        nodes, self.spans, self.pads = [], {}, {}
        for node in graph.nodes:
            if node.op != "conv1d":
                raise StreamError(f"{node.label()}: only conv1d nodes with left padding stream bit-exactly "
                                  f"({node.op} is not supported)")
            pad = node.attrs.get("padding", [0, 0])
            stride, dilation = _int(node.attrs.get("stride"), 1), _int(node.attrs.get("dilation"), 1)
            if not (isinstance(pad, list) and len(pad) == 2 and all(_int(p, None) is not None for p in pad)):
                raise StreamError(f"{node.label()}: padding must be [left, right], got {pad!r}")
            if pad[1] != 0:
                raise StreamError(f"{node.label()}: right padding {pad[1]} needs future samples (non-causal)")
            if stride != 1:
                raise StreamError(f"{node.label()}: stride {node.attrs.get('stride')!r}; only stride 1 streams")
            if dilation is None or dilation < 1:
                raise StreamError(f"{node.label()}: invalid dilation {node.attrs.get('dilation')!r}")
            if len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
                raise StreamError(f"{node.label()}: the weight must be a constant")
            k = graph.constants[node.inputs[1]].shape[-1]
            self.spans[node.name] = dilation * (k - 1) + 1
            self.pads[node.name] = pad[0]
            nodes.append(Node(node.name, node.op, list(node.inputs), list(node.outputs),
                              {**node.attrs, "padding": [0, 0]}))
        self.graph = graph
        inner = Graph(dict(graph.tensors), nodes, list(graph.inputs), list(graph.outputs), dict(graph.constants),
                      graph.profile, dict(graph.metadata))
        self.model = Model(inner, profile=profile, parallel=parallel)
        self.profile = self.model.profile
        self.reset()

    @property
    def counts(self):
        return self.model.counts

    def reset(self) -> None:
        """Forget all history and counts: the next push starts a new stream."""
        self.model.reset_counts()
        self.history = {}
        for node in self.graph.nodes:
            x = self.graph.tensors[node.inputs[0]]
            zp = int(x.quant.zero_point[0]) if x.quant is not None else 0
            c_in = self.graph.constants[node.inputs[1]].shape[1] * _int(node.attrs.get("groups"), 1)
            self.history[node.name] = np.full((1, c_in, self.pads[node.name]), zp, dtype=x.dtype)

    def _coerce(self, chunk) -> np.ndarray:
        spec = self.input_spec
        a = np.asarray(chunk)
        dtype = np.dtype(spec.dtype)
        if a.ndim != 3 or a.shape[0] != 1 or (spec.shape[1] is not None and a.shape[1] != spec.shape[1]):
            raise ValueError(f"chunk has shape {list(a.shape)}; the input {spec.name!r} is {spec.shape}")
        if a.dtype == dtype:
            return np.ascontiguousarray(a)
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)):
                raise ValueError("chunk contains NaN or infinite values")
            return quantize_linear(a, spec.quant.scale[0], spec.quant.zero_point[0], dtype)
        raise ValueError(f"chunk has dtype {a.dtype}, expected {dtype} or float")

    def push(self, chunk) -> dict[str, np.ndarray]:
        """Feed the next samples; the output frames they complete, per graph output."""
        env = dict(self.graph.constants)
        env[self.input_name] = self._coerce(chunk)
        for node, op in zip(self.model.graph.nodes, self.model.prepared):
            buf = np.concatenate([self.history[node.name], env[node.inputs[0]]], axis=-1)
            span = self.spans[node.name]
            if buf.shape[-1] >= span:
                args = [buf] + [env[name] if name else None for name in node.inputs[1:]]
                (out,) = op.run(args, self.model.counts[node.name])
                self.history[node.name] = buf[..., buf.shape[-1] - (span - 1):]
            else:
                c_out = self.graph.constants[node.inputs[1]].shape[0]
                out = np.empty((1, c_out, 0), dtype=self.graph.tensors[node.outputs[0]].dtype)
                self.history[node.name] = buf
            env[node.outputs[0]] = out
        return {name: env[name] for name in self.graph.outputs}

    def run(self, x, chunk: int) -> dict[str, np.ndarray]:
        """Stream ``x`` ([1, C, T]) in chunks of ``chunk`` samples from a fresh state; the joined outputs."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.reset()
        parts = [self.push(x[..., i:i + chunk]) for i in range(0, x.shape[-1], chunk)]
        return {name: np.concatenate([p[name] for p in parts], axis=-1) for name in self.graph.outputs}
