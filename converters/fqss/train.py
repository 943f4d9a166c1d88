"""Training FQSS ConvTasNetQ models: float pretraining, vanilla QAT, FQSS QAT with the SAKD loss.

The modules are the reference models of ``convtasnet.py`` (FQSS's exact state_dict layout), made
trainable here without changing their forward values:

* ``make_trainable(model, quantize)`` swaps every fake quantizer to a subclass whose rounding is a
  straight-through estimator (FQSS ``round_ste``: forward ``torch.round``, gradient 1; the clip is a
  plain ``torch.clip``, so values outside the range get no gradient but the ranges do, as in FQSS
  ``linear_quantize``). ``quantize=False`` makes every quantizer the identity (the float model).
  The forward values in quantized mode are bit-identical to the reference quantizers.
* Float pretraining uses the FQSS float model: the same config with ``n_splitter = n_combiner = 1``
  (a plain ConvTasNet on the raw waveform, no splitter normalisation, no residual block).
* ``quantize_from_float`` follows FQSS ``quantize_model``: the encoder is rebuilt with
  ``n_splitter * C`` input channels (stage 0 = the float weights; stage j >= 1 = FQSS's
  ``mean(W[:, c]) + randn * std(W[:, c])**j`` with ``split_init="fqss"``, or by default ``W * 2^-8j``,
  which keeps the float model's quality at the start of QAT), the residual quantization block gets
  torch's default init, then the observers calibrate on ``calib_batches`` real training batches (the weight observer
  takes amin/amax on its first call, the activation EMA runs for up to 50 calls) and are switched off.

Losses (SPEC §4, asteroid environment, all with zero-mean SI-SDR and EPS = 1e-8):

* ``pit_si_sdr_loss``: ``mean_b min_pi mean_s -SI-SDR_dB(est_s, ref_pi(s))`` (PIT over sources);
* ``sakd_loss``: teacher = float model, student = QAT model, ``w_b = 10^((L_f,b - L_q,b)/10)``
  from the current batch (no grad), ``KD = mean_b max_pi mean_s w_b*SISDR_lin(q_s, f_pi(s))``,
  ``TASK = mean_b max_pi mean_s SISDR_lin(q_s, y_pi(s))``,
  ``loss = -10 log10((1-lambda) TASK + lambda KD + 1e-8)`` with lambda = 0.1.

``Trainer`` runs one phase (float / vanilla / fqss) with Adam, gradient clipping (5, as the FQSS
asteroid runs), periodic validation and resumable checkpoints; ``benchmarks/train_small.py`` chains
the phases.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .config import FQSSConfig, SPEECH
from .convtasnet import build_reference
from .fresh import input_shape, output_shape
from .quant import ActivationFakeQuantize, WeightFakeQuantize, set_observer

__all__ = [
    "TrainableWeightFakeQuantize", "TrainableActivationFakeQuantize", "make_trainable",
    "float_config", "build_float_model", "quantize_from_float", "calibrate_on",
    "pairwise_si_sdr", "pit_si_sdr", "pit_si_sdr_loss", "sakd_loss", "si_sdr_improvement",
    "evaluate", "TrainConfig", "Trainer", "save_fqss_checkpoint",
]

EPS = 1e-8


# --------------------------------------------------------------------------------------------
# Straight-through fake quantizers


class _RoundSTE(torch.autograd.Function):
    """``torch.round`` forward, identity gradient (FQSS ``round_ste``, without its float detour)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


round_ste = _RoundSTE.apply


class TrainableWeightFakeQuantize(WeightFakeQuantize):
    """``WeightFakeQuantize`` with an STE round (learned ranges) and an on/off switch ``quantize``."""

    quantize = True

    def forward(self, w):
        if not self.quantize:
            return w
        if self.observer:
            return super().forward(w)
        amax = torch.max(torch.abs(self.min_range), torch.abs(self.max_range))
        d = 2 * amax / (2**self.n_bits - 1)
        return d * torch.clamp(round_ste(w / d), -(2 ** (self.n_bits - 1)), 2 ** (self.n_bits - 1) - 1)


