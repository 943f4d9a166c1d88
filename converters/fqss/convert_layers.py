"""Integer building blocks of the FQSS converter: grids, weights, and one emitter per layer kind.

Every FQSS activation quantizer becomes an int8 tensor (SPEC §1.2, docs/fqss-conversion.md)::

    s = float32(max - min) / 255          (float32, as FQSS computes it)
    z = clip(round(-min / s), 0, 255) - 128      the nudged integer zero point
    c = min + s * (z + 128)                      the residual offset, |c| <= s/2 unless clipped
    q = a - 128                                  the int8 code of FQSS's code a in [0, 255]
    real = s * (q - z) + c                       exactly FQSS's real value s*a + min

so ``q`` carries FQSS's codes unchanged and ``c`` is folded into the integer constants of the
producers (``-c_out``) and consumers (``+c_in * sum(w)``) of each tensor.

Weights (SPEC §1.1): ``d = float32(2 * max(|min|, |max|)) / 255`` per output channel and
``w = clip(rint(W / d), -128, 127)`` in float32, bit-identical to FQSS.  Biases are int32 in units
``s_in * d``; multipliers are ``quantize_multiplier(double(s_in) * double(d) / double(s_out))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intsim.fixedpoint import quantize_multiplier
from intsim.ops.norm import norm_constants
from intsim.quantize import add_params, mul_params, requantize_params, sub_params

INT32_LIMIT = 2**31 - 1
#: fractional bits of the mask multiply's zero points (2^12 * 255^2 stays below 2^31)
MUL_OFFSET_BITS = 12
INT64_LIMIT = 2**62


class ConversionError(ValueError):
    """The checkpoint cannot be converted (unsupported option, or a constant does not fit its integer type)."""


# ---------------------------------------------------------------------------------------------
# Grids


@dataclass(frozen=True)
class Grid:
    """One FQSS activation quantizer in intsim form (see the module docstring)."""

    key: str  # FQSS quantizer prefix, e.g. "masker.TCN.0.add.activation_fake_quantize"
    scale: float  # float32 value of s, held as a Python float
    minimum: float  # float32 min_range
    maximum: float  # float32 max_range
    zero_point: int  # int8 zero point (the nudged one unless the converter moved it, see shifted)
    offset: float  # c = min + s*(z+128) (float64)
    nudged_zero_point: int | None = None  # clip(round(-min/s), 0, 255) - 128

    def __post_init__(self):
        if self.nudged_zero_point is None:
            object.__setattr__(self, "nudged_zero_point", self.zero_point)

    @property
    def offset_lsb(self) -> float:
        """|c| / s: how far FQSS's grid sits from the nudged integer grid, in LSBs."""
        return abs(self.offset) / self.scale

    def quant(self):
        return (self.scale, self.zero_point)

    def shifted(self, k: int) -> "Grid":
        """The same grid with zero point z + k (offset c + k*s): the same codes, the same reals."""
        return Grid(self.key, self.scale, self.minimum, self.maximum, self.zero_point + int(k),
                    self.offset + int(k) * self.scale, self.nudged_zero_point)

    def without_offset(self) -> "Grid":
        """The plain nudged grid (c taken as 0): what a converter that ignores FQSS's float zero
        point computes (used to measure what folding the offsets buys)."""
        return Grid(self.key, self.scale, self.minimum, self.maximum, self.zero_point, 0.0, self.nudged_zero_point)


def make_grid(state_dict, key: str, n_bits: int = 8) -> Grid:
    if n_bits != 8:
        raise ConversionError(f"{key}: {n_bits}-bit activations are not supported (int8 tensors only)")
    mn = np.float32(state_dict[key + ".min_range"].reshape(-1)[0])
    mx = np.float32(state_dict[key + ".max_range"].reshape(-1)[0])
    s = np.float32(np.float32(mx - mn) / np.float32(2**n_bits - 1))
    if not (np.isfinite(s) and s > 0):
        raise ConversionError(f"{key}: activation range [{float(mn)!r}, {float(mx)!r}] has no positive step "
                              f"(max_range must exceed min_range)")
    a0 = int(np.clip(np.rint(-float(mn) / float(s)), 0, 2**n_bits - 1))
    z = a0 - 2 ** (n_bits - 1)
    c = float(mn) + float(s) * a0
    return Grid(key, float(s), float(mn), float(mx), z, c)


