"""``intsim run``: run a model on arrays (.npy/.npz) or separate an audio file into stems."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

import intsim
from intsim import audio as au
from intsim import inspect as ins
from intsim import metrics as mt
from intsim import separate as sp
from intsim.defaults import resolve_model, training_notice
from intsim.cli_common import CONTEXT, emit_json, fmt_int, notice, profile_option

ARRAY_SUFFIXES = (".npy", ".npz")
DEFAULT_OUT_DIR = "separated"
#: A non-TTY stderr gets a plain progress line at most this often (seconds), so long CI runs show life.
PLAIN_PROGRESS_EVERY_S = 30.0
#: The audio summary lists at most this many nodes with overflows/saturations (--json has all).
AUDIO_NODE_LINES = 8


class SegmentParam(click.ParamType):
    name = "SECONDS|auto|none"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            if text in ("auto", "none"):
                return text
            try:
                seconds = float(text)
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds, 'auto' or 'none'", param, ctx)
        if not seconds > 0 or seconds != seconds or seconds == float("inf"):
            self.fail(f"{value!r} must be a positive number of seconds", param, ctx)
        return seconds


@click.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL.npz|default", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="OUT",
              help="Arrays: the output file, .npz (one array per graph output name) or .npy (the single "
                   "output of a one-output model), overwritten if it exists  [default: <input>_out.npz next "
                   "to INPUT].  Audio: the output folder; stems go to OUT/<model>/<track>/<stem>.wav, "
                   f"replacing files of the same name  [default: {DEFAULT_OUT_DIR}]")
@click.option("-p", "--profile", metavar="NAME|FILE",
              help="Arithmetic profile overriding the one in the model: tflm, single, onnx, or a profile file "
                   'such as {"base": "tflm", "acc_bits": 24, "acc_overflow": "saturate"}.')
@click.option("--serial", is_flag=True, help="Use the single-threaded kernels (results are bit-identical).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a summary.")
@click.option("-r", "--reference", "references", multiple=True, metavar="REF",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Audio: a clean source file, one per stem (repeat the option); adds SI-SDR, SI-SDRi, SDR "
                   "and SDRi per stem.  Speaker models (stems s1, s2, ...) match references to stems by the "
                   "best permutation; other models take them in stem order.")
@click.option("--strict-rate", is_flag=True,
              help="Audio: refuse files whose sample rate differs from the model's instead of resampling.")
@click.option("--segment", type=SegmentParam(), default="auto", show_default=True, metavar="SECONDS|auto|none",
              help="Audio: run in segments of SECONDS with triangle-weighted overlap-add (bounded memory); "
                   f"'none' runs the whole file in one call; 'auto' runs files up to {sp.WHOLE_MAX_SECONDS:g} s "
                   f"whole and longer ones in {sp.DEFAULT_SEGMENT_SECONDS:g}-s segments (or the model's "
                   "segment_samples).  Segmented stems differ from whole-file ones near segment edges and "
                   "wherever the model normalises per call (input peak, global norms).")
@click.option("--overlap", type=click.FloatRange(0.0, 1.0, max_open=True), default=sp.DEFAULT_OVERLAP,
              show_default=True, help="Audio: overlap between segments, as a fraction of the segment.")
@click.option("--pcm16", is_flag=True,
              help="Audio: write 16-bit PCM stems instead of float32 WAV, after one gain for all stems "
                   "that brings their peak to the mixture's peak (reported; samples still beyond full "
                   "scale saturate and are counted).")
@click.pass_context
def run(ctx, model, input_path, output, profile, serial, as_json, references, strict_rate, segment, overlap, pcm16):
    """Run MODEL.npz on INPUT: an .npy/.npz array file, or an audio file to separate into stems.

    MODEL `default` is the model shipped with intsim (see `intsim demo`).

    \b
    Arrays (INPUT.npy or INPUT.npz)
    INPUT is an .npy array for a one-input model, or an .npz with one array per graph input name.
    Integer arrays must have the input's dtype; float arrays fed to an integer input are quantized
    with its scale and zero point (round half to even, saturated).  Shapes must match the declared
    ones, dynamic dimensions excepted.  The summary lists output names, shapes and dtypes, the
    wall time (and the part spent compiling or loading Numba kernels, high on a first run), and
    accumulator overflows and saturated outputs per node (nodes with none left out) and in total.

    \b
    Audio (any other INPUT: WAV, FLAC, OGG, ... anything libsndfile reads)
    The model needs metadata sample_rate and one audio input/output (FQSS models: float32
    [1, T] in, [1, S, T'] integer codes out).  The file is resampled to the model's rate
    (scipy resample_poly, with a notice; --strict-rate refuses instead) and downmixed to mono for
    mono models (channel mean, with a notice).  Stems are written unscaled as float32 WAV to
    OUT/<model>/<track>/<stem>.wav (<model> = MODEL's file name without .npz, <track> = INPUT's):
    FQSS models have an arbitrary output gain and their stems often exceed 1.0; --pcm16 applies
    one documented gain first.  Stems are zero-padded to the input length (the model's output is
    shorter by up to its stride).  Stems are written only after the run succeeds.
    Silent, empty, unreadable and NaN/inf files are errors (exit 1).
    Metrics (--reference, at the model's rate): SI-SDR without mean removal, SDR = BSS-eval v3
    (bss_eval_sources, 512-tap filter, whole signal), SI-SDRi/SDRi = metric(stem) - metric(mixture).
    RTF = run time / audio duration (below 1: faster than real time).

    \b
    Examples:
      intsim run model.npz mix.npy                    # writes mix_out.npz
      intsim run model.npz mix.npy -o est.npz --profile single --json
      intsim run model.npz mix.wav                    # writes separated/model/mix/s1.wav, s2.wav
      intsim run model.npz mix.wav -r s1.wav -r s2.wav --json > result.json
    """
    model = resolve_model(model)
    if input_path.suffix.lower() in ARRAY_SUFFIXES:
        given = [name for name, used in (("--reference", references), ("--strict-rate", strict_rate),
                                         ("--segment", segment != "auto"), ("--overlap", overlap != sp.DEFAULT_OVERLAP),
                                         ("--pcm16", pcm16)) if used]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to audio inputs only; {input_path} is an array file")
        _run_arrays(model, input_path, output, profile, serial, as_json)
    else:
        _run_audio(ctx, model, input_path, output, profile, serial, as_json, references, strict_rate, segment,
                   overlap, pcm16)


# --- arrays --------------------------------------------------------------------------------------

def _run_arrays(model, input_path, output, profile, serial, as_json):
    output = output if output is not None else input_path.with_name(input_path.stem + "_out.npz")
    if output.resolve() == input_path.resolve():
        raise ValueError(f"{output}: output would overwrite the input")
    if output.is_dir():
        raise ValueError(f"{output}: is a directory; array outputs are .npz or .npy files")
    t0 = time.perf_counter()
    loaded = intsim.load(model, profile=profile_option(profile), parallel=not serial)
    load_s = time.perf_counter() - t0
    data = ins.load_array_file(input_path)
    inputs = ins.bind_input_file(loaded.graph, data)
    ins.check_output_path(output, len(loaded.outputs))
    outputs, report = ins.run_with_report(loaded, inputs)
    ins.save_outputs(outputs, output)
    doc = {
        "intsim": intsim.__version__,
        "model": {"path": str(model), "sha256": ins.file_sha256(model)},
        "profile": loaded.profile.to_dict(),
        "parallel": not serial,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
        "output_path": str(output),
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()},
        "timing": {"load_s": round(load_s, 6), "wall_s": round(report["wall_s"], 6), "jit_s": round(report["jit_s"], 6)},
        "counts": report["counts"],
    }
    if as_json:
        emit_json(doc)
    else:
        _print_run(doc)


def _print_run(doc: dict) -> None:
    out = click.echo
    out(f"model     {doc['model']['path']}  (sha256 {doc['model']['sha256'][:16]})")
    out(f"profile   {doc['profile']['name']}{'' if doc['parallel'] else '  (serial kernels)'}")
    out(f"written   {doc['output_path']}")
    for name, o in doc["outputs"].items():
        out(f"output    {name}  {o['dtype']} {o['shape']}")
    t = doc["timing"]
    out(f"time      {t['wall_s']:.3f} s run (of which {t['jit_s']:.3f} s Numba compile/cache load), {t['load_s']:.3f} s load")
    _print_counts(doc["counts"])


def _print_counts(c: dict, limit: int | None = None) -> None:
    """Totals, then the nodes with overflows or saturations (graph order; with ``limit``, the
    ``limit`` largest, the rest summed on one line)."""
    out = click.echo
    extra = f", {fmt_int(c['input_saturations'])} saturated input samples" if "input_saturations" in c else ""
    out(f"counts    {fmt_int(c['acc_overflows'])} accumulator overflows, {fmt_int(c['saturations'])} saturated outputs{extra}")
    nodes = list(c["nodes"].items())
    if not nodes:
        return
    rest = []
    if limit is not None and len(nodes) > limit:
        ranked = sorted(nodes, key=lambda kv: -(kv[1]["acc_overflows"] + kv[1]["saturations"]))
        keep = {name for name, _ in ranked[:limit]}
        rest = [n for name, n in nodes if name not in keep]
        nodes = [(name, n) for name, n in nodes if name in keep]
    out(f"  {'node':<32} {'op':<18} {'overflows':>12} {'saturations':>12}")
    for name, n in nodes:
        out(f"  {name:<32} {n['op']:<18} {fmt_int(n['acc_overflows']):>12} {fmt_int(n['saturations']):>12}")
    if rest:
        label = f"({len(rest)} more nodes; --json lists all)"
        out(f"  {label:<51} {fmt_int(sum(n['acc_overflows'] for n in rest)):>12} "
            f"{fmt_int(sum(n['saturations'] for n in rest)):>12}")


# --- audio ---------------------------------------------------------------------------------------

class _Progress:
    """A small progress bar on stderr in audio seconds.

    TTY: one line redrawn in place.  Not a TTY (logs, CI, pipes): silent, except a plain line at
    most every PLAIN_PROGRESS_EVERY_S seconds of wall time, so only long runs print anything.
    Disabled by ``intsim -q``.
    """

    def __init__(self, rate: int, enabled: bool, stream=None):
        self.rate, self.enabled = rate, enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = self.last = time.perf_counter()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        speed = (done / self.rate) / (now - self.t0) if now > self.t0 else 0.0
        text = f"{done / self.rate:.1f}/{total / self.rate:.1f} s audio, {speed:.2f}x real time"
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            self.stream.write(f"\rseparating [{'#' * filled}{'.' * (width - filled)}] {text}")
            self.stream.flush()
            self.drawn = True
        elif now - self.last >= PLAIN_PROGRESS_EVERY_S and done < total:
            self.stream.write(f"separating: {text}\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _read(path: Path) -> au.Audio:
    try:
        return au.read_audio(path)
    except au.AudioError as e:
        raise au.AudioError(f"{e}; INPUT and --reference must be audio files libsndfile reads (WAV, FLAC, OGG, "
                            "...), or INPUT an array file (.npy or .npz)") from None


def _prepare_audio(ctx, a: au.Audio, io: sp.AudioIO, strict_rate: bool, what: str):
    """``separate.conform`` plus notices on stderr for what it changed; (audio [C, T], info)."""
    x, info = sp.conform(a, io, strict_rate)
    if info["channel_policy"] != "as-is":
        how = ("downmixed to mono (channel mean)" if info["channel_policy"] == "downmix-mean"
               else f"duplicated to {io.channels} channels")
        notice(ctx, f"note: {what} {a.path}: {a.channels} channel(s) {how} for the model")
    if info["resample"]:
        r = info["resample"]
        notice(ctx, f"note: {what} {a.path}: resampled {r['from_hz']} Hz -> {r['to_hz']} Hz (scipy resample_poly "
                    f"up {r['up']}, down {r['down']}; float, outside the integer contract)")
    return x, info


def _segment_samples(segment, rate: int):
    if segment == "auto":
        return sp.AUTO
    if segment == "none":
        return None
    return max(1, int(round(segment * rate)))


def _run_audio(ctx, model, input_path, output, profile, serial, as_json, references, strict_rate, segment, overlap,
               pcm16):
    t_start = time.perf_counter()
    out_root = output if output is not None else Path(DEFAULT_OUT_DIR)
    if out_root.exists() and not out_root.is_dir():
        raise ValueError(f"{out_root}: exists and is not a directory; audio outputs go to a folder (-o OUT)")
    loaded = intsim.load(model, profile=profile_option(profile), parallel=not serial)
    load_s = time.perf_counter() - t_start
    warning = training_notice(loaded.metadata)
    if warning:
        notice(ctx, warning)
    mix_file = _read(input_path)  # before the model check: an unreadable file is the more useful message
    io = sp.audio_io(loaded)
    mix, input_info = _prepare_audio(ctx, mix_file, io, strict_rate, "input")
    refs, ref_infos = [], []
    if references:
        if io.stems and len(references) != len(io.stems):
            raise ValueError(f"{len(references)} --reference file(s) given; the model has {len(io.stems)} stems "
                             f"{io.stems}: give one reference per stem")
        for ref_path in references:
            r, info = _prepare_audio(ctx, _read(ref_path), io, strict_rate, "reference")
            if r.shape[1] != mix.shape[1]:
                raise ValueError(f"{ref_path}: {r.shape[1]} samples at {io.sample_rate} Hz, the mixture has "
                                 f"{mix.shape[1]}; references must cover the mixture exactly")
            refs.append(r)
            ref_infos.append(info)
    seg = _segment_samples(segment, io.sample_rate)
    bar = _Progress(io.sample_rate, enabled=not ctx.find_root().params.get("quiet"))
    try:
        sep = sp.separate(loaded, mix, segment=seg, overlap=overlap, progress=bar, io=io)
    finally:
        bar.close()
    metrics = None
    if refs:
        scores = mt.evaluate(references=np.stack(refs), estimates=sep.stems, mixture=mix,
                             permutation_invariant=io.permutation_invariant)
        metrics = {
            "convention": mt.CONVENTION,
            "assignment": "permutation-invariant (max mean SI-SDR)" if io.permutation_invariant else "stem order",
            "stems": {name: {"reference": str(references[e["reference"]]),
                             **{k: round(e[k], 4) for k in ("si_sdr", "si_sdri", "sdr", "sdri", "mixture_si_sdr",
                                                              "mixture_sdr")}}
                      for name, e in zip(sep.names, scores["stems"])},
            "mean": {k: round(v, 4) for k, v in scores["mean"].items()},
        }
    gain = au.pcm16_gain(mix, sep.stems) if pcm16 else 1.0
    target = out_root / model.name.removesuffix(model.suffix) / input_path.name.removesuffix(input_path.suffix)
    stems_doc = _write_stems(target, sep, gain, pcm16)
    total_s = time.perf_counter() - t_start
    doc = {
        "intsim": intsim.__version__,
        "model": {"path": str(model), "sha256": ins.file_sha256(model), "name": target.parent.name,
                  "sample_rate": io.sample_rate, "channels": io.channels, "stems": sep.names,
                  "training": loaded.metadata.get("training")},
        "profile": loaded.profile.to_dict(),
        "parallel": not serial,
        "sample_rate": io.sample_rate,
        "seconds": round(sep.audio_s, 6),
        "input": input_info,
        "references": ref_infos,
        "separation": {
            "mode": sep.mode,
            "segment_samples": sep.segment_samples,
            "segment_seconds": None if sep.segment_samples is None else round(sep.segment_samples / io.sample_rate, 6),
            "overlap": sep.overlap,
            "calls": len(sep.segments),
            "call_samples": sep.call_samples,
            "output_samples_per_call": sep.output_samples,
            "segment_gain": sep.segment_gain,
            "permutation_invariant": io.permutation_invariant,
            "reordered_segments": sep.reordered,
        },
        "output": {"dir": str(target), "format": "pcm16" if pcm16 else "float32",
                   "gain": gain,
                   "gain_rule": ("peak(mixture) / peak(all stems), one gain for all stems" if pcm16 else
                                 "none: the model's output values as they are (FQSS: on the max-normalised input's scale)"),
                   "stems": stems_doc},
        "timing": {"load_s": round(load_s, 6), "run_s": round(sep.run_s, 6), "jit_s": round(sep.jit_s, 6),
                   "total_s": round(total_s, 6), "audio_s": round(sep.audio_s, 6), "rtf": round(sep.rtf, 6)},
        "counts": sep.counts,
        "metrics": metrics,
    }
    if as_json:
        emit_json(doc)
    else:
        _print_audio(doc)


def _write_stems(target: Path, sep, gain: float, pcm16: bool) -> dict:
    """Write every stem into a temporary folder beside ``target``, then move them into place.

    Nothing is left behind on failure: the temporary folder and any folders created here are
    removed.  Existing files of the same names in ``target`` are replaced; others are kept.
    """
    created = []
    for d in reversed([target.parent, *target.parent.parents]):
        if not d.exists():
            created.append(d)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not target.is_dir():
            raise ValueError(f"{target}: exists and is not a directory")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        doc = {}
        for i, name in enumerate(sep.names):
            stem = sep.stems[i] * np.float32(gain) if gain != 1.0 else sep.stems[i]
            clipped = au.write_stem(tmp / f"{name}.wav", stem, sep.sample_rate, pcm16=pcm16)
            doc[name] = {"path": str(target / f"{name}.wav"), "peak": float(np.max(np.abs(stem))),
                         "clipped": clipped}
        if not target.exists():
            os.replace(tmp, target)
        else:
            for name in sep.names:
                os.replace(tmp / f"{name}.wav", target / f"{name}.wav")
            shutil.rmtree(tmp, ignore_errors=True)
        tmp = None
        return doc
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass
        raise


def _print_audio(doc: dict) -> None:
    out = click.echo
    m, i, s, t = doc["model"], doc["input"], doc["separation"], doc["timing"]
    out(f"model     {m['path']}  (sha256 {m['sha256'][:16]}, {m['sample_rate']} Hz, stems {', '.join(m['stems'])})")
    conv = []
    if i["resampled"]:
        conv.append(f"resampled {i['sample_rate']} -> {m['sample_rate']} Hz")
    if i["channel_policy"] != "as-is":
        conv.append(i["channel_policy"])
    out(f"input     {i['path']}  {i['sample_rate']} Hz, {i['channels']} ch, {i['seconds']:.2f} s"
        + (f"  ({'; '.join(conv)})" if conv else ""))
    if s["mode"] == "whole":
        out("mode      whole file, one call")
    else:
        out(f"mode      {s['calls']} segments of {s['segment_seconds']:g} s, overlap {s['overlap']:g}, "
            f"gain {s['segment_gain']}" + (f", {s['reordered_segments']} reordered" if s["reordered_segments"] else ""))
    o = doc["output"]
    fmt = "float32 WAV, unscaled" if o["format"] == "float32" else f"PCM16 WAV, gain {o['gain']:.6g}"
    out(f"written   {o['dir']}/{{{','.join(o['stems'])}}}.wav  ({fmt})")
    clipped = {k: v["clipped"] for k, v in o["stems"].items() if v["clipped"]}
    if clipped:
        out(f"clipped   {', '.join(f'{k}: {fmt_int(v)}' for k, v in clipped.items())} samples saturated in PCM16")
    out(f"time      {t['run_s']:.3f} s run (of which {t['jit_s']:.3f} s Numba compile/cache load) for "
        f"{t['audio_s']:.2f} s audio: RTF {t['rtf']:.3f}; {t['load_s']:.3f} s load")
    _print_counts(doc["counts"], limit=AUDIO_NODE_LINES)
    met = doc["metrics"]
    if met:
        out(f"metrics   dB; SDR = BSS-eval v3 (512 taps); assignment: {met['assignment']}")
        out(f"  {'stem':<12} {'SI-SDR':>8} {'SI-SDRi':>8} {'SDR':>8} {'SDRi':>8}  reference")
        for name, e in met["stems"].items():
            out(f"  {name:<12} {e['si_sdr']:>8.2f} {e['si_sdri']:>8.2f} {e['sdr']:>8.2f} {e['sdri']:>8.2f}  {e['reference']}")
        mean = met["mean"]
        out(f"  {'mean':<12} {mean['si_sdr']:>8.2f} {mean['si_sdri']:>8.2f} {mean['sdr']:>8.2f} {mean['sdri']:>8.2f}")

