"""The op registry: op name -> adapter class.  Pass ``ops={**OPS, "mine": MyOp}`` to extend it.

Each op family lives in its own module and exports an ``OPS`` dict; this one merges them.
"""

from intsim.ops import conv, dynamic, elementwise, framing, fqss, layout, matmul, norm, table
from intsim.ops.base import NodeCounts, Op, OpError, PrepareContext

OPS = {}
for _module in (conv, matmul, elementwise, table, norm, layout, framing, fqss, dynamic):
    for _name, _cls in _module.OPS.items():
        assert _name not in OPS, f"op {_name!r} registered twice"
        OPS[_name] = _cls

__all__ = ["OPS", "Op", "OpError", "NodeCounts", "PrepareContext"]
