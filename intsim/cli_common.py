"""Shared pieces of the command line: error mapping, output helpers, option parsing.

Command modules (``intsim/cli_*.py``) import from here, never from ``intsim.cli``, which only
assembles the ``intsim`` group.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

import intsim
from intsim.profile import PROFILE_FILE_SUFFIXES, load_profile_file

USER_ERRORS = (intsim.ModelFileError, intsim.GraphError, intsim.OpError, intsim.ProfileError, ValueError, OSError)


class UserError(click.ClickException):
    """A failure caused by the model, input or options: one ``error:`` line, exit status 1."""

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            message = " ".join(str(e).split()) or type(e).__name__
            raise UserError(message) from None


def notice(ctx: click.Context, message: str) -> None:
    if not ctx.find_root().params.get("quiet"):
        click.echo(message, err=True)


def emit_json(doc: dict) -> None:
    click.echo(json.dumps(doc, indent=2, allow_nan=False))


def fmt_int(n) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_macs(n) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}MAC"
    return f"{n} MAC"


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def profile_option(value):
    """--profile NAME, FILE.json or FILE.toml -> what intsim.load takes (a name or a dict).

    A value ending in .json / .toml, or naming an existing file, is read as a profile file
    (``intsim.profile.load_profile_file``: TOML by suffix, JSON otherwise); any other value is a
    built-in profile name.
    """
    if value is None:
        return None
    path = Path(value)
    if value.lower().endswith(PROFILE_FILE_SUFFIXES) or path.is_file():
        return load_profile_file(path)
    return value
