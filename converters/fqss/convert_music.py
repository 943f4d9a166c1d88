"""FQSS ConvTasNetMusicQ (SPEC §3.2) -> integer intsim graph; called by ``convert.convert_state_dict``.

Dataflow and integer form (docs/fqss-conversion.md §8):

* splitter with ``normalize=False``: the ``splitter`` op returns int8 codes (zero point 0) and the
  per-call ``delta = max|x| / 128``;
* encoder ``Q(relu(conv1d(delta*k, W) + b))``: ``conv1d_dynamic`` (``intsim.ops.dynamic``): exact
  int32 accumulators, a per-call Q0.31 multiplier ``delta*d_c/s_out`` (the one float op left at run
  time: a per-call scale register), the bias ``b - c_out`` in output LSB with 16 fraction bits (a
  model constant, independent of delta), ReLU as ``act_min = z``; delta = 0 (silence) gives the
  output for a zero input;
* cLN: ``layer_norm`` with axis 1 (statistics over channels per frame; the input offset cancels,
  ``-c_out`` folded into beta), then the speech converter's emitters for the bias-free 1x1 / PReLU /
  depthwise convs, GroupNorms, AddQs, the mask conv (ReLU) and the mask multiply;
* decoder ``Linear(N -> C*L)`` = a 1x1 ``conv1d`` over ``[S, N, K]`` giving ``[S, C*L, K]`` (frame
  sample ``c*L + t`` on the channel axis): already the ``overlap_add`` "chunks" layout after a reshape
  to ``[S, C, L, K]``;
* RQB: ``Y1 = Q_reb(Y - linear(y0, W_re))`` on int16 exactly as the speech RQB (widen, 16x8 1x1 conv on
  a fine scale with ``d*c_y0*sum(w) - c_Y + c_reb`` in its bias, int16 sub, requantize into Q_reb);
  ``y1 = Q_res(linear(Y1, Wd))``;
* overlap-add after the quantizers: ``overlap_add`` of y0 and of y1 separately, each the
  zero-point-free int16 sum ``S = sum (q - z)``, so FQSS's ``s*(sum codes) + n_overlap*m`` is
  ``s*S + n_overlap(t)*c``.  The zero points of y0 and y1 are moved (free: neither is padded or
  clamped) so that ``c0 + c1/256`` nearly vanishes; the combiner's constant ``n_overlap(t)*(c0 +
  c1/256)`` (count 1 at the edges, ceil(L/hop) inside) is then below ``2*|dc|``, reported;
* combiner -> int32 ``[1, S, C, T']`` on scale ``s_res * 2^-(8+F)``.
"""

from __future__ import annotations

import numpy as np

from .config import FQSSConfig
from .convert import _SpeechConverter  # convert.py imports this module lazily: no cycle at import time
from .convert_layers import Act, ConversionError, combiner_frac_bits, multipliers, rint_checked, weight_codes
from intsim.ops.norm import norm_constants

MUSIC_CONVERTER_VERSION = "fqss-convtasnet-music/1"
BIAS16_BITS = 16


