"""``intsim golden`` (per-layer reference dumps for firmware) and ``intsim compare`` (two dumps)."""

from __future__ import annotations

import time
from pathlib import Path

import click

import intsim
from intsim import compare as cmp
from intsim import golden as gold
from intsim import inspect as ins
from intsim.defaults import resolve_model
from intsim.cli_common import CONTEXT, emit_json, fmt_int, notice, profile_option


def _formats(ctx, param, value):
    try:
        return gold.parse_formats(value)
    except gold.GoldenError as e:
        raise click.BadParameter(str(e).replace("--format takes", "takes")) from None


@click.command(context_settings=CONTEXT)
@click.argument("model", metavar="MODEL.npz|default", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("input_path", metavar="INPUT.npy|INPUT.npz", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Directory to create (must not exist or be empty; see --force).  "
                   "[default: golden/<model>/<input> under the current directory]")
@click.option("-f", "--format", "formats", default="npy,c,hex", show_default=True, metavar="LIST", callback=_formats,
              help="Comma-separated formats: npy (NumPy arrays), c (CMSIS-NN style C headers: one per tensor "
                   "plus config.h and test_data.h per node), hex (one two's-complement value per line), or all.")
@click.option("-p", "--profile", metavar="NAME|FILE.json|FILE.toml",
              help="Arithmetic profile overriding the one in the model: tflm, single, onnx, or a profile file.")
@click.option("--force", is_flag=True, help="Replace DIR if it holds an earlier golden dump.")
@click.option("--serial", is_flag=True, help="Use the single-threaded kernels (the dump is byte-identical).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of a table.")
@click.pass_context
def golden(ctx, model, input_path, output, formats, profile, force, serial, as_json):
    """Dump every node's integer inputs, constants and outputs of one run as golden references.

    Runs MODEL.npz once on INPUT (an .npy array for a one-input model, or an .npz with one array
    per graph input name; float arrays are quantized like `intsim run` does) and writes, for each
    node in graph order, a directory DIR/nodes/<index>_<node>/ holding its input, output and
    constant tensors (weights, bias, multiplier, shift, scale, ...) in each --format, plus
    DIR/manifest.json: model and input sha256, profile, intsim version, and per node its op,
    attributes, tensor names, shapes, dtypes, quantization, requantization arithmetic,
    accumulator-overflow and saturation counts, and every file with its sha256.

    The dump is byte-identical across runs, processes and thread counts.  Names unfit for files
    or C identifiers are sanitised; manifest.json maps each node name to its directory and C prefix.

    \b
    Examples:
      intsim golden model.npz mix.npy -o golden/tflm
      intsim golden model.npz mix.npy -o golden/dsp --profile dsp24.toml --format c,hex
      intsim compare golden/tflm firmware_dump/
    """
    model = resolve_model(model)
    fmts = formats
    if output is None:
        output = Path("golden") / model.stem / input_path.stem
        output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    loaded = intsim.load(model, profile=profile_option(profile), parallel=not serial)
    data = ins.load_array_file(input_path)
    inputs = ins.bind_input_file(loaded.graph, data)
    notice(ctx, f"running {model} and writing {', '.join(fmts)} files to {output} ...")
    manifest = gold.write_golden(loaded, inputs, output, fmts, model_path=model, input_path=input_path, overwrite=force)
    files = [f for n in manifest["nodes"] for t in n["tensors"] for f in t["files"].values()]
    files += [f for n in manifest["nodes"] for f in n["files"].values()]
    doc = {
        "intsim": intsim.__version__,
        "output_dir": str(output),
        "manifest": str(output / gold.MANIFEST),
        "model": manifest["model"],
        "profile": manifest["profile"],
        "formats": manifest["formats"],
        "nodes": len(manifest["nodes"]),
        "files": len(files) + 1,
        "bytes": sum(f["bytes"] for f in files) + (output / gold.MANIFEST).stat().st_size,
        "seconds": round(time.perf_counter() - t0, 6),
        "counts": {**manifest["counts"],
                   "nodes": {n["name"]: {"op": n["op"], **n["counts"]} for n in manifest["nodes"]
                             if n["counts"]["acc_overflows"] or n["counts"]["saturations"]}},
    }
    if as_json:
        emit_json(doc)
        return
    out = click.echo
    out(f"written   {doc['output_dir']}  ({doc['nodes']} nodes, {fmt_int(doc['files'])} files, {fmt_int(doc['bytes'])} bytes)")
    out(f"model     {model}  (sha256 {manifest['model']['sha256'][:16]})")
    out(f"profile   {doc['profile']['name']}")
    out(f"formats   {', '.join(doc['formats'])}")
    c = doc["counts"]
    out(f"counts    {fmt_int(c['acc_overflows'])} accumulator overflows, {fmt_int(c['saturations'])} saturated outputs")
    if c["nodes"]:
        out(f"  {'node':<32} {'op':<18} {'overflows':>12} {'saturations':>12}")
        for name, n in c["nodes"].items():
            out(f"  {name:<32} {n['op']:<18} {fmt_int(n['acc_overflows']):>12} {fmt_int(n['saturations']):>12}")


@click.command(context_settings=CONTEXT)
@click.argument("golden_dir", metavar="GOLDEN_DIR", type=click.Path(path_type=Path))
@click.argument("candidate_dir", metavar="CANDIDATE_DIR", type=click.Path(path_type=Path))
@click.option("--outputs-only", is_flag=True,
              help="Compare only node outputs (for a firmware dump that holds no inputs or constants).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option("--all-nodes", is_flag=True, help="List every node in the table, not only differing ones.")
@click.pass_context
def compare(ctx, golden_dir, candidate_dir, outputs_only, as_json, all_nodes):
    """Compare CANDIDATE_DIR against the golden dump in GOLDEN_DIR, node by node.

    GOLDEN_DIR is an `intsim golden` dump.  CANDIDATE_DIR is another dump (its manifest.json
    maps node names to files), or a firmware dump without a manifest that uses the golden
    layout: the same relative paths (nodes/<index>_<node>/<role>) ending in .npy or .hex.

    Reports, in graph order, every node whose tensors differ: differing elements, the largest
    absolute difference in LSBs, shape/dtype mismatches, missing or unreadable files; and the
    first diverging node.

    \b
    Exit status: 0 identical, 1 any difference or missing file, or an unreadable directory.
    """
    report = cmp.compare_dirs(golden_dir, candidate_dir, outputs_only=outputs_only)
    if as_json:
        emit_json(report)
    else:
        _print_compare(report, all_nodes)
    if not report["identical"]:
        ctx.exit(1)


def _print_compare(report: dict, all_nodes: bool) -> None:
    out = click.echo
    s = report["summary"]
    out(f"golden     {report['golden']}")
    out(f"candidate  {report['candidate']}" + ("" if report["candidate_has_manifest"] else "  (no manifest: golden layout)"))
    for note in report["notes"]:
        out(f"note       {note}")
    first = report["first_diverging_node"]
    if first is None:
        out(f"result     identical: {s['nodes']} nodes, {s['tensors']} tensors")
        return
    out(f"result     {s['nodes_differing']} of {s['nodes']} nodes differ ({s['tensors_differing']} of {s['tensors']} tensors: "
        + ", ".join(f"{k} {v}" for k, v in s["by_status"].items() if k != "ok") + ")")
    out(f"first      node #{first['index']} {first['name']!r} ({first['op']}): {', '.join(first['tensors'])}")
    out("")
    out(f"{'#':>4} {'node':<28} {'op':<16} {'tensor':<22} {'status':<17} {'differing':>12} {'max|diff|':>10}")
    for node in report["nodes"]:
        if node["status"] == "ok" and not all_nodes:
            continue
        for t in node["tensors"]:
            if t["status"] == "ok" and not all_nodes:
                continue
            count = f"{fmt_int(t['differing_elements'])}/{fmt_int(t['elements'])}" if t["status"] in ("differ", "dtype_mismatch", "ok") else "-"
            diff = t["max_abs_diff"]
            diff_text = (f"{diff:g}" if isinstance(diff, float) else str(diff)) if count != "-" else "-"
            out(f"{node['index']:>4} {node['name'][:28]:<28} {str(node['op'])[:16]:<16} {t['role'][:22]:<22} "
                f"{t['status']:<17} {count:>12} {diff_text:>10}")
            if t.get("error"):
                out(f"{'':>4} {'':<28} {'':<16} {'':<22} {t['error']}")
