"""Integer 1-D convolution.

    acc[n, co, t] = bias[co] + sum_{ci in group(co), k} w[co, ci, k] * (x[n, ci, t*stride + k*dilation - pad_left] - x_zp)
    out[n, co, t] = requantize_output(acc, co)          (see kernels.fixedpoint)

Taps that fall into the padding contribute nothing (padding holds the input zero point, i.e. the
real value 0).  Accumulation is exact in int64; the accumulator register width is applied to the
final sum.  ``out`` is allocated by the caller; ``overflows[co]`` and ``saturations[co]`` receive
per-channel counts.
"""

import numpy as np
from numba import njit, prange

from .fixedpoint import requantize_output


def _conv1d(x, x_zp, w, bias, stride, pad_left, dilation, groups, rq, out, overflows, saturations):
    n_batch, c_in, t_in = x.shape
    c_out, c_in_group, kernel = w.shape
    t_out = out.shape[2]
    c_out_group = c_out // groups
    for co in prange(c_out):
        ci0 = (co // c_out_group) * c_in_group
        n_ovf = 0
        n_sat = 0
        for n in range(n_batch):
            for t in range(t_out):
                acc = np.int64(bias[co])
                base = t * stride - pad_left
                for k in range(kernel):
                    pos = base + k * dilation
                    if pos < 0 or pos >= t_in:
                        continue
                    for ci in range(c_in_group):
                        acc += np.int64(w[co, ci, k]) * (np.int64(x[n, ci0 + ci, pos]) - x_zp)
                code, ovf, sat = requantize_output(acc, co, rq)
                out[n, co, t] = code
                n_ovf += ovf
                n_sat += sat
        overflows[co] = n_ovf
        saturations[co] = n_sat


conv1d = njit(cache=True, nogil=True)(_conv1d)
conv1d_parallel = njit(cache=True, nogil=True, parallel=True)(_conv1d)


def conv1d_output_length(t_in, kernel, stride, pad_left, pad_right, dilation):
    """Output frames of a 1-D convolution (PyTorch/TFLite 'explicit padding' formula)."""
    span = dilation * (kernel - 1) + 1
    return (t_in + pad_left + pad_right - span) // stride + 1
