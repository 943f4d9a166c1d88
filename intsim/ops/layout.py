"""Layout ops: move codes around without arithmetic (NumPy in the adapters, exact copies).

Every layout op keeps the dtype and the quantization of its input: each output tensor must be
declared with the input's dtype and exactly the same ``quant`` (scale, zero point, axis), or none
if the input has none.  Per-axis quantized tensors are refused (their axis would move).  Where the
input shape is known when the graph is prepared, attributes are checked then; dynamic (``null``)
dimensions are checked at run time.  Declared output dimensions are checked against the computed
ones at both times.

pad        inputs [x]; attrs ``pads`` [[before, after], ...] one pair per axis (>= 0), optional
           ``code`` (int): the pad code, default the input's zero point (the real value 0).
concat     inputs [x0, x1, ...] (>= 1); attr ``axis`` (negative counts from the end).  All inputs
           must share dtype and quantization exactly: a concat of differently quantized tensors
           needs an explicit requantization first and is refused, never done silently.
split      inputs [x]; outputs [y0, y1, ...]; attr ``axis``, optional ``sizes`` (one per output,
           >= 0, at most one -1 = the remainder; default equal parts).
slice      inputs [x]; attrs ``starts``, ``ends``, optional ``axes`` (default 0..len-1) and
           ``steps`` (default 1, never 0).  ONNX Slice semantics: negative starts/ends count from
           the end, out-of-range values are clamped (Python ``slice(start, end, step)``), so
           ``ends`` = 2**62 means "to the end" and, with a negative step, ``ends`` = -2**62
           means "through index 0".
reshape    inputs [x]; attr ``shape``: positive sizes, ``0`` = copy the input's size at that
           index (ONNX allowzero=0), at most one ``-1`` = inferred.  Row-major (C order).
transpose  inputs [x]; attr ``perm``: a permutation of the input's axes.
"""

from __future__ import annotations

import math

import numpy as np

from intsim.ops.base import Op
from intsim.ops.common import check_input, zero_point


def same_quant(a, b) -> bool:
    """True when two tensor quantizations are identical (both absent, or equal scale/zp/axis)."""
    if a is None or b is None:
        return a is None and b is None
    return ([float(s) for s in a.scale] == [float(s) for s in b.scale]
            and [int(z) for z in a.zero_point] == [int(z) for z in b.zero_point] and a.axis == b.axis)


def describe_quant(q) -> str:
    if q is None:
        return "no quantization"
    if q.axis is None:
        return f"scale {q.scale[0]!r}, zero point {q.zero_point[0]}"
    return f"per-axis quantization on axis {q.axis}"


class LayoutOp(Op):
    """Shared checks: per-tensor quant, outputs identical in dtype and quant to input 0."""

    n_inputs = 1

    def prepare_layout(self):
        x = self.input_spec(0)
        self.rank = len(x.shape)
        self.dtype = np.dtype(x.dtype)
        if x.quant is not None and x.quant.axis is not None:
            self.fail(f"input {x.name!r} has per-axis quantization (axis {x.quant.axis}); layout ops move "
                      "per-tensor quantized or unquantized tensors only")
        for i in range(len(self.node.outputs)):
            y = self.output_spec(i)
            if y.dtype != x.dtype:
                self.fail(f"output {y.name!r} has dtype {y.dtype}, expected {x.dtype} like input {x.name!r}")
            if not same_quant(x.quant, y.quant):
                self.fail(f"output {y.name!r} has {describe_quant(y.quant)}, expected the input's "
                          f"({describe_quant(x.quant)}): layout ops do not requantize")

    def normalize_axis(self, axis, attr="axis"):
        if not -self.rank <= axis < self.rank:
            self.fail(f"attribute {attr!r} = {axis} is out of range for rank {self.rank}")
        return axis % self.rank

    def check_declared(self, i, shape, when="prepare"):
        """Compare a computed shape (entries may be None) with output ``i``'s declared shape."""
        declared = self.output_spec(i).shape
        if len(declared) != len(shape) or any(d is not None and s is not None and d != s
                                               for d, s in zip(declared, shape)):
            self.fail(f"output {self.node.outputs[i]!r} is declared with shape {declared}, but the op "
                      f"gives {list(shape)}" + (" at run time" if when == "run" else ""))

    def check_x(self, array, i=0):
        return check_input(self, i, array, self.rank, self.dtype)


