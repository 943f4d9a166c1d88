"""framing ops (being written)."""

OPS = {}
