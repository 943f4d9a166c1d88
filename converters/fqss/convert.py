"""FQSS ConvTasNetQ checkpoint -> integer intsim graph (``convert_fqss``), with a conversion report.

ConvTasNetMusicQ checkpoints are dispatched to ``convert_music.MusicConverter`` (dynamic splitter
delta, ``conv1d_dynamic`` encoder, cLN, linear decoder, overlap-add after the quantizers).

The design, its measured cost and the parity table are in ``docs/fqss-conversion.md``.  In short:

* every FQSS activation quantizer becomes an int8 tensor carrying FQSS's codes ``q = a - 128``
  with a nudged integer zero point ``z`` and a residual float offset ``c`` (``real = s*(q-z) + c``,
  ``convert_layers.Grid``); ``c`` is folded into integer constants: ``-c_out`` into producers'
  biases (PReLU: the requant stage's sign-dependent offsets; norms: beta), ``+c_in * sum(w)`` into
  consumers' biases, the adds' ``c_a + c_b - c_out`` into ``add``'s offset, the mask multiply's
  cross terms into ``mul``'s fractional zero points;
* the splitter is the ``splitter`` op (codes on scale 1/128, zero point 0: exact); with
  n_splitter = 1 the graph takes int16 audio and runs a 16x8 encoder;
* the standalone PReLU (``mask_net.0``) is an exact 256-entry ``lut8``;
* the transposed-conv decoder is a stride-phase ``conv1d`` (output channel ``o*stride + phase``,
  kernel ``ceil(L/stride)``, flipped taps) followed by a transpose/reshape: per-phase output
  channels make the input offset fold a per-channel bias;
* the RQB computes ``Y - conv1d(y0, W_re)`` on int16 (16x8 conv on a fine scale, int16 sub) and
  requantizes into FQSS's ``Q_reb`` grid; the combiner op adds ``y0 + y1/256`` into int32, with
  the zero points of y0 and y1 chosen so that the constant ``c0 + c1/256`` nearly vanishes;
* ``exact_offsets=True`` also makes zero-padded conv edges exact (edge convs over input slices).

``convert_fqss(checkpoint, config=None, exact_offsets=False) -> (Graph, ConversionReport)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint
from .config import MUSIC, FQSSConfig
from .convert_layers import (Act, ConversionError, Emitter, Grid, choose_combiner_zero_points,
                             combiner_frac_bits, make_grid, multipliers, splitter_grid, weight_codes)
from .graph_builder import GraphBuilder

__all__ = ["convert_fqss", "convert_state_dict", "ConversionReport", "ConversionError", "CONVERTER_VERSION"]

CONVERTER_VERSION = "fqss-convtasnet/1"


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class TensorInfo:
    tensor: str
    key: str
    scale: float
    minimum: float
    maximum: float
    nudged_zero_point: int  # clip(round(-min/s), 0, 255) - 128
    offset_lsb: float  # |c| / s for the nudged zero point
    zero_point: int  # the zero point the graph uses (moved from the nudged one for add inputs and outputs)


@dataclass
class FloatOp:
    where: str
    fqss: str  # what FQSS computes in float
    integer: str  # the integer form chosen
    note: str = ""


@dataclass
class ConversionReport:
    """What the conversion did: grids, the integer form of every op FQSS left in float, notes."""

    model: str = ""
    checkpoint: str = ""
    sha256: str = ""
    exact_offsets: bool = False
    tensors: list[TensorInfo] = field(default_factory=list)
    float_ops: list[FloatOp] = field(default_factory=list)
    residual_offsets: dict[str, float] = field(default_factory=dict)  # add node -> unfolded constant, output LSBs
    notes: list[str] = field(default_factory=list)
    n_nodes: int = 0
    n_constants: int = 0
    n_weights: int = 0

    def add_tensor(self, tensor: str, grid: Grid) -> None:
        nudged = grid.shifted(grid.nudged_zero_point - grid.zero_point)
        self.tensors.append(TensorInfo(tensor, grid.key, grid.scale, grid.minimum, grid.maximum,
                                       grid.nudged_zero_point, nudged.offset_lsb, grid.zero_point))

    def add_float_op(self, where, fqss, integer, note="") -> None:
        self.float_ops.append(FloatOp(where, fqss, integer, note))

    def add_residual_offset(self, node: str, lsb: float) -> None:
        self.residual_offsets[node] = float(lsb)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def offset_lsb_max(self) -> float:
        return max((t.offset_lsb for t in self.tensors), default=0.0)

    @property
    def offset_lsb_mean(self) -> float:
        return float(np.mean([t.offset_lsb for t in self.tensors])) if self.tensors else 0.0

    def to_dict(self) -> dict:
        return {
            "model": self.model, "checkpoint": self.checkpoint, "sha256": self.sha256,
            "exact_offsets": self.exact_offsets,
            "offset_lsb": {"max": self.offset_lsb_max, "mean": self.offset_lsb_mean},
            "tensors": [t.__dict__ for t in self.tensors],
            "float_ops": [f.__dict__ for f in self.float_ops],
            "residual_offsets_lsb": dict(self.residual_offsets),
            "notes": list(self.notes),
        }

    def format(self, verbose: bool = False) -> str:
        """Human-readable report (the CLI prints it to stderr)."""
        lines = [f"FQSS conversion: {self.model} from {self.checkpoint}",
                 f"  sha256 {self.sha256}",
                 f"  {self.n_nodes} nodes, {self.n_constants} constants, {self.n_weights} weights; "
                 f"offset mode: {'exact' if self.exact_offsets else 'nudged'}",
                 f"  activation tensors: {len(self.tensors)}; residual offset |c|/s: "
                 f"max {self.offset_lsb_max:.3f} LSB, mean {self.offset_lsb_mean:.3f} LSB"]
        shown = self.tensors if verbose else sorted(self.tensors, key=lambda t: -t.offset_lsb)[:8]
        lines.append("  tensor: nudged zero point, |c|/s in LSB (zero point used)" + ("" if verbose else
                                                                                      ", largest offsets:"))
        for t in shown:
            moved = "" if t.zero_point == t.nudged_zero_point else f"  (z={t.zero_point:+d})"
            lines.append(f"    {t.tensor:<48} z={t.nudged_zero_point:+4d}  |c|/s={t.offset_lsb:.3f}{moved}")
        lines.append("  ops FQSS computes in float, and their integer form:")
        for f in self.float_ops:
            lines.append(f"    {f.where}: {f.fqss} -> {f.integer}" + (f" [{f.note}]" if f.note else ""))
        if self.residual_offsets:
            v = np.abs(np.array(list(self.residual_offsets.values())))
            lines.append(f"  add constants' rounding: {len(v)} adds, max {v.max():.2g} output LSB")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry points


def convert_fqss(checkpoint_path, config_path=None, *, exact_offsets: bool = False, profile="tflm",
                 fold_offsets: bool = True):
    """Convert an FQSS ConvTasNetQ checkpoint into an integer graph.

    ``checkpoint_path``: a ``.pth`` state_dict (or a folder with ``checkpoint.pth`` and
    ``config.json``); ``config_path``: JSON/YAML config, a dict, or None (shapes + FQSS defaults).
    Raises ``CheckpointError`` (keys/shapes do not match the config) or ``ConversionError``.
    ``exact_offsets``: also fold the offsets exactly at zero-padded conv edges (edge convs over
    input slices; needs inputs longer than twice the largest dilation, in frames).
    ``fold_offsets=False`` ignores FQSS's residual offsets altogether (plain nudged grids): only to
    measure what folding them buys.
    Returns ``(intsim.ir.Graph, ConversionReport)``.
    """
    path = Path(checkpoint_path)
    file = path / "checkpoint.pth" if path.is_dir() else path
    state_dict, cfg = load_checkpoint(path, config_path)
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    return convert_state_dict(state_dict, cfg, exact_offsets=exact_offsets, profile=profile, source=str(file),
                              sha256=sha, fold_offsets=fold_offsets)


def convert_state_dict(state_dict, cfg: FQSSConfig, *, exact_offsets: bool = False, profile="tflm",
                       source: str = "<state_dict>", sha256: str = "", fold_offsets: bool = True):
    """``convert_fqss`` for an already loaded and validated ``(state_dict, FQSSConfig)``."""
    sd = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in state_dict.items()}
    report = ConversionReport(model=cfg.model, checkpoint=source, sha256=sha256, exact_offsets=exact_offsets)
    _check_supported(cfg)
    if not fold_offsets and exact_offsets:
        raise ValueError("exact_offsets needs fold_offsets")
    if cfg.model == MUSIC:
        from .convert_music import MusicConverter

        conv = MusicConverter(sd, cfg, report, exact_offsets, profile, fold_offsets)
    else:
        conv = _SpeechConverter(sd, cfg, report, exact_offsets, profile, fold_offsets)
    outputs = conv.run()
    metadata = {
        "model": cfg.model,
        "sample_rate": cfg.sample_rate,
        "stems": list(cfg.sources) if cfg.sources else [f"s{i + 1}" for i in range(cfg.n_src)],
        "source_checkpoint_sha256": sha256,
        "source_checkpoint": Path(source).name,
        "converter": CONVERTER_VERSION,
        "fqss_config": cfg.to_json_dict(),
        "n_splitter": cfg.n_splitter,
        "n_combiner": cfg.n_combiner,
        "offset_mode": "exact" if exact_offsets else ("nudged" if fold_offsets else "unfolded"),
        "min_frames": conv.min_frames,
        "input": "float32 audio [1, T] (FQSS max-normalises it)" if cfg.n_splitter >= 2 and cfg.normalize
        else "audio [1, T], quantized to int16 on scale 2^-15",
        "output": f"[1, {cfg.n_src}, T'] codes; audio = scale * code; T' = ((T - {cfg.kernel_size}) // "
                  f"{cfg.stride}) * {cfg.stride} + {cfg.kernel_size}",
        "fqss_tensors": dict(conv.em.tensor_keys),
        "fqss_phase_tensors": list(conv.phase_tensors),
    }
    if cfg.model == MUSIC:
        from .convert_music import music_metadata

        metadata.update(music_metadata(cfg))
    graph = conv.gb.build(outputs, profile=profile, metadata=metadata)
    report.n_nodes = len(graph.nodes)
    report.n_constants = len(graph.constants)
    report.n_weights = int(sum(v.size for k, v in graph.constants.items() if k.endswith(".weight")))
    return graph, report


def _check_supported(cfg: FQSSConfig):
    if cfg.in_quant:
        raise ConversionError("in_quant=True (an encoder input quantizer) is not supported; no FQSS config uses it")
    if not cfg.out_quant:
        raise ConversionError("out_quant=False (a float decoder output) is not supported; every FQSS config "
                              "quantizes the decoder output")
    if cfg.mask_act not in ("relu", "linear"):
        raise ConversionError(f"mask_act {cfg.mask_act!r} is not supported (relu and linear are)")
    for name in ("weight_n_bits", "act_n_bits", "in_act_n_bits", "out_act_n_bits"):
        if getattr(cfg, name) != 8:
            raise ConversionError(f"{name} = {getattr(cfg, name)}: only 8-bit FQSS models are supported")


# ---------------------------------------------------------------------------------------------
# ConvTasNetQ (speech), SPEC §3.1


class _SpeechConverter:
    def __init__(self, sd, cfg: FQSSConfig, report: ConversionReport, exact_offsets: bool, profile,
                 fold_offsets: bool = True):
        self.sd, self.cfg, self.report = sd, cfg, report
        self.exact = exact_offsets
        self.fold = fold_offsets
        self.gb = GraphBuilder()
        self.em = Emitter(self.gb, report, profile=profile)
        self.phase_tensors: list[str] = []  # tensors in the decoder's stride-phase layout
        self.shifts: dict[str, int] = {}  # quantizer key -> zero-point shift from the nudged one
        self.min_frames = 1

    # -- checkpoint access ------------------------------------------------------------------
    def key(self, prefix, which="activation_fake_quantize"):
        return f"{prefix}.{which}" if prefix else which

    def base_grid(self, prefix, which="activation_fake_quantize") -> Grid:
        g = make_grid(self.sd, self.key(prefix, which))
        return g if self.fold else g.without_offset()

    def grid(self, prefix, which="activation_fake_quantize") -> Grid:
        g = self.base_grid(prefix, which)
        return g.shifted(self.shifts.get(g.key, 0))

    def weights(self, prefix, wkey="conv1d.weight", qkey="weight_fake_quantize"):
        codes, d = weight_codes(self.sd[f"{prefix}.{wkey}"], self.sd[f"{prefix}.{qkey}.min_range"],
                                self.sd[f"{prefix}.{qkey}.max_range"])
        return codes, d.reshape(-1)

    def bias(self, prefix, key="conv1d.bias"):
        k = f"{prefix}.{key}"
        return self.sd[k].astype(np.float64) if k in self.sd else None

    # -- zero points ----------------------------------------------------------------------------
    def plan_zero_points(self):
        """Move the zero points of the combiner's inputs so that the constant c0 + c1/256 it cannot
        hold (nearly) vanishes.  A zero point only matters where a tensor is zero-padded or
        ReLU-clamped; y0 and y1 are neither (moving z by k moves c by k*s: same codes, same reals)."""
        if not self.fold or self.cfg.n_combiner != 2:
            return
        g0, g1 = self.base_grid("decoder"), self.base_grid("decoder", "activation_fake_quantize_residual")
        k0, k1, dc = choose_combiner_zero_points(g0, g1, self.cfg.out_act_n_bits)
        self.shifts[g0.key], self.shifts[g1.key] = k0, k1
        self.combiner_dc = dc

    # -- layers ---------------------------------------------------------------------------------
    def conv_layer(self, prefix, x: Act, out_shape, nl=None, **geometry) -> Act:
        codes, d = self.weights(prefix)
        slope = float(self.sd[f"{prefix}.nl.weight"].reshape(-1)[0]) if nl == "prelu" else None
        return self.em.conv(prefix, x, codes, d, self.bias(prefix), self.grid(prefix), out_shape, nl=nl,
                            slope=slope, exact_edges=self.exact, **geometry)

    def group_norm(self, prefix, x: Act, out_shape) -> Act:
        return self.em.group_norm(prefix, x, self.sd[f"{prefix}.groupnorm.weight"],
                                  self.sd[f"{prefix}.groupnorm.bias"], self.cfg.gn_eps, self.grid(prefix), out_shape)

    def run(self):
        cfg, em = self.cfg, self.em
        N, B, H, S = cfg.n_filters, cfg.bn_chan, cfg.hid_chan, cfg.skip_chan
        C, st, P = cfg.audio_channels, cfg.stride, cfg.conv_kernel
        if C != 1:
            raise ConversionError(f"ConvTasNetQ with {C} audio channels is not supported (FQSS speech is mono)")
        self.plan_zero_points()
        M = None
        enc = self.input_stage()
        if enc.grid is None:  # n_splitter = 1: int16 audio, 16x8 encoder, then int8 codes
            codes, d = self.weights("encoder")
            g = self.grid("encoder")
            wide = self.em.conv_wide("encoder.int16", enc, codes, d, np.full(N, -g.offset), g.scale, [1, N, M],
                                     stride=st, act_range=(-128 - g.zero_point, 127 - g.zero_point))
            feats = self.em.narrow("encoder", wide, g, [1, N, M])
        else:
            feats = self.conv_layer("encoder", enc, [1, N, M], stride=st)
        # ---- masker (SPEC §3.1)
        x = self.group_norm("masker.bottleneck.0", feats, [1, N, M])
        x = self.conv_layer("masker.bottleneck.1", x, [1, B, M])
        skip_sum = None
        for i in range(cfg.n_layers):
            p = f"masker.TCN.{i}"
            dil = 2 ** (i % cfg.n_blocks)
            pad = (P - 1) * dil // 2
            if self.exact:
                self.min_frames = max(self.min_frames, 2 * pad + 1)
            h = self.conv_layer(f"{p}.shared_block.0", x, [1, H, M], nl="prelu")
            h = self.group_norm(f"{p}.shared_block.2", h, [1, H, M])
            h = self.conv_layer(f"{p}.shared_block.3", h, [1, H, M], nl="prelu", padding=(pad, pad), dilation=dil,
                                groups=H)
            h = self.group_norm(f"{p}.shared_block.5", h, [1, H, M])
            res = self.conv_layer(f"{p}.res_conv", h, [1, B, M])
            skip = self.conv_layer(f"{p}.skip_conv", h, [1, S, M])
            x = em.add(f"{p}.add", x, res, self.grid(f"{p}.add"), [1, B, M])
            skip_sum = skip if i == 0 else em.add(f"masker.adds.{i - 1}", skip_sum, skip,
                                                  self.grid(f"masker.adds.{i - 1}"), [1, S, M])
        slope = np.float32(self.sd["masker.mask_net.0.nl.weight"].reshape(-1)[0])
        m = em.lut("masker.mask_net.0", skip_sum, lambda v: np.where(v >= 0, v, slope * v).astype(np.float32),
                   self.grid("masker.mask_net.0"), [1, S, M])
        mask_nl = "relu" if cfg.mask_act == "relu" else None
        mask = self.conv_layer("masker.mask_net.1", m, [1, cfg.n_src * N, M], nl=mask_nl)
        mask4 = em.layout("reshape", "masker.mask", mask.name, [1, cfg.n_src, N, M],
                          {"shape": [1, cfg.n_src, N, -1]})
        feats4 = em.layout("reshape", "encoder.unsqueeze", feats.name, [1, 1, N, M], {"shape": [1, 1, N, -1]})
        masked = em.mul("mul", Act(mask4, mask.grid), Act(feats4, feats.grid), self.grid("mul"),
                        [1, cfg.n_src, N, M])
        masked3 = em.layout("reshape", "mul.flat", masked.name, [cfg.n_src, N, M], {"shape": [cfg.n_src, N, -1]})
        out = self.decoder(Act(masked3, masked.grid))
        self.describe()
        return out

    def describe(self):
        """The report's list of ops FQSS computes in float and their integer forms."""
        cfg, r = self.cfg, self.report
        n = cfg.n_layers
        edges = ("exact: edge convs over input slices" if self.exact else
                 "nudged: padded taps read the zero-point code (real c_in where FQSS pads 0)")
        if cfg.n_splitter >= 2:
            r.add_float_op("splitter", "max-normalise, floor-quantize and rescale residuals (float32)",
                           f"splitter op: {cfg.n_splitter} int8 stages on scale 2^-7, zero point 0 (exact)")
        else:
            r.add_float_op("input (n_splitter 1)", "raw float audio into the encoder conv",
                           "int16 audio on scale 2^-15 (|x| <= 1), 16x8 encoder conv to int16, "
                           "exact requantize (+z) to int8")
        r.add_float_op("conv/linear accumulation", "float32 conv + float bias, then Q",
                       "int32 accumulators, int32 bias in s_in*d units (offsets folded), Q0.31 multiplier",
                       f"zero-padded depthwise taps: {edges}")
        r.add_float_op(f"PReLU before Q ({2 * n} convs)", "conv -> PReLU(slope) -> Q",
                       "requant stage: negative-side multiplier slope*M and sign-dependent offsets -c_out")
        r.add_float_op(f"GroupNorm ({2 * n + 1} nodes)", "float statistics of s*a+m, affine, Q",
                       "group_norm op: exact integer sums, fixed-point rsqrt; offset cancels, -c_out in beta")
        r.add_float_op("masker.mask_net.0", "PReLU on a quantized tensor",
                       "lut8: FQSS's float32 semantics evaluated for all 256 codes (exact)")
        r.add_float_op(f"AddQ ({2 * n - 1} nodes)", "x1 + x2 with float zero points, Q",
                       "add with a constant offset c_a + c_b - c_out in 2^-20 units of the rescaled terms")
        r.add_float_op("mul", "mask * feats with float zero points, Q",
                       "mul with fractional zero points (2^-12 LSB): (d_m + c_m/s_m)(d_f + c_f/s_f) - c_out")
        st, L = cfg.stride, cfg.kernel_size
        r.add_float_op("decoder", "conv_transpose1d -> Q_out",
                       f"stride-phase conv1d ({st} phases, kernel {-(-L // st)}) + transpose/reshape",
                       f"offset folded per phase; edges {'exact' if self.exact else 'read the zero-point code'}")
        if cfg.n_combiner == 2:
            r.add_float_op("decoder.residual_error_block", "Y - conv1d(y0, W_re, stride) in float -> Q_reb",
                           "int16: widen y0 and Y, 16x8 conv1d on a fine scale, int16 sub, requantize into Q_reb",
                           "two extra roundings, 2^-6 .. 2^-8 LSB of Q_reb")
            r.add_float_op("combiner", "y0 + y1/256 in float32", "combiner op -> int32 (exact sum)",
                           f"zero points of y0/y1 chosen so c0 + c1/256 = {getattr(self, 'combiner_dc', 0.0):.2g}")

    def input_stage(self) -> Act:
        cfg, gb = self.cfg, self.gb
        if cfg.n_splitter >= 2:
            if not cfg.normalize:
                raise ConversionError("a splitter without normalisation has a dynamic delta (the encoder's "
                                      "requantization would change with every call); not supported")
            x = gb.input("audio", "float32", [1, None])
            g = splitter_grid(cfg.in_act_n_bits)
            y = self.em.act_tensor("splitter", g, [1, cfg.n_splitter, None])
            gb.node("splitter", [x], [y.name], {"n_splitter": cfg.n_splitter, "n_bits": cfg.in_act_n_bits,
                                                "normalize": bool(cfg.normalize)}, name="splitter")
            return y
        # n_splitter = 1: FQSS feeds the raw float audio to the encoder; the graph takes int16 audio
        # on scale 2^-15 (float input is quantized by the executor: |x| <= 1 is kept to 2^-16)
        x = gb.input("audio", "int16", [1, None], quant=(2.0**-15, 0))
        x3 = gb.tensor("audio.channels", "int16", [1, 1, None], quant=(2.0**-15, 0))
        gb.node("reshape", [x], [x3], {"shape": [1, 1, -1]}, name="audio.channels")
        return Act(x3, None, 2.0**-15)

    # -- decoder, RQB, combiner ---------------------------------------------------------------
    def phase_weights(self, codes, transposed: bool):
        """Rearrange a stride-s kernel of length L into kernel K' = ceil(L/s) over s phases.

        transposed (decoder, ConvTranspose1d weight [N, C, L]) -> conv1d weight [C*s, N, K'],
        output channel o*s + phase, taps flipped: w'[o*s+p, n, r] = W[n, o, p + (K'-1-r)*s].
        not transposed (RQB enc_res, Conv1d weight [N, C, L]) -> conv1d weight [N, C*s, K'] over
        the phase layout of its input: w'[n, o*s+p, r] = W[n, o, r*s + p].
        Taps beyond L are zero.
        """
        st, L = self.cfg.stride, self.cfg.kernel_size
        kp = -(-L // st)
        n, c, _ = codes.shape
        if transposed:
            out = np.zeros((c * st, n, kp), dtype=np.int8)
            for o in range(c):
                for p in range(st):
                    for r in range(kp):
                        k = p + (kp - 1 - r) * st
                        if k < L:
                            out[o * st + p, :, r] = codes[:, o, k]
        else:
            out = np.zeros((n, c * st, kp), dtype=np.int8)
            for o in range(c):
                for p in range(st):
                    for r in range(kp):
                        k = r * st + p
                        if k < L:
                            out[:, o * st + p, r] = codes[:, o, k]
        return out, kp

    def decode(self, name, x: Act, grid: Grid, codes, d) -> Act:
        """conv_transpose1d(x, W, stride) -> int8 on ``grid`` in phase layout [n_src, C*s, M + K' - 1]."""
        cfg = self.cfg
        wp, kp = self.phase_weights(codes, transposed=True)
        dp = np.repeat(d, cfg.stride)  # decoder scales are per output channel o (axis 1)
        y = self.em.conv(name, x, wp, dp, None, grid, [cfg.n_src, cfg.audio_channels * cfg.stride, None],
                         padding=(kp - 1, kp - 1), exact_edges=self.exact)
        self.phase_tensors.append(y.name)
        return y

    def decoder(self, masked: Act):
        cfg, em = self.cfg, self.em
        st, L, n_src = cfg.stride, cfg.kernel_size, cfg.n_src
        codes, d = weight_codes(self.sd["decoder.convTr1d.weight"], self.sd["decoder.weight_fake_quantize.min_range"],
                                self.sd["decoder.weight_fake_quantize.max_range"])
        d = d.reshape(-1)
        g0 = self.grid("decoder")
        y0 = self.decode("decoder", masked, g0, codes, d)
        if cfg.n_combiner == 1:
            out = y0
            self.report.note("n_combiner = 1: the graph output is the int8 decoder output (audio = s*(q - z)); "
                             f"FQSS's residual offset c = {g0.offset:.3g} is not part of it")
        else:
            rq = "decoder.residual_error_block"
            g_reb = self.grid(rq)
            g_res = self.grid("decoder", "activation_fake_quantize_residual")
            # Yq = conv1d(y0, W_re, stride) on int16: the y0 phase layout makes it a stride-1 conv
            wre, dre = self.weights(rq, "residual_encoder.weight")
            wre_p, kp = self.phase_weights(wre, transposed=False)
            y0w = em.widen("decoder.y0.int16", y0, [n_src, cfg.audio_channels * st, None])
            mw = em.widen("mul.int16", masked, [n_src, cfg.n_filters, None])
            gm = masked.grid
            bound = max(abs(gm.minimum), abs(gm.maximum)) + max(abs(g_reb.minimum), abs(g_reb.maximum))
            s_q = float(np.float32(bound / 32767.0))
            sum_w = wre_p.astype(np.int64).sum(axis=(1, 2))
            # Yq' = Yq - c_m + c_reb, so that s_m*(q_m - z_m) - Yq' = Y - Yq - c_reb
            bias_real = dre.astype(np.float64) * g0.offset * sum_w - gm.offset + g_reb.offset
            yq = em.conv_wide(f"{rq}.residual_encoder", y0w, wre_p, dre, bias_real, s_q, [n_src, cfg.n_filters, None])
            s_f = (max(abs(g_reb.minimum), abs(g_reb.maximum)) + g_reb.scale) / 32767.0
            s_f = float(np.float32(max(s_f, 2.0 * max(mw.scale, yq.scale) / 32768.0 * 1.001)))
            diff = em.sub_wide(f"{rq}.sub", mw, yq, s_f, [n_src, cfg.n_filters, None])
            y1_in = em.narrow(rq, diff, g_reb, [n_src, cfg.n_filters, None])
            y1 = self.decode("decoder.residual", y1_in, g_res, codes, d)
            f = combiner_frac_bits(g0.scale, g_res.scale, max(127 - g0.zero_point, g0.zero_point + 128))
            s_out = float(np.float32(g_res.scale)) * 2.0 ** -(8 + f)
            mult, shift, scale = multipliers([float(np.float32(g0.scale)) / s_out])
            c = em.consts("combiner", multiplier=mult, shift=shift, scale=scale)
            comb = self.gb.tensor("combiner", "int32", [n_src, cfg.audio_channels * st, None], quant=(s_out, 0))
            self.gb.node("combiner", [y0.name, y1.name, c["multiplier"], c["shift"], c["scale"]], [comb],
                         {"n_bits": cfg.out_act_n_bits}, name="combiner")
            out = Act(comb, None, s_out)
        # phase layout [n_src, C*s, M'] -> [1, n_src, T']
        c_a = cfg.audio_channels
        t1 = em.layout("reshape", "output.phases", out.name, [n_src, c_a, st, None], {"shape": [n_src, c_a, st, -1]})
        t2 = em.layout("transpose", "output.interleave", t1, [n_src, c_a, None, st], {"perm": [0, 1, 3, 2]})
        t3 = em.layout("reshape", "output.flat", t2, [n_src, c_a, None], {"shape": [n_src, c_a, -1]})
        kp = -(-L // st)
        extra = kp * st - L  # samples past (M-1)*s + L
        if extra:
            t3 = em.layout("slice", "output.crop", t3, [n_src, c_a, None], {"starts": [0], "ends": [-extra], "axes": [2]})
        final = em.layout("reshape", "output", t3, [1, n_src, None], {"shape": [1, n_src, -1]})
        return [final]
