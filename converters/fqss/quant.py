"""FQSS fake quantizers, splitter and combiner, re-implemented from ``shared/fqss/SPEC.md``.

Everything here runs in float32 and reproduces the FQSS QAT forward op by op (SPEC §1.1, §1.2,
§2.5, §2.6). ``rnd`` is ``torch.round`` (round half to even).

Weights (SPEC §1.1), symmetric, one scale per output channel ``c``::

    A_c = max(|min_range_c|, |max_range_c|)
    d_c = 2*A_c / (2^n - 1)                       # 2A/255 for n = 8
    w_c = clip(rnd(W / d_c), -2^(n-1), 2^(n-1)-1) # int8 codes in [-128, 127]
    Wfq = d_c * w_c

Activations (SPEC §1.2), asymmetric, one scale per tensor, *float* zero point ``min_range``::

    s = (max_range - min_range) / (2^n - 1)
    a = clip(rnd((x - min_range) / s), 0, 2^n - 1)  # codes in [0, 255]
    y = s * a + min_range                          # ops: sub, div, round, clamp, mul, add

Observers (only used to calibrate fresh checkpoints; a loaded checkpoint never observes):
the weight observer sets ``min/max_range = amin/amax(W)`` over all dims but the channel axis on its
first call and returns W unquantized; the activation observer runs the EMA
``r <- 0.9*r + 0.1*x.min()/x.max()`` from (-0.5, 0.5) for up to 50 calls, returning x unquantized.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ActivationFakeQuantize",
    "WeightFakeQuantize",
    "activation_scale",
    "activation_codes",
    "fake_quantize_activation",
    "weight_scale",
    "weight_codes",
    "fake_quantize_weight",
    "preprocess",
    "postprocess",
    "overlap_and_add",
    "set_observer",
]


# --------------------------------------------------------------------------------------------
# Weights: symmetric per output channel


def weight_scale(min_range: torch.Tensor, max_range: torch.Tensor, n_bits: int = 8) -> torch.Tensor:
    """``d = 2*max(|min|, |max|) / (2^n - 1)`` in float32, shaped like the ranges."""
    amax = torch.max(torch.abs(min_range), torch.abs(max_range))
    return 2 * amax / (2**n_bits - 1)


def weight_codes(w: torch.Tensor, min_range: torch.Tensor, max_range: torch.Tensor,
                 n_bits: int = 8) -> torch.Tensor:
    """Integer weight codes ``clip(rnd(W/d), -2^(n-1), 2^(n-1)-1)`` (float32 tensor of integers)."""
    d = weight_scale(min_range, max_range, n_bits)
    return torch.clamp(torch.round(w / d), -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1)


def fake_quantize_weight(w: torch.Tensor, min_range: torch.Tensor, max_range: torch.Tensor,
                         n_bits: int = 8) -> torch.Tensor:
    """``Wfq = d * codes``: the fake-quantized weight FQSS convolves with."""
    d = weight_scale(min_range, max_range, n_bits)
    return d * torch.clamp(torch.round(w / d), -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1)


# --------------------------------------------------------------------------------------------
# Activations: asymmetric per tensor, float zero point


def activation_scale(min_range: torch.Tensor, max_range: torch.Tensor, n_bits: int = 8) -> torch.Tensor:
    """``s = (max - min) / (2^n - 1)`` in float32 (shape [1])."""
    return (max_range - min_range) / (2**n_bits - 1)


def activation_codes(x: torch.Tensor, min_range: torch.Tensor, max_range: torch.Tensor,
                     n_bits: int = 8) -> torch.Tensor:
    """Activation codes ``clip(rnd((x - min)/s), 0, 2^n - 1)`` (float32 tensor of integers)."""
    s = activation_scale(min_range, max_range, n_bits)
    return torch.clamp(torch.round((x - min_range) / s), 0, 2**n_bits - 1)


def fake_quantize_activation(x: torch.Tensor, min_range: torch.Tensor, max_range: torch.Tensor,
                             n_bits: int = 8) -> torch.Tensor:
    """``y = s*a + min`` with the op order sub, div, round, clamp, mul, add (all float32)."""
    s = activation_scale(min_range, max_range, n_bits)
    a = torch.clamp(torch.round((x - min_range) / s), 0, 2**n_bits - 1)
    return s * a + min_range


class WeightFakeQuantize(nn.Module):
    """Per-channel symmetric weight quantizer (FQSS ``GradientWeightFakeQuantize``).

    State: ``min_range``, ``max_range`` of shape ``weight_shape`` with every dim but ``axis`` set to
    1 (``[C_out,1,1]`` for Conv1d, ``[1,C_out,1]`` for ConvTranspose1d, ``[C_out,1]`` for Linear).
    ``observer`` (not saved) makes the next call record amin/amax of W and return W unquantized.
    """

    def __init__(self, weight_shape, axis: int = 0, n_bits: int = 8):
        super().__init__()
        shape = [1] * len(weight_shape)
        shape[axis] = weight_shape[axis]
        self.axis = axis
        self.n_bits = n_bits
        self.observer = False
        self.min_range = nn.Parameter(torch.full(shape, -0.5))
        self.max_range = nn.Parameter(torch.full(shape, 0.5))

    def scale(self) -> torch.Tensor:
        """Per-channel scale ``d``, shaped like the ranges."""
        return weight_scale(self.min_range, self.max_range, self.n_bits)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``w`` (float32 tensor)."""
        return weight_codes(w, self.min_range, self.max_range, self.n_bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.observer:
            dims = [i for i in range(w.dim()) if i != self.axis]
            with torch.no_grad():
                self.max_range.copy_(torch.amax(w, dim=dims, keepdim=True))
                self.min_range.copy_(torch.amin(w, dim=dims, keepdim=True))
            self.observer = False
            return w
        return fake_quantize_weight(w, self.min_range, self.max_range, self.n_bits)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, n_bits={self.n_bits}"


class ActivationFakeQuantize(nn.Module):
    """Per-tensor asymmetric activation quantizer (FQSS ``GradientActivationFakeQuantize``).

    State: ``min_range``, ``max_range`` of shape [1] (init -0.5 / +0.5). The observer state
    (``observer``, ``n_iter``, ``alpha`` = 0.9, ``max_observations`` = 50) is not saved.
    """

    def __init__(self, n_bits: int = 8):
        super().__init__()
        self.n_bits = n_bits
        self.observer = False
        self.n_iter = 0
        self.alpha = 0.9
        self.max_observations = 50
        self.min_range = nn.Parameter(torch.tensor([-0.5]))
        self.max_range = nn.Parameter(torch.tensor([0.5]))

    def scale(self) -> torch.Tensor:
        """Scale ``s = (max - min)/(2^n - 1)``; the zero point is the float ``min_range``."""
        return activation_scale(self.min_range, self.max_range, self.n_bits)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (float32 tensor)."""
        return activation_codes(x, self.min_range, self.max_range, self.n_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer and self.n_iter < self.max_observations:
            with torch.no_grad():
                a = self.alpha
                self.min_range.copy_(a * self.min_range + (1 - a) * x.min())
                self.max_range.copy_(a * self.max_range + (1 - a) * x.max())
            self.n_iter += 1
            return x
        return fake_quantize_activation(x, self.min_range, self.max_range, self.n_bits)

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}"


def set_observer(model: nn.Module, enabled: bool) -> None:
    """Switch every quantizer's observer on (resetting the activation EMA count) or off."""
    for m in model.modules():
        if isinstance(m, (WeightFakeQuantize, ActivationFakeQuantize)):
            m.observer = enabled
            if isinstance(m, ActivationFakeQuantize) and enabled:
                m.n_iter = 0


# --------------------------------------------------------------------------------------------
# Splitter (SPEC §2.5) and combiner (SPEC §2.6)


def preprocess(x: torch.Tensor, n_splitter: int, n_bits: int = 8, normalize: bool = True) -> torch.Tensor:
    """FQSS splitter: ``[B, T]`` or ``[B, C, T]`` audio -> ``[B, n_splitter*C, T]``.

    ``n_splitter == 1`` returns ``x`` (unsqueezed to 3-D) untouched: no normalization. Otherwise::

        normalize: x = x / max(|min x|, |max x|), thr = 1   (one max over the whole batch tensor)
        else:      thr = max(|min x|, |max x|)               (dynamic threshold)
        d = thr / 2^(n-1)
        for j < n_splitter:  xq_j = clip(floor(x/d), -2^(n-1), 2^(n-1)-1) * d
                             x    = 2*(x - xq_j)*thr/d - thr
        out = cat(xq_0, xq_1, ...)  along channels (channel j*C + c)

    For n_splitter = 2 and normalize, ``xq_0 = k1/128`` and ``xq_1 = k2/128`` where ``k1``/``k2``
    are the signed hi/lo bytes of the 16-bit sample ``floor(32768 x)``. Float32 throughout.
    """
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if n_splitter == 1:
        return x
    peak = torch.max(torch.abs(x.min()), torch.abs(x.max()))
    if normalize:
        x = x / peak
        thr = 1
    else:
        thr = peak
    delta = thr / 2 ** (n_bits - 1)
    lo, hi = -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1
    parts = []
    for _ in range(n_splitter):
        xq = torch.clamp(torch.floor(x / delta), lo, hi) * delta
        parts.append(xq)
        x = 2 * (x - xq) * thr / delta - thr
    return torch.cat(parts, dim=1)


def postprocess(x: torch.Tensor, n_combiner: int, n_bits: int = 8) -> torch.Tensor:
    """FQSS combiner: ``[n_combiner, B, S, C, T]`` (or ``[.., B, S, T]``) -> ``[B, S, (C,) T]``.

    ``y = x[0] + sum_{i>=1} x[i] * (0.5*d)^i`` with ``d = 1/2^(n-1)`` (so ``y0 + y1/256`` for
    n = 8, n_combiner = 2), accumulated in float32 in that order. A mono channel axis
    (``y.dim() <= 4`` and ``y.shape[-2] == 1``) is squeezed.
    """
    if n_combiner == 1:
        y = x.squeeze(0)
    else:
        delta = 1 / 2 ** (n_bits - 1)
        y = x[0].clone()
        for i in range(1, n_combiner):
            y = y + x[i] * (0.5 * delta) ** i
    if y.dim() <= 4 and y.shape[-2] == 1:
        y = y.squeeze(-2)
    return y


def overlap_and_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Overlap-add ``[..., K, W]`` frames with hop ``hop`` -> ``[..., (K-1)*hop + W]``.

    ``out[k*hop + t] += frames[k, t]`` accumulated onto zeros in increasing frame order ``k``
    (the order of ``index_add_`` over frames). Frames are cut into sub-frames of length
    ``g = gcd(W, hop)`` so each pass adds one sub-frame position of every frame at once.
    """
    *outer, n_frames, width = frames.shape
    g = math.gcd(width, hop)
    per_frame, step = width // g, hop // g
    n_out_sub = ((n_frames - 1) * hop + width) // g
    sub = frames.reshape(*outer, n_frames, per_frame, g)
    out = frames.new_zeros(*outer, n_out_sub, g)
    # Output sub-frame m receives (k, j) with k*step + j = m; in increasing-k order j decreases.
    for j in range(per_frame - 1, -1, -1):
        stop = j + step * (n_frames - 1) + 1
        out[..., j:stop:step, :] += sub[..., :, j, :]
    return out.reshape(*outer, n_out_sub * g)
