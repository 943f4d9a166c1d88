"""The ``intsim`` command line.  Parses, calls library functions, prints; nothing else.

stdout carries results only (a table, or one JSON document with ``--json``); notices go to
stderr.  Exit status: 0 success, 1 failure (one ``error: ...`` line on stderr, never a traceback
for a bad model, input or profile), 2 usage error (click's own message).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

import intsim
from intsim import inspect as ins
from intsim import modelfile

USER_ERRORS = (intsim.ModelFileError, intsim.GraphError, intsim.OpError, intsim.ProfileError, ValueError, OSError)


class UserError(click.ClickException):
    """A failure caused by the model, input or options: one ``error:`` line, exit status 1."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            message = " ".join(str(e).split()) or type(e).__name__
            raise UserError(message) from None


def _notice(ctx: click.Context, message: str) -> None:
    if not ctx.find_root().params.get("quiet"):
        click.echo(message, err=True)


def _emit_json(doc: dict) -> None:
    click.echo(json.dumps(doc, indent=2, allow_nan=False))


def _fmt_int(n) -> str:
    return "-" if n is None else f"{n:,}"


def _fmt_macs(n) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}MAC"
    return f"{n} MAC"


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(intsim.__version__, "-V", "--version", prog_name="intsim", message="%(prog)s %(version)s")
@click.option("-q", "--quiet", is_flag=True, help="Silence notices on stderr (errors are still shown).")
def main(quiet):
    """intsim: bit-accurate integer inference for quantized audio source separation models.

    Results go to stdout (a readable summary, or one JSON document with --json); notices and
    errors go to stderr, so `intsim ... --json > result.json` captures results only.

    \b
    Exit status:
      0  success
      1  failure: unreadable or invalid model file, bad input, unknown profile, run error
         (one line `error: ...` on stderr)
      2  usage error: unknown option, missing argument, bad option value

    Run `intsim COMMAND --help` for a command's options.
    """


@main.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL.npz", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--length", "-n", type=click.IntRange(min=1), default=None, metavar="N",
              help="Input length in samples/frames used to count MACs: it replaces the last dynamic "
                   "dimension of each graph input.  [default: 1 s at the model's metadata sample_rate, "
                   f"else {ins.DEFAULT_LENGTH}]")
@click.option("--nodes", is_flag=True, help="Also list every node with its output shapes and MACs.")
@click.option("--no-macs", is_flag=True, help="Skip MAC counting (no dry run; for models intsim cannot run).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.pass_context
def info(ctx, model, length, nodes, no_macs, as_json):
    """Describe MODEL.npz: ops, tensors, parameters, weight bytes, MACs, profile, metadata.

    \b
    - ops:        number of nodes per op type
    - tensors:    declared tensors (constants = weights, biases, requant data; activations = rest)
    - parameters: elements in all constant tensors; weight bytes: their size in memory
    - MACs:       multiply-accumulates of conv1d/conv2d/conv_transpose*/linear/batch_matmul for
                  one input of --length samples (other ops count 0).  If the graph has dynamic
                  shapes, they are resolved by running the model once on zeros of that length.
    - profile:    the arithmetic profile stored in the file (accumulator, multiplier, rounding)

    \b
    Examples:
      intsim info model.npz
      intsim info model.npz --length 80000 --json | jq .macs.total
    """
    graph = modelfile.load(model)
    if not no_macs and length is not None and not ins.has_dynamic_inputs(graph):
        _notice(ctx, "note: the model's inputs have static shapes; --length is ignored")
    if not no_macs and ins.needs_dry_run(graph):
        _notice(ctx, "resolving dynamic shapes with a dry run on zeros ...")
    try:
        stats = ins.model_stats(graph, length=length, macs=not no_macs)
    except ins.StatsError as e:
        raise ins.StatsError(f"{e} (pass a longer --length, or --no-macs to skip MAC counting)") from None
    doc = {"intsim": intsim.__version__, "model": {"path": str(model), "sha256": ins.file_sha256(model),
                                                   "bytes": model.stat().st_size}, **stats}
    if as_json:
        _emit_json(doc)
    else:
        _print_info(doc, nodes)


def _print_info(doc: dict, show_nodes: bool) -> None:
    out = click.echo
    out(f"model        {doc['model']['path']}  ({_fmt_int(doc['model']['bytes'])} bytes, sha256 {doc['model']['sha256'][:16]})")
    for kind in ("inputs", "outputs"):
        for t in doc[kind]:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in t["shape"]) + "]"
            out(f"{kind[:-1]:<12} {t['name']}  {t['dtype']} {shape}")
    t = doc["tensors"]
    out(f"nodes        {doc['nodes']}")
    out(f"tensors      {t['total']} ({t['constants']} constant, {t['activations']} activation)")
    out(f"parameters   {_fmt_int(doc['parameters'])}")
    out(f"weight bytes {_fmt_int(doc['weight_bytes'])}")
    for dtype, d in doc["constants_by_dtype"].items():
        out(f"  {dtype:<10} {d['tensors']:>5} tensors {_fmt_int(d['elements']):>14} elements {_fmt_int(d['bytes']):>14} bytes")
    macs = doc.get("macs")
    by_op = macs["by_op"] if macs else {}
    if macs:
        length = macs["input_length"]
        where = f"for an input of {_fmt_int(length)} ({macs['input_length_source']})" if length else "(static shapes)"
        out(f"MACs         {_fmt_int(macs['total'])}  = {_fmt_macs(macs['total'])} {where}")
    out("")
    out(f"{'op':<20} {'count':>6} {'MACs':>16} {'share':>7}")
    for op, count in doc["ops"].items():
        n = by_op.get(op, 0)
        share = f"{100 * n / macs['total']:.1f}%" if macs and macs["total"] else "-"
        out(f"{op:<20} {count:>6} {_fmt_int(n) if macs else '-':>16} {share:>7}")
    p = doc["profile"]
    out("")
    out(f"profile      {p['name']}")
    for path in ("int8", "int16"):
        f = p[path]
        out(f"  {path:<6} acc {f['acc_bits']} bits {f['acc_overflow']}, multiplier Q0.{f['mult_bits']}, rounding {f['rounding']}")
    if doc["metadata"]:
        out("")
        out("metadata")
        for key, value in doc["metadata"].items():
            out(f"  {key:<20} {value if isinstance(value, (str, int, float)) else json.dumps(value)}")
    if show_nodes and macs:
        out("")
        out(f"{'node':<32} {'op':<18} {'MACs':>16}  output shapes")
        for n in macs["per_node"]:
            out(f"{n['name']:<32} {n['op']:<18} {_fmt_int(n['macs']):>16}  {n['output_shapes']}")


