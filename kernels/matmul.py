"""Integer matrix products: fully connected (TFLite FULLY_CONNECTED) and batched matmul.

linear (TFLite FULLY_CONNECTED, per-output-channel weights)::

    acc[m, n] = bias[n] + sum_k w[n, k] * (x[m, k] - x_zp)
    out[m, n] = requantize_output(acc, n, rq)                  (see kernels.fixedpoint)

batch_matmul (ONNX MatMulInteger / QLinearMatMul, TFLite BATCH_MATMUL; operand B given transposed)::

    acc[b, m, n] = sum_k (a[b, m, k] - a_zp) * (bt[b, n, k] - b_zp)
    out[b, m, n] = requantize_output(acc, 0, rq)               (batch_matmul: per-tensor rq)
    out[b, m, n] = fit_accumulator(acc, acc_bits, saturating)  (batch_matmul_acc: raw accumulators)

Every accumulator is the exact integer sum (int64); the profile's accumulator register width is
applied to the final sum by ``requantize_output`` / ``fit_accumulator``, exactly as in conv1d.

Speed without losing exactness.  The zero points are taken out of the inner loop,

    sum_k w*(x - zp) = sum_k w*x - zp * sum_k w

(and the four-term expansion for batch_matmul), so the innermost loop is a plain contiguous dot
product of raw codes over K.  That loop accumulates in int32 (LLVM turns it into ``vpmaddwd`` on
this machine, about 3x faster than int64) over chunks of at most ``block`` products, and the chunk
sums are added in int64.  ``block`` comes from ``int32_block``: with |a| <= amax and |b| <= bmax for
every element actually multiplied (the kernels measure both maxima on the operands before the
loop), every partial sum of a chunk is bounded by ``block * amax * bmax <= 2^31 - 1``, so the int32
accumulation never wraps and the result is exact.  int8 x int8 gives block >= 131072 (one chunk
for any realistic K); int16 x int8 gives block >= 511.  If amax * bmax itself exceeded 2^31 - 1
(not possible for 8/16-bit codes), ``block`` is 0 and the dot product runs in int64.

``out`` is allocated by the caller; ``overflows`` / ``saturations`` receive per-channel (linear) or
per-row (batch_matmul, index b * M + m) counts so ``prange`` loops never race.

Parallel twins are compiled from a renamed copy of the loop (``jit.serial_and_parallel``): Numba's on-disk cache keys
an entry by the function's qualified name, line and bytecode only, not by ``parallel=True``, so
``njit(cache=True)(f)`` and ``njit(cache=True, parallel=True)(f)`` would share one cache entry and
whichever compiled first would silently serve both.
"""


import numpy as np
from numba import njit, prange

from .fixedpoint import INT32_MAX, fit_accumulator, requantize_output
from .jit import serial_and_parallel


@njit(cache=True, nogil=True)
def int32_block(amax, bmax, k_len):
    """Longest run of products a*b (|a| <= amax, |b| <= bmax) whose int32 partial sums cannot wrap.

    Returns ``max(k_len, 1)`` when every product is 0, 0 when a single product may not fit int32
    (callers then accumulate in int64), else ``floor((2^31 - 1) / (amax * bmax))``.
    """
    prod = np.int64(amax) * np.int64(bmax)
    if prod == 0:
        return np.int64(max(k_len, 1))
    if prod > INT32_MAX:
        return np.int64(0)
    return np.int64(INT32_MAX) // prod


@njit(cache=True, nogil=True, inline="always")
def dot_exact(a, b, block):
    """Exact sum_k a[k] * b[k] of two contiguous integer vectors, as int64.

    int32 accumulation over chunks of ``block`` products (see the module docstring for the proof
    that they cannot wrap), chunk sums added in int64; ``block <= 0`` accumulates in int64.
    """
    k_len = a.shape[0]
    total = np.int64(0)
    if block <= 0:
        for k in range(k_len):
            total += np.int64(a[k]) * np.int64(b[k])
        return total
    for k0 in range(0, k_len, block):
        k1 = min(k0 + block, k_len)
        # Slices, so the loop index starts at 0: Numba then knows it is non-negative and skips
        # the negative-index wraparound that would block vectorization (28x slower).
        a_chunk = a[k0:k1]
        b_chunk = b[k0:k1]
        acc = np.int32(0)
        for k in range(a_chunk.shape[0]):
            acc = np.int32(acc + np.int32(a_chunk[k]) * np.int32(b_chunk[k]))
        total += np.int64(acc)
    return total


