"""Small helpers shared by op adapters."""

from __future__ import annotations

import numpy as np


def zero_point(op, spec) -> int:
    """The per-tensor integer zero point of ``spec`` (0 when it carries no quantization)."""
    if spec.quant is None:
        return 0
    if spec.quant.axis is not None:
        op.fail(f"tensor {spec.name!r} must be quantized per tensor, has axis {spec.quant.axis}")
    return int(spec.quant.zero_point[0])


def check_input(op, i, array, ndim=None, dtype=None):
    """Run-time check of input ``i``: ndim and dtype, with a message naming node and tensor."""
    name = op.node.inputs[i]
    if dtype is not None and array.dtype != np.dtype(dtype):
        op.fail(f"input {name!r} has dtype {array.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and array.ndim != ndim:
        op.fail(f"input {name!r} has shape {list(array.shape)}, expected {ndim} dims")
    return array


def counters(n):
    """Zeroed per-channel overflow and saturation counters for a kernel call."""
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
