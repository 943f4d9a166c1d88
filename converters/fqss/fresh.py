"""Fresh FQSS-layout checkpoints of any ConvTasNet configuration, calibrated as FQSS does.

Recipe (SPEC §1.1, §1.2, §2.5, §8), all under a private torch RNG seeded with ``seed``:

1. build the reference module (torch default init: conv weights/biases ~ U(+-1/sqrt(fan_in)),
   PReLU 0.25, norm weight 1 / bias 0);
2. the split encoder: draw the float encoder ``W [N, C, L]`` (U(+-1/sqrt(C*L))); stage 0 is ``W``,
   stage j >= 1 of audio channel c is ``mean(W[:, c]) + randn * std(W[:, c])**j`` (FQSS's init);
3. optionally perturb norm affines and PReLU slopes by ``affine_noise * randn`` (so converter tests
   see non-trivial values; 0 reproduces a plain fresh FQSS model);
4. calibrate: observers on, ``calib_passes`` forwards on ``0.1 * N(0, 1)`` audio. The first call of
   each weight quantizer sets ``min/max_range = amin/amax(W)`` per channel; every activation
   quantizer runs ``r <- 0.9 r + 0.1 x.min() / x.max()`` from (-0.5, 0.5) and passes x through;
5. observers off. The state_dict is returned with a config dict in the JSON form of
   ``shared/fqss/convtasnet_random/config.json``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .config import MUSIC, FQSSConfig
from .convtasnet import build_reference
from .quant import ActivationFakeQuantize, WeightFakeQuantize, set_observer

__all__ = ["random_checkpoint", "calibrate", "as_config"]


def as_config(config_or_kwargs: Union[FQSSConfig, Mapping[str, Any], None] = None, **kwargs) -> FQSSConfig:
    """An ``FQSSConfig`` from a config, a JSON-form dict, or canonical keyword fields.

    Keyword fields need ``model`` (``ConvTasNetQ``/``ConvTasNetMusicQ``, default speech); the
    rest default to the shipped FQSS config (``FQSSConfig.create``).
    """
    if isinstance(config_or_kwargs, FQSSConfig):
        return config_or_kwargs.replace(**kwargs) if kwargs else config_or_kwargs
    d = dict(config_or_kwargs or {})
    if "model_cfg" in d or "architecture" in d:
        cfg = FQSSConfig.from_dict(d)
        return cfg.replace(**kwargs) if kwargs else cfg
    d.update(kwargs)
    return FQSSConfig.create(d.pop("model", "ConvTasNetQ"), **d)


def input_shape(cfg: FQSSConfig, n_samples: int) -> list:
    """``[1, T]`` for mono speech, ``[1, C, T]`` otherwise (the FQSS input layouts)."""
    if cfg.model == MUSIC or cfg.audio_channels > 1:
        return [1, cfg.audio_channels, n_samples]
    return [1, n_samples]


def output_shape(cfg: FQSSConfig, n_samples: int) -> list:
    """``[1, n_src, (C,) T']`` with ``T' = cfg.output_length(T)``."""
    chans = [cfg.audio_channels] if cfg.audio_channels > 1 else []
    return [1, cfg.n_src, *chans, cfg.output_length(n_samples)]


def _init_split_encoder(conv: nn.Conv1d, cfg: FQSSConfig) -> None:
    n, c, k = cfg.n_filters, cfg.audio_channels, cfg.kernel_size
    bound = 1.0 / (c * k) ** 0.5
    w = torch.empty(n, c, k).uniform_(-bound, bound)
    stages = [w]
    for j in range(1, cfg.n_splitter):
        mean = w.mean(dim=(0, 2), keepdim=True)
        std = w.std(dim=(0, 2), keepdim=True)
        stages.append(mean + torch.randn(n, c, k) * std**j)
    with torch.no_grad():
        conv.weight.copy_(torch.cat(stages, dim=1))


def _perturb(model: nn.Module, noise: float) -> None:
    if noise <= 0:
        return
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                m.weight.add_(noise * torch.randn_like(m.weight))
                m.bias.add_(noise * torch.randn_like(m.bias))
            elif isinstance(m, nn.PReLU):
                m.weight.add_(noise * torch.randn_like(m.weight))


def calibrate(model: nn.Module, cfg: FQSSConfig, passes: int = 5, n_samples: Optional[int] = None) -> None:
    """Observer calibration on ``0.1 * N(0, 1)`` audio (uses the global torch RNG), then observers off."""
    n_samples = n_samples or cfg.sample_rate
    set_observer(model, True)
    with torch.no_grad():
        for _ in range(passes):
            model(0.1 * torch.randn(input_shape(cfg, n_samples)))
    set_observer(model, False)


def random_checkpoint(config_or_kwargs: Union[FQSSConfig, Mapping[str, Any], None] = None, seed: int = 0, *,
                      calib_passes: int = 5, calib_samples: Optional[int] = None,
                      affine_noise: float = 0.1, **kwargs) -> tuple[dict, dict]:
    """Random, calibrated FQSS checkpoint: ``(state_dict, config_dict)``.

    ``config_or_kwargs``: an ``FQSSConfig``, a JSON-form config dict, or canonical fields (extra
    ``**kwargs`` are merged in). ``calib_samples`` defaults to one second (``sample_rate``).
    Deterministic for a given seed; the global torch RNG state is left untouched.
    """
    cfg = as_config(config_or_kwargs, **kwargs)
    n_samples = calib_samples or cfg.sample_rate
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_reference(cfg)
        encoder = model.encoder if cfg.model != MUSIC else model.encoder[0]
        _init_split_encoder(encoder.conv1d, cfg)
        _perturb(model, affine_noise)
        calibrate(model, cfg, calib_passes, n_samples)
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = cfg.to_json_dict()
    config["fqss_config_file"] = "random"
    config.update(
        input_shape=input_shape(cfg, n_samples),
        output_shape=output_shape(cfg, n_samples),
        observer_forward_passes=calib_passes,
        seed=seed,
        torch_version=torch.__version__,
        n_parameters=sum(v.numel() for v in state_dict.values()),
        n_state_dict_keys=len(state_dict),
        n_activation_quantizers=sum(isinstance(m, ActivationFakeQuantize) for m in model.modules()),
        n_weight_quantizers=sum(isinstance(m, WeightFakeQuantize) for m in model.modules()),
        state_dict_keys={k: list(v.shape) for k, v in state_dict.items()},
    )
    return state_dict, config
