"""References for kernels.fqss.

``preprocess_float32`` is a literal NumPy float32 transcription of FQSS ``process.preprocess``
(SPEC §2.5): every operation on float32 arrays, in FQSS's order.  ``preprocess_torch`` is the same
code in torch (needs torch).  Both return the float32 stages FQSS concatenates, plus the integer
codes ``floor``/``clip`` produced inside the loop and delta.  ``split_pcm_ref`` and ``combine_ref``
are Python-int formulas; ``combine_float_ref`` is FQSS ``postprocess`` in NumPy float32.
"""

from __future__ import annotations

import numpy as np

from intsim import fixedpoint as fp


def preprocess_float32(x, n_splitter=2, n_bits=8, normalize=True):
    """FQSS preprocess on a float32 [B, C, T] (or [B, T]) array.

    Returns ``(stages, codes, delta)``: ``stages`` [B, n_splitter*C, T] float32 (what FQSS returns),
    ``codes`` the int64 clipped floors, ``delta`` float32.  No guard against 0/0 (FQSS has none).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, None, :]
    peak = np.maximum(np.abs(x.min()), np.abs(x.max()))  # float32 0-d
    if normalize:
        x = x / peak
        thr = np.float32(1)
    else:
        thr = peak
    delta = np.float32(thr / np.float32(2 ** (n_bits - 1)))
    lo, hi = np.float32(-(2 ** (n_bits - 1))), np.float32(2 ** (n_bits - 1) - 1)
    parts, codes = [], []
    for _ in range(n_splitter):
        q = np.clip(np.floor(x / delta), lo, hi)
        xq = q * delta
        parts.append(xq)
        codes.append(q.astype(np.int64))
        x = np.float32(2) * (x - xq) * thr / delta - thr
        assert x.dtype == np.float32
    return np.concatenate(parts, 1), np.concatenate(codes, 1), delta


def preprocess_torch(x, n_splitter=2, n_bits=8, normalize=True):
    """FQSS ``process.preprocess`` verbatim in torch (float32); returns the same triple as numpy."""
    import torch

    x = torch.from_numpy(np.asarray(x, dtype=np.float32).copy())
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if normalize:
        x = x / torch.max(torch.abs(x.min()), torch.abs(x.max()))
        thr = 1
    else:
        thr = torch.max(torch.abs(x.min()), torch.abs(x.max()))
    delta = thr / 2 ** (n_bits - 1)
    lo, hi = -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1
    parts, codes = [], []
    for _ in range(n_splitter):
        q = torch.clip(torch.floor(x / delta), lo, hi)
        xq = q * delta
        parts.append(xq)
        codes.append(q)
        x = 2 * (x - xq) * thr / delta - thr
    delta = np.float32(delta.item() if torch.is_tensor(delta) else delta)
    return torch.cat(parts, 1).numpy(), torch.cat(codes, 1).numpy().astype(np.int64), delta


def split_pcm_ref(u):
    """Integer PCM split of an int16 [B, C, T] array with Python ints: (codes int8, P)."""
    u = np.asarray(u)
    peak = max((abs(int(v)) for v in u.reshape(-1)), default=0)
    c = u.shape[1]
    out = np.empty((u.shape[0], 2 * c, u.shape[2]), dtype=np.int8)
    for (b, ch, t), v in np.ndenumerate(u):
        v = int(v)
        if peak == 0:
            w = 0
        elif peak == 32768:
            w = v
        else:
            w = min(32767, (32768 * v) // peak)
        out[b, ch, t] = w >> 8
        out[b, c + ch, t] = (w & 255) - 128
    return out, peak


def combine_ref(a0, z0, a1, z1, frac_bits, rq):
    """Integer combiner with Python ints: (codes int64, saturations)."""
    mult, shift, scale, rounding, mult_bits, _, _, out_zp, act_min, act_max = rq[:10]
    out = np.empty(a0.shape, dtype=np.int64)
    n_sat = 0
    for idx in np.ndindex(a0.shape):
        d0 = int(a0[idx]) - z0
        d1 = int(a1[idx]) - z1
        t0 = fp.requantize(d0, int(mult[0]), int(shift[0]), float(scale[0]), int(rounding), int(mult_bits))
        v = t0 + d1 * 2**frac_bits + int(out_zp)
        code = max(int(act_min), min(int(act_max), v))
        n_sat += code != v
        out[idx] = code
    return out, n_sat


def combine_float_ref(a0, z0, s0, a1, z1, s1, n_bits=8):
    """FQSS postprocess ``y = x[0] + x[1] * (0.5*delta)`` on dequantized codes, NumPy float32."""
    y0 = np.float32(s0) * (a0.astype(np.int64) - z0).astype(np.float32)
    y1 = np.float32(s1) * (a1.astype(np.int64) - z1).astype(np.float32)
    delta = 1 / 2 ** (n_bits - 1)
    return y0 + y1 * np.float32(0.5 * delta)
