"""Torch reference models of FQSS ``ConvTasNetQ`` (speech) and ``ConvTasNetMusicQ`` (SPEC §3.1/§3.2).

The modules reproduce the FQSS QAT forward in eval mode with the observers off, and their
``state_dict`` keys, order and shapes are exactly those of FQSS checkpoints (SPEC §5.2).

Quantized wrappers (SPEC §2.2). Inside a wrapper the submodules are registered in FQSS key order:
``activation_fake_quantize`` (Q, §1.2), ``weight_fake_quantize`` (wq, §1.1), the wrapped layer,
then ``nl`` (PReLU slope) / norm::

    Conv1dQ       y = Q(nl(conv1d(x, wq(W), b)))   (nl optional; the encoder is a Conv1dQ too)
    GroupNormQ    y = Q(group_norm(x, 1 group))     (statistics on the float input)
    LayerNormQ    y = Q(layer_norm(x))              (last dim)
    NlQ           y = Q(nl(x))
    AddQ / MulQ   y = Q(x1 + x2) / Q(x1 * x2)
    Decoder       y0 = Q_out(dec(Y, Wd));  RQB: Yq = enc(y0, wq_re(W_re));  Y1 = Q_reb(Y - Yq);
                  y1 = Q_res(dec(Y1, Wd, bias=None));  returns stack([y0, y1])   (SPEC §2.6)

``Identity`` placeholders stand where FQSS fused a following op (PReLU/ReLU) into the wrapper, so
the numeric indices of Sequential children match FQSS.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import FQSSConfig, MUSIC, SPEECH
from .quant import ActivationFakeQuantize, WeightFakeQuantize, overlap_and_add, postprocess, preprocess

__all__ = [
    "Conv1dQ", "GroupNormQ", "LayerNormQ", "NlQ", "AddQ", "MulQ",
    "ResidualErrorBlock", "ConvTr1dDecoderQ", "LinearDecoderQ",
    "ConvTasNetQ", "ConvTasNetMusicQ", "build_reference",
]


def make_nl(kind: Optional[str]) -> Optional[nn.Module]:
    """Nonlinearity module by name: prelu (1 slope, init 0.25), relu, sigmoid, tanh, or None."""
    table = {"prelu": nn.PReLU, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if kind in (None, "linear", "identity"):
        return None
    if kind not in table:
        raise ValueError(f"unsupported nonlinearity {kind!r}; expected one of {sorted(table)}")
    return table[kind]()


class Conv1dQ(nn.Module):
    """``Q(nl(conv1d(x, wq(W), b)))``: FQSS Conv1dQ / Conv1dNlQ / Conv1dEncoderQ.

    Keys: ``activation_fake_quantize.{min,max}_range [1]``, ``weight_fake_quantize.{min,max}_range
    [C_out,1,1]``, ``conv1d.weight [C_out, C_in/groups, k]``, ``conv1d.bias?``, ``nl.weight [1]``
    (PReLU only), ``in_quantizer.*`` (encoder with ``in_quant`` only; applied to the input first).
    """

    def __init__(self, c_in, c_out, kernel_size=1, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, nl=None, n_bits=8, w_bits=8, in_quant=False, in_bits=8):
        super().__init__()
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)
        self.weight_fake_quantize = WeightFakeQuantize((c_out, c_in // groups, kernel_size), 0, w_bits)
        self.conv1d = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=padding,
                                dilation=dilation, groups=groups, bias=bias)
        self.nl = make_nl(nl)
        self.in_quantizer = ActivationFakeQuantize(in_bits) if in_quant else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_quantizer is not None:
            x = self.in_quantizer(x)
        c = self.conv1d
        y = F.conv1d(x, self.weight_fake_quantize(c.weight), c.bias, c.stride, c.padding,
                     c.dilation, c.groups)
        if self.nl is not None:
            y = self.nl(y)
        return self.activation_fake_quantize(y)


class GroupNormQ(nn.Module):
    """``Q(GroupNorm(1 group, C, eps)(x))``. Keys: ``activation_fake_quantize.*``, ``groupnorm.{weight,bias} [C]``."""

    def __init__(self, channels, eps=1e-8, n_bits=8):
        super().__init__()
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)
        self.groupnorm = nn.GroupNorm(1, channels, eps=eps)

    def forward(self, x):
        g = self.groupnorm
        return self.activation_fake_quantize(F.group_norm(x, g.num_groups, g.weight, g.bias, g.eps))


class LayerNormQ(nn.Module):
    """``Q(LayerNorm(C, eps)(x))`` over the last dim. Keys: ``activation_fake_quantize.*``, ``layernorm.{weight,bias} [C]``."""

    def __init__(self, channels, eps=1e-8, n_bits=8):
        super().__init__()
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)
        self.layernorm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x):
        n = self.layernorm
        return self.activation_fake_quantize(F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps))


class NlQ(nn.Module):
    """``Q(nl(x))``. Keys: ``activation_fake_quantize.*``, ``nl.weight [1]`` for PReLU."""

    def __init__(self, nl, n_bits=8):
        super().__init__()
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)
        self.nl = make_nl(nl)

    def forward(self, x):
        return self.activation_fake_quantize(self.nl(x) if self.nl is not None else x)


class AddQ(nn.Module):
    """``Q(x1 + x2)``. Keys: ``activation_fake_quantize.*``."""

    def __init__(self, n_bits=8):
        super().__init__()
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)

    def forward(self, x1, x2):
        return self.activation_fake_quantize(x1 + x2)


class MulQ(nn.Module):
    """``Q(x1 * x2)``. Keys: ``activation_fake_quantize.*``."""

    def __init__(self, n_bits=8):
        super().__init__()
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)

    def forward(self, x1, x2):
        return self.activation_fake_quantize(x1 * x2)


class ResidualErrorBlock(nn.Module):
    """FQSS RQB (SPEC §2.6): ``Y1 = Q_reb(Y - enc_res(y0, wq_re(W_re)))`` then ``dec(Y1, Wd, bias=None)``.

    ``kind='conv'``: enc_res = Conv1d(C_dec_out -> C_dec_in, k, stride of the decoder, no padding);
    ``kind='linear'``: enc_res = Linear(dec_out -> dec_in). Keys: ``activation_fake_quantize.*``,
    ``weight_fake_quantize.* [C,1,1]|[C,1]``, ``residual_encoder.weight``. Returns the float
    ``dec(Y1)``; the caller applies ``activation_fake_quantize_residual``.
    """

    def __init__(self, kind, dec_in, dec_out, kernel_size=None, stride=None, n_bits=8, w_bits=8):
        super().__init__()
        self.kind = kind
        self.stride = stride
        self.activation_fake_quantize = ActivationFakeQuantize(n_bits)
        if kind == "conv":
            enc = nn.Conv1d(dec_out, dec_in, kernel_size, stride=stride, bias=False)
        else:
            enc = nn.Linear(dec_out, dec_in, bias=False)
        self.weight_fake_quantize = WeightFakeQuantize(enc.weight.shape, 0, w_bits)
        self.residual_encoder = enc

    def forward(self, y_latent, y_q, decode):
        w = self.weight_fake_quantize(self.residual_encoder.weight)
        if self.kind == "conv":
            yq = F.conv1d(y_q, w, None, self.stride)
        else:
            yq = F.linear(y_q, w, None)
        return decode(self.activation_fake_quantize(y_latent - yq))


class ConvTr1dDecoderQ(nn.Module):
    """FQSS ConvTr1dDecoderQ: ``y0 = Q_out(conv_transpose1d(Y, wq(Wd), stride))`` (+ RQB).

    Keys: ``activation_fake_quantize.*`` (Q_out), ``weight_fake_quantize.* [1, C_out, 1]`` (axis 1),
    ``convTr1d.weight [N, C_out, k]``, ``residual_error_block.*``, ``activation_fake_quantize_residual.*``.
    Returns ``[n_combiner, B, C_out, L]``.
    """

    def __init__(self, n_filters, out_channels, kernel_size, stride, n_combiner=2, n_bits=8,
                 w_bits=8, out_quant=True, out_bits=8):
        super().__init__()
        self.n_combiner = n_combiner
        self.activation_fake_quantize = ActivationFakeQuantize(out_bits) if out_quant else None
        conv = nn.ConvTranspose1d(n_filters, out_channels, kernel_size, stride=stride, bias=False)
        self.weight_fake_quantize = WeightFakeQuantize(conv.weight.shape, 1, w_bits)
        self.convTr1d = conv
        if n_combiner >= 2:
            self.residual_error_block = ResidualErrorBlock("conv", n_filters, out_channels,
                                                           kernel_size, stride, out_bits, w_bits)
            self.activation_fake_quantize_residual = ActivationFakeQuantize(out_bits)

    def forward(self, y):
        c = self.convTr1d
        wd = self.weight_fake_quantize(c.weight)

        def decode(t):
            return F.conv_transpose1d(t, wd, None, c.stride, c.padding, c.output_padding, c.groups, c.dilation)

        y0 = decode(y)
        if self.activation_fake_quantize is not None:
            y0 = self.activation_fake_quantize(y0)
        outs = [y0]
        for _ in range(1, self.n_combiner):
            outs.append(self.activation_fake_quantize_residual(self.residual_error_block(y, y0, decode)))
        return torch.stack(outs)


class LinearDecoderQ(nn.Module):
    """FQSS LinearDecoderQ: ``y0 = Q_out(linear(Y, wq(Wd)))`` (+ RQB with a Linear enc_res).

    Keys: ``activation_fake_quantize.*``, ``weight_fake_quantize.* [C*L, 1]``, ``linear.weight
    [C*L, N]``, ``residual_error_block.*`` (``residual_encoder.weight [N, C*L]``),
    ``activation_fake_quantize_residual.*``. Returns ``[n_combiner, ..., C*L]``.
    """

    def __init__(self, n_filters, out_features, n_combiner=2, n_bits=8, w_bits=8, out_quant=True, out_bits=8):
        super().__init__()
        self.n_combiner = n_combiner
        self.activation_fake_quantize = ActivationFakeQuantize(out_bits) if out_quant else None
        lin = nn.Linear(n_filters, out_features, bias=False)
        self.weight_fake_quantize = WeightFakeQuantize(lin.weight.shape, 0, w_bits)
        self.linear = lin
        if n_combiner >= 2:
            self.residual_error_block = ResidualErrorBlock("linear", n_filters, out_features,
                                                           n_bits=out_bits, w_bits=w_bits)
            self.activation_fake_quantize_residual = ActivationFakeQuantize(out_bits)

    def forward(self, y):
        wd = self.weight_fake_quantize(self.linear.weight)

        def decode(t):
            return F.linear(t, wd, None)

        y0 = decode(y)
        if self.activation_fake_quantize is not None:
            y0 = self.activation_fake_quantize(y0)
        outs = [y0]
        for _ in range(1, self.n_combiner):
            outs.append(self.activation_fake_quantize_residual(self.residual_error_block(y, y0, decode)))
        return torch.stack(outs)


# ============================================================================================
# ConvTasNetQ (speech): asteroid-style TDConvNet masker, SPEC §3.1


class ConvBlock(nn.Module):
    """TCN block: ``h = shared_block(x)``; returns ``(add(x, res_conv(h)), skip_conv(h))``.

    shared_block: 0 Conv1dQ 1x1 B->H +PReLU, 1 Identity, 2 GroupNormQ(H), 3 Conv1dQ depthwise
    k=P, dilation d, padding (P-1)*d//2, +PReLU, 4 Identity, 5 GroupNormQ(H).
    """

    def __init__(self, cfg: FQSSConfig, dilation: int):
        super().__init__()
        B, H, S, P, nb, wb, eps = (cfg.bn_chan, cfg.hid_chan, cfg.skip_chan, cfg.conv_kernel,
                                   cfg.act_n_bits, cfg.weight_n_bits, cfg.gn_eps)
        self.shared_block = nn.Sequential(
            Conv1dQ(B, H, 1, bias=cfg.bias, nl="prelu", n_bits=nb, w_bits=wb),
            nn.Identity(),
            GroupNormQ(H, eps, nb),
            Conv1dQ(H, H, P, padding=(P - 1) * dilation // 2, dilation=dilation, groups=H,
                    bias=cfg.bias, nl="prelu", n_bits=nb, w_bits=wb),
            nn.Identity(),
            GroupNormQ(H, eps, nb),
        )
        self.res_conv = Conv1dQ(H, B, 1, bias=cfg.bias, n_bits=nb, w_bits=wb)
        self.skip_conv = Conv1dQ(H, S, 1, bias=cfg.bias, n_bits=nb, w_bits=wb)
        self.add = AddQ(nb)

    def forward(self, x):
        h = self.shared_block(x)
        return self.add(x, self.res_conv(h)), self.skip_conv(h)


class MaskGenerator(nn.Module):
    """Speech masker: bottleneck (GroupNormQ(N), Conv1dQ N->B), X*R ConvBlocks with dilation
    ``2^(i mod X)``, skip sum ``s = skip_0; s = adds[i-1](s, skip_i)``, mask_net (NlQ PReLU,
    Conv1dQ S -> n_src*N fused with mask_act). Output ``[B, n_src, N, M]``."""

    def __init__(self, cfg: FQSSConfig):
        super().__init__()
        N, nb, wb = cfg.n_filters, cfg.act_n_bits, cfg.weight_n_bits
        self.n_src, self.n_filters = cfg.n_src, N
        self.bottleneck = nn.Sequential(GroupNormQ(N, cfg.gn_eps, nb),
                                        Conv1dQ(N, cfg.bn_chan, 1, bias=cfg.bias, n_bits=nb, w_bits=wb))
        n = cfg.n_blocks * cfg.n_repeats
        self.TCN = nn.ModuleList(ConvBlock(cfg, 2 ** (i % cfg.n_blocks)) for i in range(n))
        self.adds = nn.ModuleList(AddQ(nb) for _ in range(n - 1))
        self.mask_net = nn.Sequential(
            NlQ("prelu", nb),
            Conv1dQ(cfg.skip_chan, cfg.n_src * N, 1, bias=cfg.bias, nl=cfg.mask_act, n_bits=nb, w_bits=wb),
        )

    def forward(self, feats):
        x = self.bottleneck(feats)
        skip_sum = None
        for i, block in enumerate(self.TCN):
            x, skip = block(x)
            skip_sum = skip if i == 0 else self.adds[i - 1](skip_sum, skip)
        mask = self.mask_net(skip_sum)
        return mask.view(mask.shape[0], self.n_src, self.n_filters, -1)


class ConvTasNetQ(nn.Module):
    """FQSS ConvTasNetQ (speech). ``forward([B, T] or [B, C, T]) -> [B, n_src, T']`` (C = 1),
    ``T' = ((T - L)//stride)*stride + L``.

    splitter(normalize) -> encoder Conv1dQ(n_splitter*C -> N, k L, stride) -> masker ->
    mul Q(mask * feats) -> decoder ConvTr1dDecoderQ (+RQB) -> combiner.
    """

    def __init__(self, cfg: FQSSConfig):
        super().__init__()
        if cfg.model != SPEECH:
            raise ValueError(f"ConvTasNetQ needs a {SPEECH} config, got {cfg.model}")
        self.cfg = cfg
        nb, wb = cfg.act_n_bits, cfg.weight_n_bits
        self.encoder = Conv1dQ(cfg.n_splitter * cfg.audio_channels, cfg.n_filters, cfg.kernel_size,
                               stride=cfg.stride, bias=False, n_bits=nb, w_bits=wb,
                               in_quant=cfg.in_quant, in_bits=cfg.in_act_n_bits)
        self.masker = MaskGenerator(cfg)
        self.decoder = ConvTr1dDecoderQ(cfg.n_filters, cfg.audio_channels, cfg.kernel_size, cfg.stride,
                                        cfg.n_combiner, nb, wb, cfg.out_quant, cfg.out_act_n_bits)
        self.mul = MulQ(nb)

    def forward(self, x):
        cfg = self.cfg
        batch = x.shape[0]
        feats = self.encoder(preprocess(x, cfg.n_splitter, cfg.in_act_n_bits, cfg.normalize))
        mask = self.masker(feats)
        masked = self.mul(mask, feats.unsqueeze(1))
        masked = masked.reshape(batch * cfg.n_src, cfg.n_filters, -1)
        out = self.decoder(masked)  # [n_combiner, B*n_src, C, L]
        out = out.reshape(cfg.n_combiner, batch, cfg.n_src, cfg.audio_channels, -1)
        return postprocess(out, cfg.n_combiner, cfg.out_act_n_bits)


# ============================================================================================
# ConvTasNetMusicQ: demucs-tasnet-style TemporalConvNet, SPEC §3.2


class ChannelWiseLayerNorm(nn.Module):
    """cLN: ``transpose(1,2) -> LayerNormQ(N) -> transpose(1,2)`` (normalises each frame)."""

    def __init__(self, channels, eps=1e-8, n_bits=8):
        super().__init__()
        self.norm = LayerNormQ(channels, eps, n_bits)

    def forward(self, x):
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class DepthwiseSeparableConv(nn.Module):
    """net: 0 Conv1dQ depthwise k=P, dilation d, padding (P-1)*d//2, +PReLU, 1 Identity,
    2 GroupNormQ(H), 3 Conv1dQ pointwise H->B. All bias-free."""

    def __init__(self, cfg: FQSSConfig, dilation: int):
        super().__init__()
        B, H, P, nb, wb = cfg.bn_chan, cfg.hid_chan, cfg.conv_kernel, cfg.act_n_bits, cfg.weight_n_bits
        self.net = nn.Sequential(
            Conv1dQ(H, H, P, padding=(P - 1) * dilation // 2, dilation=dilation, groups=H,
                    bias=cfg.bias, nl="prelu", n_bits=nb, w_bits=wb),
            nn.Identity(),
            GroupNormQ(H, cfg.gn_eps, nb),
            Conv1dQ(H, B, 1, bias=cfg.bias, n_bits=nb, w_bits=wb),
        )

    def forward(self, x):
        return self.net(x)


class TemporalBlock(nn.Module):
    """``add(net(x), x)`` with net: 0 Conv1dQ 1x1 B->H +PReLU, 1 Identity, 2 GroupNormQ(H),
    3 DepthwiseSeparableConv. No skip path."""

    def __init__(self, cfg: FQSSConfig, dilation: int):
        super().__init__()
        nb = cfg.act_n_bits
        self.net = nn.Sequential(
            Conv1dQ(cfg.bn_chan, cfg.hid_chan, 1, bias=cfg.bias, nl="prelu", n_bits=nb, w_bits=cfg.weight_n_bits),
            nn.Identity(),
            GroupNormQ(cfg.hid_chan, cfg.gn_eps, nb),
            DepthwiseSeparableConv(cfg, dilation),
        )
        self.add = AddQ(nb)

    def forward(self, x):
        return self.add(self.net(x), x)


class TemporalConvNet(nn.Module):
    """Music separator. network: 0 cLN(N), 1 Conv1dQ N->B, 2 R x X TemporalBlocks (dilation 2^x),
    3 Conv1dQ B -> n_src*N fused with mask_act. Output ``[B, n_src, N, K]``."""

    def __init__(self, cfg: FQSSConfig):
        super().__init__()
        nb, wb = cfg.act_n_bits, cfg.weight_n_bits
        self.n_src, self.n_filters = cfg.n_src, cfg.n_filters
        repeats = nn.Sequential(*[
            nn.Sequential(*[TemporalBlock(cfg, 2**x) for x in range(cfg.n_blocks)])
            for _ in range(cfg.n_repeats)
        ])
        self.network = nn.Sequential(
            ChannelWiseLayerNorm(cfg.n_filters, cfg.ln_eps, nb),
            Conv1dQ(cfg.n_filters, cfg.bn_chan, 1, bias=cfg.bias, n_bits=nb, w_bits=wb),
            repeats,
            Conv1dQ(cfg.bn_chan, cfg.n_src * cfg.n_filters, 1, bias=cfg.bias, nl=cfg.mask_act,
                    n_bits=nb, w_bits=wb),
        )

    def forward(self, w):
        score = self.network(w)
        return score.view(score.shape[0], self.n_src, self.n_filters, -1)


class ConvTasNetMusicQ(nn.Module):
    """FQSS ConvTasNetMusicQ. ``forward([B, C, T]) -> [B, n_src, C, T']`` (``[B, n_src, T']`` if C = 1),
    ``T' = ((T - L)//stride)*stride + L``.

    splitter (normalize=False: dynamic delta = max|x|/128) -> encoder.0 Conv1dQ(n_splitter*C -> N,
    k L, stride) + ReLU -> separator -> mul Q(mask * feats) -> transpose [B,S,K,N] -> decoder
    LinearDecoderQ N -> C*L (+RQB) -> [n_comb,B,S,K,C,L] -> transpose -> overlap_and_add(hop stride)
    (float, after quantization) -> combiner.
    """

    def __init__(self, cfg: FQSSConfig):
        super().__init__()
        if cfg.model != MUSIC:
            raise ValueError(f"ConvTasNetMusicQ needs a {MUSIC} config, got {cfg.model}")
        self.cfg = cfg
        nb, wb = cfg.act_n_bits, cfg.weight_n_bits
        self.encoder = nn.Sequential(
            Conv1dQ(cfg.n_splitter * cfg.audio_channels, cfg.n_filters, cfg.kernel_size,
                    stride=cfg.stride, bias=cfg.bias, nl="relu", n_bits=nb, w_bits=wb,
                    in_quant=cfg.in_quant, in_bits=cfg.in_act_n_bits),
            nn.Identity(),
        )
        self.separator = TemporalConvNet(cfg)
        self.decoder = LinearDecoderQ(cfg.n_filters, cfg.audio_channels * cfg.kernel_size,
                                      cfg.n_combiner, nb, wb, cfg.out_quant, cfg.out_act_n_bits)
        self.mul = MulQ(nb)

    def forward(self, x):
        cfg = self.cfg
        feats = self.encoder(preprocess(x, cfg.n_splitter, cfg.in_act_n_bits, cfg.normalize))
        mask = self.separator(feats)
        masked = self.mul(mask, feats.unsqueeze(1)).transpose(2, 3)  # [B, S, K, N]
        out = self.decoder(masked)  # [n_comb, B, S, K, C*L]
        n_comb, batch, n_src, n_frames, _ = out.shape
        out = out.view(n_comb, batch, n_src, n_frames, cfg.audio_channels, cfg.kernel_size).transpose(3, 4)
        out = overlap_and_add(out, cfg.stride)  # [n_comb, B, S, C, T']
        return postprocess(out, cfg.n_combiner, cfg.out_act_n_bits)


def build_reference(cfg: FQSSConfig) -> nn.Module:
    """Build the reference module for ``cfg`` (default init, observers off, eval mode)."""
    cls = {SPEECH: ConvTasNetQ, MUSIC: ConvTasNetMusicQ}[cfg.model]
    return cls(cfg).eval()
