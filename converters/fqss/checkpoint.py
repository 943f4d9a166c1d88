"""Load and validate FQSS ``.pth`` state_dicts safely (``torch.load(weights_only=True)``).

torch is imported lazily, so ``CheckpointError`` can be imported without it.

A valid checkpoint is a plain ``{str: float32 Tensor}`` mapping (SPEC §5.1: FQSS writes
``model.state_dict()`` of the QAT model, no prefix) whose keys and shapes are exactly those of
the reference module built from the resolved config (SPEC §5.2), with finite values and
``min_range <= max_range`` in every activation quantizer (FQSS asserts this).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from .config import ConfigError, FQSSConfig, read_config, resolve_config

__all__ = ["CheckpointError", "read_state_dict", "expected_shapes", "validate_state_dict", "load_checkpoint"]


class CheckpointError(ValueError):
    """An unreadable, unsafe or inconsistent checkpoint. Lists every offending key.

    Attributes: ``missing``, ``unexpected`` (key lists), ``mismatched`` (``(key, expected,
    found)`` shape triples), ``other`` (bad dtypes / values / config conflicts).
    """

    def __init__(self, message: str, *, missing=(), unexpected=(), mismatched=(), other=()):
        super().__init__(message)
        self.missing, self.unexpected = list(missing), list(unexpected)
        self.mismatched, self.other = list(mismatched), list(other)


def read_state_dict(path) -> dict:
    """Read a ``.pth`` holding a plain state_dict with ``torch.load(weights_only=True)``.

    Anything else (a truncated or corrupt file, a pickle needing globals other than tensors,
    a wrapped checkpoint, non-tensor values) raises ``CheckpointError``; no code from the file runs.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, forbidden global: all unreadable
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint "
                              f"({type(e).__name__}: {reason[:300]})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a plain state_dict (a mapping of tensors), "
                              f"got {type(obj).__name__}")
    bad = [f"{k!r}: {type(v).__name__}" for k, v in obj.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = ""
        if any(k in obj for k in ("state", "state_dict", "best_state")):
            hint = " (a wrapped training checkpoint: save its model state_dict alone)"
        raise CheckpointError(f"{path}: not a plain state_dict of tensors{hint}; non-tensor "
                              f"entries: {', '.join(bad[:20])}{' ...' if len(bad) > 20 else ''}",
                              other=bad)
    return obj


def expected_shapes(cfg: FQSSConfig) -> dict:
    """``{key: shape}`` of the reference module for ``cfg``, in FQSS key order (built on 'meta')."""
    import torch

    from .convtasnet import build_reference

    with torch.device("meta"):
        model = build_reference(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def validate_state_dict(state_dict: Mapping, cfg: FQSSConfig, conflicts: Sequence[str] = (),
                        source: str = "checkpoint") -> None:
    """Raise ``CheckpointError`` naming every missing, unexpected or mis-shaped key, every
    non-float32 or non-finite tensor, every quantizer with ``min_range > max_range``, and the
    config-vs-shape ``conflicts`` from ``resolve_config``."""
    import torch

    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, expected[k], tuple(state_dict[k].shape)) for k in expected
                  if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    other = list(conflicts)
    for k, v in state_dict.items():
        if v.dtype != torch.float32:
            other.append(f"{k}: dtype {v.dtype}, expected torch.float32")
        elif not bool(torch.isfinite(v).all()):
            other.append(f"{k}: contains NaN or inf")
    for k, v in state_dict.items():
        if k.endswith("min_range") and "weight_fake_quantize" not in k:  # activation quantizers
            hi = state_dict.get(k[: -len("min_range")] + "max_range")
            if hi is not None and hi.shape == v.shape and v.dtype == hi.dtype and bool((v > hi).any()):
                other.append(f"{k}: min_range > max_range")
    if not (missing or unexpected or mismatched or other):
        return
    lines = [f"{source} does not match the {cfg.model} config"]
    lines += [f"  config conflict: {c}" for c in conflicts]
    lines += [f"  missing key: {k} {list(expected[k])}" for k in missing]
    lines += [f"  unexpected key: {k} {list(state_dict[k].shape)}" for k in unexpected]
    lines += [f"  wrong shape: {k}: expected {list(e)}, found {list(f)}" for k, e, f in mismatched]
    lines += [f"  bad value: {o}" for o in other[len(conflicts):]]
    raise CheckpointError("\n".join(lines), missing=missing, unexpected=unexpected,
                          mismatched=mismatched, other=other)


def load_checkpoint(path, config_path: Union[str, Path, Mapping, None] = None,
                    model: Optional[str] = None) -> tuple[dict, FQSSConfig]:
    """Load ``path`` (a ``.pth``, or a folder with ``checkpoint.pth`` and ``config.json``) and its
    config (a JSON/YAML path, an already-read dict, or None = shapes + class defaults only).

    Returns ``(state_dict, FQSSConfig)`` after full validation; raises ``CheckpointError``
    (checkpoint problems) or ``ConfigError`` (unreadable config).
    """
    path = Path(path)
    if path.is_dir():
        if config_path is None and (path / "config.json").is_file():
            config_path = path / "config.json"
        path = path / "checkpoint.pth"
    raw = {} if config_path is None else (
        dict(config_path) if isinstance(config_path, Mapping) else read_config(config_path))
    state_dict = read_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    try:
        cfg, conflicts = resolve_config(raw, shapes, model)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e
    validate_state_dict(state_dict, cfg, conflicts, source=str(path))
    return state_dict, cfg