class TrainableActivationFakeQuantize(ActivationFakeQuantize):
    """``ActivationFakeQuantize`` with an STE round (learned ranges) and an on/off switch ``quantize``."""

    quantize = True

    def forward(self, x):
        if not self.quantize:
            return x
        if self.observer and self.n_iter < self.max_observations:
            return super().forward(x)
        s = (self.max_range - self.min_range) / (2**self.n_bits - 1)
        return s * torch.clamp(round_ste((x - self.min_range) / s), 0, 2**self.n_bits - 1) + self.min_range


def make_trainable(model: nn.Module, quantize: bool = True) -> nn.Module:
    """Swap the quantizers of ``model`` (in place) to the trainable ones; returns ``model``."""
    for m in model.modules():
        if isinstance(m, WeightFakeQuantize):
            m.__class__ = TrainableWeightFakeQuantize
            m.quantize = quantize
        elif isinstance(m, ActivationFakeQuantize):
            m.__class__ = TrainableActivationFakeQuantize
            m.quantize = quantize
    return model


# --------------------------------------------------------------------------------------------
# Float model, quantization, calibration


def float_config(cfg: FQSSConfig) -> FQSSConfig:
    """The FQSS float model's config: no splitter, no combiner (a plain ConvTasNet)."""
    return cfg.replace(n_splitter=1, n_combiner=1)


def build_float_model(cfg: FQSSConfig, seed: int = 0) -> nn.Module:
    """Float ConvTasNet (quantizers off) with torch's default init under ``seed``; train mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_reference(float_config(cfg))
    return make_trainable(model, quantize=False).train()


def calibrate_on(model: nn.Module, batches) -> None:
    """Observers on, one no-grad forward per batch (of real mixtures), observers off."""
    set_observer(model, True)
    with torch.no_grad():
        for x in batches:
            model(x)
    set_observer(model, False)


def quantize_from_float(float_model: nn.Module, cfg: FQSSConfig, calib_batches=(), seed: int = 0,
                        split_init: str = "scaled") -> nn.Module:
    """FQSS ``quantize_model``: the QAT model initialised from ``float_model`` and calibrated.

    ``split_init`` sets the encoder weights of splitter stages j >= 1 (stage 0 is the float
    encoder): ``"fqss"`` is FQSS's ``mean(W) + randn*std(W)**j``; ``"scaled"`` (default) is
    ``W * 2^(-8j)``, so that before quantization the split encoder reproduces the float encoder on
    the 16-bit input (up to a tiny constant from the +128 offset of the low byte). Measured on a
    partly trained model: the FQSS init drops SI-SDRi from +0.6 dB (float) to -13.4 dB at the start
    of QAT (the low byte is uniform noise in [-1, 1) weighted like the signal); ``"scaled"`` keeps
    +0.6 dB, so a short QAT starts from the float model's quality.
    """
    if split_init not in ("fqss", "scaled"):
        raise ValueError(f"split_init must be 'fqss' or 'scaled', got {split_init!r}")
    if cfg.model != SPEECH:
        raise NotImplementedError("training is implemented for the speech ConvTasNetQ only")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_trainable(build_reference(cfg), quantize=True)
        fsd = float_model.state_dict()
        sd = model.state_dict()
        for k, v in fsd.items():
            if k in sd and sd[k].shape == v.shape:
                sd[k] = v.clone()
        w = fsd["encoder.conv1d.weight"]  # [N, C, L]
        stages = [w]
        for j in range(1, cfg.n_splitter):
            if split_init == "fqss":
                mean = w.mean(dim=(0, 2), keepdim=True)
                std = w.std(dim=(0, 2), keepdim=True)
                stages.append(mean + torch.randn_like(w) * std**j)
            else:
                stages.append(w * 2.0 ** (-8 * j))
        sd["encoder.conv1d.weight"] = torch.cat(stages, dim=1)
        model.load_state_dict(sd)
    calibrate_on(model, calib_batches)
    return model.train()


# --------------------------------------------------------------------------------------------
# SI-SDR, PIT, losses


def pairwise_si_sdr(est: torch.Tensor, ref: torch.Tensor, linear: bool = False) -> torch.Tensor:
    """``[B, S_est, T]`` x ``[B, S_ref, T]`` -> ``[B, S_est, S_ref]`` zero-mean SI-SDR (dB or linear)."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    dot = torch.einsum("bit,bjt->bij", est, ref)
    ref_e = (ref**2).sum(-1).unsqueeze(1) + EPS            # [B, 1, S_ref]
    proj = (dot / ref_e).unsqueeze(-1) * ref.unsqueeze(1)  # [B, S_est, S_ref, T]
    noise = est.unsqueeze(2) - proj
    ratio = (proj**2).sum(-1) / ((noise**2).sum(-1) + EPS)
    return ratio if linear else 10 * torch.log10(ratio + EPS)


