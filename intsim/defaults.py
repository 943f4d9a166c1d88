"""The model and demo mixture shipped inside the package.

``intsim run default MIX.wav`` and ``intsim demo`` use them.  The model's metadata key
``training`` says how it was trained and what it reaches (``trained``: false marks random
weights; every command that runs it then says so).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL = DATA / "default.npz"
DEMO_MIX = DATA / "demo_mix.wav"
DEMO_REFERENCES = (DATA / "demo_s1.wav", DATA / "demo_s2.wav")
DEFAULT_NAME = "default"


def resolve_model(path) -> Path:
    """``default`` names the bundled model; anything else is a path."""
    path = Path(path)
    if str(path) != DEFAULT_NAME:
        return path
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(f"the bundled default model is missing from this installation ({DEFAULT_MODEL})")
    return DEFAULT_MODEL


def training_notice(metadata: dict) -> str | None:
    """A one-line warning for models whose metadata says they are untrained, else None."""
    training = metadata.get("training")
    if isinstance(training, dict) and training.get("trained") is False:
        return ("warning: this model has random, untrained weights: its stems are not separated sources "
                "(it exercises the integer arithmetic only)")
    return None
