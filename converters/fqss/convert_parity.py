"""Measuring a converted graph against the FQSS torch QAT model (needs torch).

* ``snr_db(reference, estimate)`` / ``si_sdr_db(reference, estimate)``: per-signal metrics
  (SI-SDR with zero-mean signals, as asteroid computes it).
* ``qat_codes(model, x)``: FQSS's int8 codes (``a - 128``) of every activation quantizer during one
  QAT forward, keyed by quantizer prefix (``masker.TCN.0.add.activation_fake_quantize``), plus
  the output.
* ``tensor_parity(graph, model, x, teacher_forced=...)``: per graph tensor, the fraction of codes
  that differ from FQSS's and the largest difference.  Free-running, the engine feeds itself;
  teacher-forced, every node reads FQSS's codes of its inputs, so each node is measured alone and
  the chaotic cascade of one-LSB differences (SPEC §1.7) is removed.

The graph's metadata ``fqss_tensors`` maps tensor names to quantizer keys (written by the
converter).  Tensors in the decoder's stride-phase layout ``[n_src, C*stride, frames]`` are mapped
from FQSS's ``[n_src, C, T]`` by ``to_phase_layout``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intsim.executor import Model
from intsim.ops.fqss import to_audio


def snr_db(reference, estimate) -> float:
    r = np.asarray(reference, np.float64).ravel()
    e = np.asarray(estimate, np.float64).ravel()
    noise = np.sum((r - e) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(r**2) / noise))


def si_sdr_db(reference, estimate, eps: float = 1e-12) -> float:
    """Scale-invariant SDR of ``estimate`` against ``reference`` (1-D signals, zero-mean first)."""
    r = np.asarray(reference, np.float64).ravel()
    e = np.asarray(estimate, np.float64).ravel()
    r = r - r.mean()
    e = e - e.mean()
    target = (np.dot(e, r) / (np.dot(r, r) + eps)) * r
    noise = e - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def graph_audio(graph, outputs) -> np.ndarray:
    """The float audio of a converted graph's output (``scale * code``, float32)."""
    name = graph.outputs[0]
    y = outputs[name]
    q = graph.tensors[name].quant
    if y.dtype.kind == "f":
        return y
    return to_audio(y, q.scale[0]) if q.zero_point[0] == 0 else \
        (np.float32(q.scale[0]) * (y.astype(np.float32) - np.float32(q.zero_point[0]))).astype(np.float32)


def run_graph(graph, x, ops=None, hook=None, model: Model | None = None) -> np.ndarray:
    model = model or Model(graph, ops=ops)
    return graph_audio(graph, model.run(np.asarray(x, np.float32), hook=hook))


def qat_codes(model, x) -> tuple[dict, np.ndarray]:
    """``({quantizer key: int8 codes}, output)`` of one FQSS QAT forward (torch, no grad)."""
    import torch

    from .quant import ActivationFakeQuantize

    codes, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, ActivationFakeQuantize):
            def hook(mod, inp, out, key=name):
                codes[key] = (mod.codes(inp[0]).detach().numpy() - 128).astype(np.int8)
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            y = model(torch.as_tensor(np.asarray(x, np.float32))).numpy()
    finally:
        for h in handles:
            h.remove()
    return codes, y


def to_phase_layout(codes, stride: int, frames: int, fill: int) -> np.ndarray:
    """FQSS ``[n, C, T]`` -> phase layout ``[n, C*stride, frames]`` (channel c*stride + p, frame j = sample j*stride + p)."""
    n, c, t = codes.shape
    full = np.full((n, c, frames * stride), fill, dtype=codes.dtype)
    full[:, :, :min(t, frames * stride)] = codes[:, :, :frames * stride]
    return full.reshape(n, c, frames, stride).transpose(0, 1, 3, 2).reshape(n, c * stride, frames)


@dataclass
class TensorParity:
    tensor: str
    key: str
    n: int
    mismatch: float  # fraction of codes that differ
    max_abs: int  # largest |difference| in codes


class _Lookup:
    """FQSS codes for graph tensors (reshaped, or moved to the phase layout)."""

    def __init__(self, graph, codes):
        self.graph = graph
        self.codes = codes
        self.keys = graph.metadata.get("fqss_tensors", {})
        cfg = graph.metadata.get("fqss_config", {})
        arch, mcfg = cfg.get("architecture", {}), cfg.get("model_cfg", {})
        self.stride = int(arch.get("stride") or mcfg.get("stride") or 1)
        self.phase = set(graph.metadata.get("fqss_phase_tensors", []))

    def get(self, tensor, shape):
        key = self.keys.get(tensor)
        if key is None or key not in self.codes:
            return None
        q = self.codes[key]
        if tensor in self.phase:
            spec = self.graph.tensors[tensor]
            return to_phase_layout(q, self.stride, shape[2], spec.quant.zero_point[0])
        if tuple(q.shape) == tuple(shape):
            return q
        if q.size == int(np.prod(shape)):
            return q.reshape(shape)
        return None


def tensor_parity(graph, model, x, teacher_forced: bool = True, ops=None, codes=None) -> list[TensorParity]:
    """Per mapped tensor: code mismatch fraction and max |diff| of the engine against FQSS QAT.

    ``model``: the torch reference (``build_reference``/``load_reference``); ``codes``: a
    precomputed ``qat_codes(model, x)[0]``.  Teacher-forced: every node reads FQSS's codes for each
    input that has them (and the engine's own values for the rest, e.g. the RQB's int16 tensors).
    """
    if codes is None:
        codes, _ = qat_codes(model, x)
    engine = Model(graph, ops=ops)
    look = _Lookup(graph, codes)
    results = []

    def compare(name, arr):
        ref = look.get(name, arr.shape)
        if ref is None or arr.dtype != np.int8:
            return
        diff = np.abs(arr.astype(np.int64) - ref.astype(np.int64))
        results.append(TensorParity(name, look.keys[name], int(diff.size), float(np.mean(diff > 0)),
                                    int(diff.max(initial=0))))

    if not teacher_forced:
        def hook(node, inputs, outputs):
            for name, arr in zip(node.outputs, outputs):
                compare(name, arr)
        engine.run(np.asarray(x, np.float32), hook=hook)
        return results
    env = dict(graph.constants)
    env.update(engine._bind_inputs(np.asarray(x, np.float32)))
    for node, op in zip(graph.nodes, engine.prepared):
        args = []
        for name in node.inputs:
            if not name:
                args.append(None)
                continue
            have = env.get(name)
            forced = look.get(name, have.shape) if have is not None and name not in graph.constants else None
            args.append(forced if forced is not None else have)
        outs = op.run(args, engine.counts[node.name])
        for name, arr in zip(node.outputs, outs):
            env[name] = arr
            if node.op not in ("reshape", "transpose", "slice"):
                compare(name, arr)
    return results