def _profile_option(value):
    """--profile NAME or FILE.json -> what intsim.load takes (a name or a dict)."""
    if value is None:
        return None
    path = Path(value)
    if value.lower().endswith(".json") or path.is_file():
        try:
            spec = json.loads(path.read_text())
        except FileNotFoundError:
            raise intsim.ProfileError(f"profile file {value} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise intsim.ProfileError(f"profile file {value} is not valid JSON: {e}") from None
        return spec
    return value


@main.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL.npz", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("input_path", metavar="INPUT.npy", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="OUT.npz|OUT.npy",
              help="Where to write the outputs: .npz holds one array per graph output name, .npy the "
                   "single output of a one-output model.  Overwritten if it exists.  "
                   "[default: <input>_out.npz next to INPUT]")
@click.option("-p", "--profile", metavar="NAME|FILE.json",
              help="Arithmetic profile overriding the one in the model: tflm, single, onnx, or a JSON "
                   'file such as {"base": "tflm", "acc_bits": 24, "acc_overflow": "saturate"}.')
@click.option("--serial", is_flag=True, help="Use the single-threaded kernels (results are bit-identical).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a summary.")
def run(model, input_path, output, profile, serial, as_json):
    """Run MODEL.npz on the arrays in INPUT.npy and save its outputs.

    INPUT is an .npy array for a one-input model, or an .npz with one array per graph input name.
    Integer arrays must have the input's dtype; float arrays fed to an integer input are quantized
    with its scale and zero point (round half to even, saturated).  Shapes must match the declared
    ones, dynamic dimensions excepted.

    The summary lists output names, shapes and dtypes, the wall time of the run (and the part of
    it spent compiling or loading Numba kernels, high on a first run), and the accumulator
    overflows and saturated outputs per node (nodes with none are left out) and in total.

    \b
    Examples:
      intsim run model.npz mix.npy                    # writes mix_out.npz
      intsim run model.npz mix.npy -o est.npz --profile single --json
    """
    output = output if output is not None else input_path.with_name(input_path.stem + "_out.npz")
    if output.resolve() == input_path.resolve():
        raise ValueError(f"{output}: output would overwrite the input")
    t0 = time.perf_counter()
    loaded = intsim.load(model, profile=_profile_option(profile), parallel=not serial)
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
        _emit_json(doc)
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
    c = doc["counts"]
    out(f"counts    {_fmt_int(c['acc_overflows'])} accumulator overflows, {_fmt_int(c['saturations'])} saturated outputs")
    if c["nodes"]:
        out(f"  {'node':<32} {'op':<18} {'overflows':>12} {'saturations':>12}")
        for name, n in c["nodes"].items():
            out(f"  {name:<32} {n['op']:<18} {_fmt_int(n['acc_overflows']):>12} {_fmt_int(n['saturations']):>12}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
