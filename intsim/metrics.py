"""Separation metrics: SI-SDR, SDR (BSS-eval v3), their improvements, permutation-invariant assignment.

Arguments are keyword-only (``reference=``, ``estimate=``): libraries disagree on the order, and
SDR is not symmetric.  Signals are ``[..., T]`` arrays (any float or integer dtype, computed in
float64); the functions return one value per leading index (a float for 1-D input).

si_sdr    scale-invariant SDR (Le Roux et al., ICASSP 2019, arXiv:1811.02508):
              a = <est, ref> / <ref, ref>;   SI-SDR = 10 log10(|a ref|^2 / |est - a ref|^2)
          without mean removal by default (``zero_mean=False``: torchmetrics' and fast_bss_eval's
          default; asteroid removes the mean).  Invariant to the estimate's gain and sign, and
          symmetric in its two arguments.
sdr       BSS-eval v3 SDR, ``bss_eval_sources`` form (mir_eval.separation, museval v3, fast_bss_eval
          sdr with filter_length 512): the estimate, zero-padded by L-1 samples, is projected on the
          span of the reference delayed by 0..L-1 samples (L = ``filter_length`` = 512 taps):
              P = sum_k c_k ref[t - k],  c = argmin |est - P|;  SDR = 10 log10(|P|^2 / |est - P|^2)
          Gain-invariant and tolerant of any short (L-tap) filter on the estimate.  Only the
          reference of the source itself is used (SDR needs no other reference; SIR/SAR, which
          would, are not computed).  Whole signal, no framing (museval's v4 uses 1-s frames and
          a median).  The Gram matrix is solved as mir_eval does (LU, least squares if singular).
snr       plain SNR 10 log10(|ref|^2 / |ref - est|^2): gain-sensitive, so meaningless for models
          with an arbitrary output gain (FQSS); kept for checks.
improvement  ``metric(estimate) - metric(mixture)`` against the same reference (SI-SDRi, SDRi).

Degenerate cases: a silent (all-zero) reference raises ValueError (the ratios are undefined);
otherwise results are clamped to [-DB_CAP, DB_CAP] so an exact estimate gives +DB_CAP (300 dB,
above float64's resolution of energy ratios) rather than inf, and JSON stays valid.

``assign(references=, estimates=)`` finds the permutation maximising the mean SI-SDR
(``scipy.optimize.linear_sum_assignment`` on the S x S SI-SDR matrix, the speech-separation
convention).  ``evaluate(...)`` does the whole report: assignment (or the given order), per-stem
SI-SDR, SI-SDRi, SDR, SDRi, means; multichannel signals ``[S, C, T]`` are scored per channel and
averaged in dB over channels.
"""

from __future__ import annotations

import numpy as np

DB_CAP = 300.0
FILTER_LENGTH = 512

CONVENTION = {
    "si_sdr": "SI-SDR, whole signal, no mean removal (Le Roux et al. 2019; torchmetrics zero_mean=False)",
    "sdr": f"BSS-eval v3 SDR, bss_eval_sources form, {FILTER_LENGTH}-tap distortion filter, whole signal "
           "(mir_eval.separation / fast_bss_eval), no framing",
    "improvement": "si_sdri = si_sdr(estimate) - si_sdr(mixture), sdri likewise, against the same reference",
    "channels": "multichannel stems are scored per channel and averaged (dB) over channels",
    "cap_db": DB_CAP,
}


def _pair(reference, estimate):
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.shape != est.shape:
        raise ValueError(f"reference shape {list(ref.shape)} and estimate shape {list(est.shape)} differ")
    if ref.ndim == 0 or ref.shape[-1] == 0:
        raise ValueError("signals must have at least one sample")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(est))):
        raise ValueError("signals contain NaN or infinite values")
    return ref, est


def _check_reference(energy):
    if np.any(energy == 0):
        raise ValueError("a reference signal is silent (all zeros): SI-SDR and SDR are undefined")


