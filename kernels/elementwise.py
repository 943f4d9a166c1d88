"""Integer element-wise kernels: requantize, add / sub, mul, prelu, clamp.

Memory layout and parallelism
-----------------------------
Unary kernels take flat contiguous arrays.  Binary kernels take both inputs *raveled* (1-D,
contiguous, in their own shapes) plus a broadcast plan from ``broadcast_plan(shape1, shape2)``:
the output shape collapsed to ``dims`` (int64[k], k >= 1; adjacent dimensions merged where both
inputs step through them contiguously) and per-input element strides ``st1``, ``st2`` over
``dims`` (0 along broadcast dimensions).  NumPy broadcasting rules; the output is written in C
order into a flat ``out``.  Work is split into independent items (rows of the collapsed output,
each cut into chunks of ``chunk`` elements); ``prange`` runs over items and the kernels write
per-item counters ``overflows[w]``, ``saturations[w]`` (``len == n_items``), so the parallel twin
never races.  Every kernel has a ``_parallel`` twin compiled from the same source.

Arithmetic (see ``intsim.fixedpoint`` for the rounding rules; all values carried in int64)
-----------------------------------------------------------------------------------------------
requantize(x3, x_zp, rq, chunk, out3, overflows, saturations)
    ``x3``/``out3``: [outer, C, inner] views; channel c uses ``rq`` entry c (C = 1: per tensor).
    ``out = requantize_output(x - x_zp, c, rq)``: accumulator register of the path (wrap/saturate,
    counted), scale with the path rounding, ``+ out_zp``, clamp to [act_min, act_max].  With the
    ``float32`` rounding the float32 ``scale`` (real multiplier) is used:
    ``round_half_even(float32(x - x_zp) * float32(scale))``.

add(x1, x2, dims, st1, st2, chunk, sign, ap, out, overflows, saturations)   (sign=+1 add, -1 sub)
    TFLite/TFLM ADD and SUB (``reference_integer_ops::AddFunc``, ``reference_ops::SubElementwise``)::

        s1 = rescale((x1 - zp1) << left_shift, M1, shift1)
        s2 = rescale((x2 - zp2) << left_shift, M2, shift2)
        out = clamp(rescale(s1 +/- s2, M_out, shift_out) + zp_out, act_min, act_max)

    where ``rescale`` is the path rounding (``double``: gemmlowp SRDHM + RDBP, i.e. TFLite's
    MultiplyByQuantizedMultiplierSmallerThanOneExp for shifts <= 0; single roundings:
    ``round(x * M / 2^(mult_bits - shift))``).  Sub subtracts the two rounded terms (it is not an
    add with a negated multiplier: SRDHM rounds ties up, so the two differ).  Values stay within
    int32 by TFLite's choice of left_shift (20 for int8, 15 for int16); no accumulator register
    is modelled (``overflows`` are always 0).
    ``float32`` rounding (ONNX-style, the QDQ DequantizeLinear -> Add -> QuantizeLinear path and
    ORT MLAS's scalar QLinearAdd): with the float32 tensor scales ``scale = (s1, s2, s_out)``::

        v = float32(x1 - zp1) * s1  +/-  float32(x2 - zp2) * s2          (float32 arithmetic)
        out = clamp(round_half_even(v / s_out) + zp_out, act_min, act_max)

    ``ap = pack_add_params(zp1, zp2, left_shift, mult[3], shift[3], scale[3], rounding, mult_bits,
    out_zp, act_min, act_max)``; ``mult`` must already have ``mult_bits`` fractional bits.

add_offset(x1, x2, dims, st1, st2, chunk, sign, ap, offset, offset_real, out, overflows, saturations)
    ``add`` with a constant term (FQSS's float zero points): ``raw = s1 +/- s2 + offset`` before
    the output rescale, ``offset`` (int64) in the units of the rescaled terms,
    ``2 * max(s1, s2) * 2^-left_shift``; ``float32`` rounding: ``v = float32(v + offset_real)``
    with ``offset_real`` the same constant in real units (float32).  ``offset = 0`` is ``add``.

mul(x1, x2, dims, st1, st2, chunk, zp1, zp2, rq, out, overflows, saturations)
    TFLite/TFLM MUL: ``requantize_output((x1 - zp1) * (x2 - zp2), 0, rq)``; ``rq`` per tensor
    (one channel).  ``float32`` rounding: ``round_half_even(float32(prod) * float32(scale))``
    with ``scale = float32(s1 * s2 / s_out)`` (ORT MLAS QLinearMul).

mul_affine(x1, x2, dims, st1, st2, chunk, zp1, zp2, bits, o1, o2, o0, rq, out, overflows, saturations)
    MUL with fractional zero points (an affine product; FQSS's float zero points):
    ``d1 = x1 - zp1``, ``d2 = x2 - zp2``,
    ``acc = (d1 * d2) * 2^bits + o2 * d1 + o1 * d2 + o0`` (exact int64), then
    ``requantize_output(acc, 0, rq)``.  With ``o_i = 2^bits * c_i / s_i`` this is
    ``2^bits * (d1 + c1/s1) * (d2 + c2/s2)`` up to the constant ``o0``; ``rq``'s multiplier is
    ``s1 * s2 / (2^bits * s_out)``.  ``bits = o1 = o2 = o0 = 0`` is ``mul``.

prelu(x, alpha, dims, st1, st2, chunk, x_zp, alpha_zp, rq, out, overflows, saturations)
    TFLite/TFLM PRELU (two multipliers): ``v = x - x_zp``; ``v >= 0``:
    ``requantize_output(v, 0, rq)`` (identity multiplier s_in / s_out), else
    ``requantize_output(v * (alpha - alpha_zp), 1, rq)`` (s_in * s_alpha / s_out).  ``rq`` has two
    channels [identity, alpha]; ``alpha`` broadcasts against ``x`` (one slope, per-channel slopes,
    or any NumPy-broadcastable shape).

clamp_codes(x, lo, hi, chunk, out)
    ``out = min(max(x, lo), hi)`` on codes (ReLU: ``lo = zero point``; ReLU6 / clamp: codes of
    the bounds).  No counters: clamping is the op's purpose, not a saturation event.
"""

