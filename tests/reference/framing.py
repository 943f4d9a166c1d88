"""Naive references for kernels.framing: Python loops and a literal NumPy transcription of DPTNet.

``dptnet_split_feature`` / ``dptnet_merge_feature`` transcribe DPTNet's ``_pad_segment``,
``split_feature`` and ``merge_feature`` (DPT_base, SPEC §3.3) line by line with NumPy in place of
torch, padding with a code instead of float 0 and summing zero-point-free int64 values in place of
the float add.  The loop references compute the overlap-add as (sum of codes) - n_overlap * zp,
the formula the kernels document, with n_overlap counted explicitly.
"""

from __future__ import annotations

import numpy as np

from tests.reference.requant import requantize_output


def dptnet_pad_segment(x, segment_size, code):
    """DPTNet ``_pad_segment`` on [B, N, T] with ``code`` in place of the float zeros."""
    batch_size, dim, seq_len = x.shape
    segment_stride = segment_size // 2
    rest = segment_size - (segment_stride + seq_len % segment_size) % segment_size
    if rest > 0:
        pad = np.full((batch_size, dim, rest), code, dtype=x.dtype)
        x = np.concatenate([x, pad], 2)
    pad_aux = np.full((batch_size, dim, segment_stride), code, dtype=x.dtype)
    x = np.concatenate([pad_aux, x, pad_aux], 2)
    return x, rest


def dptnet_split_feature(x, segment_size, code):
    """DPTNet ``split_feature``: [B, N, T] -> ([B, N, segment_size, K], rest)."""
    x, rest = dptnet_pad_segment(x, segment_size, code)
    batch_size, dim, seq_len = x.shape
    segment_stride = segment_size // 2
    segments1 = x[:, :, :-segment_stride].reshape(batch_size, dim, -1, segment_size)
    segments2 = x[:, :, segment_stride:].reshape(batch_size, dim, -1, segment_size)
    segments = np.concatenate([segments1, segments2], 3).reshape(batch_size, dim, -1, segment_size)
    segments = segments.transpose(0, 1, 3, 2)  # torch .transpose(2, 3)
    return np.ascontiguousarray(segments), rest


def dptnet_merge_feature(x, rest, zp):
    """DPTNet ``merge_feature`` on codes: [B, N, S, K] -> [B, N, T] int64 sums of (code - zp)."""
    x = x.astype(np.int64) - zp
    batch_size, dim, segment_size, _ = x.shape
    segment_stride = segment_size // 2
    x = x.transpose(0, 1, 3, 2).reshape(batch_size, dim, -1, segment_size * 2)
    input1 = x[:, :, :, :segment_size].reshape(batch_size, dim, -1)[:, :, segment_stride:]
    input2 = x[:, :, :, segment_size:].reshape(batch_size, dim, -1)[:, :, :-segment_stride]
    output = input1 + input2
    if rest > 0:
        output = output[:, :, :-rest]
    return output


def frame_ref(x, chunk, hop, pad_left, pad_right, code):
    """[..., T] -> [..., chunk, n_chunks] by explicit loops over the padded list of each row."""
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])
    n_chunks = (x.shape[-1] + pad_left + pad_right - chunk) // hop + 1
    out = np.empty((rows.shape[0], chunk, n_chunks), dtype=x.dtype)
    for m, row in enumerate(rows):
        padded = [code] * pad_left + [int(v) for v in row] + [code] * pad_right
        for k in range(n_chunks):
            for i in range(chunk):
                out[m, i, k] = padded[k * hop + i]
    return out.reshape(*lead, chunk, n_chunks)


def overlap_add_ref(x, zp, hop, frames_last, crop_left, length):
    """Zero-point-free overlap-add: out[..., t] = sum of covering codes - n_overlap * zp (int64)."""
    lead = x.shape[:-2]
    rows = x.reshape(-1, *x.shape[-2:]).astype(np.int64)
    if frames_last:
        rows_kw = rows  # [M, K, W]
    else:
        rows_kw = rows.transpose(0, 2, 1)
    n_frames, width = rows_kw.shape[1:]
    out = np.zeros((rows.shape[0], length), dtype=np.int64)
    for m in range(rows.shape[0]):
        for t in range(length):
            p = t + crop_left
            total, n_overlap = 0, 0
            for k in range(n_frames):
                i = p - k * hop
                if 0 <= i < width:
                    total += int(rows_kw[m, k, i])
                    n_overlap += 1
            out[m, t] = total - n_overlap * zp
    return out.reshape(*lead, length)


def requantize_array(acc, rq, dtype):
    """requantize_output (channel 0) elementwise; returns (codes, overflows, saturations)."""
    flat = acc.reshape(-1)
    codes = np.empty(flat.shape, dtype=dtype)
    n_ovf = n_sat = 0
    for i, v in enumerate(flat):
        code, ovf, sat = requantize_output(int(v), 0, rq)
        codes[i] = code
        n_ovf += ovf
        n_sat += sat
    return codes.reshape(acc.shape), n_ovf, n_sat
