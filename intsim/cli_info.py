"""``intsim info``: what a model file holds and costs."""

from __future__ import annotations

import json
from pathlib import Path

import click

import intsim
from intsim import inspect as ins
from intsim import cost as cost_mod
from intsim import modelfile
from intsim.defaults import resolve_model
from intsim.cli_common import CONTEXT, emit_json, fmt_int, fmt_macs, notice

@click.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL.npz|default", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--length", "-n", type=click.IntRange(min=1), default=None, metavar="N",
              help="Input length in samples/frames used to count MACs: it replaces the last dynamic "
                   "dimension of each graph input.  [default: 1 s at the model's metadata sample_rate, "
                   f"else {ins.DEFAULT_LENGTH}]")
@click.option("--nodes", is_flag=True, help="Also list every node with its output shapes and MACs.")
@click.option("--no-macs", is_flag=True, help="Skip MAC counting (no dry run; for models intsim cannot run).")
@click.option("--cost", "with_cost", is_flag=True,
              help="Also report per-node cost (MACs, weight bytes, activation bytes at --length) and the "
                   "activation arena of a greedy first-fit planner (TFLite Micro's), with its plan.")
@click.option("--align", type=click.IntRange(min=1), default=cost_mod.DEFAULT_ALIGN, show_default=True, metavar="BYTES",
              help="Arena buffer alignment for --cost (TFLite Micro aligns to 16).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.pass_context
def info(ctx, model, length, nodes, no_macs, with_cost, align, as_json):
    """Describe MODEL.npz: ops, tensors, parameters, weight bytes, MACs, profile, metadata.

    \b
    - ops:        number of nodes per op type
    - tensors:    declared tensors (constants = weights, biases, requant data; activations = rest)
    - parameters: elements in all constant tensors; weight bytes: their size in memory
    - MACs:       multiply-accumulates of conv1d/conv2d/conv_transpose*/linear/batch_matmul for
                  one input of --length samples (other ops count 0).  If the graph has dynamic
                  shapes, they are resolved by running the model once on zeros of that length.
    - profile:    the arithmetic profile stored in the file (accumulator, multiplier, rounding)
    - cost:       with --cost, per node MACs, weight bytes, input/output activation bytes, and the
                  activation arena: tensors live from their producer to their last consumer,
                  placed largest first at the lowest free offset (TFLite Micro's greedy planner);
                  arena size, the peak of live bytes (a lower bound) and the plan

    \b
    Examples:
      intsim info model.npz
      intsim info model.npz --length 80000 --json | jq .macs.total
      intsim info model.npz --cost --length 16000 --json | jq .cost.memory.arena_bytes
    """
    model = resolve_model(model)
    if with_cost and no_macs:
        raise click.UsageError("--cost needs shapes and MACs; it cannot be combined with --no-macs")
    graph = modelfile.load(model)
    if not no_macs and length is not None and not ins.has_dynamic_inputs(graph):
        notice(ctx, "note: the model's inputs have static shapes; --length is ignored")
    if not no_macs and ins.needs_dry_run(graph):
        notice(ctx, "resolving dynamic shapes with a dry run on zeros ...")
    try:
        stats = ins.model_stats(graph, length=length, macs=not no_macs)
    except ins.StatsError as e:
        raise ins.StatsError(f"{e} (pass a longer --length, or --no-macs to skip MAC counting)") from None
    doc = {"intsim": intsim.__version__, "model": {"path": str(model), "sha256": ins.file_sha256(model),
                                                   "bytes": model.stat().st_size}, **stats}
    if with_cost:
        try:
            doc["cost"] = cost_mod.cost_report(graph, length=length, align=align)
        except ins.StatsError as e:
            raise ins.StatsError(f"{e} (pass a longer --length)") from None
    if as_json:
        emit_json(doc)
    else:
        _print_info(doc, nodes)
        if with_cost:
            _print_cost(doc["cost"])


def _print_info(doc: dict, show_nodes: bool) -> None:
    out = click.echo
    out(f"model        {doc['model']['path']}  ({fmt_int(doc['model']['bytes'])} bytes, sha256 {doc['model']['sha256'][:16]})")
    for kind in ("inputs", "outputs"):
        for t in doc[kind]:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in t["shape"]) + "]"
            out(f"{kind[:-1]:<12} {t['name']}  {t['dtype']} {shape}")
    t = doc["tensors"]
    out(f"nodes        {doc['nodes']}")
    out(f"tensors      {t['total']} ({t['constants']} constant, {t['activations']} activation)")
    out(f"parameters   {fmt_int(doc['parameters'])}")
    out(f"weight bytes {fmt_int(doc['weight_bytes'])}")
    for dtype, d in doc["constants_by_dtype"].items():
        out(f"  {dtype:<10} {d['tensors']:>5} tensors {fmt_int(d['elements']):>14} elements {fmt_int(d['bytes']):>14} bytes")
    macs = doc.get("macs")
    by_op = macs["by_op"] if macs else {}
    if macs:
        length = macs["input_length"]
        where = f"for an input of {fmt_int(length)} ({macs['input_length_source']})" if length else "(static shapes)"
        out(f"MACs         {fmt_int(macs['total'])}  = {fmt_macs(macs['total'])} {where}")
    out("")
    out(f"{'op':<20} {'count':>6} {'MACs':>16} {'share':>7}")
    for op, count in doc["ops"].items():
        n = by_op.get(op, 0)
        share = f"{100 * n / macs['total']:.1f}%" if macs and macs["total"] else "-"
        out(f"{op:<20} {count:>6} {fmt_int(n) if macs else '-':>16} {share:>7}")
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
            out(f"{n['name']:<32} {n['op']:<18} {fmt_int(n['macs']):>16}  {n['output_shapes']}")


def _print_cost(cost: dict) -> None:
    out = click.echo
    out("")
    length = cost["input_length"]
    out("cost         " + (f"for an input of {fmt_int(length)} ({cost['input_length_source']})" if length else "(static shapes)"))
    out(f"{'#':>4} {'node':<28} {'op':<16} {'MACs':>14} {'weight B':>12} {'input B':>12} {'output B':>12}")
    for n in cost["nodes"]:
        out(f"{n['index']:>4} {n['name'][:28]:<28} {n['op'][:16]:<16} {fmt_int(n['macs']):>14} {fmt_int(n['weight_bytes']):>12} "
            f"{fmt_int(n['input_bytes']):>12} {fmt_int(n['output_bytes']):>12}")
    t = cost["totals"]
    out(f"{'':>4} {'total':<28} {'':<16} {fmt_int(t['macs']):>14} {fmt_int(t['weight_bytes']):>12} "
        f"{'activations':>12} {fmt_int(t['activation_bytes']):>12}")
    m = cost["memory"]
    out("")
    out(f"arena        {fmt_int(m['arena_bytes'])} bytes  ({m['planner']}, {m['align']}-byte alignment)")
    out(f"             peak live {fmt_int(m['peak_live_bytes'])} bytes (lower bound), no reuse {fmt_int(m['no_reuse_bytes'])} bytes")
    out(f"  {'tensor':<32} {'bytes':>12} {'offset':>12} {'live (nodes)':>14}")
    for p in sorted(m["plan"], key=lambda p: (p["offset"], p["first"])):
        out(f"  {p['tensor'][:32]:<32} {fmt_int(p['bytes']):>12} {fmt_int(p['offset']):>12} {p['first']:>8}..{p['last']}")
