"""matmul ops (being written)."""

OPS = {}
