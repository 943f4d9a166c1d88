"""Integer convolutions: conv1d, conv2d, conv_transpose1d, conv_transpose2d.

Arithmetic (all four kernels)
-----------------------------
Every output element is one exact integer sum, requantized once::

    acc  = bias[co] + sum over the taps (ci, k...) that reach the output position of
               w[...] * (x[n, ci, pos...] - x_zp)                       exact, int64
    out  = requantize_output(acc, co, rq)                                (kernels.fixedpoint)

``requantize_output`` applies the profile's accumulator register (wrap / saturate to ``acc_bits``,
counted in ``overflows[co]``) to that final sum, bias included, then the per-channel multiplier,
``out_zp`` and the clamp to ``[act_min, act_max]`` (counted in ``saturations[co]``).  Because the
sum is exact, the order in which the kernels add terms is irrelevant to the result: a wrapping
register of ``acc_bits`` holds the same bits whether C code wraps after every ``+=`` (TFLite's int32
scratch) or once at the end, and a saturating register is applied to the final sum by definition.

Taps outside the input (padding) contribute nothing: padding holds the input zero point, i.e. the
real value 0 (TFLite skips them, which is the same thing).

Domain: ``x`` int8 or int16 with ``x - x_zp`` representable in int16 for every value of x's dtype
(int8: |x_zp| <= 32640; int16: x_zp == 0, the symmetric 16x8 scheme); ``w`` int8; ``bias`` int32 or
int64; ``out`` int8 or int16 (any integer dtype holding [act_min, act_max]); all arrays C-contiguous.
``out`` is allocated by the caller and its shape fixes the output size (so the right / bottom
padding and a transposed conv's ``output_padding`` are implied by it).  ``overflows[co]`` and
``saturations[co]`` are overwritten with this call's counts for output channel ``co``.

How the exact sums are computed (speed, not semantics)
-----------------------------------------------------
Partial sums are formed in int32 and added to an int64 total at most every ``limit`` terms, where
``limit * max|w| * max|x - x_zp| < 2^31`` (``term_limit``): no int32 partial sum can overflow, so
they are exact in any order (this is what lets LLVM use ``vpmaddwd``).  Two loop orders, chosen by
``C_in / groups``:

* *dot* (``C_in/groups >= DOT_MIN_CHANNELS``): the input is copied to a channels-last int16 buffer
  ``[N, H, W, C_in]`` holding ``x - x_zp`` (zero in the padding, so no inner loop needs a bounds
  check or a negative index), weights to ``[C_out, KH, KW, C_in/groups]``; each tap is a dot product
  over contiguous input channels.  A work item owns a block of output channels x output frames and
  loops taps outer, frames inner; transposed convolutions add each tap's dot product to the one
  output frame of the block it reaches.
* *row* (depthwise and other narrow groups): convolutions copy the input to a padded channels-first
  int16 buffer ``[N, C_in, Hp, Wp]`` and add ``w * (x - x_zp)`` over contiguous runs of output
  frames; transposed convolutions scatter such rows straight from ``x`` into an int64 plane per
  (batch, output channel), as TFLite's ``transpose_conv.h`` does.

Parallel twins (``*_parallel``) run the same code with ``prange`` over independent work items:
blocks of output channels and output frames, never two items writing the same output element;
per-item counts are summed per channel at the end, so the twins agree bit for bit.
"""


import numpy as np
from numba import njit, prange

from .fixedpoint import requantize_output
from .jit import serial_and_parallel

#: ``C_in / groups`` from which the channel-contiguous dot loop order is used.
DOT_MIN_CHANNELS = 16
#: Work item sizes: output channels x output frames (dot order), output frames (row order).
DOT_CO_BLOCK = 32
DOT_W_BLOCK = 256
ROW_W_BLOCK = 2048

INT32_MAX = 2147483647


# --------------------------------------------------------------------------------------------
# Shared helpers (serial; called once per work item)
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def requantize_row(acc, co, rq, out_row):
    """``out_row[t] = requantize_output(acc[t], co, rq)`` for a row of exact sums (bias included).

    Returns (overflow count, saturation count) for the row.
    """
    n_ovf = 0
    n_sat = 0
    for t in range(acc.shape[0]):
        code, overflowed, saturated = requantize_output(acc[t], co, rq)
        out_row[t] = code
        n_ovf += overflowed
        n_sat += saturated
    return n_ovf, n_sat