class Pad(LayoutOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_layout()
        pads = self.attr("pads", list)
        if len(pads) != self.rank or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                            for v in p) for p in pads):
            self.fail(f"attribute 'pads' must be {self.rank} pairs [before, after] of ints >= 0 (one per axis), "
                      f"got {pads!r}")
        self.pads = [tuple(p) for p in pads]
        x = self.input_spec(0)
        if "code" in node.attrs:
            code = self.attr("code", int)
            if self.dtype.kind in "iu":
                info = np.iinfo(self.dtype)
                if not info.min <= code <= info.max:
                    self.fail(f"attribute 'code' = {code} is outside the {self.dtype} range [{info.min}, {info.max}]")
            self.code = code
        else:
            self.code = zero_point(self, x)
        shape = [None if d is None else d + b + a for d, (b, a) in zip(x.shape, self.pads)]
        self.check_declared(0, shape)

    def run(self, inputs, counts):
        x = self.check_x(inputs[0])
        shape = tuple(d + b + a for d, (b, a) in zip(x.shape, self.pads))
        out = np.full(shape, self.code, dtype=self.dtype)
        out[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, self.pads))] = x
        self.check_declared(0, shape, "run")
        return [out]


class Concat(LayoutOp):
    n_inputs = None

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        if len(node.inputs) < 1 or "" in node.inputs:
            self.fail(f"expects at least one input and no empty input names, got {node.inputs}")
        self.prepare_layout()
        self.axis = self.normalize_axis(self.attr("axis", int))
        x0 = self.input_spec(0)
        shape = list(x0.shape)
        for i in range(1, len(node.inputs)):
            xi = self.input_spec(i)
            if xi.dtype != x0.dtype:
                self.fail(f"input {xi.name!r} has dtype {xi.dtype}, but {x0.name!r} has {x0.dtype}: concat "
                          "inputs must share dtype")
            if not same_quant(x0.quant, xi.quant):
                self.fail(f"input {xi.name!r} has {describe_quant(xi.quant)}, but {x0.name!r} has "
                          f"{describe_quant(x0.quant)}: concat does not requantize; insert an explicit "
                          "requantization so all inputs share one quantization")
            if len(xi.shape) != self.rank:
                self.fail(f"input {xi.name!r} has rank {len(xi.shape)}, {x0.name!r} has {self.rank}")
            for a, (d, e) in enumerate(zip(shape, xi.shape)):
                if a == self.axis:
                    shape[a] = None if d is None or e is None else d + e
                elif d is not None and e is not None and d != e:
                    self.fail(f"input {xi.name!r} has size {e} on axis {a}, {x0.name!r} has {d} "
                              f"(only axis {self.axis} may differ)")
                elif d is None:
                    shape[a] = e
        self.check_declared(0, shape)

    def run(self, inputs, counts):
        xs = [self.check_x(a, i) for i, a in enumerate(inputs)]
        for i, a in enumerate(xs[1:], 1):
            bad = [ax for ax in range(self.rank) if ax != self.axis and a.shape[ax] != xs[0].shape[ax]]
            if bad:
                self.fail(f"input {self.node.inputs[i]!r} has shape {list(a.shape)}, "
                          f"{self.node.inputs[0]!r} has {list(xs[0].shape)}: only axis {self.axis} may differ")
        out = np.concatenate(xs, axis=self.axis)
        self.check_declared(0, out.shape, "run")
        return [out]


