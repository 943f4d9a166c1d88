"""``intsim convert``: turn a trained checkpoint into an integer model file."""

from __future__ import annotations

from pathlib import Path

import click

from intsim import modelfile
from intsim.cli_common import CONTEXT, emit_json, notice


@click.group(context_settings=CONTEXT)
def convert():
    """Convert a trained checkpoint into an integer MODEL.npz."""


@convert.command(context_settings=CONTEXT)
@click.argument("checkpoint", metavar="CHECKPOINT", type=click.Path(exists=True, path_type=Path))
@click.option("-c", "--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="FQSS config (JSON or YAML: FQSS's model_cfg plus an 'architecture' section). "
                   "[default: config.json beside the checkpoint, else inferred from the weights' shapes]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              metavar="MODEL.npz", help="Where to write the integer model.")
@click.option("--exact-offsets", is_flag=True,
              help="Also fold FQSS's float zero points exactly at zero-padded conv edges (larger, slower "
                   "graph; measured to change the output by < 0.05 dB on the reference checkpoints).")
@click.option("-p", "--profile", default="tflm", show_default=True, metavar="NAME",
              help="Arithmetic profile stored in the model: tflm, single or onnx.")
@click.option("-v", "--verbose", is_flag=True, help="List every activation tensor in the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def fqss(ctx, checkpoint, config, output, exact_offsets, profile, verbose, as_json):
    """Convert an FQSS (Cohen et al. 2024) ConvTasNetQ CHECKPOINT (a plain state_dict .pth, or a
    folder holding checkpoint.pth and config.json).

    The checkpoint is read with torch.load(weights_only=True): it never runs code.  The report
    (stdout) lists each activation grid's nudged integer zero point and the residual float offset
    in LSBs, and every op FQSS computes in float with the integer form chosen for it.

    \b
    Example:
      intsim convert fqss ckpt/checkpoint.pth --config ckpt/config.json -o model.npz
    """
    try:
        from intsim.converters.fqss.convert import convert_fqss
    except ImportError as e:
        raise ValueError(f"the FQSS converter needs torch: pip install 'intsim[torch]' ({e})") from None
    if config is None and checkpoint.is_file() and (checkpoint.parent / "config.json").is_file():
        config = checkpoint.parent / "config.json"
        notice(ctx, f"using config {config}")
    graph, report = convert_fqss(checkpoint, config, exact_offsets=exact_offsets, profile=profile)
    output.parent.mkdir(parents=True, exist_ok=True)
    modelfile.save(graph, output)
    notice(ctx, f"wrote {output}")
    if as_json:
        emit_json({"output": str(output), **report.to_dict()})
    else:
        click.echo(report.format(verbose=verbose))
