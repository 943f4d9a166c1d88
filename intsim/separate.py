"""Separate a float mixture with a loaded model: whole file or triangle-weighted segments.

``audio_io(model)`` reads what the graph declares and returns an ``AudioIO``:
    input   one graph input, ``[1, T]`` (mono) or ``[1, C, T]``; float32 (the float audio is passed
            as is; FQSS graphs max-normalise it in their ``splitter``), or an integer tensor with
            per-tensor quantization (the executor quantizes the float audio with its scale and zero
            point; samples beyond its range saturate and are counted here as ``input_saturations``).
    output  one graph output, ``[1, S, T']`` (mono) or ``[1, S, C, T']``; float32, or integer with
            per-tensor quantization, dequantized as ``scale * (code - zero_point)`` (``to_audio`` for
            zero point 0).  ``T' <= T`` (FQSS: ``((T - K) // stride) * stride + K``); the stems are
            zero-padded back to ``T``, as FQSS's ``model_infer`` does.
    metadata ``sample_rate`` (required), ``stems`` (names; default ``s1..sS``), ``channels`` (when
            the input's channel dim is dynamic; default 1), ``min_samples``, or ``min_frames`` with
            ``fqss_config.model_cfg`` ``kernel_size``/``stride`` (shortest input the model accepts:
            ``K + (min_frames - 1) * stride``), ``permutation_invariant`` (default: true when every
            stem is named like ``s1``/``spk1``/``src1``, i.e. speakers without identity).

``separate(model, mixture [C, T] float32, segment=AUTO, overlap=0.25)`` -> ``Separation``.

Whole file vs segments.  By default (``segment=AUTO``) a mixture of at most ``WHOLE_MAX_SECONDS``
(60 s) runs as one call (the model's own semantics, bit-exact with any other engine fed the same
input).  Longer ones, or any run given ``segment`` samples, are cut into segments of ``segment``
samples every ``int((1 - overlap) * segment)`` samples, as FQSS's ``process.model_infer``: every
call gets exactly ``segment`` samples (the last one zero-padded), each segment's stems are weighted
by FQSS's triangle ``[1, 2, ..., seg/2, seg - seg/2, ..., 1] / max``, summed, and divided by the
summed weights.  Memory: the model's activations scale with the segment, not the file; the float
mixture and stems (``(S + 1) * C * T`` float32) are held whole, as demucs does.

Segmented output differs from whole-file output:
* near every segment edge (the model sees zero padding instead of context), and
* through per-call input normalisation: FQSS speech splitters max-normalise *each call*, so a
  segment's stems come out on that segment's scale.  When the graph's splitter normalises, each
  segment's stems are multiplied by ``peak(segment) / peak(mixture)`` (``segment_gain =
  "input-peak"``), putting all segments on the whole-file scale (a silent segment gives zeros).
  The codes each call computes still depend on its segment's peak, so segmented stems are not a
  bit-exact golden vector.
* permutation-invariant models may emit speakers in a different order per segment; each segment's
  stems are reordered to best match (cosine similarity) the previous segment's on their overlap
  (asteroid's LambdaOverlapAdd does the same; FQSS does not, it aligns chunks to the references).

Timing: ``run_s`` is the wall time of the model calls (input/output glue included, file I/O not),
``jit_s`` the part of it spent in Numba's compiler (compiling or loading cached code), ``rtf`` =
``run_s / audio_s`` (below 1 is faster than real time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from intsim import audio as au
from intsim.ops.fqss import to_audio

#: AUTO segmenting runs files up to this length whole.
WHOLE_MAX_SECONDS = 60.0
#: Segment length AUTO uses beyond WHOLE_MAX_SECONDS (unless the model's metadata gives ``segment_samples``).
DEFAULT_SEGMENT_SECONDS = 30.0
DEFAULT_OVERLAP = 0.25
AUTO = "auto"

_SPEAKER_NAME = re.compile(r"^(s|spk|speaker|src|source|est)_?\d+$", re.IGNORECASE)


@dataclass
class AudioIO:
    input_name: str
    input_rank: int  # 2: [1, T]; 3: [1, C, T]
    channels: int
    input_dtype: str
    input_quant: tuple[float, int] | None  # (scale, zero point) of an integer input
    input_length: int | None  # a static time dimension, else None
    output_name: str
    output_rank: int  # 3: [1, S, T']; 4: [1, S, C, T']
    output_dtype: str
    output_quant: tuple[float, int] | None
    stems: list[str]
    sample_rate: int
    min_samples: int
    normalizes_input: bool
    permutation_invariant: bool
    default_segment: int | None = None  # metadata segment_samples


@dataclass
class Separation:
    stems: np.ndarray  # float32 [S, C, T]
    names: list[str]
    sample_rate: int
    mode: str  # "whole" | "segmented"
    segment_samples: int | None
    overlap: float | None
    segments: list[tuple[int, int]]  # (start, real samples) of each model call
    call_samples: int  # input length of each model call
    output_samples: int  # samples each call produced (T'), the last call's
    segment_gain: str  # "input-peak" or "none"
    reordered: int  # segments whose stems were reordered to match the previous one
    run_s: float
    jit_s: float
    counts: dict = field(default_factory=dict)

    @property
    def audio_s(self) -> float:
        return self.stems.shape[-1] / self.sample_rate

    @property
    def rtf(self) -> float:
        return self.run_s / self.audio_s if self.audio_s else 0.0


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _quant(spec, what) -> tuple[float, int] | None:
    if spec.dtype == "float32":
        return None
    q = spec.quant
    if q is None or q.axis is not None or len(q.scale) != 1:
        raise ValueError(f"the model's {what} {spec.name!r} is {spec.dtype} without per-tensor quantization; "
                         "cannot map it to audio")
    return float(q.scale[0]), int(q.zero_point[0])


def audio_io(model) -> AudioIO:
    """How to feed audio to ``model`` and read stems back (see the module docstring)."""
    graph = model.graph
    meta = graph.metadata or {}
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"the model has inputs {graph.inputs} and outputs {graph.outputs}; audio separation "
                         "needs one input and one output (run arrays with an .npy/.npz INPUT instead)")
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    rate = meta.get("sample_rate")
    if not _positive_int(rate):
        raise ValueError("the model's metadata has no sample_rate; it cannot run on audio files "
                         "(run arrays with an .npy/.npz INPUT instead)")
    if len(x.shape) not in (2, 3) or x.shape[0] not in (1, None):
        raise ValueError(f"the model's input {x.name!r} has shape {x.shape}; audio models take [1, T] or [1, C, T]")
    if len(x.shape) == 3:
        channels = x.shape[1] if x.shape[1] is not None else meta.get("channels", meta.get("audio_channels", 1))
    else:
        channels = 1
    if not _positive_int(channels):
        raise ValueError(f"cannot tell the model's channel count (input shape {x.shape}, metadata channels {channels!r})")
    want_rank = 3 if len(x.shape) == 2 else 4
    if len(y.shape) not in (3, 4) or y.shape[0] not in (1, None) or (channels > 1 and len(y.shape) != 4):
        raise ValueError(f"the model's output {y.name!r} has shape {y.shape}; audio models give [1, S, T'] "
                         f"or [1, S, C, T'] (expected rank {want_rank})")
    if len(y.shape) == 4 and y.shape[2] not in (channels, None):
        raise ValueError(f"the model's output {y.name!r} has shape {y.shape}; expected {channels} channels at axis 2")
    in_quant, out_quant = _quant(x, "input"), _quant(y, "output")
    names = meta.get("stems")
    n_stems = y.shape[1]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        names = None
    if names is not None and n_stems is not None and len(names) != n_stems:
        raise ValueError(f"the model's metadata names {len(names)} stems {names}, its output {y.name!r} has {n_stems}")
    if names is None:
        names = [f"s{i + 1}" for i in range(n_stems)] if n_stems else []
    if any(not re.fullmatch(r"[A-Za-z0-9_.+\-]{1,100}", n) or n in (".", "..") for n in names):
        raise ValueError(f"the model's stem names {names} are not all usable as file names")
    pit = meta.get("permutation_invariant")
    if not isinstance(pit, bool):
        pit = bool(names) and all(_SPEAKER_NAME.match(n) for n in names)
    normalizes = any(node.op == "splitter" and node.inputs and node.inputs[0] == x.name
                     and node.attrs.get("normalize", True) for node in graph.nodes)
    seg = meta.get("segment_samples")
    return AudioIO(x.name, len(x.shape), int(channels), x.dtype, in_quant, x.shape[-1], y.name, len(y.shape),
                   y.dtype, out_quant, list(names), int(rate), min_samples(meta), normalizes, pit,
                   seg if _positive_int(seg) else None)


def min_samples(meta: dict) -> int:
    """Shortest input (samples) the model's metadata promises to accept; 1 when it says nothing."""
    if _positive_int(meta.get("min_samples")):
        return int(meta["min_samples"])
    frames = meta.get("min_frames")
    cfg = meta.get("fqss_config", {})
    cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else {}
    k, stride = cfg.get("kernel_size"), cfg.get("stride")
    if _positive_int(frames) and _positive_int(k) and _positive_int(stride):
        return int(k + (frames - 1) * stride)
    if _positive_int(k):
        return int(k)
    return 1