class Split(LayoutOp):
    def __init__(self, node, ctx):
        self.n_outputs = max(1, len(node.outputs))
        super().__init__(node, ctx)
        self.prepare_layout()
        self.axis = self.normalize_axis(self.attr("axis", int))
        n = self.n_outputs
        sizes = self.int_list("sizes") if "sizes" in node.attrs else None
        if sizes is not None:
            if len(sizes) != n:
                self.fail(f"attribute 'sizes' = {sizes} has {len(sizes)} entries for {n} outputs")
            if any(s < -1 for s in sizes) or sizes.count(-1) > 1:
                self.fail(f"attribute 'sizes' = {sizes} must hold sizes >= 0 and at most one -1")
        self.sizes = sizes
        dim = self.input_spec(0).shape[self.axis]
        resolved = self.resolve(dim) if dim is not None else None
        for i in range(n):
            shape = list(self.input_spec(0).shape)
            shape[self.axis] = resolved[i] if resolved is not None else (
                sizes[i] if sizes is not None and sizes[i] >= 0 else None)
            self.check_declared(i, shape)

    def resolve(self, dim, when="prepare"):
        n = self.n_outputs
        if self.sizes is None:
            if dim % n:
                self.fail(f"axis {self.axis} of size {dim} cannot be split into {n} equal parts"
                          + (" at run time" if when == "run" else ""))
            return [dim // n] * n
        known = sum(s for s in self.sizes if s >= 0)
        if -1 in self.sizes:
            if known > dim:
                self.fail(f"attribute 'sizes' = {self.sizes} exceeds axis {self.axis} of size {dim}")
            return [dim - known if s == -1 else s for s in self.sizes]
        if known != dim:
            self.fail(f"attribute 'sizes' = {self.sizes} sums to {known}, but axis {self.axis} has size {dim}"
                      + (" at run time" if when == "run" else ""))
        return list(self.sizes)

    def run(self, inputs, counts):
        x = self.check_x(inputs[0])
        sizes = self.resolve(x.shape[self.axis], "run")
        outs = []
        start = 0
        for i, s in enumerate(sizes):
            index = [slice(None)] * self.rank
            index[self.axis] = slice(start, start + s)
            out = np.ascontiguousarray(x[tuple(index)])
            self.check_declared(i, out.shape, "run")
            outs.append(out)
            start += s
        return outs


class Slice(LayoutOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_layout()
        starts = self.int_list("starts")
        ends = self.int_list("ends", len(starts))
        axes = self.int_list("axes", len(starts), list(range(len(starts))))
        steps = self.int_list("steps", len(starts), [1] * len(starts))
        axes = [self.normalize_axis(a, "axes") for a in axes]
        if len(set(axes)) != len(axes):
            self.fail(f"attribute 'axes' = {self.node.attrs.get('axes')} repeats an axis")
        if any(s == 0 for s in steps):
            self.fail(f"attribute 'steps' = {steps} contains 0")
        self.items = list(zip(axes, starts, ends, steps))
        self.check_declared(0, self.out_shape(self.input_spec(0).shape))

    def slices(self, shape):
        index = [slice(None)] * self.rank
        for axis, start, end, step in self.items:
            r = range(*slice(start, end, step).indices(shape[axis]))
            # Re-express the clamped range as a NumPy slice (a stop of -1 means "through index 0").
            index[axis] = slice(0, 0) if len(r) == 0 else slice(r.start, None if r.stop < 0 else r.stop, r.step)
        return tuple(index)

    def out_shape(self, shape):
        out = list(shape)
        for axis, start, end, step in self.items:
            dim = shape[axis]
            out[axis] = None if dim is None else len(range(*slice(start, end, step).indices(dim)))
        return out

    def run(self, inputs, counts):
        x = self.check_x(inputs[0])
        out = np.ascontiguousarray(x[self.slices(x.shape)])
        self.check_declared(0, out.shape, "run")
        return [out]


class Reshape(LayoutOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_layout()
        shape = self.int_list("shape")
        if any(s < -1 for s in shape) or shape.count(-1) > 1:
            self.fail(f"attribute 'shape' = {shape} must hold sizes >= 0 (0 = copy), at most one -1")
        for i, s in enumerate(shape):
            if s == 0 and i >= self.rank:
                self.fail(f"attribute 'shape' = {shape}: entry {i} is 0 (copy) but the input has rank {self.rank}")
        self.shape = shape
        self.check_declared(0, self.target(self.input_spec(0).shape))

    def target(self, in_shape, when="prepare"):
        out = [in_shape[i] if s == 0 else s for i, s in enumerate(self.shape)]
        if any(d is None for d in in_shape):
            # Dynamic input: only the -1 entry may be unknown; checked again at run time.
            if -1 in out:
                out[out.index(-1)] = None
            return out
        total = math.prod(in_shape)
        if -1 in out:
            known = math.prod(d for d in out if d != -1)
            if known == 0 or total % known:
                self.fail(f"attribute 'shape' = {self.shape} cannot hold input shape {list(in_shape)} "
                          f"({total} elements)" + (" at run time" if when == "run" else ""))
            out[out.index(-1)] = total // known
        elif math.prod(out) != total:
            self.fail(f"attribute 'shape' = {self.shape} gives {math.prod(out)} elements, input shape "
                      f"{list(in_shape)} has {total}" + (" at run time" if when == "run" else ""))
        return out

    def run(self, inputs, counts):
        x = self.check_x(inputs[0])
        shape = self.target(x.shape, "run")
        out = np.ascontiguousarray(x).reshape(shape)
        self.check_declared(0, out.shape, "run")
        return [out]


class Transpose(LayoutOp):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.prepare_layout()
        perm = self.int_list("perm")
        if sorted(perm) != list(range(self.rank)):
            self.fail(f"attribute 'perm' = {perm} is not a permutation of the {self.rank} input axes")
        self.perm = perm
        in_shape = self.input_spec(0).shape
        self.check_declared(0, [in_shape[p] for p in perm])

    def run(self, inputs, counts):
        x = self.check_x(inputs[0])
        out = np.ascontiguousarray(np.transpose(x, self.perm))
        self.check_declared(0, out.shape, "run")
        return [out]


OPS = {"pad": Pad, "concat": Concat, "split": Split, "slice": Slice, "reshape": Reshape, "transpose": Transpose}