import numpy as np
from numba import njit, prange

from .fixedpoint import ROUND_FLOAT32, clamp, requantize_output
from .fixedpoint import requantize as _rescale
from .jit import serial_and_parallel

CHUNK = 16384


def n_chunks(n, chunk=CHUNK):
    """Work items of a flat kernel over ``n`` elements."""
    return (n + chunk - 1) // chunk


def broadcast_plan(shape1, shape2, chunk=CHUNK):
    """NumPy broadcasting of two shapes, collapsed for the binary kernels.

    Returns ``(out_shape, dims, st1, st2, n_items)``: the broadcast output shape (tuple), the
    collapsed dimensions (int64[k]), each input's element strides over them (int64[k], 0 where it
    broadcasts) and the number of work items (counter length).  Raises ValueError if the shapes
    do not broadcast.
    """
    out_shape = tuple(int(d) for d in np.broadcast_shapes(tuple(shape1), tuple(shape2)))
    nd = len(out_shape)

    def strides(shape):
        shape = (1,) * (nd - len(shape)) + tuple(int(d) for d in shape)
        st = [0] * nd
        step = 1
        for d in range(nd - 1, -1, -1):
            st[d] = 0 if shape[d] == 1 else step
            step *= shape[d]
        return st

    s1, s2 = strides(shape1), strides(shape2)
    dims, a, b = [], [], []
    for d in range(nd):
        n = out_shape[d]
        if n == 1:
            continue
        if dims and a[-1] == s1[d] * n and b[-1] == s2[d] * n:
            dims[-1] *= n
            a[-1], b[-1] = s1[d], s2[d]
        else:
            dims.append(n)
            a.append(s1[d])
            b.append(s2[d])
    if not dims:
        dims, a, b = [1], [0], [0]
    rows = int(np.prod(dims[:-1], dtype=np.int64)) if len(dims) > 1 else 1
    n_items = rows * n_chunks(dims[-1], chunk)
    return (out_shape, np.array(dims, dtype=np.int64), np.array(a, dtype=np.int64), np.array(b, dtype=np.int64),
            n_items)


def pack_add_params(zp1, zp2, left_shift, mult, shift, scale, rounding, mult_bits, out_zp, act_min, act_max):
    """Parameter tuple of ``add``: ``mult``/``shift`` int32[3] and ``scale`` float32[3] ordered
    (input1, input2, output); ``scale`` holds the float32 tensor scales (s1, s2, s_out) used only by
    the ``float32`` rounding."""
    mult = np.ascontiguousarray(mult, dtype=np.int32)
    shift = np.ascontiguousarray(shift, dtype=np.int32)
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    if mult.shape != (3,) or shift.shape != (3,) or scale.shape != (3,):
        raise ValueError("add parameters need 3 multipliers, shifts and scales (input1, input2, output)")
    return (np.int64(zp1), np.int64(zp2), np.int64(left_shift), mult, shift, scale, np.int64(rounding),
            np.int64(mult_bits), np.int64(out_zp), np.int64(act_min), np.int64(act_max))


@njit(cache=True, nogil=True, inline="always")
def _row_offsets(row, dims, st1, st2):
    """Element offsets of the first element of collapsed output row ``row`` in both inputs."""
    o1 = np.int64(0)
    o2 = np.int64(0)
    r = np.int64(row)
    for d in range(dims.size - 2, -1, -1):
        i = r % dims[d]
        r = r // dims[d]
        o1 += i * st1[d]
        o2 += i * st2[d]
    return o1, o2


