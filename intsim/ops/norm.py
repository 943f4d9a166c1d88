"""norm ops (being written)."""

OPS = {}