@njit(cache=True, nogil=True)
def max_abs(x):
    """max |x| over all elements, as int64 (0 for an empty array)."""
    flat = x.ravel()
    best = np.int64(0)
    for i in range(flat.size):
        v = np.int64(flat[i])
        if v < 0:
            v = -v
        if v > best:
            best = v
    return best


def _linear(x, x_zp, w, bias, rq, out, overflows, saturations):
    """x [M, K] int8/int16 (C-contiguous), w [N, K] int8, bias [N] int32/int64, out [M, N]."""
    m_rows, k_len = x.shape
    n_out = w.shape[0]
    x_max = max_abs(x)
    for n in prange(n_out):
        w_row = w[n]
        w_sum = np.int64(0)
        w_max = np.int64(0)
        for k in range(k_len):
            v = np.int64(w_row[k])
            w_sum += v
            if v < 0:
                v = -v
            if v > w_max:
                w_max = v
        block = int32_block(x_max, w_max, k_len)
        offset = np.int64(bias[n]) - np.int64(x_zp) * w_sum
        n_ovf = 0
        n_sat = 0
        for m in range(m_rows):
            acc = offset + dot_exact(x[m], w_row, block)
            code, ovf, sat = requantize_output(acc, n, rq)
            out[m, n] = code
            n_ovf += ovf
            n_sat += sat
        overflows[n] = n_ovf
        saturations[n] = n_sat


linear, linear_parallel = serial_and_parallel(_linear)


@njit(cache=True, nogil=True, inline="always")
def _row_sums(bt):
    """sum_k bt[b, n, k] for every (b, n), int64 [B, N]."""
    n_batch, n_cols, k_len = bt.shape
    sums = np.zeros((n_batch, n_cols), dtype=np.int64)
    for b in range(n_batch):
        for n in range(n_cols):
            s = np.int64(0)
            for k in range(k_len):
                s += np.int64(bt[b, n, k])
            sums[b, n] = s
    return sums


def _batch_matmul(a, a_zp, bt, b_zp, rq, out, overflows, saturations):
    """a [B, M, K] int8/int16, bt [B, N, K] int8 (B transposed), out [B, M, N] requantized (rq channel 0)."""
    n_batch, m_rows, k_len = a.shape
    n_cols = bt.shape[1]
    block = int32_block(max_abs(a), max_abs(bt), k_len)
    b_sums = _row_sums(bt)
    a_zp = np.int64(a_zp)
    b_zp = np.int64(b_zp)
    const = np.int64(k_len) * a_zp * b_zp
    for r in prange(n_batch * m_rows):
        bi = r // m_rows
        m = r - bi * m_rows
        a_row = a[bi, m]
        a_sum = np.int64(0)
        for k in range(k_len):
            a_sum += np.int64(a_row[k])
        row_off = const - b_zp * a_sum
        n_ovf = 0
        n_sat = 0
        for n in range(n_cols):
            acc = row_off - a_zp * b_sums[bi, n] + dot_exact(a_row, bt[bi, n], block)
            code, ovf, sat = requantize_output(acc, 0, rq)
            out[bi, m, n] = code
            n_ovf += ovf
            n_sat += sat
        overflows[r] = n_ovf
        saturations[r] = n_sat


batch_matmul, batch_matmul_parallel = serial_and_parallel(_batch_matmul)


def _batch_matmul_acc(a, a_zp, bt, b_zp, acc_bits, acc_saturating, out, overflows):
    """Like batch_matmul but writes the accumulator register (int32/int64 ``out``), no requant.

    The register is ``acc_bits`` wide (capped at the width of ``out``), wrapping or saturating.
    """
    n_batch, m_rows, k_len = a.shape
    n_cols = bt.shape[1]
    block = int32_block(max_abs(a), max_abs(bt), k_len)
    b_sums = _row_sums(bt)
    a_zp = np.int64(a_zp)
    b_zp = np.int64(b_zp)
    const = np.int64(k_len) * a_zp * b_zp
    bits = min(np.int64(acc_bits), np.int64(out.itemsize * 8))
    saturating = acc_saturating != 0
    for r in prange(n_batch * m_rows):
        bi = r // m_rows
        m = r - bi * m_rows
        a_row = a[bi, m]
        a_sum = np.int64(0)
        for k in range(k_len):
            a_sum += np.int64(a_row[k])
        row_off = const - b_zp * a_sum
        n_ovf = 0
        for n in range(n_cols):
            acc = row_off - a_zp * b_sums[bi, n] + dot_exact(a_row, bt[bi, n], block)
            reg, ovf = fit_accumulator(acc, bits, saturating)
            out[bi, m, n] = reg
            n_ovf += ovf
        overflows[r] = n_ovf


batch_matmul_acc, batch_matmul_acc_parallel = serial_and_parallel(_batch_matmul_acc)
