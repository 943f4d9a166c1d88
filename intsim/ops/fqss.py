"""fqss ops (being written)."""

OPS = {}
