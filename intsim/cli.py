"""The ``intsim`` command line.  Parses, calls library functions, prints; nothing else.

stdout carries results only (a table, or one JSON document with ``--json``); notices go to
stderr.  Exit status: 0 success, 1 failure (one ``error: ...`` line on stderr, never a traceback
for a bad model, input or profile), 2 usage error (click's own message).
"""

from __future__ import annotations

import sys

import click

import intsim
from intsim.cli_common import CONTEXT, Group
from intsim.cli_convert import convert
from intsim.cli_demo import demo
from intsim.cli_eval import eval_command
from intsim.cli_golden import compare, golden
from intsim.cli_info import info
from intsim.cli_run import run

@click.group(cls=Group, context_settings=CONTEXT)
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


for _command in (info, run, demo, golden, compare, convert, eval_command):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