def _input_saturations(x: np.ndarray, io: AudioIO) -> int:
    """Samples the executor's quantization of float audio to an integer input saturates."""
    if io.input_quant is None:
        return 0
    scale, zp = io.input_quant
    info = np.iinfo(io.input_dtype)
    with np.errstate(over="ignore"):
        q = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.float64) + zp
    return int(np.count_nonzero((q > info.max) | (q < info.min)))


def _call(model, io: AudioIO, x: np.ndarray) -> np.ndarray:
    """One model call on float32 ``[C, n]`` -> float32 stems ``[S, C, n']``."""
    feed = x[None] if io.input_rank == 3 else x[:1]  # [1, C, n] or [1, n]
    y = model.run({io.input_name: feed})[io.output_name]
    if y.shape[0] != 1:
        raise ValueError(f"the model's output has batch size {y.shape[0]}, expected 1")
    y = y[0]
    if io.output_quant is not None:
        scale, zp = io.output_quant
        y = to_audio(y, scale) if zp == 0 else ((y.astype(np.float64) - zp) * np.float32(scale)).astype(np.float32)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y[:, None, :]
    if y.shape[1] != io.channels:
        raise ValueError(f"the model's output has {y.shape[1]} channels, expected {io.channels}")
    if io.stems and y.shape[0] != len(io.stems):
        raise ValueError(f"the model's output has {y.shape[0]} stems, its metadata names {len(io.stems)}")
    if not np.all(np.isfinite(y)):
        raise ValueError("the model's output contains NaN or infinite values")
    return y