def splitter_grid(n_bits: int = 8) -> Grid:
    """The splitter's codes: scale 2^-(n-1), zero point 0, no offset."""
    s = 2.0 ** -(n_bits - 1)
    return Grid("splitter", s, -1.0, 1.0 - s, 0, 0.0)


# ---------------------------------------------------------------------------------------------
# Weights


def weight_codes(w, min_range, max_range, n_bits: int = 8):
    """(int8 codes, float32 per-channel scale d broadcast like the ranges) bit-identical to FQSS."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.maximum(np.abs(np.asarray(min_range, np.float32)), np.abs(np.asarray(max_range, np.float32)))
    d = (np.float32(2) * amax / np.float32(2**n_bits - 1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(w / d)
    q = np.where(d > 0, q, 0)
    lo, hi = -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1
    return np.clip(q, lo, hi).astype(np.int8), d


def multipliers(reals):
    """int32 multipliers and shifts of TFLite ``QuantizeMultiplier`` plus the float32 reals."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).reshape(-1)]
    mult = np.array([m for m, _ in pairs], dtype=np.int32)
    shift = np.array([s for _, s in pairs], dtype=np.int32)
    return mult, shift, np.asarray(reals, dtype=np.float32).reshape(-1)


def rint_checked(values, limit, what):
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > limit):
        worst = float(np.max(np.abs(values)))
        raise ConversionError(f"{what}: constant of magnitude {worst:.4g} does not fit (limit {limit})")
    return np.rint(values).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Tensors flowing through the emitters


@dataclass(frozen=True)
class Act:
    """A graph tensor holding FQSS codes of ``grid`` (int8), or a wider tensor (grid None)."""

    name: str
    grid: Grid | None
    scale: float = 0.0  # for wide tensors: real = scale * code (zero point 0)


