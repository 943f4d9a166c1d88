"""``intsim run``: run a model on arrays."""

from __future__ import annotations

import time
from pathlib import Path

import click

import intsim
from intsim import inspect as ins
from intsim.cli_common import CONTEXT, emit_json, fmt_int, profile_option

@click.command(context_settings=CONTEXT)
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
    c = doc["counts"]
    out(f"counts    {fmt_int(c['acc_overflows'])} accumulator overflows, {fmt_int(c['saturations'])} saturated outputs")
    if c["nodes"]:
        out(f"  {'node':<32} {'op':<18} {'overflows':>12} {'saturations':>12}")
        for name, n in c["nodes"].items():
            out(f"  {name:<32} {n['op']:<18} {fmt_int(n['acc_overflows']):>12} {fmt_int(n['saturations']):>12}")