# ---------------------------------------------------------------- requantize


def _requantize(x, x_zp, rq, chunk, out, overflows, saturations):
    outer, channels, inner = x.shape
    per = (inner + chunk - 1) // chunk
    for w in prange(outer * channels * per):
        oc = w // per
        c = oc % channels
        o = oc // channels
        j0 = (w - oc * per) * chunk
        j1 = min(j0 + chunk, inner)
        n_ovf = 0
        n_sat = 0
        for j in range(j0, j1):
            code, ovf, sat = requantize_output(np.int64(x[o, c, j]) - x_zp, c, rq)
            out[o, c, j] = code
            n_ovf += ovf
            n_sat += sat
        overflows[w] = n_ovf
        saturations[w] = n_sat


requantize, requantize_parallel = serial_and_parallel(_requantize)


def requantize_items(outer, channels, inner, chunk=CHUNK):
    """Counter length of ``requantize`` on an [outer, channels, inner] array."""
    return outer * channels * n_chunks(inner, chunk)


# ---------------------------------------------------------------- add / sub


@njit(cache=True, nogil=True, inline="always")
def _add_value(a, b, sign, ap):
    zp1, zp2, left_shift, mult, shift, scale, rounding, mult_bits, out_zp, act_min, act_max = ap
    va = np.int64(a) - zp1
    vb = np.int64(b) - zp2
    if rounding == ROUND_FLOAT32:
        fa = np.float32(va) * scale[0]
        fb = np.float32(vb) * scale[1]
        if sign > 0:
            f = np.float32(fa + fb)
        else:
            f = np.float32(fa - fb)
        q = np.float32(np.rint(np.float32(f / scale[2])))
        # saturate in float before converting (values beyond int32 clamp anyway)
        if q > np.float32(2147483647.0):
            r = np.int64(2147483647)
        elif q < np.float32(-2147483648.0):
            r = np.int64(-2147483648)
        else:
            r = np.int64(q)
    else:
        s1 = _rescale(va << left_shift, mult[0], shift[0], scale[0], rounding, mult_bits)
        s2 = _rescale(vb << left_shift, mult[1], shift[1], scale[1], rounding, mult_bits)
        raw = s1 + s2 if sign > 0 else s1 - s2
        r = _rescale(raw, mult[2], shift[2], scale[2], rounding, mult_bits)
    return clamp(r + out_zp, act_min, act_max)


def _add(x1, x2, dims, st1, st2, chunk, sign, ap, out, overflows, saturations):
    k = dims.size
    length = dims[k - 1]
    per = (length + chunk - 1) // chunk
    t1 = st1[k - 1]
    t2 = st2[k - 1]
    for w in prange(overflows.size):
        row = w // per
        j0 = (w - row * per) * chunk
        j1 = min(j0 + chunk, length)
        o1, o2 = _row_offsets(row, dims, st1, st2)
        base = row * length
        n_sat = 0
        for j in range(j0, j1):
            code, sat = _add_value(x1[o1 + j * t1], x2[o2 + j * t2], sign, ap)
            out[base + j] = code
            n_sat += sat
        overflows[w] = 0
        saturations[w] = n_sat


add, add_parallel = serial_and_parallel(_add)


@njit(cache=True, nogil=True, inline="always")
def _add_value_offset(a, b, sign, ap, offset, offset_real):
    zp1, zp2, left_shift, mult, shift, scale, rounding, mult_bits, out_zp, act_min, act_max = ap
    va = np.int64(a) - zp1
    vb = np.int64(b) - zp2
    if rounding == ROUND_FLOAT32:
        fa = np.float32(va) * scale[0]
        fb = np.float32(vb) * scale[1]
        if sign > 0:
            f = np.float32(fa + fb)
        else:
            f = np.float32(fa - fb)
        f = np.float32(f + offset_real)
        q = np.float32(np.rint(np.float32(f / scale[2])))
        if q > np.float32(2147483647.0):
            r = np.int64(2147483647)
        elif q < np.float32(-2147483648.0):
            r = np.int64(-2147483648)
        else:
            r = np.int64(q)
    else:
        s1 = _rescale(va << left_shift, mult[0], shift[0], scale[0], rounding, mult_bits)
        s2 = _rescale(vb << left_shift, mult[1], shift[1], scale[1], rounding, mult_bits)
        raw = (s1 + s2 if sign > 0 else s1 - s2) + offset
        r = _rescale(raw, mult[2], shift[2], scale[2], rounding, mult_bits)
    return clamp(r + out_zp, act_min, act_max)


