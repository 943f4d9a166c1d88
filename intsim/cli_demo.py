"""``intsim demo``: separate the bundled demo mixture with the bundled model and score it."""

from __future__ import annotations

from pathlib import Path

import click

from intsim.cli_common import CONTEXT
from intsim.cli_run import DEFAULT_OUT_DIR, run
from intsim.defaults import DEFAULT_NAME, DEMO_MIX, DEMO_REFERENCES


@click.command(context_settings=CONTEXT)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=DEFAULT_OUT_DIR, show_default=True,
              metavar="OUT", help="Folder for the stems (OUT/default/demo_mix/<stem>.wav).")
@click.option("-p", "--profile", metavar="NAME|FILE", help="Arithmetic profile (tflm, single, onnx or a file).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a summary.")
@click.pass_context
def demo(ctx, output, profile, as_json):
    """Separate the bundled two-speaker demo mixture (LibriSpeech test-other speakers, 8 kHz, CC BY
    4.0) with the bundled default model, write the stems and print SI-SDR, SI-SDRi and SDR against
    the true sources.  Equivalent to

    \b
      intsim run default <intsim>/data/demo_mix.wav -r demo_s1.wav -r demo_s2.wav
    """
    missing = [str(p) for p in (DEMO_MIX, *DEMO_REFERENCES) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"demo files missing from this installation: {', '.join(missing)}")
    ctx.invoke(run, model=Path(DEFAULT_NAME), input_path=DEMO_MIX, output=output, profile=profile,
               as_json=as_json, references=DEMO_REFERENCES)
