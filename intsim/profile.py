"""Arithmetic profiles: which accumulator, multiplier and rounding an integer engine uses.

A profile fixes two arithmetic *paths*: one for int8 activations (8x8 MACs) and one for int16
activations (16x8 MACs).  Each path says

* ``acc_bits``: width of the accumulator register (bias included); 64 never overflows here.
* ``acc_overflow``: ``"wrap"`` (two's complement) or ``"saturate"`` -- applied to the final sum.
  Overflow is detected and counted per node whatever the choice.
* ``mult_bits``: fractional bits of the requantization multiplier (31 = Q0.31; 15 = TFLite's
  16x8 "reduced" multiplier).  The model file stores Q0.31 multipliers; narrower ones are
  derived from them by ``intsim.fixedpoint.reduce_multiplier``.
* ``rounding``: ``double`` (gemmlowp SRDHM + RDBP), ``half_up`` (single rounding), ``half_even``,
  ``half_away``, ``floor`` or ``float32`` (ONNX: round_half_even(float32(acc) * float32(scale))).

Built-in profiles:

* ``tflm`` (default): TFLite Micro / CMSIS-NN default build.  int8: 32-bit wrapping accumulator,
  double rounding.  int16: 64-bit accumulator, 15-bit multiplier, single rounding ties up.
* ``single``: TFLITE_SINGLE_ROUNDING / CMSIS_NN_USE_SINGLE_ROUNDING: int8 path single rounding.
* ``onnx``: ONNX Runtime and onnx.reference: float32 scale, round half to even.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from intsim.fixedpoint import ROUND_DOUBLE, ROUNDING_NAMES

ROUNDING_BY_CODE = {code: name for name, code in ROUNDING_NAMES.items()}


class ProfileError(ValueError):
    """A profile specification is invalid."""


@dataclass(frozen=True)
class ArithPath:
    """Accumulator and requantization rules for one activation width."""

    acc_bits: int = 32
    acc_overflow: str = "wrap"
    mult_bits: int = 31
    rounding: str = "double"

    def __post_init__(self):
        if not isinstance(self.rounding, str) or self.rounding not in ROUNDING_NAMES:
            raise ProfileError(f"rounding must be one of {sorted(ROUNDING_NAMES)}, got {self.rounding!r}")
        if not isinstance(self.acc_overflow, str) or self.acc_overflow not in ("wrap", "saturate"):
            raise ProfileError(f"acc_overflow must be 'wrap' or 'saturate', got {self.acc_overflow!r}")
        if not isinstance(self.acc_bits, int) or not 16 <= self.acc_bits <= 64:
            raise ProfileError(f"acc_bits must be an integer in [16, 64], got {self.acc_bits!r}")
        if not isinstance(self.mult_bits, int) or not 8 <= self.mult_bits <= 31:
            raise ProfileError(f"mult_bits must be an integer in [8, 31], got {self.mult_bits!r}")
        if self.rounding == "double" and (self.mult_bits != 31 or self.acc_bits > 32):
            raise ProfileError("rounding 'double' (gemmlowp) needs mult_bits 31 and acc_bits <= 32")

    @property
    def rounding_code(self) -> int:
        return ROUNDING_NAMES[self.rounding]

    @property
    def acc_saturating(self) -> bool:
        return self.acc_overflow == "saturate"


@dataclass(frozen=True)
class Profile:
    name: str
    int8: ArithPath
    int16: ArithPath

    def path(self, activation_dtype) -> ArithPath:
        """The arithmetic path for MACs whose activations have ``activation_dtype``."""
        bits = np.dtype(activation_dtype).itemsize * 8
        if bits == 8:
            return self.int8
        if bits == 16:
            return self.int16
        raise ProfileError(f"no arithmetic path for {np.dtype(activation_dtype)} activations")

    def to_dict(self) -> dict:
        return {"name": self.name, "int8": asdict(self.int8), "int16": asdict(self.int16)}


_TFLM_INT16 = ArithPath(acc_bits=64, acc_overflow="wrap", mult_bits=15, rounding="half_up")

PROFILES: dict[str, Profile] = {
    "tflm": Profile("tflm", ArithPath(32, "wrap", 31, "double"), _TFLM_INT16),
    "single": Profile("single", ArithPath(32, "wrap", 31, "half_up"), _TFLM_INT16),
    "onnx": Profile("onnx", ArithPath(32, "wrap", 31, "float32"), ArithPath(64, "wrap", 31, "float32")),
}

DEFAULT_PROFILE = "tflm"

_PATH_FIELDS = ("acc_bits", "acc_overflow", "mult_bits", "rounding")


def get_profile(spec) -> Profile:
    """A Profile from a name (``tflm``, ``single``, ``onnx``), a dict, or a Profile.

    A dict may name a ``base`` profile and override path fields for both paths at its top level or
    per path under ``int8`` / ``int16``, e.g.
    ``{"name": "dsp24", "base": "tflm", "acc_bits": 24, "acc_overflow": "saturate"}``.
    """
    if isinstance(spec, Profile):
        return spec
    if spec is None:
        return PROFILES[DEFAULT_PROFILE]
    if isinstance(spec, str):
        if spec not in PROFILES:
            raise ProfileError(f"unknown profile {spec!r}; built-in profiles: {', '.join(PROFILES)}")
        return PROFILES[spec]
    if not isinstance(spec, dict):
        raise ProfileError(f"a profile is a name or a mapping, got {type(spec).__name__}")
    allowed = {"name", "base", "int8", "int16", *_PATH_FIELDS}
    unknown = set(spec) - allowed
    if unknown:
        raise ProfileError(f"unknown profile fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    base = get_profile(spec.get("base", DEFAULT_PROFILE))
    shared = {k: spec[k] for k in _PATH_FIELDS if k in spec}
    paths = {}
    for key in ("int8", "int16"):
        sub = spec.get(key, {})
        if not isinstance(sub, dict) or set(sub) - set(_PATH_FIELDS):
            raise ProfileError(f"profile field {key!r} must be a mapping of {list(_PATH_FIELDS)}")
        fields = {**asdict(getattr(base, key)), **shared, **sub}
        paths[key] = ArithPath(**fields)
    name = spec.get("name", "custom")
    if not isinstance(name, str) or not name:
        raise ProfileError("profile name must be a non-empty string")
    return Profile(name, paths["int8"], paths["int16"])


#: Largest profile file read (a profile is a few lines; anything bigger is a wrong file).
MAX_PROFILE_FILE_BYTES = 1 << 20

PROFILE_FILE_SUFFIXES = (".json", ".toml")


def load_profile_file(path) -> dict:
    """Read a profile specification from a ``.json`` or ``.toml`` file; return the dict
    ``get_profile`` takes (validated: ProfileError names the file and the field at fault).

    Both forms hold the same fields as a profile dict: top-level ``name``, ``base`` and path
    fields shared by both paths, and optional per-path tables ``int8`` / ``int16``::

        # dsp24.toml
        name = "dsp24"
        base = "tflm"
        acc_bits = 24
        acc_overflow = "saturate"

        [int16]
        acc_bits = 40
        mult_bits = 15
        rounding = "half_up"

    The format is chosen by the suffix (``.toml``: TOML via ``tomllib``; anything else: JSON).
    """
    path = Path(path)
    where = f"profile file {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROFILE_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ProfileError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ProfileError(f"{where} is a directory") from None
    except OSError as e:
        raise ProfileError(f"{where} cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_PROFILE_FILE_BYTES:
        raise ProfileError(f"{where} is larger than {MAX_PROFILE_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"{where} is not UTF-8 text: {e}") from None
    if path.suffix.lower() == ".toml":
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ProfileError(f"{where} is not valid TOML: {e}") from None
    else:
        try:
            spec = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
        except (json.JSONDecodeError, ValueError, RecursionError) as e:
            raise ProfileError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ProfileError(f"{where} must hold an object (a mapping of profile fields), got {type(spec).__name__}")
    try:
        get_profile(spec)
    except ProfileError as e:
        raise ProfileError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:  # e.g. unhashable values where a name is expected
        raise ProfileError(f"{where}: invalid profile: {e}") from None
    return spec


def _reject_constant(name):
    raise ValueError(f"{name} is not a number a profile may hold")


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if dup is not None:
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


__all__ = ["ArithPath", "Profile", "ProfileError", "PROFILES", "DEFAULT_PROFILE", "get_profile", "load_profile_file",
           "ROUND_DOUBLE"]
