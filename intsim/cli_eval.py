"""``intsim eval``: separate and score a folder or manifest of mixtures with references, resumably."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

import intsim
from intsim import evaluate as ev
from intsim import inspect as ins
from intsim import separate as sp
from intsim.cli_common import CONTEXT, emit_json, notice, profile_option
from intsim.cli_run import SegmentParam
from intsim.defaults import resolve_model, training_notice

DEFAULT_RESULTS_DIR = "eval_results"


class _ItemProgress:
    """Items done on stderr: a bar redrawn in place on a TTY, one plain line per item otherwise."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.drawn = False

    def __call__(self, done, total, item, rec) -> None:
        if not self.enabled:
            return
        if rec is None:
            what = "done earlier"
        elif rec["status"] == "ok":
            what = f"SI-SDRi {rec['mean']['si_sdri']:.2f} dB"
        else:
            what = "FAILED"
        elapsed = time.perf_counter() - self.t0
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            self.stream.write(f"\reval [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {item.id}: {what}"
                              f"  {elapsed:.0f} s\033[K")
            self.drawn = True
        elif rec is not None:
            self.stream.write(f"eval {done}/{total} {item.id}: {what}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


@click.command("eval", context_settings=CONTEXT)
@click.argument("source", metavar="MANIFEST_OR_DIR", type=click.Path(path_type=Path))
@click.argument("model", metavar="MODEL.npz|default", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_RESULTS_DIR,
              show_default=True, metavar="RESULTS_DIR",
              help="Folder for items.jsonl (the journal), results.csv and results.json; rerunning with the same "
                   "folder skips items already done.")
@click.option("-p", "--profile", metavar="NAME|FILE",
              help="Arithmetic profile overriding the one in the model: tflm, single, onnx, or a profile file.")
@click.option("--serial", is_flag=True, help="Use the single-threaded kernels (results are bit-identical).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.option("--segment", type=SegmentParam(), default="auto", show_default=True, metavar="SECONDS|auto|none",
              help="As for `intsim run`: segment length, 'none' (whole file) or 'auto'.")
@click.option("--overlap", type=click.FloatRange(0.0, 1.0, max_open=True), default=sp.DEFAULT_OVERLAP,
              show_default=True, help="Overlap between segments, as a fraction of the segment.")
@click.option("--strict-rate", is_flag=True, help="Fail items whose sample rate differs from the model's.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help="Evaluate at most N items not done yet, then stop (rerun to go on).")
@click.pass_context
def eval_command(ctx, source, model, output, profile, serial, as_json, segment, overlap, strict_rate, limit):
    """Separate every mixture of MANIFEST_OR_DIR with MODEL.npz and score it against its references.

    \b
    Inputs (references in the model's stem order, e.g. s1, s2):
      DIR/mix_clean/<item>.wav + DIR/s1/<item>.wav, DIR/s2/<item>.wav ...   (LibriMix style; the
          mixture folder may also be mix/, mix_both/, mix_single/ or mixture/; matched by file name)
      DIR/<item>/mix.wav + DIR/<item>/s1.wav, DIR/<item>/s2.wav ...          (one folder per item)
      LIST.csv   header id,mixture,<one column per reference> (or id,mixture,references with
                 paths separated by ';'); relative paths are relative to the manifest
      LIST.json  [{"id": ..., "mixture": PATH, "references": [PATH, ...]}, ...]
    Any format libsndfile reads; audio is resampled to the model rate and downmixed as `intsim run` does.

    \b
    Per item: SI-SDR, SI-SDRi, SDR (BSS-eval v3, 512 taps), SDRi per stem and their mean; speaker
    models (stems s1, s2, ...) assign references to stems by the best permutation.  Summary: count,
    failures, mean and median of the items' mean SI-SDR, SI-SDRi, SDR, SDRi.  RESULTS_DIR gets
    results.csv (one row per item) and results.json (items + summary); stdout gets the summary.

    \b
    Resuming: every item is appended to RESULTS_DIR/items.jsonl as soon as it is done, keyed by item
    id, model sha256, profile and segment settings; a rerun skips the items done and retries failed
    ones.  An item that cannot be read or separated is recorded as failed with its error and the run
    goes on; the exit status is 1 when any item of the selection has failed, 0 otherwise.

    \b
    Examples:
      intsim eval Libri2Mix/wav8k/min/test model.npz -o results/
      intsim eval list.csv model.npz -o results/ --profile single --json
    """
    model = resolve_model(model)
    t0 = time.perf_counter()
    loaded = intsim.load(model, profile=profile_option(profile), parallel=not serial)
    warning = training_notice(loaded.metadata)
    if warning:
        notice(ctx, warning)
    io = sp.audio_io(loaded)
    items = ev.discover(source, io.stems)
    results = ev.Results(output)
    quiet = bool(ctx.find_root().params.get("quiet"))
    notice(ctx, f"eval: {len(items)} items from {source}, results in {output}")
    bar = _ItemProgress(enabled=not quiet)
    try:
        doc = ev.run(loaded, model, items, results, model_sha=ins.file_sha256(model),
                     segment=_segment_samples(segment, io.sample_rate), overlap=overlap, strict_rate=strict_rate,
                     limit=limit, progress=bar)
    finally:
        bar.close()
    doc["intsim"] = intsim.__version__
    doc["run"]["wall_s"] = round(time.perf_counter() - t0, 6)
    summary_doc = {k: doc[k] for k in ("intsim", "model", "profile", "settings", "run", "summary", "files")}
    summary_doc["failed"] = [{"id": r["id"], "error": r["error"]} for r in doc["items"] if r["status"] != "ok"]
    if as_json:
        emit_json(summary_doc)
    else:
        _print_summary(summary_doc)
    if summary_doc["failed"]:
        ctx.exit(1)


def _segment_samples(segment, rate: int):
    """--segment value -> what ``intsim.separate`` takes (as ``intsim run`` maps it)."""
    if segment == "auto":
        return sp.AUTO
    if segment == "none":
        return None
    return max(1, int(round(segment * rate)))


def _print_summary(doc: dict) -> None:
    out = click.echo
    s, r = doc["summary"], doc["run"]
    out(f"model     {doc['model']['path']}  (sha256 {doc['model']['sha256'][:16]}, profile {doc['profile']['name']})")
    out(f"items     {r['items']}: {r['evaluated']} evaluated now, {r['skipped']} done earlier"
        + (f", {r['pending']} pending (--limit)" if r["pending"] else ""))
    out(f"scored    {s['count']} ok, {s['failures']} failed")
    if s["count"]:
        out(f"  {'metric (dB)':<12} {'mean':>8} {'median':>8}")
        for key, label in (("si_sdr", "SI-SDR"), ("si_sdri", "SI-SDRi"), ("sdr", "SDR"), ("sdri", "SDRi")):
            out(f"  {label:<12} {s[key]['mean']:>8.2f} {s[key]['median']:>8.2f}")
    for f in doc["failed"]:
        out(f"failed    {f['id']}: {f['error']}")
    out(f"written   {doc['files']['csv']}, {doc['files']['json']}")