@njit(cache=True, nogil=True)
def term_limit(x, x_zp, w):
    """Largest number of terms ``w * (x - x_zp)`` whose int32 partial sum can never overflow.

    Raises ValueError when ``x - x_zp`` does not fit int16 for some value of x's dtype.
    """
    info = np.iinfo(x.dtype)
    lo = np.int64(info.min) - np.int64(x_zp)
    hi = np.int64(info.max) - np.int64(x_zp)
    if lo < -32768 or hi > 32767:
        raise ValueError("conv: x - x_zp must fit int16 for every value of x's dtype "
                         "(int8 x: |x_zp| <= 32640; int16 x: x_zp == 0)")
    xmax = max(-lo, hi, np.int64(1))
    wmax = np.int64(1)
    wf = w.ravel()
    for i in range(wf.shape[0]):
        a = abs(np.int64(wf[i]))
        if a > wmax:
            wmax = a
    if wmax * xmax > INT32_MAX:
        raise ValueError("conv: a single product w * (x - x_zp) must fit int32 (int8 weights)")
    return np.int64(INT32_MAX) // (wmax * xmax)


@njit(cache=True, nogil=True, inline="always")
def _dot(a, b, n, limit):
    """Exact sum of ``a[i] * b[i]`` for i < n, as int64, from int32 partial sums of <= limit terms."""
    if n <= limit:
        s = np.int32(0)
        for i in range(n):
            s = np.int32(s + np.int32(a[i]) * np.int32(b[i]))
        return np.int64(s)
    total = np.int64(0)
    c0 = 0
    while c0 < n:
        c1 = min(c0 + limit, n)
        aa = a[c0:c1]
        bb = b[c0:c1]
        s = np.int32(0)
        for i in range(c1 - c0):
            s = np.int32(s + np.int32(aa[i]) * np.int32(bb[i]))
        total += np.int64(s)
        c0 = c1
    return total


@njit(cache=True, nogil=True)
def _fill_channels_last(x, x_zp, xs, n, h, w0, w1, top, left):
    """xs[n, top + h, left + w, c] = x[n, c, h, w] - x_zp for w in [w0, w1), all c.

    Transposed through 64 x 64 tiles (contiguous reads into a scratch tile, contiguous writes out).
    """
    c_in = x.shape[1]
    tile = np.empty((64, 64), dtype=np.int16)
    for c0 in range(0, c_in, 64):
        nc = min(64, c_in - c0)
        for t0 in range(w0, w1, 64):
            nw = min(64, w1 - t0)
            for i in range(nc):
                src = x[n, c0 + i, h, t0:t0 + nw]
                row = tile[i]
                for j in range(nw):
                    row[j] = np.int16(np.int64(src[j]) - x_zp)
            for j in range(nw):
                dst = xs[n, top + h, left + t0 + j, c0:c0 + nc]
                for i in range(nc):
                    dst[i] = tile[i, j]


@njit(cache=True, nogil=True)
def _fill_channels_first(x, x_zp, xs, n, c, h, top, left):
    """xs[n, c, top + h, left + w] = x[n, c, h, w] - x_zp for all w."""
    src = x[n, c, h]
    dst = xs[n, c, top + h, left:left + src.shape[0]]
    for w in range(src.shape[0]):
        dst[w] = np.int16(np.int64(src[w]) - x_zp)


@njit(cache=True, nogil=True)
def _check_geometry(x, w_shape0, w_shape1, bias, out, groups, transposed):
    if groups < 1:
        raise ValueError("conv: groups must be >= 1")
    c_in = x.shape[1]
    if transposed:
        c_out = w_shape1 * groups
        if w_shape0 != c_in or c_in % groups != 0:
            raise ValueError("conv_transpose: weight must be [C_in, C_out/groups, ...] with groups dividing C_in")
    else:
        c_out = w_shape0
        if w_shape1 * groups != c_in or c_out % groups != 0:
            raise ValueError("conv: weight must be [C_out, C_in/groups, ...] with groups dividing C_out")
    if bias.shape[0] != c_out or out.shape[0] != x.shape[0] or out.shape[1] != c_out:
        raise ValueError("conv: bias must have C_out entries and out must be [N, C_out, ...]")
    return c_out