def _db(num, den):
    """10 log10(num/den), clamped to [-DB_CAP, DB_CAP]; num = 0 -> -DB_CAP, den = 0 -> +DB_CAP."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * (np.log10(num) - np.log10(den))
    out = np.where(den == 0, DB_CAP, np.where(num == 0, -DB_CAP, out))
    out = np.clip(out, -DB_CAP, DB_CAP)
    return float(out) if out.ndim == 0 else out


def si_sdr(*, reference, estimate, zero_mean: bool = False):
    """Scale-invariant SDR in dB over the last axis."""
    ref, est = _pair(reference, estimate)
    if zero_mean:
        ref = ref - ref.mean(axis=-1, keepdims=True)
        est = est - est.mean(axis=-1, keepdims=True)
    energy = np.sum(ref * ref, axis=-1)
    _check_reference(energy)
    alpha = np.sum(est * ref, axis=-1) / energy
    target = alpha[..., None] * ref
    return _db(np.sum(target * target, axis=-1), np.sum((est - target) ** 2, axis=-1))


def snr(*, reference, estimate):
    """Plain SNR 10 log10(|ref|^2 / |ref - est|^2) in dB (gain-sensitive)."""
    ref, est = _pair(reference, estimate)
    energy = np.sum(ref * ref, axis=-1)
    _check_reference(energy)
    return _db(energy, np.sum((ref - est) ** 2, axis=-1))


def _sdr_1d(ref, est, flen):
    from scipy.linalg import toeplitz
    from scipy.signal import fftconvolve

    n = ref.size + flen - 1
    nfft = 1 << (n - 1).bit_length()
    spec_r = np.fft.rfft(ref, nfft)
    spec_e = np.fft.rfft(est, nfft)
    auto = np.fft.irfft(spec_r * np.conj(spec_r), nfft)[:flen]  # r[k] = sum_t ref[t] ref[t+k]
    cross = np.fft.irfft(np.conj(spec_r) * spec_e, nfft)[:flen]  # d[k] = sum_t ref[t] est[t+k]
    gram = toeplitz(auto)
    try:
        coef = np.linalg.solve(gram, cross)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(gram, cross, rcond=None)[0]
    proj = fftconvolve(ref, coef)[:n]
    err = -proj
    err[: est.size] += est
    return _db(np.sum(proj * proj), np.sum(err * err))


def sdr(*, reference, estimate, filter_length: int = FILTER_LENGTH):
    """BSS-eval v3 SDR (``bss_eval_sources`` form) in dB over the last axis."""
    ref, est = _pair(reference, estimate)
    if filter_length < 1:
        raise ValueError(f"filter_length must be >= 1, got {filter_length}")
    _check_reference(np.sum(ref * ref, axis=-1))
    lead = ref.shape[:-1]
    r2, e2 = ref.reshape(-1, ref.shape[-1]), est.reshape(-1, est.shape[-1])
    out = np.array([_sdr_1d(r, e, filter_length) for r, e in zip(r2, e2)]).reshape(lead)
    return float(out) if out.ndim == 0 else out


def _channels(x):
    """[S, T] or [S, C, T] -> [S, C, T] float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim == 3:
        return x
    raise ValueError(f"expected [sources, time] or [sources, channels, time], got shape {list(x.shape)}")


def assign(*, references, estimates) -> list[int]:
    """``perm`` with ``estimates[perm[i]]`` matched to ``references[i]``, maximising the mean SI-SDR."""
    from scipy.optimize import linear_sum_assignment

    refs, ests = _channels(references), _channels(estimates)
    if refs.shape != ests.shape:
        raise ValueError(f"references {list(refs.shape)} and estimates {list(ests.shape)} must have the same shape")
    s = refs.shape[0]
    if s == 1:
        return [0]
    # score[i, j] = mean over channels of SI-SDR(reference i, estimate j)
    full = (s,) + ests.shape
    score = si_sdr(reference=np.broadcast_to(refs[:, None], full), estimate=np.broadcast_to(ests[None], full)).mean(axis=-1)
    rows, cols = linear_sum_assignment(score, maximize=True)
    return [int(c) for _, c in sorted(zip(rows, cols))]


def evaluate(*, references, estimates, mixture, permutation_invariant: bool = True,
             filter_length: int = FILTER_LENGTH) -> dict:
    """Score ``estimates`` [S, (C,) T] against ``references`` (same shape) and ``mixture`` [(C,) T].

    Returns ``{"assignment": "pit"|"order", "stems": [...], "mean": {...}}``; ``stems[j]`` belongs to
    estimate j: its reference index and si_sdr, si_sdri, sdr, sdri, mixture_si_sdr, mixture_sdr
    (floats, dB, channel means).
    """
    refs, ests = _channels(references), _channels(estimates)
    if refs.shape != ests.shape:
        raise ValueError(f"references {list(refs.shape)} and estimates {list(ests.shape)} must have the same shape")
    mix = np.asarray(mixture, dtype=np.float64)
    mix = mix[None] if mix.ndim == 1 else mix
    if mix.shape != refs.shape[1:]:
        raise ValueError(f"mixture shape {list(mix.shape)} does not match the references' {list(refs.shape[1:])}")
    s = refs.shape[0]
    perm = assign(references=refs, estimates=ests) if permutation_invariant else list(range(s))
    ref_of = {est: ref for ref, est in enumerate(perm)}
    stems = []
    for j in range(s):
        r = refs[ref_of[j]]
        entry = {"reference": ref_of[j]}
        entry["si_sdr"] = float(np.mean(si_sdr(reference=r, estimate=ests[j])))
        entry["mixture_si_sdr"] = float(np.mean(si_sdr(reference=r, estimate=mix)))
        entry["si_sdri"] = entry["si_sdr"] - entry["mixture_si_sdr"]
        entry["sdr"] = float(np.mean(sdr(reference=r, estimate=ests[j], filter_length=filter_length)))
        entry["mixture_sdr"] = float(np.mean(sdr(reference=r, estimate=mix, filter_length=filter_length)))
        entry["sdri"] = entry["sdr"] - entry["mixture_sdr"]
        stems.append(entry)
    keys = ("si_sdr", "si_sdri", "sdr", "sdri")
    mean = {k: float(np.mean([e[k] for e in stems])) for k in keys}
    return {"assignment": "pit" if permutation_invariant else "order", "stems": stems, "mean": mean}
