"""elementwise ops (being written)."""

OPS = {}