class Emitter:
    """Writes layers into a ``GraphBuilder`` and records what was done into a report."""

    def __init__(self, gb, report, *, profile="tflm"):
        self.gb = gb
        self.report = report
        self.profile = profile
        self.tensor_keys: dict[str, str] = {}  # graph tensor -> FQSS quantizer key

    # -- helpers ----------------------------------------------------------------------------
    def act_tensor(self, name, grid: Grid, shape) -> Act:
        t = self.gb.tensor(name, "int8", shape, quant=grid.quant())
        self.tensor_keys[t] = grid.key
        self.report.add_tensor(t, grid)
        return Act(t, grid)

    def consts(self, prefix, **arrays):
        return {k: self.gb.const(f"{prefix}.{k}", v) for k, v in arrays.items()}

    # -- linear layers ------------------------------------------------------------------------
    def conv(self, name, x: Act, codes, d, bias, out: Grid, out_shape, *, stride=1, padding=(0, 0), dilation=1,
             groups=1, nl=None, slope=None, exact_edges=False) -> Act:
        """int8 conv1d ``Q(nl(conv(x, d*codes) + bias))`` with FQSS's grids on both sides.

        ``codes`` int8 [C_out, C_in/groups, K], ``d`` [C_out], ``bias`` float [C_out] or None.
        ``nl``: None, "relu" (act_min = z_out) or "prelu" (``slope``: the requant stage's negative
        multiplier and offsets).  The input offset c_in is folded as c_in * sum(w) per output
        channel: exact except at zero-padded taps, which read the zero-point code (real c_in where
        FQSS has 0).  ``exact_edges`` (stride 1 only) splits the conv into edge convs over input
        slices, each with the sub-kernel of its real taps, and a padding-free core, concatenated:
        every output then folds exactly the offsets of the taps FQSS sums.
        """
        y = self.act_tensor(name, out, out_shape)
        l, r = int(padding[0]), int(padding[1])
        if exact_edges and (l or r):
            self._conv_exact(name, x, codes, d, bias, out, y.name, l, r, dilation, groups, nl, slope, stride)
            return y
        self._conv_node(name, x, x.name, codes, d, bias, out, y.name, stride, (l, r), dilation, groups, nl, slope)
        return y

    def _conv_exact(self, name, x, codes, d, bias, out, y, l, r, dil, groups, nl, slope, stride):
        if stride != 1:
            raise ConversionError(f"{name}: exact edge offsets need stride 1, got {stride}")
        K = codes.shape[2]
        if l >= K * dil or r >= K * dil:
            raise ConversionError(f"{name}: padding {[l, r]} reaches past the kernel; not supported")
        spec = self.gb.spec(y)
        parts = []

        def part(tag, x_name, sub, pad_len):
            t = self.gb.tensor(f"{name}.{tag}", "int8", [spec.shape[0], spec.shape[1], pad_len], quant=out.quant())
            self._conv_node(f"{name}.{tag}", x, x_name, sub, d, bias, out, t, 1, (0, 0), dil, groups, nl, slope)
            parts.append(t)

        def sliced(tag, start, end):
            xs = self.gb.spec(x.name)
            t = self.gb.tensor(f"{name}.{tag}.in", xs.dtype, [xs.shape[0], xs.shape[1], None], quant=xs.quant)
            self.gb.node("slice", [x.name], [t], {"starts": [int(start)], "ends": [int(end)], "axes": [2]},
                         name=f"{name}.{tag}.in")
            return t

        for j in range(-(-l // dil), 0, -1):  # left edge: taps 0..j-1 read padding
            t0, t1 = max(0, l - j * dil), l - (j - 1) * dil
            a = t0 + j * dil - l
            n = t1 - t0
            part(f"left{j}", sliced(f"left{j}", a, a + n + (K - 1 - j) * dil), codes[:, :, j:], n)
        part("core", x.name, codes, None)
        for j in range(1, -(-r // dil) + 1):  # right edge: taps K-j..K-1 read padding (j grows toward the end)
            u0, u1 = max(0, r - j * dil), r - (j - 1) * dil
            start = -(u1 + dil * (K - 1) - r)
            end = -(u0 + j * dil - r)
            part(f"right{j}", sliced(f"right{j}", start, end if end < 0 else 2**62), codes[:, :, :K - j], u1 - u0)
        self.gb.node("concat", parts, [y], {"axis": 2}, name=name)

    def _conv_node(self, name, x: Act, x_name, codes, d, bias, out: Grid, y, stride, padding, dilation, groups, nl,
                   slope):
        g_in = x.grid
        codes = np.ascontiguousarray(codes, dtype=np.int8)
        c_out = codes.shape[0]
        d = np.asarray(d, dtype=np.float32).reshape(-1)
        d64 = d.astype(np.float64)
        b = np.zeros(c_out) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
        s_in, s_out = g_in.scale, out.scale
        # a zero channel (d = 0) still needs its bias: give it a fine artificial unit
        unit = np.where(d64 > 0, s_in * d64, s_out * 2.0**-16)
        sum_w = codes.astype(np.int64).sum(axis=tuple(range(1, codes.ndim)))
        pre = b + np.where(d64 > 0, d64 * g_in.offset * sum_w, 0.0)
        reals = unit / s_out
        negative = None
        if nl == "prelu":
            a = float(np.float32(slope))
            bias_int = rint_checked(pre / unit, INT32_LIMIT, f"{name}: bias")
            # the offsets also absorb the bias's rounding, so each side rounds its constant once
            frac = pre / unit - bias_int
            pos = rint_checked(frac - out.offset / unit, 2**30, f"{name}: PReLU positive offset")
            if a != 0.0 and np.max(np.abs(out.offset / (a * unit))) < 2**30:
                neg = rint_checked(frac - out.offset / (a * unit), 2**30, f"{name}: PReLU negative offset")
            else:
                neg = np.zeros(c_out, dtype=np.int64)
                self.report.note(f"{name}: PReLU slope {a!r} too small for an exact negative-side offset; "
                                 "offset dropped there (|error| <= 0.5 LSB)")
            nm, ns, nsc = multipliers(a * reals)
            negative = dict(neg_multiplier=nm, neg_shift=ns, neg_scale=nsc, pos_offset=pos.astype(np.int64),
                            neg_offset=neg.astype(np.int64))
        else:
            bias_int = rint_checked((pre - out.offset) / unit, INT32_LIMIT, f"{name}: bias")
        mult, shift, scale = multipliers(reals)
        c = self.consts(name, weight=codes, bias=bias_int.astype(np.int32), multiplier=mult, shift=shift,
                        scale=scale)
        inputs = [x_name, c["weight"], c["bias"], c["multiplier"], c["shift"], c["scale"]]
        if negative is not None:
            n = self.consts(name, **negative)
            inputs += [n["neg_multiplier"], n["neg_shift"], n["neg_scale"], n["pos_offset"], n["neg_offset"]]
        attrs = {"stride": int(stride), "padding": [int(padding[0]), int(padding[1])], "dilation": int(dilation),
                 "groups": int(groups)}
        if nl == "relu":
            attrs["act_min"] = int(out.zero_point)
        self.gb.node("conv1d", inputs, [y], attrs, name=name)

    def conv_wide(self, name, x16: Act, codes, d, bias_real, s_out, out_shape, *, stride=1, padding=(0, 0),
                  act_range=None) -> Act:
        """int16 conv1d (16x8 path) of a zero-point-free int16 input, int16 output on scale ``s_out``.

        ``bias_real`` [C_out]: real constant added to every output (offsets folded by the caller);
        ``act_range``: optional (act_min, act_max) codes.
        """
        codes = np.ascontiguousarray(codes, dtype=np.int8)
        d64 = np.asarray(d, dtype=np.float32).astype(np.float64).reshape(-1)
        unit = np.where(d64 > 0, x16.scale * d64, s_out * 2.0**-16)
        bias_int = rint_checked(np.asarray(bias_real, np.float64) / unit, INT64_LIMIT, f"{name}: bias")
        mult, shift, scale = multipliers(unit / s_out)
        c = self.consts(name, weight=codes, bias=bias_int, multiplier=mult, shift=shift, scale=scale)
        y = self.gb.tensor(name, "int16", out_shape, quant=(s_out, 0))
        attrs = {"stride": int(stride), "padding": [int(padding[0]), int(padding[1])]}
        if act_range is not None:
            attrs.update(act_min=int(act_range[0]), act_max=int(act_range[1]))
        self.gb.node("conv1d", [x16.name, c["weight"], c["bias"], c["multiplier"], c["shift"], c["scale"]], [y],
                     attrs, name=name)
        return Act(y, None, float(np.float32(s_out)))

    # -- norms, elementwise, tables -----------------------------------------------------------
    def group_norm(self, name, x: Act, gamma, beta, eps, out: Grid, out_shape, groups=1) -> Act:
        """GroupNorm on codes: the input offset cancels; -c_out is folded into beta."""
        k = norm_constants(x.grid.scale, np.asarray(gamma, np.float64), np.asarray(beta, np.float64) - out.offset,
                           float(eps), out.scale)
        c = self.consts(name, multiplier=k.multiplier, shift=k.shift, bias=k.bias)
        y = self.act_tensor(name, out, out_shape)
        self.gb.node("group_norm", [x.name, c["multiplier"], c["shift"], c["bias"]], [y.name],
                     {"num_groups": int(groups), **k.attrs()}, name=name)
        return y

    def add(self, name, a: Act, b: Act, out: Grid, out_shape) -> Act:
        """AddQ: TFLite ADD on the codes plus the constant c_a + c_b - c_out (``add`` with ``offset``,
        in the op's fine units 2*max(s_a, s_b)*2^-20, i.e. ~2^-19 output LSB)."""
        p = add_params(a.grid.scale, b.grid.scale, out.scale)
        unit = 2.0 * max(float(np.float32(a.grid.scale)), float(np.float32(b.grid.scale))) * 2.0**-p.left_shift
        const = a.grid.offset + b.grid.offset - out.offset
        offset = rint_checked([const / unit], 2**30, f"{name}: offset").astype(np.int32)
        c = self.consts(name, multiplier=p.multiplier, shift=p.shift, scale=p.scale, offset=offset)
        y = self.act_tensor(name, out, out_shape)
        self.gb.node("add", [a.name, b.name, c["multiplier"], c["shift"], c["scale"], c["offset"]], [y.name],
                     {"left_shift": int(p.left_shift)}, name=name)
        self.report.add_residual_offset(name, (float(offset[0]) * unit - const) / out.scale)
        return y

    def mul(self, name, a: Act, b: Act, out: Grid, out_shape, offset_bits: int | None = MUL_OFFSET_BITS) -> Act:
        """MulQ with FQSS's float zero points as fractional zero points (``mul`` with ``offsets``):

        real = s_a s_b (d_a + alpha)(d_b + beta), alpha = c_a/s_a, beta = c_b/s_b, so with P bits
        acc = 2^P d_a d_b + round(2^P beta) d_a + round(2^P alpha) d_b
              + round(2^P (alpha beta - c_out / (s_a s_b)))
        and the multiplier s_a s_b / (2^P s_out).  ``offset_bits=None``: plain TFLite MUL on the
        codes (the offsets' cross terms dropped).
        """
        ga, gb_, go = a.grid, b.grid, out
        y = self.act_tensor(name, out, out_shape)
        if offset_bits is None:
            p = mul_params(ga.scale, gb_.scale, go.scale)
            c = self.consts(name, multiplier=p.multiplier, shift=p.shift, scale=p.scale)
            self.gb.node("mul", [a.name, b.name, c["multiplier"], c["shift"], c["scale"]], [y.name], name=name)
            return y
        P = int(offset_bits)
        alpha, beta = ga.offset / ga.scale, gb_.offset / gb_.scale
        k = 2.0**P
        o0 = k * (alpha * beta - go.offset / (ga.scale * gb_.scale))
        offsets = rint_checked([k * alpha, k * beta, o0], 2**24, f"{name}: offsets").astype(np.int32)
        real = float(np.float32(ga.scale)) * float(np.float32(gb_.scale)) / float(np.float32(go.scale)) / k
        mult, shift, _ = multipliers([real])
        scale = np.array([np.float32(np.float32(np.float32(ga.scale) * np.float32(gb_.scale)) /
                                     np.float32(go.scale)) / np.float32(k)], dtype=np.float32)
        c = self.consts(name, multiplier=mult, shift=shift, scale=scale, offsets=offsets)
        self.gb.node("mul", [a.name, b.name, c["multiplier"], c["shift"], c["scale"], c["offsets"]], [y.name],
                     {"offset_bits": P}, name=name)
        return y

    def lut(self, name, x: Act, fn, out: Grid, out_shape) -> Act:
        """Exact 256-entry table: code -> FQSS real (float32 ``s*a + min``) -> ``fn`` -> FQSS quantizer."""
        g = x.grid
        a = np.arange(256, dtype=np.float32)
        real = (np.float32(g.scale) * a + np.float32(g.minimum)).astype(np.float32)
        y = np.asarray(fn(real), dtype=np.float32)
        code = fqss_quantize(y, out)
        table = (code.astype(np.int64) - 128).astype(np.int8)
        t = self.gb.const(f"{name}.table", table)
        yt = self.act_tensor(name, out, out_shape)
        self.gb.node("lut8", [x.name, t], [yt.name], name=name)
        return yt

    def widen(self, name, x: Act, out_shape) -> Act:
        """int8 codes -> int16 ``q - z`` (exact identity requantization, zero point 0, scale s)."""
        p = requantize_params(x.grid.scale, x.grid.scale)
        c = self.consts(name, multiplier=p.multiplier, shift=p.shift, scale=p.scale)
        y = self.gb.tensor(name, "int16", out_shape, quant=(x.grid.scale, 0))
        self.gb.node("requantize", [x.name, c["multiplier"], c["shift"], c["scale"]], [y], name=name)
        return Act(y, None, x.grid.scale)

    def sub_wide(self, name, a: Act, b: Act, s_out, out_shape) -> Act:
        p = sub_params(a.scale, b.scale, s_out, bits=16)
        c = self.consts(name, multiplier=p.multiplier, shift=p.shift, scale=p.scale)
        y = self.gb.tensor(name, "int16", out_shape, quant=(s_out, 0))
        self.gb.node("sub", [a.name, b.name, c["multiplier"], c["shift"], c["scale"]], [y],
                     {"left_shift": int(p.left_shift)}, name=name)
        return Act(y, None, float(np.float32(s_out)))

    def narrow(self, name, x: Act, out: Grid, out_shape) -> Act:
        """int16 zero-point-free tensor -> int8 codes of ``out`` (the offset must be folded upstream)."""
        p = requantize_params(x.scale, out.scale)
        c = self.consts(name, multiplier=p.multiplier, shift=p.shift, scale=p.scale)
        y = self.act_tensor(name, out, out_shape)
        self.gb.node("requantize", [x.name, c["multiplier"], c["shift"], c["scale"]], [y.name], name=name)
        return y

    # -- layout -------------------------------------------------------------------------------
    def layout(self, op, name, x: str, shape, attrs) -> str:
        spec = self.gb.spec(x)
        y = self.gb.tensor(name, spec.dtype, shape, quant=spec.quant)
        if x in self.tensor_keys:
            self.tensor_keys[y] = self.tensor_keys[x]
        self.gb.node(op, [x], [y], attrs, name=name)
        return y


def fqss_quantize(y, grid: Grid):
    """FQSS codes a = clip(rint((y - min)/s), 0, 255) in float32 (torch's op order)."""
    y = np.asarray(y, dtype=np.float32)
    v = ((y - np.float32(grid.minimum)) / np.float32(grid.scale)).astype(np.float32)
    return np.clip(np.rint(v), 0, 255)


def choose_combiner_zero_points(g0: Grid, g1: Grid, n_bits: int = 8) -> tuple[int, int, float]:
    """Shifts ``(k0, k1)`` minimising the combiner's constant ``c0' + c1'/2^n`` (returned, real units)."""
    k0 = np.arange(-128 - g0.zero_point, 128 - g0.zero_point, dtype=np.int64)[:, None]
    k1 = np.arange(-128 - g1.zero_point, 128 - g1.zero_point, dtype=np.int64)[None, :]
    dc = g0.offset + k0 * g0.scale + (g1.offset + k1 * g1.scale) / 2.0**n_bits
    cost = np.abs(dc) + 1e-12 * (np.abs(k0) + np.abs(k1))
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return int(k0[i, 0]), int(k1[0, j]), float(dc[i, j])


def combiner_frac_bits(s0: float, s1: float, d_max: int = 255, n_bits: int = 8) -> int:
    """Largest F <= 8 whose combiner requantization of y0 cannot overflow the int32 double rounding."""
    for f in range(8, -1, -1):
        r = 2.0 ** (n_bits + f) * s0 / s1
        _, shift = quantize_multiplier(r)
        if d_max << max(shift, 0) <= INT32_LIMIT:
            return f
    raise ConversionError(f"combiner: y0 scale {s0!r} is too large against y1 scale {s1!r}")
