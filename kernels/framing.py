"""Framing (chunking) and overlap-add of integer codes.

Both work on rows: the caller flattens all leading axes into one row axis ``M``.

Framing (DPTNet/Sepformer ``split_feature``, or any hop)::

    x     [M, T]                     codes, any dtype
    xp    = [pad_code] * pad_left ++ x ++ [pad_code] * pad_right     (per row)
    out   [M, chunk, n_chunks]       out[m, i, k] = xp[m, k*hop + i]
    n_chunks = (T + pad_left + pad_right - chunk) // hop + 1          (samples past the last
                                                                      full chunk are dropped)

``pad_code`` is normally the input zero point (the real value 0).  DPTNet's ``pad_segment``
(``dptnet_padding``) pads ``hop`` on the left and ``gap + hop`` on the right, with
``hop = chunk // 2`` and ``gap = chunk - (hop + T % chunk) % chunk`` (1 <= gap <= chunk: a full
extra chunk when ``(hop + T) % chunk == 0``, as in DPTNet).  Its interleaved
``cat([segments1, segments2], 3).view(..).transpose(2, 3)`` is exactly the uniform framing above
with ``hop = chunk / 2`` (chunk even).

Overlap-add (the inverse; DPTNet ``merge_feature``, FQSS ``overlap_and_add`` of decoder frames)::

    x  [M, width, n_frames]  (layout "chunks", frames_last = False: the framing output above)
    x  [M, n_frames, width]  (layout "frames", frames_last = True: decoder frames [.., K, W])
    full[m, p] = sum over frames k with k*hop <= p < k*hop + width of (x[m, frame k, p - k*hop] - x_zp)
               = (sum of the covering codes) - n_overlap(p) * x_zp        exact, int64
    out[m, t]  = full[m, t + crop_left]   (0 where t + crop_left is past the end: no frame covers it)

The sum is zero-point free: the summed zero point ``n_overlap(p) * x_zp`` varies at the edges, so
it is removed per contribution and the result has zero point 0 and the input's scale.
``overlap_add_sum`` stores it in a wider integer (clamped to [lo, hi], counted, never expected when
the adapter sized the dtype); ``overlap_add_requant`` requantizes it per tensor (channel 0 of
``rq``) back to 8 or 16 bits exactly as a linear kernel does (``requantize_output``).

Every kernel has a serial and a ``prange`` (over rows) twin with identical results.
"""

import numpy as np
from numba import njit, prange

from .fixedpoint import clamp, requantize_output
from .jit import serial_and_parallel


def dptnet_padding(t, chunk):
    """DPTNet ``pad_segment`` for length ``t``: ``(pad_left, pad_right, gap)``; chunk must be even."""
    hop = chunk // 2
    gap = chunk - (hop + t % chunk) % chunk
    return hop, gap + hop, gap


def frame_count(t, chunk, hop, pad_left, pad_right):
    """Number of chunks of ``chunk`` samples at hop ``hop`` in the padded signal (< 1: too short)."""
    return (t + pad_left + pad_right - chunk) // hop + 1


def overlap_add_length(n_frames, width, hop):
    """Length of the full (uncropped) overlap-add signal."""
    return (n_frames - 1) * hop + width


def _frame(x, chunk, hop, pad_left, pad_code, out):
    n_rows, t_in = x.shape
    n_chunks = out.shape[2]
    for m in prange(n_rows):
        for i in range(chunk):
            for k in range(n_chunks):
                p = k * hop + i - pad_left
                if p >= 0 and p < t_in:
                    out[m, i, k] = x[m, p]
                else:
                    out[m, i, k] = pad_code


frame, frame_parallel = serial_and_parallel(_frame)


@njit(cache=True, nogil=True, inline="always")
def _ola_row(x, m, x_zp, hop, frames_last, acc):
    """Exact zero-point-free overlap-add of row ``m`` into ``acc`` (int64, zeroed by the caller)."""
    if frames_last:
        n_frames = x.shape[1]
        width = x.shape[2]
        for k in range(n_frames):
            base = k * hop
            for i in range(width):
                acc[base + i] += np.int64(x[m, k, i]) - x_zp
    else:
        width = x.shape[1]
        n_frames = x.shape[2]
        for i in range(width):
            for k in range(n_frames):
                acc[k * hop + i] += np.int64(x[m, i, k]) - x_zp


def _overlap_add_sum(x, x_zp, hop, frames_last, crop_left, lo, hi, out, saturations):
    n_rows = x.shape[0]
    if frames_last:
        full = (x.shape[1] - 1) * hop + x.shape[2]
    else:
        full = (x.shape[2] - 1) * hop + x.shape[1]
    t_out = out.shape[1]
    for m in prange(n_rows):
        acc = np.zeros(full, dtype=np.int64)
        _ola_row(x, m, np.int64(x_zp), hop, frames_last, acc)
        n_sat = 0
        for t in range(t_out):
            p = t + crop_left
            v = acc[p] if p < full else np.int64(0)
            code, sat = clamp(v, lo, hi)
            out[m, t] = code
            n_sat += sat
        saturations[m] = n_sat


overlap_add_sum, overlap_add_sum_parallel = serial_and_parallel(_overlap_add_sum)


def _overlap_add_requant(x, x_zp, hop, frames_last, crop_left, rq, out, overflows, saturations):
    n_rows = x.shape[0]
    if frames_last:
        full = (x.shape[1] - 1) * hop + x.shape[2]
    else:
        full = (x.shape[2] - 1) * hop + x.shape[1]
    t_out = out.shape[1]
    for m in prange(n_rows):
        acc = np.zeros(full, dtype=np.int64)
        _ola_row(x, m, np.int64(x_zp), hop, frames_last, acc)
        n_ovf = 0
        n_sat = 0
        for t in range(t_out):
            p = t + crop_left
            v = acc[p] if p < full else np.int64(0)
            code, ovf, sat = requantize_output(v, 0, rq)
            out[m, t] = code
            n_ovf += ovf
            n_sat += sat
        overflows[m] = n_ovf
        saturations[m] = n_sat


overlap_add_requant, overlap_add_requant_parallel = serial_and_parallel(_overlap_add_requant)