class MusicConverter(_SpeechConverter):
    """ConvTasNetMusicQ; reuses the speech converter's grids, weights, conv and norm emitters."""

    def run(self):
        cfg, em = self.cfg, self.em
        N, B, H, S, P = cfg.n_filters, cfg.bn_chan, cfg.hid_chan, cfg.n_src, cfg.conv_kernel
        if cfg.n_splitter < 2:
            raise ConversionError("ConvTasNetMusicQ with n_splitter = 1 (raw float audio into the encoder) is not "
                                  "supported")
        if cfg.normalize:
            raise ConversionError("ConvTasNetMusicQ with a normalising splitter is not supported (FQSS's music "
                                  "model uses normalize=False)")
        if cfg.n_combiner != 2:
            raise ConversionError(f"ConvTasNetMusicQ with n_combiner = {cfg.n_combiner} is not supported (2 is)")
        self.plan_zero_points()
        M = None
        feats = self.encoder()
        # ---- separator (SPEC §3.2)
        x = self.channel_layer_norm("separator.network.0.norm", feats, [1, N, M])
        x = self.conv_layer("separator.network.1", x, [1, B, M])
        for r in range(cfg.n_repeats):
            for b in range(cfg.n_blocks):
                p = f"separator.network.2.{r}.{b}"
                dil = 2**b
                pad = (P - 1) * dil // 2
                if self.exact:
                    self.min_frames = max(self.min_frames, 2 * pad + 1)
                h = self.conv_layer(f"{p}.net.0", x, [1, H, M], nl="prelu")
                h = self.group_norm(f"{p}.net.2", h, [1, H, M])
                h = self.conv_layer(f"{p}.net.3.net.0", h, [1, H, M], nl="prelu", padding=(pad, pad), dilation=dil,
                                    groups=H)
                h = self.group_norm(f"{p}.net.3.net.2", h, [1, H, M])
                h = self.conv_layer(f"{p}.net.3.net.3", h, [1, B, M])
                x = em.add(f"{p}.add", h, x, self.grid(f"{p}.add"), [1, B, M])
        mask_nl = "relu" if cfg.mask_act == "relu" else None
        mask = self.conv_layer("separator.network.3", x, [1, S * N, M], nl=mask_nl)
        mask4 = em.layout("reshape", "separator.mask", mask.name, [1, S, N, M], {"shape": [1, S, N, -1]})
        feats4 = em.layout("reshape", "encoder.unsqueeze", feats.name, [1, 1, N, M], {"shape": [1, 1, N, -1]})
        masked = em.mul("mul", Act(mask4, mask.grid), Act(feats4, feats.grid), self.grid("mul"), [1, S, N, M])
        masked3 = em.layout("reshape", "mul.flat", masked.name, [S, N, M], {"shape": [S, N, -1]})
        out = self.music_decoder(Act(masked3, masked.grid))
        self.describe_music()
        return out

    # -- input side ---------------------------------------------------------------------------
    def encoder(self) -> Act:
        cfg, gb = self.cfg, self.gb
        C, N = cfg.audio_channels, cfg.n_filters
        x = gb.input("audio", "float32", [1, C, None])
        codes = gb.tensor("splitter", "int8", [1, cfg.n_splitter * C, None])
        delta = gb.tensor("splitter.delta", "float32", [1])
        gb.node("splitter", [x], [codes, delta], {"n_splitter": cfg.n_splitter, "n_bits": cfg.in_act_n_bits,
                                                   "normalize": False}, name="splitter")
        w, d = self.weights("encoder.0")
        g = self.grid("encoder.0")
        b = self.bias("encoder.0")
        b = np.zeros(N) if b is None else b
        bias16 = rint_checked((b - g.offset) / g.scale * 2.0**BIAS16_BITS, 2.0**61, "encoder.0: bias")
        c = self.em.consts("encoder.0", weight=np.ascontiguousarray(w, np.int8), weight_scale=d.astype(np.float32),
                           bias16=bias16.astype(np.int64))
        y = self.em.act_tensor("encoder.0", g, [1, N, None])
        self.gb.node("conv1d_dynamic", [codes, delta, c["weight"], c["weight_scale"], c["bias16"]], [y.name],
                     {"stride": int(cfg.stride), "act_min": int(g.zero_point)}, name="encoder.0")
        return y

    def channel_layer_norm(self, prefix, x: Act, out_shape) -> Act:
        """cLN (LayerNorm over channels per frame): ``layer_norm`` axis 1, ``-c_out`` folded into beta."""
        out = self.grid(prefix)
        k = norm_constants(x.grid.scale, np.asarray(self.sd[f"{prefix}.layernorm.weight"], np.float64),
                           np.asarray(self.sd[f"{prefix}.layernorm.bias"], np.float64) - out.offset,
                           float(self.cfg.ln_eps), out.scale)
        c = self.em.consts(prefix, multiplier=k.multiplier, shift=k.shift, bias=k.bias)
        y = self.em.act_tensor(prefix, out, out_shape)
        self.gb.node("layer_norm", [x.name, c["multiplier"], c["shift"], c["bias"]], [y.name],
                     {"axis": 1, **k.attrs()}, name=prefix)
        return y

    # -- output side --------------------------------------------------------------------------
    def linear_as_conv(self, name, x: Act, codes, d, grid, out_shape) -> Act:
        return self.em.conv(name, x, np.ascontiguousarray(codes[:, :, None]), d, None, grid, out_shape)

    def overlap_add(self, name, y: Act, scale) -> str:
        cfg, gb = self.cfg, self.gb
        S, C, L, st = cfg.n_src, cfg.audio_channels, cfg.kernel_size, cfg.stride
        frames = self.em.layout("reshape", f"{name}.frames", y.name, [S, C, L, None], {"shape": [S, C, L, -1]})
        t = gb.tensor(f"{name}.ola", "int16", [S, C, None], quant=(scale, 0))
        gb.node("overlap_add", [frames], [t], {"hop": int(st)}, name=f"{name}.ola")
        return t

    def music_decoder(self, masked: Act):
        cfg, em = self.cfg, self.em
        S, N, C, L, st = cfg.n_src, cfg.n_filters, cfg.audio_channels, cfg.kernel_size, cfg.stride
        CL = C * L
        codes, d = weight_codes(self.sd["decoder.linear.weight"], self.sd["decoder.weight_fake_quantize.min_range"],
                                self.sd["decoder.weight_fake_quantize.max_range"])
        d = d.reshape(-1)
        g0 = self.grid("decoder")
        y0 = self.linear_as_conv("decoder", masked, codes, d, g0, [S, CL, None])
        rq = "decoder.residual_error_block"
        g_reb = self.grid(rq)
        g_res = self.grid("decoder", "activation_fake_quantize_residual")
        # Yq = linear(y0, W_re) on int16 (a 1x1 conv over [S, C*L, K]), as the speech RQB
        wre, dre = self.weights(rq, "residual_encoder.weight")
        wre = np.ascontiguousarray(wre[:, :, None])
        y0w = em.widen("decoder.y0.int16", y0, [S, CL, None])
        mw = em.widen("mul.int16", masked, [S, N, None])
        gm = masked.grid
        bound = max(abs(gm.minimum), abs(gm.maximum)) + max(abs(g_reb.minimum), abs(g_reb.maximum))
        s_q = float(np.float32(bound / 32767.0))
        sum_w = wre.astype(np.int64).sum(axis=(1, 2))
        bias_real = dre.astype(np.float64) * g0.offset * sum_w - gm.offset + g_reb.offset
        yq = em.conv_wide(f"{rq}.residual_encoder", y0w, wre, dre, bias_real, s_q, [S, N, None])
        s_f = (max(abs(g_reb.minimum), abs(g_reb.maximum)) + g_reb.scale) / 32767.0
        s_f = float(np.float32(max(s_f, 2.0 * max(mw.scale, yq.scale) / 32768.0 * 1.001)))
        diff = em.sub_wide(f"{rq}.sub", mw, yq, s_f, [S, N, None])
        y1_in = em.narrow(rq, diff, g_reb, [S, N, None])
        y1 = self.linear_as_conv("decoder.residual", y1_in, codes, d, g_res, [S, CL, None])
        # overlap-add after the quantizers, each branch zero-point free (int16)
        s0, s1 = float(np.float32(g0.scale)), float(np.float32(g_res.scale))
        o0 = self.overlap_add("decoder", y0, s0)
        o1 = self.overlap_add("decoder.residual", y1, s1)
        n_max = -(-L // st)
        # the combiner op bounds its int16 y0 input by the dtype (32768), not by n_max * 255
        f = combiner_frac_bits(g0.scale, g_res.scale, 32768)
        s_out = s1 * 2.0 ** -(8 + f)
        mult, shift, scale = multipliers([s0 / s_out])
        c = em.consts("combiner", multiplier=mult, shift=shift, scale=scale)
        comb = self.gb.tensor("combiner", "int32", [S, C, None], quant=(s_out, 0))
        self.gb.node("combiner", [o0, o1, c["multiplier"], c["shift"], c["scale"]], [comb],
                     {"n_bits": cfg.out_act_n_bits}, name="combiner")
        final = em.layout("reshape", "output", comb, [1, S, C, None], {"shape": [1, S, C, -1]})
        self.n_overlap_max = n_max
        return [final]

    def describe_music(self):
        cfg, r = self.cfg, self.report
        n = cfg.n_repeats * cfg.n_blocks
        dc = getattr(self, "combiner_dc", 0.0)
        edges = ("exact: edge convs over input slices" if self.exact else
                 "nudged: padded taps read the zero-point code (real c_in where FQSS pads 0)")
        r.add_float_op("splitter", "normalize=False: delta = max|x|/128 per call, floor-quantize, rescale residuals "
                       "(float32)", f"splitter op: {cfg.n_splitter} int8 stages, zero point 0, and delta (float32 [1])")
        r.add_float_op("encoder.0 (dynamic delta)", "conv1d(delta*k, W) -> ReLU -> Q, delta changes every call",
                       "conv1d_dynamic: exact int accumulators; per-call Q0.31 multiplier "
                       "quantize_multiplier(double(delta)*double(d_c)/double(s_out)) (a per-call scale register: the "
                       "only run-time float op); bias - c_out in output LSB with 16 fraction bits; ReLU = act_min z",
                       "delta = 0 (silence; FQSS gives NaN): the output for a zero input")
        r.add_float_op("separator.network.0 (cLN)", "LayerNorm over channels per frame, float statistics, Q",
                       "layer_norm axis 1: exact integer sums, fixed-point rsqrt; offset cancels, -c_out in beta")
        r.add_float_op("conv/linear accumulation", "float32 conv (no bias), then Q",
                       "int32 accumulators, int32 bias -c_out (+ c_in*sum(w)) in s_in*d units, Q0.31 multiplier",
                       f"zero-padded depthwise taps: {edges}")
        r.add_float_op(f"PReLU before Q ({2 * n} convs)", "conv -> PReLU(slope) -> Q",
                       "requant stage: negative-side multiplier slope*M and sign-dependent offsets -c_out")
        r.add_float_op(f"GroupNorm ({2 * n} nodes)", "float statistics of s*a+m, affine, Q",
                       "group_norm op: exact integer sums, fixed-point rsqrt; offset cancels, -c_out in beta")
        r.add_float_op(f"AddQ ({n} nodes)", "x1 + x2 with float zero points, Q",
                       "add with a constant offset c_a + c_b - c_out in 2^-20 units of the rescaled terms")
        r.add_float_op("mul", "mask * feats with float zero points, Q",
                       "mul with fractional zero points (2^-12 LSB)")
        r.add_float_op("decoder", "linear(N -> C*L) -> Q_out", "1x1 conv1d over [S, N, K] -> [S, C*L, K]")
        r.add_float_op("decoder.residual_error_block", "Y - linear(y0, W_re) in float -> Q_reb",
                       "int16: widen y0 and Y, 16x8 1x1 conv on a fine scale, int16 sub, requantize into Q_reb",
                       "two extra roundings")
        r.add_float_op("overlap_and_add (y0 and y1)", "float sum of quantized frames: s*(sum codes) + n_overlap*m",
                       "overlap_add (hop stride) per branch: zero-point-free int16 sums s*(sum (q - z)); the offsets "
                       "n_overlap*c of both branches go to the combiner constant",
                       f"zero points moved so c0 + c1/256 = {dc:.3g}; dropped constant n_overlap*(c0 + c1/256), "
                       f"n_overlap 1 at the edges, up to {-(-cfg.kernel_size // cfg.stride)} inside")
        r.add_float_op("combiner", "y0 + y1/256 in float32", "combiner op on the int16 sums -> int32 (exact sum)")


def music_metadata(cfg: FQSSConfig) -> dict:
    """The graph metadata that differs from speech."""
    return {
        "channels": cfg.audio_channels,
        "input": f"float32 audio [1, {cfg.audio_channels}, T] (not normalised: the splitter's delta = max|x|/128 "
                 "changes with every call, the encoder's multiplier follows it)",
        "output": f"[1, {cfg.n_src}, {cfg.audio_channels}, T'] codes; audio = scale * code, in the input's scale; "
                  f"T' = ((T - {cfg.kernel_size}) // {cfg.stride}) * {cfg.stride} + {cfg.kernel_size}",
        "converter": MUSIC_CONVERTER_VERSION,
    }


def music_codes_layout(codes: dict) -> dict:
    """FQSS QAT codes (``convert_parity.qat_codes``) moved to the music graph's layouts, for
    ``tensor_parity``: cLN ``[1, K, N]`` -> ``[1, N, K]``; decoder frames ``[1, S, K, W]`` and the
    RQB's ``[1, S, K, N]`` -> ``[S, W, K]`` / ``[S, N, K]``."""
    out = dict(codes)
    for key, v in codes.items():
        if key.startswith("separator.network.0.norm"):
            out[key] = np.ascontiguousarray(np.swapaxes(v, -1, -2))
        elif key.startswith("decoder"):
            out[key] = np.ascontiguousarray(np.swapaxes(v, -1, -2).reshape(-1, v.shape[-1], v.shape[-2]))
    return out
