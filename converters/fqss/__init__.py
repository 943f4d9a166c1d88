"""FQSS (Cohen et al., 2024) ConvTasNet checkpoints: safe loading, config inference, torch reference.

Public API (torch is imported lazily; ``import intsim.converters.fqss`` works without it):

* ``load_checkpoint(path, config_path=None) -> (state_dict, FQSSConfig)``: weights-only load plus
  full validation (``CheckpointError`` names every missing / unexpected / mis-shaped key);
* ``build_reference(config) -> torch.nn.Module``: ``ConvTasNetQ`` or ``ConvTasNetMusicQ`` that
  reproduces the FQSS QAT forward (eval mode, observers off) with FQSS's state_dict keys;
* ``load_reference(path, config_path=None) -> torch.nn.Module``: both of the above, weights loaded;
* ``random_checkpoint(config_or_kwargs, seed=0, **options) -> (state_dict, config_dict)``: a
  fresh, observer-calibrated checkpoint of any configuration, config in the shared JSON form.

See ``shared/fqss/SPEC.md`` for the math; the submodules' docstrings restate it.
"""

from .checkpoint import CheckpointError, expected_shapes, load_checkpoint, read_state_dict, validate_state_dict
from .config import (MUSIC, SPEECH, ConfigError, FQSSConfig, infer_from_shapes, read_config,
                     resolve_config)

__all__ = [
    "FQSSConfig", "ConfigError", "CheckpointError", "SPEECH", "MUSIC",
    "read_config", "resolve_config", "infer_from_shapes",
    "read_state_dict", "validate_state_dict", "expected_shapes", "load_checkpoint",
    "build_reference", "load_reference", "random_checkpoint",
]


def _config(config) -> FQSSConfig:
    if isinstance(config, FQSSConfig):
        return config
    return FQSSConfig.from_dict(config)


def build_reference(config):
    """Reference torch module (eval mode) for an ``FQSSConfig`` or a config dict (JSON form or fields)."""
    from .convtasnet import build_reference as build

    return build(_config(config))


def load_reference(path, config_path=None):
    """``load_checkpoint`` then ``build_reference`` with the weights loaded (strict)."""
    state_dict, cfg = load_checkpoint(path, config_path)
    model = build_reference(cfg)
    model.load_state_dict(state_dict, strict=True)
    return model


def random_checkpoint(config_or_kwargs=None, seed: int = 0, **options):
    """Random calibrated checkpoint ``(state_dict, config_dict)``; see ``fresh.random_checkpoint``."""
    from .fresh import random_checkpoint as make

    return make(config_or_kwargs, seed, **options)
