"""layout ops (being written)."""

OPS = {}