def _add_offset(x1, x2, dims, st1, st2, chunk, sign, ap, offset, offset_real, out, overflows, saturations):
    k = dims.size
    length = dims[k - 1]
    per = (length + chunk - 1) // chunk
    t1 = st1[k - 1]
    t2 = st2[k - 1]
    off = np.int64(offset)
    off_f = np.float32(offset_real)
    for w in prange(overflows.size):
        row = w // per
        j0 = (w - row * per) * chunk
        j1 = min(j0 + chunk, length)
        o1, o2 = _row_offsets(row, dims, st1, st2)
        base = row * length
        n_sat = 0
        for j in range(j0, j1):
            code, sat = _add_value_offset(x1[o1 + j * t1], x2[o2 + j * t2], sign, ap, off, off_f)
            out[base + j] = code
            n_sat += sat
        overflows[w] = 0
        saturations[w] = n_sat


add_offset, add_offset_parallel = serial_and_parallel(_add_offset)


# ---------------------------------------------------------------- mul


def _mul(x1, x2, dims, st1, st2, chunk, zp1, zp2, rq, out, overflows, saturations):
    k = dims.size
    length = dims[k - 1]
    per = (length + chunk - 1) // chunk
    t1 = st1[k - 1]
    t2 = st2[k - 1]
    for w in prange(overflows.size):
        row = w // per
        j0 = (w - row * per) * chunk
        j1 = min(j0 + chunk, length)
        o1, o2 = _row_offsets(row, dims, st1, st2)
        base = row * length
        n_ovf = 0
        n_sat = 0
        for j in range(j0, j1):
            prod = (np.int64(x1[o1 + j * t1]) - zp1) * (np.int64(x2[o2 + j * t2]) - zp2)
            code, ovf, sat = requantize_output(prod, 0, rq)
            out[base + j] = code
            n_ovf += ovf
            n_sat += sat
        overflows[w] = n_ovf
        saturations[w] = n_sat


mul, mul_parallel = serial_and_parallel(_mul)


def _mul_affine(x1, x2, dims, st1, st2, chunk, zp1, zp2, bits, o1, o2, o0, rq, out, overflows, saturations):
    k = dims.size
    length = dims[k - 1]
    per = (length + chunk - 1) // chunk
    t1 = st1[k - 1]
    t2 = st2[k - 1]
    for w in prange(overflows.size):
        row = w // per
        j0 = (w - row * per) * chunk
        j1 = min(j0 + chunk, length)
        r1, r2 = _row_offsets(row, dims, st1, st2)
        base = row * length
        n_ovf = 0
        n_sat = 0
        for j in range(j0, j1):
            d1 = np.int64(x1[r1 + j * t1]) - zp1
            d2 = np.int64(x2[r2 + j * t2]) - zp2
            acc = ((d1 * d2) << np.int64(bits)) + np.int64(o2) * d1 + np.int64(o1) * d2 + np.int64(o0)
            code, ovf, sat = requantize_output(acc, 0, rq)
            out[base + j] = code
            n_ovf += ovf
            n_sat += sat
        overflows[w] = n_ovf
        saturations[w] = n_sat


mul_affine, mul_affine_parallel = serial_and_parallel(_mul_affine)


# ---------------------------------------------------------------- prelu


def _prelu(x, alpha, dims, st1, st2, chunk, x_zp, alpha_zp, rq, out, overflows, saturations):
    k = dims.size
    length = dims[k - 1]
    per = (length + chunk - 1) // chunk
    t1 = st1[k - 1]
    t2 = st2[k - 1]
    for w in prange(overflows.size):
        row = w // per
        j0 = (w - row * per) * chunk
        j1 = min(j0 + chunk, length)
        o1, o2 = _row_offsets(row, dims, st1, st2)
        base = row * length
        n_ovf = 0
        n_sat = 0
        for j in range(j0, j1):
            v = np.int64(x[o1 + j * t1]) - x_zp
            if v >= 0:
                code, ovf, sat = requantize_output(v, 0, rq)
            else:
                code, ovf, sat = requantize_output(v * (np.int64(alpha[o2 + j * t2]) - alpha_zp), 1, rq)
            out[base + j] = code
            n_ovf += ovf
            n_sat += sat
        overflows[w] = n_ovf
        saturations[w] = n_sat


prelu, prelu_parallel = serial_and_parallel(_prelu)


# ---------------------------------------------------------------- clamp on codes


def _clamp_codes(x, lo, hi, chunk, out):
    n = x.size
    for w in prange((n + chunk - 1) // chunk):
        i0 = w * chunk
        i1 = min(i0 + chunk, n)
        for i in range(i0, i1):
            v = np.int64(x[i])
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            out[i] = v


clamp_codes, clamp_codes_parallel = serial_and_parallel(_clamp_codes)