def triangle(segment: int) -> np.ndarray:
    """FQSS's (and demucs's) overlap-add weight: ``[1..seg//2, seg - seg//2..1] / max``."""
    w = np.concatenate([np.arange(1, segment // 2 + 1), np.arange(segment - segment // 2, 0, -1)]).astype(np.float64)
    return w / w.max()


def plan_segments(length: int, segment: int, overlap: float) -> list[tuple[int, int]]:
    """(start, real samples) of each call: starts every ``int((1 - overlap) * segment)`` samples,
    until a segment reaches the end (FQSS also runs the redundant tail segments; we stop)."""
    stride = max(1, int((1 - overlap) * segment))
    plan = []
    for start in range(0, length, stride):
        stop = min(start + segment, length)
        plan.append((start, stop - start))
        if stop == length:
            break
    return plan


def _match_order(y: np.ndarray, prev: np.ndarray) -> list[int] | None:
    """Permutation of ``y``'s stems best matching ``prev`` (same shape [S, C, n]), by cosine similarity."""
    from scipy.optimize import linear_sum_assignment

    a = y.reshape(y.shape[0], -1).astype(np.float64)
    b = prev.reshape(prev.shape[0], -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if a.shape[1] == 0 or np.any(na == 0) or np.any(nb == 0):
        return None
    sim = (b @ a.T) / np.outer(nb, na)  # sim[i, j]: previous stem i vs new stem j
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return [int(c) for _, c in sorted(zip(rows, cols))]


def resolve_segment(io: AudioIO, length: int, segment) -> int | None:
    """Samples per call, or None for one whole-file call."""
    if io.input_length is not None:  # a static time dimension fixes the call length
        return None if length == io.input_length else io.input_length
    if segment == AUTO:
        if length <= WHOLE_MAX_SECONDS * io.sample_rate:
            return None
        segment = io.default_segment or int(DEFAULT_SEGMENT_SECONDS * io.sample_rate)
    if segment is None:
        return None
    segment = int(segment)
    if segment < io.min_samples:
        raise ValueError(f"segment of {segment} samples is shorter than the model's minimum input of "
                         f"{io.min_samples} samples")
    return None if segment >= length else segment


def separate(model, mixture: np.ndarray, *, segment=AUTO, overlap: float = DEFAULT_OVERLAP,
             progress: Callable[[int, int], None] | None = None, io: AudioIO | None = None) -> Separation:
    """Separate ``mixture`` (float32 ``[C, T]`` at the model's rate, C = the model's channels).

    ``segment``: ``AUTO`` (whole file up to 60 s, else 30 s or the model's ``segment_samples``),
    ``None`` (always whole), or samples per call.  ``overlap`` in [0, 1).  ``progress(done, total)``
    is called with audio samples after each call.  Model counts are reset first and reported in
    ``counts`` (totals, per node, plus ``input_saturations``).
    """
    from numba.core import event

    io = io or audio_io(model)
    x = np.ascontiguousarray(mixture, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != io.channels:
        raise ValueError(f"mixture must be float32 [{io.channels}, T], got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("mixture contains NaN or infinite samples")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    length = x.shape[1]
    if length == 0:
        raise ValueError("mixture has no samples")
    seg = resolve_segment(io, length, segment)
    model.reset_counts()
    jit: list[float] = []
    in_sat = 0
    reordered = 0
    with event.install_timer("numba:compiler_lock", jit.append):
        t0 = time.perf_counter()
        if seg is None:
            call_len = max(length, io.min_samples)
            chunk = x if call_len == length else np.pad(x, ((0, 0), (0, call_len - length)))
            in_sat += _input_saturations(chunk, io)
            y = _call(model, io, chunk)
            produced = y.shape[-1]
            out = np.zeros((y.shape[0], io.channels, length), np.float32)
            n = min(produced, length)
            out[..., :n] = y[..., :n]
            plan = [(0, length)]
            if progress:
                progress(length, length)
        else:
            plan = plan_segments(length, seg, overlap)
            call_len = seg
            weight = triangle(seg)
            peak = float(np.max(np.abs(x)))
            out = None
            wsum = np.zeros(length, np.float64)
            prev = None  # (start, stems) of the previous segment, after gain and reordering
            for start, n in plan:
                chunk = np.zeros((io.channels, seg), np.float32)
                chunk[:, :n] = x[:, start:start + n]
                in_sat += _input_saturations(chunk, io)
                y = _call(model, io, chunk)
                produced = y.shape[-1]
                m = min(n, produced)
                y = y[..., :m].astype(np.float64)
                if io.normalizes_input:
                    y *= float(np.max(np.abs(chunk))) / peak if peak > 0 else 0.0
                if out is None:
                    out = np.zeros((y.shape[0], io.channels, length), np.float64)
                if io.permutation_invariant and prev is not None and y.shape[0] > 1:
                    p_start, p_y = prev
                    ov = min(p_start + p_y.shape[-1], start + m) - start
                    if ov > 0:
                        order = _match_order(y[..., :ov], p_y[..., start - p_start:start - p_start + ov])
                        if order is not None and order != list(range(len(order))):
                            y = y[order]
                            reordered += 1
                out[..., start:start + m] += weight[:m] * y
                wsum[start:start + m] += weight[:m]
                prev = (start, y)
                if progress:
                    progress(start + n, length)
            covered = wsum > 0
            out[..., covered] /= wsum[covered]
            out = out.astype(np.float32)
        run_s = time.perf_counter() - t0
    names = io.stems or [f"s{i + 1}" for i in range(out.shape[0])]
    nodes = {node.name: node.op for node in model.graph.nodes}
    counts = {
        "acc_overflows": sum(c.acc_overflows for c in model.counts.values()),
        "saturations": sum(c.saturations for c in model.counts.values()),
        "input_saturations": in_sat,
        "nodes": {name: {"op": nodes[name], "acc_overflows": c.acc_overflows, "saturations": c.saturations}
                  for name, c in model.counts.items() if c.acc_overflows or c.saturations},
    }
    return Separation(out, names, io.sample_rate, "whole" if seg is None else "segmented", seg,
                      None if seg is None else overlap, plan, call_len, produced,
                      "input-peak" if seg is not None and io.normalizes_input else "none", reordered,
                      run_s, sum(jit), counts)


def conform(a: "au.Audio", io: "AudioIO", strict_rate: bool = False) -> tuple[np.ndarray, dict]:
    """Audio read from a file -> (float32 ``[C, T]`` at the model's rate and channel count, info).

    Channels: ``audio.convert_channels`` (mean downmix for mono models).  Rate: ``resample_poly``
    unless ``strict_rate``, which refuses.  Silent audio is an error.  ``info`` records what was
    done (``channel_policy``, ``resample``) for notices and JSON reports.
    """
    path = a.path
    info = {"path": str(path), "format": a.format, "subtype": a.subtype, "sample_rate": a.rate,
            "channels": a.channels, "samples": a.samples, "seconds": round(a.seconds, 6)}
    x, policy = au.convert_channels(a.data, io.channels, str(path))
    info["channel_policy"] = policy
    info["resampled"] = a.rate != io.sample_rate
    info["resample"] = None
    if a.rate != io.sample_rate:
        if strict_rate:
            raise au.AudioError(f"{path}: sample rate {a.rate} Hz differs from the model's {io.sample_rate} Hz "
                                "(--strict-rate refuses to resample)")
        up, down = au.resample_ratio(a.rate, io.sample_rate)
        x = au.resample(x, a.rate, io.sample_rate)
        info["resample"] = {"from_hz": a.rate, "to_hz": io.sample_rate, "method": "scipy.signal.resample_poly",
                            "up": up, "down": down}
    info["peak"] = au.check_not_silent(x, f"{path}")
    info["model_rate_samples"] = int(x.shape[1])
    return x, info