# Allocation and small copies live in serial helpers: inside a ``parallel=True`` function Numba
# turns ``np.zeros`` and slice assignments into parallel regions of their own, each costing a
# thread wake-up and a barrier; only the two ``prange`` loops below should be parallel.


@njit(cache=True, nogil=True)
def _zeros16(shape):
    return np.zeros(shape, dtype=np.int16)


@njit(cache=True, nogil=True)
def _zeros64(shape):
    return np.zeros(shape, dtype=np.int64)


@njit(cache=True, nogil=True)
def _zero_counts(overflows, saturations):
    for c in range(overflows.shape[0]):
        overflows[c] = 0
        saturations[c] = 0


@njit(cache=True, nogil=True)
def _weights_channels_last(w):
    """[C_out, C_in/g, KH, KW] -> [C_out, KH, KW, C_in/g]."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))


@njit(cache=True, nogil=True)
def _weights_transposed_channels_last(w, groups):
    """[C_in, C_out/g, KH, KW] -> wt[co, kh, kw, ci] = w[g*C_in/g + ci, co % (C_out/g), kh, kw]."""
    c_in, cog, kh_n, kw_n = w.shape
    cg = c_in // groups
    wt = np.empty((cog * groups, kh_n, kw_n, cg), dtype=w.dtype)
    for co in range(cog * groups):
        g0 = (co // cog) * cg
        for kh in range(kh_n):
            for kw in range(kw_n):
                for ci in range(cg):
                    wt[co, kh, kw, ci] = w[g0 + ci, co % cog, kh, kw]
    return wt


@njit(cache=True, nogil=True)
def _sum_parts(part, counts):
    for c in range(part.shape[0]):
        total = np.int64(0)
        for j in range(part.shape[1]):
            total += part[c, j]
        counts[c] = total


# --------------------------------------------------------------------------------------------
# Forward convolution work items
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _fwd_dot_item(xs, wt, bias, n, co0, co1, oh, ow0, ow1, sh, sw, dh, dw, cg, cog, limit, rq, out,
                  ovf_part, sat_part, j):
    """Output channels [co0, co1) x frames [ow0, ow1) of row ``oh``; xs channels-last, padded.

    Taps outer, frames inner: one weight row meets consecutive input rows.
    """
    kh_n = wt.shape[1]
    kw_n = wt.shape[2]
    nw = ow1 - ow0
    acc = np.empty(nw, dtype=np.int64)
    for co in range(co0, co1):
        c0 = (co // cog) * cg
        acc[:] = np.int64(bias[co])
        for kh in range(kh_n):
            xrow = xs[n, oh * sh + kh * dh]
            for kw in range(kw_n):
                wrow = wt[co, kh, kw]
                for i in range(nw):
                    acc[i] += _dot(wrow, xrow[(ow0 + i) * sw + kw * dw, c0:c0 + cg], cg, limit)
        o, t = requantize_row(acc, co, rq, out[n, co, oh, ow0:ow1])
        ovf_part[co, j] = o
        sat_part[co, j] = t


@njit(cache=True, nogil=True)
def _fwd_row_item(xs, w, bias, n, co, oh, ow0, ow1, sh, sw, dh, dw, cg, cog, limit, rq, out, ovf_part, sat_part, j):
    """Output channel ``co``, frames [ow0, ow1) of row ``oh``; xs channels-first, padded."""
    kh_n = w.shape[2]
    kw_n = w.shape[3]
    nw = ow1 - ow0
    part = np.zeros(nw, dtype=np.int32)
    acc = np.full(nw, np.int64(bias[co]), dtype=np.int64)
    g0 = (co // cog) * cg
    terms = 0
    for cl in range(cg):
        for kh in range(kh_n):
            xrow = xs[n, g0 + cl, oh * sh + kh * dh]
            for kw in range(kw_n):
                wv = np.int32(w[co, cl, kh, kw])
                start = ow0 * sw + kw * dw
                if sw == 1:
                    xr = xrow[start:start + nw]
                    for i in range(nw):
                        part[i] = np.int32(part[i] + wv * np.int32(xr[i]))
                else:
                    xrs = xrow[start:start + (nw - 1) * sw + 1:sw]
                    for i in range(nw):
                        part[i] = np.int32(part[i] + wv * np.int32(xrs[i]))
                terms += 1
                if terms == limit:
                    for i in range(nw):
                        acc[i] += np.int64(part[i])
                        part[i] = 0
                    terms = 0
    for i in range(nw):
        acc[i] += np.int64(part[i])
    o, t = requantize_row(acc, co, rq, out[n, co, oh, ow0:ow1])
    ovf_part[co, j] = o
    sat_part[co, j] = t


def _conv2d(x, x_zp, w, bias, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, rq, out,
            overflows, saturations):
    """2-D convolution, NCHW.

    x [N, C_in, H, W], w [C_out, C_in/groups, KH, KW], bias [C_out], out [N, C_out, OH, OW]
    acc[n, co, oh, ow] = bias[co] + sum_{ci < C_in/groups, kh, kw} w[co, ci, kh, kw] *
        (x[n, g*C_in/groups + ci, oh*stride_h + kh*dilation_h - pad_top, ow*stride_w + kw*dilation_w - pad_left] - x_zp)
    with g = co // (C_out/groups) and taps outside [0, H) x [0, W) skipped (padding);
    out[n, co, oh, ow] = requantize_output(acc, co, rq).  Bottom / right padding are implied by
    out's shape.  See the module docstring for the domain and the counters.
    """
    n_batch, c_in, h_in, w_in = x.shape
    c_out = _check_geometry(x, w.shape[0], w.shape[1], bias, out, groups, False)
    cg = w.shape[1]
    kh_n = w.shape[2]
    kw_n = w.shape[3]
    oh_n = out.shape[2]
    ow_n = out.shape[3]
    if stride_h < 1 or stride_w < 1 or dilation_h < 1 or dilation_w < 1 or pad_top < 0 or pad_left < 0:
        raise ValueError("conv: stride and dilation must be >= 1 and padding >= 0")
    limit = term_limit(x, x_zp, w)
    cog = c_out // groups
    if n_batch == 0 or oh_n == 0 or ow_n == 0 or c_out == 0:
        _zero_counts(overflows, saturations)
        return
    # padded extent covering every tap of every output position
    hp = max(pad_top + h_in, (oh_n - 1) * stride_h + (kh_n - 1) * dilation_h + 1)
    wp = max(pad_left + w_in, (ow_n - 1) * stride_w + (kw_n - 1) * dilation_w + 1)
    if cg >= DOT_MIN_CHANNELS:
        xs = _zeros16((n_batch, hp, wp, c_in))
        n_fb = (w_in + 255) // 256
        for f in prange(n_batch * h_in * n_fb):
            n = f // (h_in * n_fb)
            h = (f // n_fb) % h_in
            w0 = (f % n_fb) * 256
            _fill_channels_last(x, x_zp, xs, n, h, w0, min(w0 + 256, w_in), pad_top, pad_left)
        wt = _weights_channels_last(w)
        n_cb = (c_out + DOT_CO_BLOCK - 1) // DOT_CO_BLOCK
        n_wb = (ow_n + DOT_W_BLOCK - 1) // DOT_W_BLOCK
        n_j = n_batch * oh_n * n_wb
        ovf_part = _zeros64((c_out, n_j))
        sat_part = _zeros64((c_out, n_j))
        for item in prange(n_cb * n_j):
            cb = item // n_j
            j = item % n_j
            n = j // (oh_n * n_wb)
            oh = (j // n_wb) % oh_n
            ow0 = (j % n_wb) * DOT_W_BLOCK
            co0 = cb * DOT_CO_BLOCK
            _fwd_dot_item(xs, wt, bias, n, co0, min(co0 + DOT_CO_BLOCK, c_out), oh, ow0, min(ow0 + DOT_W_BLOCK, ow_n),
                          stride_h, stride_w, dilation_h, dilation_w, cg, cog, limit, rq, out, ovf_part, sat_part, j)
    else:
        xs = _zeros16((n_batch, c_in, hp, wp))
        for f in prange(n_batch * c_in * h_in):
            _fill_channels_first(x, x_zp, xs, f // (c_in * h_in), (f // h_in) % c_in, f % h_in, pad_top, pad_left)
        n_wb = (ow_n + ROW_W_BLOCK - 1) // ROW_W_BLOCK
        n_j = n_batch * oh_n * n_wb
        ovf_part = _zeros64((c_out, n_j))
        sat_part = _zeros64((c_out, n_j))
        for item in prange(c_out * n_j):
            co = item // n_j
            j = item % n_j
            n = j // (oh_n * n_wb)
            oh = (j // n_wb) % oh_n
            ow0 = (j % n_wb) * ROW_W_BLOCK
            _fwd_row_item(xs, w, bias, n, co, oh, ow0, min(ow0 + ROW_W_BLOCK, ow_n), stride_h, stride_w,
                          dilation_h, dilation_w, cg, cog, limit, rq, out, ovf_part, sat_part, j)
    _sum_parts(ovf_part, overflows)
    _sum_parts(sat_part, saturations)


conv2d, conv2d_parallel = serial_and_parallel(_conv2d)


def _conv1d_serial(x, x_zp, w, bias, stride, pad_left, dilation, groups, rq, out, overflows, saturations):
    """1-D convolution.

    x [N, C_in, T], w [C_out, C_in/groups, K], bias [C_out], out [N, C_out, T_out]
    acc[n, co, t] = bias[co] + sum_{ci < C_in/groups, k}
        w[co, ci, k] * (x[n, g*C_in/groups + ci, t*stride + k*dilation - pad_left] - x_zp)
    with g = co // (C_out/groups) and taps outside [0, T) skipped (padding);
    out[n, co, t] = requantize_output(acc, co, rq).  Right padding is implied by T_out.
    Computed as conv2d with H = 1 (same code, same arithmetic).
    """
    conv2d(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]), x_zp,
           w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), bias, 1, stride, 0, pad_left, 1, dilation, groups, rq,
           out.reshape(out.shape[0], out.shape[1], 1, out.shape[2]), overflows, saturations)


def _conv1d_parallel(x, x_zp, w, bias, stride, pad_left, dilation, groups, rq, out, overflows, saturations):
    conv2d_parallel(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]), x_zp,
                    w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), bias, 1, stride, 0, pad_left, 1, dilation, groups,
                    rq, out.reshape(out.shape[0], out.shape[1], 1, out.shape[2]), overflows, saturations)


_conv1d_parallel.__doc__ = _conv1d_serial.__doc__
conv1d = njit(cache=True, nogil=True)(_conv1d_serial)
conv1d_parallel = njit(cache=True, nogil=True)(_conv1d_parallel)


# --------------------------------------------------------------------------------------------
# Transposed convolution work items
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _tr_dot_item(xs, wt, bias, n, co0, co1, oh, ow0, ow1, sh, sw, dh, dw, ph, pw, cg, cog, limit, rq, out,
                 ovf_part, sat_part, j):
    """Output channels [co0, co1) x frames [ow0, ow1) of row ``oh``; xs channels-last, unpadded.

    Output (oh, ow) collects the taps (ih, kh, iw, kw) with ih*sh + kh*dh - ph == oh and
    iw*sw + kw*dw - pw == ow, 0 <= ih < H, 0 <= iw < W.  Taps outer, input frames inner (each
    input frame of a tap reaches one output frame of the block).
    """
    h_in = xs.shape[1]
    w_in = xs.shape[2]
    kh_n = wt.shape[1]
    kw_n = wt.shape[2]
    nw = ow1 - ow0
    acc = np.empty(nw, dtype=np.int64)
    for co in range(co0, co1):
        c0 = (co // cog) * cg
        acc[:] = np.int64(bias[co])
        for kh in range(kh_n):
            num = oh + ph - kh * dh
            if num < 0 or num % sh != 0 or num // sh >= h_in:
                continue
            xrow = xs[n, num // sh]
            for kw in range(kw_n):
                a = kw * dw - pw  # ow = iw*sw + a
                iw_lo = max(np.int64(0), -((a - ow0) // sw))  # ceil((ow0 - a) / sw)
                iw_hi = min(np.int64(w_in - 1), (ow1 - 1 - a) // sw)
                wrow = wt[co, kh, kw]
                for iw in range(iw_lo, iw_hi + 1):
                    acc[iw * sw + a - ow0] += _dot(wrow, xrow[iw, c0:c0 + cg], cg, limit)
        o, t = requantize_row(acc, co, rq, out[n, co, oh, ow0:ow1])
        ovf_part[co, j] = o
        sat_part[co, j] = t


@njit(cache=True, nogil=True)
def _tr_scatter_item(x, x_zp, w, bias, n, co, sh, sw, dh, dw, ph, pw, cg, cog, rq, out, ovf_part, sat_part):
    """Scatter form (TFLite transpose_conv.h): int64 plane for (n, co), rows of taps added in."""
    h_in = x.shape[2]
    w_in = x.shape[3]
    kh_n = w.shape[2]
    kw_n = w.shape[3]
    oh_n = out.shape[2]
    ow_n = out.shape[3]
    acc = np.full((oh_n, ow_n), np.int64(bias[co]), dtype=np.int64)
    g0 = (co // cog) * cg
    col = co % cog
    for cl in range(cg):
        ci = g0 + cl
        for kw in range(kw_n):
            a = kw * dw - pw  # ow = iw*sw + a
            iw_lo = max(np.int64(0), -(a // sw))
            iw_hi = min(np.int64(w_in - 1), (ow_n - 1 - a) // sw) + 1
            if iw_hi <= iw_lo:
                continue
            nn = iw_hi - iw_lo
            ow_lo = iw_lo * sw + a
            for kh in range(kh_n):
                wv = np.int64(w[ci, col, kh, kw])
                for ih in range(h_in):
                    oh = ih * sh + kh * dh - ph
                    if oh < 0 or oh >= oh_n:
                        continue
                    xr = x[n, ci, ih, iw_lo:iw_hi]
                    if sw == 1:
                        row = acc[oh, ow_lo:ow_lo + nn]
                        for i in range(nn):
                            row[i] += wv * (np.int64(xr[i]) - x_zp)
                    else:
                        rows = acc[oh, ow_lo:ow_lo + (nn - 1) * sw + 1:sw]
                        for i in range(nn):
                            rows[i] += wv * (np.int64(xr[i]) - x_zp)
    n_ovf = 0
    n_sat = 0
    for oh in range(oh_n):
        o, t = requantize_row(acc[oh], co, rq, out[n, co, oh])
        n_ovf += o
        n_sat += t
    ovf_part[co, n] = n_ovf
    sat_part[co, n] = n_sat


def _conv_transpose2d(x, x_zp, w, bias, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, rq,
                      out, overflows, saturations):
    """2-D transposed convolution, NCHW (PyTorch ConvTranspose2d semantics).

    x [N, C_in, H, W], w [C_in, C_out/groups, KH, KW], bias [C_out], out [N, C_out, OH, OW]
    acc[n, co, oh, ow] = bias[co] + sum over ci in group g = co // (C_out/groups), kh, kw, ih, iw with
        ih*stride_h + kh*dilation_h - pad_top == oh, iw*stride_w + kw*dilation_w - pad_left == ow,
        0 <= ih < H, 0 <= iw < W  of  w[ci, co % (C_out/groups), kh, kw] * (x[n, ci, ih, iw] - x_zp)
    out[n, co, oh, ow] = requantize_output(acc, co, rq).  This is TFLite's transpose_conv.h
    (scatter into an exact scratch, then bias + requantize per element).  PyTorch's size is
    OH = (H-1)*stride_h - 2*pad_top + dilation_h*(KH-1) + output_padding_h + 1 (same for OW); the
    output padding (and so the bottom / right crop) is implied by out's shape.
    """
    n_batch, c_in, h_in, w_in = x.shape
    c_out = _check_geometry(x, w.shape[0], w.shape[1], bias, out, groups, True)
    cg = c_in // groups
    cog = w.shape[1]
    oh_n = out.shape[2]
    ow_n = out.shape[3]
    if stride_h < 1 or stride_w < 1 or dilation_h < 1 or dilation_w < 1 or pad_top < 0 or pad_left < 0:
        raise ValueError("conv_transpose: stride and dilation must be >= 1 and padding >= 0")
    limit = term_limit(x, x_zp, w)
    if n_batch == 0 or oh_n == 0 or ow_n == 0 or c_out == 0:
        _zero_counts(overflows, saturations)
        return
    if cg >= DOT_MIN_CHANNELS:
        xs = _zeros16((n_batch, h_in, w_in, c_in))
        n_fb = (w_in + 255) // 256
        for f in prange(n_batch * h_in * n_fb):
            n = f // (h_in * n_fb)
            h = (f // n_fb) % h_in
            w0 = (f % n_fb) * 256
            _fill_channels_last(x, x_zp, xs, n, h, w0, min(w0 + 256, w_in), 0, 0)
        wt = _weights_transposed_channels_last(w, groups)
        n_cb = (c_out + DOT_CO_BLOCK - 1) // DOT_CO_BLOCK
        n_wb = (ow_n + DOT_W_BLOCK - 1) // DOT_W_BLOCK
        n_j = n_batch * oh_n * n_wb
        ovf_part = _zeros64((c_out, n_j))
        sat_part = _zeros64((c_out, n_j))
        for item in prange(n_cb * n_j):
            cb = item // n_j
            j = item % n_j
            n = j // (oh_n * n_wb)
            oh = (j // n_wb) % oh_n
            ow0 = (j % n_wb) * DOT_W_BLOCK
            co0 = cb * DOT_CO_BLOCK
            _tr_dot_item(xs, wt, bias, n, co0, min(co0 + DOT_CO_BLOCK, c_out), oh, ow0, min(ow0 + DOT_W_BLOCK, ow_n),
                         stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, cg, cog, limit, rq, out,
                         ovf_part, sat_part, j)
    else:
        ovf_part = _zeros64((c_out, n_batch))
        sat_part = _zeros64((c_out, n_batch))
        for item in prange(c_out * n_batch):
            co = item // n_batch
            n = item % n_batch
            _tr_scatter_item(x, np.int64(x_zp), w, bias, n, co, stride_h, stride_w, dilation_h, dilation_w, pad_top,
                             pad_left, cg, cog, rq, out, ovf_part, sat_part)
    _sum_parts(ovf_part, overflows)
    _sum_parts(sat_part, saturations)


conv_transpose2d, conv_transpose2d_parallel = serial_and_parallel(_conv_transpose2d)


def _conv_transpose1d_serial(x, x_zp, w, bias, stride, padding, dilation, groups, rq, out, overflows, saturations):
    """1-D transposed convolution (PyTorch ConvTranspose1d semantics).

    x [N, C_in, T], w [C_in, C_out/groups, K], bias [C_out], out [N, C_out, T_out]
    acc[n, co, o] = bias[co] + sum over ci in group g = co // (C_out/groups), k, t with
        t*stride + k*dilation - padding == o, 0 <= t < T  of  w[ci, co % (C_out/groups), k] * (x[n, ci, t] - x_zp)
    out[n, co, o] = requantize_output(acc, co, rq).  PyTorch's length is
    T_out = (T-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1; output_padding is implied
    by out's shape (positions no tap reaches hold requantize(bias)).  Computed as conv_transpose2d
    with H = 1.
    """
    conv_transpose2d(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]), x_zp,
                     w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), bias, 1, stride, 0, padding, 1, dilation, groups,
                     rq, out.reshape(out.shape[0], out.shape[1], 1, out.shape[2]), overflows, saturations)


def _conv_transpose1d_parallel(x, x_zp, w, bias, stride, padding, dilation, groups, rq, out, overflows, saturations):
    conv_transpose2d_parallel(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]), x_zp,
                              w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), bias, 1, stride, 0, padding, 1,
                              dilation, groups, rq, out.reshape(out.shape[0], out.shape[1], 1, out.shape[2]),
                              overflows, saturations)


_conv_transpose1d_parallel.__doc__ = _conv_transpose1d_serial.__doc__
conv_transpose1d = njit(cache=True, nogil=True)(_conv_transpose1d_serial)
conv_transpose1d_parallel = njit(cache=True, nogil=True)(_conv_transpose1d_parallel)


# --------------------------------------------------------------------------------------------
# Output sizes
# --------------------------------------------------------------------------------------------


def conv1d_output_length(t_in, kernel, stride, pad_left, pad_right, dilation):
    """Output frames of a 1-D convolution (PyTorch/TFLite 'explicit padding' formula)."""
    span = dilation * (kernel - 1) + 1
    return (t_in + pad_left + pad_right - span) // stride + 1


def conv_transpose_output_length(t_in, kernel, stride, padding, output_padding, dilation):
    """Output frames of a transposed convolution (PyTorch ConvTranspose formula)."""
    return (t_in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
