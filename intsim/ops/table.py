"""table ops (being written)."""

OPS = {}
