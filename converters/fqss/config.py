"""Hyperparameters of FQSS ConvTasNet checkpoints: read a config, infer what the shapes reveal.

No torch here: shapes are plain ``{key: tuple of ints}`` mappings.

Sources of each value, highest priority first:

1. the config file (FQSS ``model_cfg`` + ``architecture``, as in ``shared/fqss/*/config.json``,
   or an FQSS / asteroid YAML);
2. the state_dict shapes (``infer_from_shapes``): N, L, B, H, skip channels, P, n_src, the number
   of TCN blocks (X*R; X and R separately for the music model), audio channels, n_splitter
   (= encoder in-channels / audio channels), n_combiner (2 iff ``decoder.residual_error_block.*``
   exists), out_quant / in_quant (quantizer keys present), conv biases;
3. the FQSS class defaults (``SPEECH_DEFAULTS``, ``MUSIC_DEFAULTS``).

Shapes cannot reveal stride, the X/R split of the speech TCN (its dilation pattern 2^(i mod X)),
mask_act, sample rate, the splitter ``normalize`` flag and the norm eps: they come from the config
or the class defaults. Where a config value contradicts the shapes, ``resolve_config`` keeps the
config value and reports the conflict (the checkpoint loader turns it into an error).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

__all__ = [
    "SPEECH", "MUSIC", "ConfigError", "FQSSConfig", "SPEECH_DEFAULTS", "MUSIC_DEFAULTS", "SHIPPED_DEFAULTS",
    "read_config", "infer_from_shapes", "resolve_config",
]

SPEECH = "ConvTasNetQ"
MUSIC = "ConvTasNetMusicQ"
MODEL_NAMES = {"ConvTasNet": SPEECH, "ConvTasNetQ": SPEECH,
               "ConvTasNetMusic": MUSIC, "ConvTasNetMusicQ": MUSIC}
MODEL_CFG_NAME = {SPEECH: "ConvTasNet", MUSIC: "ConvTasNetMusic"}
MODULE_NAME = {SPEECH: "quantization.qat.models.convtasnetq",
               MUSIC: "quantization.qat.models.convtasnetq_music"}
MUSDB_SOURCES = ("drums", "bass", "other", "vocals")


class ConfigError(ValueError):
    """A config that cannot be read or describes an unsupported FQSS model."""


@dataclass(frozen=True)
class FQSSConfig:
    """All hyperparameters of an FQSS ConvTasNet(Music)Q model (canonical names).

    n_filters N, kernel_size L and stride of the encoder/decoder; bn_chan B, hid_chan H, skip_chan
    (speech skip path; 0 for music), conv_kernel P (depthwise), n_blocks X (dilations 2^0..2^(X-1)),
    n_repeats R, n_src sources, audio_channels C, n_splitter / n_combiner (SPEC §2.5/§2.6),
    mask_act, sample_rate, normalize (splitter max-normalisation), bias (convs carry biases),
    bit widths and in/out quantizer flags, gn_eps / ln_eps.
    """

    model: str
    n_filters: int
    kernel_size: int
    stride: int
    bn_chan: int
    hid_chan: int
    skip_chan: int
    conv_kernel: int
    n_blocks: int
    n_repeats: int
    n_src: int
    audio_channels: int
    n_splitter: int
    n_combiner: int
    mask_act: str
    sample_rate: int
    normalize: bool
    bias: bool
    sources: tuple = ()
    weight_n_bits: int = 8
    act_n_bits: int = 8
    in_act_n_bits: int = 8
    out_act_n_bits: int = 8
    in_quant: bool = False
    out_quant: bool = True
    gn_eps: float = 1e-8
    ln_eps: float = 1e-8

    def __post_init__(self):
        if self.model not in (SPEECH, MUSIC):
            raise ConfigError(f"model must be {SPEECH!r} or {MUSIC!r}, got {self.model!r}")
        for name in ("n_filters", "kernel_size", "stride", "bn_chan", "hid_chan", "conv_kernel",
                     "n_blocks", "n_repeats", "n_src", "audio_channels", "n_splitter", "n_combiner"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.model == SPEECH and self.skip_chan < 1:
            raise ConfigError(f"skip_chan must be a positive integer, got {self.skip_chan!r}")
        if self.conv_kernel % 2 == 0:
            raise ConfigError(f"conv_kernel must be odd (same-length depthwise conv), got {self.conv_kernel}")
        if self.n_combiner > 2:
            raise ConfigError("n_combiner > 2 is broken in FQSS (SPEC §2.6) and not supported")
        if self.mask_act not in ("relu", "sigmoid", "tanh", "linear"):
            raise ConfigError(f"unsupported mask_act {self.mask_act!r}")
        if self.sources and len(self.sources) != self.n_src:
            raise ConfigError(f"{len(self.sources)} source names for n_src={self.n_src}")

    # ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, model: str, **overrides) -> "FQSSConfig":
        """Defaults of the shipped FQSS config of ``model`` (``SHIPPED_DEFAULTS``) + overrides.

        ``model`` is ``ConvTasNetQ``/``ConvTasNetMusicQ`` or the FQSS name (``ConvTasNet``...).
        """
        model = _model_name(model)
        values = {**_defaults(model), **SHIPPED_DEFAULTS[model]}
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        values.update(overrides)
        _complete(model, values)
        values["sources"] = tuple(values.get("sources") or ())
        return cls(model=model, **values)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FQSSConfig":
        """From the JSON form (``model_cfg``/``architecture``) or from canonical keyword fields."""
        if "model_cfg" in d or "architecture" in d:
            return resolve_config(d)[0]
        d = dict(d)
        return cls.create(d.pop("model"), **d)

    def replace(self, **changes) -> "FQSSConfig":
        return replace(self, **changes)

    @property
    def n_layers(self) -> int:
        """Number of TCN blocks, X*R."""
        return self.n_blocks * self.n_repeats

    def output_length(self, n_samples: int) -> int:
        """``((T - L)//stride)*stride + L``: the model's output length for input length T."""
        return ((n_samples - self.kernel_size) // self.stride) * self.stride + self.kernel_size

    def to_json_dict(self) -> dict:
        """The JSON form of ``shared/fqss/*/config.json`` (without the io and key lists)."""
        q = {"qat": True, "gradient_based": True, "weight_quant": True,
             "weight_n_bits": self.weight_n_bits, "act_quant": True, "act_n_bits": self.act_n_bits,
             "in_quant": self.in_quant, "in_act_n_bits": self.in_act_n_bits,
             "out_quant": self.out_quant, "out_act_n_bits": self.out_act_n_bits,
             "n_splitter": self.n_splitter, "n_combiner": self.n_combiner, "observer": True}
        model_cfg = {"name": MODEL_CFG_NAME[self.model], "model_path": None}
        arch = {"class": self.model, "module": MODULE_NAME[self.model]}
        if self.model == SPEECH:
            model_cfg.update(n_src=self.n_src, kernel_size=self.kernel_size, stride=self.stride)
            arch.update(n_filters=self.n_filters, mask_kernel_size=self.conv_kernel,
                        bn_chan=self.bn_chan, hid_chan=self.hid_chan)
        else:
            arch.update(sources=list(self.sources), audio_channels=self.audio_channels,
                        n_filters=self.n_filters, kernel=self.kernel_size, stride=self.stride,
                        bn_chan=self.bn_chan, hid_chan=self.hid_chan, conv_kernel=self.conv_kernel)
        arch.update(n_blocks=self.n_blocks, n_repeats=self.n_repeats, mask_act=self.mask_act,
                    sample_rate=self.sample_rate)
        # values outside FQSS's own constructor arguments, written only when not the default
        defaults = {**{f.name: f.default for f in fields(FQSSConfig)}, **_defaults(self.model),
                    "bn_chan": self.bn_chan}
        _complete(self.model, defaults)
        for name in ("skip_chan", "audio_channels", "normalize", "bias", "gn_eps", "ln_eps"):
            if name not in arch and getattr(self, name) != defaults.get(name):
                arch[name] = getattr(self, name)
        if self.model == SPEECH and self.sources:
            arch["sources"] = list(self.sources)
        model_cfg["quantization"] = q
        return {"fqss_config_file": None, "model_cfg": model_cfg, "architecture": arch}


SPEECH_DEFAULTS = dict(
    n_filters=512, kernel_size=32, stride=16, bn_chan=128, hid_chan=512, skip_chan=None,
    conv_kernel=3, n_blocks=8, n_repeats=3, n_src=2, audio_channels=1, n_splitter=1,
    n_combiner=1, mask_act="relu", sample_rate=8000, normalize=True, bias=True, sources=(),
    out_quant=False,
)
MUSIC_DEFAULTS = dict(
    n_filters=256, kernel_size=20, stride=10, bn_chan=256, hid_chan=512, skip_chan=0,
    conv_kernel=3, n_blocks=10, n_repeats=4, n_src=4, audio_channels=2, n_splitter=1,
    n_combiner=1, mask_act="relu", sample_rate=44100, normalize=False, bias=False,
    sources=MUSDB_SOURCES, out_quant=False,
)
"""FQSS class defaults; n_splitter/n_combiner/out_quant are ``load_model.quantize_model``'s.
Used for values that neither the config nor the shapes give."""

SHIPPED_DEFAULTS = {
    SPEECH: dict(kernel_size=16, stride=8, n_splitter=2, n_combiner=2, out_quant=True),
    MUSIC: dict(n_splitter=2, n_combiner=2, out_quant=True),
}
"""What FQSS's shipped yaml configs change; used by ``FQSSConfig.create`` (fresh configs)."""


def _defaults(model: str) -> dict:
    return SPEECH_DEFAULTS if model == SPEECH else MUSIC_DEFAULTS


def _complete(model: str, values: dict) -> None:
    """Fill values derived from others: speech skip_chan = B; source names matching n_src."""
    if model == SPEECH and not values.get("skip_chan"):
        values["skip_chan"] = values["bn_chan"]
    srcs = tuple(values.get("sources") or ())
    if model == MUSIC and len(srcs) != values["n_src"]:
        values["sources"] = tuple(f"source{i}" for i in range(values["n_src"]))


def _model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise ConfigError(f"unsupported FQSS model {name!r}; supported: {sorted(MODEL_NAMES)}")
    return MODEL_NAMES[name]


# --------------------------------------------------------------------------------------------
# Reading config files


def read_config(path) -> dict:
    """Read a ``.json`` config, or a ``.yaml``/``.yml`` one (needs PyYAML, imported lazily)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
    else:
        try:
            import yaml
        except ImportError as e:
            raise ConfigError(f"reading the YAML config {path} needs PyYAML (pip install pyyaml); "
                              "or pass a JSON config") from e
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


# field -> accepted spellings (FQSS speech, FQSS music / demucs, asteroid)
ALIASES = {
    "n_filters": ("n_filters", "N"),
    "kernel_size": ("kernel_size", "kernel", "L"),
    "stride": ("stride",),
    "bn_chan": ("bn_chan", "B"),
    "hid_chan": ("hid_chan", "H"),
    "skip_chan": ("skip_chan",),
    "conv_kernel": ("conv_kernel", "mask_kernel_size", "conv_kernel_size", "P"),
    "n_blocks": ("n_blocks", "X"),
    "n_repeats": ("n_repeats", "R"),
    "n_src": ("n_src", "n_spks"),
    "audio_channels": ("audio_channels",),
    "mask_act": ("mask_act", "mask_nonlinear"),
    "sample_rate": ("sample_rate", "samplerate"),
    "normalize": ("normalize",),
    "bias": ("bias",),
    "sources": ("sources",),
    "gn_eps": ("gn_eps",),
    "ln_eps": ("ln_eps",),
}
QUANT_FIELDS = ("n_splitter", "n_combiner", "weight_n_bits", "act_n_bits", "in_act_n_bits",
                "out_act_n_bits", "in_quant", "out_quant")


def _sections(raw: Mapping) -> tuple[dict, dict, dict]:
    """(model_cfg, architecture, dataset_cfg); a file without them is a flat model_cfg."""
    if "model_cfg" not in raw and "architecture" not in raw:
        return dict(raw), {}, {}
    return dict(raw.get("model_cfg") or {}), dict(raw.get("architecture") or {}), dict(raw.get("dataset_cfg") or {})


def _declared(raw: Mapping) -> tuple[Optional[str], dict]:
    """The model class and the canonical fields a raw config states explicitly."""
    model_cfg, arch, data = _sections(raw)
    name = arch.get("class") or model_cfg.get("name")
    model = MODEL_NAMES.get(name) if isinstance(name, str) else None
    if name is not None and model is None and (arch.get("class") or "model_cfg" in raw):
        raise ConfigError(f"unsupported FQSS model {name!r}; supported: {sorted(MODEL_NAMES)}")
    out = {}
    for fname, keys in ALIASES.items():
        for section in (arch, model_cfg, data if fname in ("sample_rate", "sources") else {}):
            hit = next((k for k in keys if k in section), None)
            if hit is not None:
                out[fname] = section[hit]
                break
    if "sources" in out:
        out["sources"] = tuple(out["sources"])
        out.setdefault("n_src", len(out["sources"]))
    q = dict(model_cfg.get("quantization") or raw.get("quantization") or {})
    if q:
        for flag in ("qat", "weight_quant", "act_quant"):
            if not q.get(flag, True):
                raise ConfigError(f"quantization.{flag} = False: only FQSS QAT models are supported")
        if q.get("inout_nl_quant"):
            raise ConfigError("quantization.inout_nl_quant (mu-law in/out quantizers) is not supported")
    out.update({k: q[k] for k in QUANT_FIELDS if k in q})
    return model, out


# --------------------------------------------------------------------------------------------
# Shape inference


def _indices(shapes: Mapping, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in shapes for m in [pat.match(k)] if m})


def _guess_model(shapes: Mapping) -> Optional[str]:
    if any(k.startswith("masker.") for k in shapes):
        return SPEECH
    if any(k.startswith("separator.network.") for k in shapes):
        return MUSIC
    return None


def infer_from_shapes(shapes: Mapping[str, Sequence[int]], model: Optional[str] = None) -> tuple[Optional[str], dict]:
    """Hyperparameters revealed by a state_dict's ``{key: shape}``; missing keys are skipped.

    Returns ``(model, values)``; values holds only what could be read (``n_layers`` = X*R for
    speech, ``n_blocks``/``n_repeats`` for music).
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}
    model = model or _guess_model(shapes)
    if not shapes:
        return model, {}
    v: dict[str, Any] = {}
    get = shapes.get
    if model == SPEECH:
        enc, dec = get("encoder.conv1d.weight"), get("decoder.convTr1d.weight")
        pre, m = "encoder.", "masker."
        if dec and len(dec) == 3:
            v["audio_channels"] = dec[1]
        if s := get(m + "bottleneck.1.conv1d.weight"):
            v["bn_chan"] = s[0]
        if s := get(m + "TCN.0.shared_block.0.conv1d.weight"):
            v["hid_chan"] = s[0]
        if (s := get(m + "TCN.0.shared_block.3.conv1d.weight")) and len(s) == 3:
            v["conv_kernel"] = s[2]
        if s := get(m + "TCN.0.skip_conv.conv1d.weight"):
            v["skip_chan"] = s[0]
        if blocks := _indices(shapes, m + "TCN."):
            v["n_layers"] = blocks[-1] + 1
        mask = get(m + "mask_net.1.conv1d.weight")
        v["bias"] = any(k.startswith(m) and k.endswith("conv1d.bias") for k in shapes)
    elif model == MUSIC:
        enc, dec = get("encoder.0.conv1d.weight"), get("decoder.linear.weight")
        pre, m = "encoder.0.", "separator.network."
        if s := get(m + "1.conv1d.weight"):
            v["bn_chan"] = s[0]
        if s := get(m + "2.0.0.net.0.conv1d.weight"):
            v["hid_chan"] = s[0]
        if (s := get(m + "2.0.0.net.3.net.0.conv1d.weight")) and len(s) == 3:
            v["conv_kernel"] = s[2]
        if repeats := _indices(shapes, m + "2."):
            v["n_repeats"] = repeats[-1] + 1
        if blocks := _indices(shapes, m + "2.0."):
            v["n_blocks"] = blocks[-1] + 1
        mask = get(m + "3.conv1d.weight")
        v["bias"] = any(k.startswith(m) and k.endswith("conv1d.bias") for k in shapes)
    else:
        return None, {}
    if enc and len(enc) == 3:
        v["n_filters"], v["kernel_size"] = enc[0], enc[2]
    elif model == SPEECH and dec and len(dec) == 3:
        v["n_filters"], v["kernel_size"] = dec[0], dec[2]
    elif model == MUSIC and dec and len(dec) == 2:
        v["n_filters"] = dec[1]
    if model == MUSIC and dec and len(dec) == 2 and v.get("kernel_size") and dec[0] % v["kernel_size"] == 0:
        v["audio_channels"] = dec[0] // v["kernel_size"]
    if enc and v.get("audio_channels") and enc[1] % v["audio_channels"] == 0:
        v["n_splitter"] = enc[1] // v["audio_channels"]
    if mask and v.get("n_filters") and mask[0] % v["n_filters"] == 0:
        v["n_src"] = mask[0] // v["n_filters"]
    v["n_combiner"] = 2 if any(k.startswith("decoder.residual_error_block.") for k in shapes) else 1
    v["out_quant"] = "decoder.activation_fake_quantize.min_range" in shapes
    v["in_quant"] = any(k.startswith(pre + "in_quantizer.") for k in shapes)
    return model, v


# --------------------------------------------------------------------------------------------
# Resolution: config > shapes > class defaults


def resolve_config(raw: Optional[Mapping] = None, shapes: Optional[Mapping[str, Sequence[int]]] = None,
                   model: Optional[str] = None) -> tuple[FQSSConfig, list[str]]:
    """Combine a raw config (may be None/empty) with state_dict shapes (may be None).

    Returns the config and a list of conflicts (config value vs what the shapes show), each a
    readable sentence. The config value wins, so the checkpoint validation then names the keys.
    """
    declared_model, declared = _declared(raw or {})
    model = _model_name(model) if model else declared_model
    inferred_model, inferred = infer_from_shapes(shapes or {}, model)
    model = model or inferred_model
    if model is None:
        raise ConfigError("cannot tell the model class: give architecture.class / model_cfg.name "
                          f"({sorted(MODEL_NAMES)}) or a state_dict")
    conflicts = []
    n_layers = inferred.pop("n_layers", None)
    for k, val in inferred.items():
        if k in declared and declared[k] != val:
            conflicts.append(f"{k}: the config says {declared[k]!r} but the checkpoint shapes say {val!r}")
    values = {**_defaults(model), **inferred, **declared}
    if model == SPEECH and n_layers is not None:
        X, R = declared.get("n_blocks"), declared.get("n_repeats")
        if X is None and R is not None and n_layers % R == 0:
            X = n_layers // R
        X = X or values["n_blocks"]
        if R is None and n_layers % X == 0:
            R = n_layers // X
        R = R or values["n_repeats"]
        values["n_blocks"], values["n_repeats"] = X, R
        if X * R != n_layers:
            conflicts.append(f"n_blocks*n_repeats: the config gives {X}*{R} = {X * R} TCN blocks but the "
                             f"checkpoint has {n_layers} (set n_blocks and n_repeats in the config)")
    if "sources" in declared and "n_src" in inferred and len(declared["sources"]) != inferred["n_src"]:
        conflicts.append(f"sources: the config names {len(declared['sources'])} sources but the "
                         f"checkpoint shapes say n_src={inferred['n_src']}")
        values["sources"] = ()
    _complete(model, values)
    values["sources"] = tuple(values.get("sources") or ())
    known = {f.name for f in fields(FQSSConfig)}
    return FQSSConfig(model=model, **{k: v for k, v in values.items() if k in known}), conflicts