def _best_perm(pw: torch.Tensor, maximize: bool = True) -> torch.Tensor:
    """``[B, S, S]`` pairwise scores -> ``[B]`` best (max or min) over permutations of mean_s pw[s, pi(s)]."""
    n = pw.shape[-1]
    scores = torch.stack([pw[:, torch.arange(n), torch.tensor(p)].mean(-1)
                          for p in itertools.permutations(range(n))], dim=-1)
    return scores.max(-1).values if maximize else scores.min(-1).values


def pit_si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-sample PIT SI-SDR in dB ``[B]`` (mean over sources of the best permutation)."""
    return _best_perm(pairwise_si_sdr(est, ref))


def pit_si_sdr_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``mean_b min_pi mean_s -SI-SDR_dB`` (asteroid ``PITLossWrapper(pairwise_neg_sisdr)``)."""
    return -pit_si_sdr(est, ref).mean()


def sakd_loss(est_q: torch.Tensor, est_f: torch.Tensor, ref: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """FQSS SAKD loss (SPEC §4, asteroid env): student ``est_q``, float teacher ``est_f`` (no grad)."""
    est_f = est_f.detach()
    with torch.no_grad():
        l_f = -pit_si_sdr(est_f, ref)
        l_q = -pit_si_sdr(est_q, ref)
        w = 10 ** ((l_f - l_q) / 10)                        # [B]
    kd = (_best_perm(pairwise_si_sdr(est_q, est_f, linear=True)) * w).mean()
    task = _best_perm(pairwise_si_sdr(est_q, ref, linear=True)).mean()
    return -10 * torch.log10((1 - lam) * task + lam * kd + EPS)


def si_sdr_improvement(est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Per-sample PIT SI-SDRi ``[B]`` in dB: PIT SI-SDR(est) - mean_s SI-SDR(mix, ref_s)."""
    base = pairwise_si_sdr(mix.unsqueeze(1).expand_as(ref), ref).diagonal(dim1=1, dim2=2).mean(-1)
    return pit_si_sdr(est, ref) - base


def _align(est: torch.Tensor, ref: torch.Tensor):
    """Crop to the common length (the model output is ``((T-L)//s)*s + L`` samples)."""
    n = min(est.shape[-1], ref.shape[-1])
    return est[..., :n], ref[..., :n]


@torch.no_grad()
def evaluate(model: nn.Module, mix: np.ndarray, src: np.ndarray, batch_size: int = 8) -> dict:
    """SI-SDR / SI-SDRi (dB) of ``model`` on fixed mixtures ``mix [N, T]``, ``src [N, S, T]``."""
    was_training = model.training
    model.eval()
    sdr, sdri = [], []
    for i in range(0, len(mix), batch_size):
        x = torch.from_numpy(mix[i:i + batch_size])
        y = torch.from_numpy(src[i:i + batch_size])
        out = []
        for xb in x:  # one mixture per forward: the splitter normalises by the peak of the whole batch
            out.append(model(xb[None]))
        est, yy = _align(torch.cat(out), y)
        xx = x[..., :est.shape[-1]]
        sdr.append(pit_si_sdr(est, yy))
        sdri.append(si_sdr_improvement(est, yy, xx))
    model.train(was_training)
    sdr, sdri = torch.cat(sdr), torch.cat(sdri)
    return {"si_sdr": float(sdr.mean()), "si_sdri": float(sdri.mean()),
            "si_sdri_median": float(sdri.median()), "n": int(len(sdri))}


# --------------------------------------------------------------------------------------------
# Checkpoints in the FQSS layout


def save_fqss_checkpoint(model: nn.Module, cfg: FQSSConfig, path, extra: Optional[dict] = None,
                         n_samples: Optional[int] = None) -> None:
    """Write ``path`` (plain state_dict, FQSS keys) and ``config.json`` beside it (shared JSON form)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)
    n_samples = n_samples or cfg.sample_rate
    config = cfg.to_json_dict()
    config["fqss_config_file"] = "intsim benchmarks/train_small.py"
    config.update(
        input_shape=input_shape(cfg, n_samples), output_shape=output_shape(cfg, n_samples),
        torch_version=torch.__version__,
        n_parameters=sum(v.numel() for v in sd.values()), n_state_dict_keys=len(sd),
        n_activation_quantizers=sum(isinstance(m, ActivationFakeQuantize) for m in model.modules()),
        n_weight_quantizers=sum(isinstance(m, WeightFakeQuantize) for m in model.modules()),
        **(extra or {}),
        state_dict_keys={k: list(v.shape) for k, v in sd.items()},
    )
    (path.parent / "config.json").write_text(json.dumps(config, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# Training loop


@dataclass
class TrainConfig:
    """One phase's optimisation settings."""

    phase: str = "float"          # float | vanilla | fqss
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-3
    lr_min_factor: float = 0.05   # cosine decay to lr * this factor over ``steps`` (after warmup)
    warmup: int = 100
    clip: float = 5.0
    kd_lambda: float = 0.1
    eval_every: int = 250
    ckpt_every: int = 250
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.lr * (self.lr_min_factor + (1 - self.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * t)))


class Trainer:
    """Runs one phase on batches from ``next_batch(rng) -> (mix [B,T], src [B,S,T])`` (numpy).

    ``state()`` / ``load_state()`` hold everything needed to resume bit-for-bit on CPU: model,
    optimizer, step, numpy and torch RNG states, history. ``teacher`` (fqss phase) is frozen.
    """

    def __init__(self, model: nn.Module, tc: TrainConfig, next_batch: Callable, teacher: Optional[nn.Module] = None):
        if tc.phase not in ("float", "vanilla", "fqss"):
            raise ValueError(f"unknown phase {tc.phase!r}")
        if tc.phase == "fqss" and teacher is None:
            raise ValueError("the fqss phase needs the float teacher")
        self.model, self.tc, self.next_batch, self.teacher = model, tc, next_batch, teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr)
        self.step = 0
        self.rng = np.random.default_rng(tc.seed)
        self.history: list[dict] = []

    def loss(self, mix: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        est, ref = _align(self.model(mix), src)
        if self.tc.phase == "fqss":
            with torch.no_grad():
                est_f, _ = _align(self.teacher(mix), src)
            return sakd_loss(est, est_f[..., :est.shape[-1]], ref, self.tc.kd_lambda)
        return pit_si_sdr_loss(est, ref)

    def train_step(self) -> float:
        mix, src = self.next_batch(self.rng)
        mix, src = torch.from_numpy(mix), torch.from_numpy(src)
        for g in self.opt.param_groups:
            g["lr"] = self.tc.lr_at(self.step)
        self.model.train()
        loss = self.loss(mix, src)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tc.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.clip)
        self.opt.step()
        self._fix_ranges()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def _fix_ranges(self):
        """Keep ``max_range >= min_range`` in activation quantizers (FQSS asserts it)."""
        for m in self.model.modules():
            if isinstance(m, ActivationFakeQuantize) and bool(m.max_range < m.min_range):
                mid = 0.5 * (m.max_range + m.min_range)
                m.min_range.copy_(mid - 1e-4)
                m.max_range.copy_(mid + 1e-4)

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "history": self.history, "train_config": asdict(self.tc)}

    def load_state(self, st: dict) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.step = st["step"]
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        self.history = list(st["history"])

    def run(self, on_step: Optional[Callable] = None, on_eval: Optional[Callable] = None,
            on_ckpt: Optional[Callable] = None) -> None:
        """Train until ``tc.steps``; callbacks get the trainer (and the loss for ``on_step``)."""
        while self.step < self.tc.steps:
            t = time.perf_counter()
            loss = self.train_step()
            if on_step:
                on_step(self, loss, time.perf_counter() - t)
            if on_eval and (self.step % self.tc.eval_every == 0 or self.step == self.tc.steps):
                on_eval(self)
            if on_ckpt and (self.step % self.tc.ckpt_every == 0 or self.step == self.tc.steps):
                on_ckpt(self)
