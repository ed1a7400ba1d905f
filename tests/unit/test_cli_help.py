"""Every command's help is plain text with no Python type names (``<str>``, ``<bool>``) and
arguments written as docker writes them (``NAME``, ``[NAME]``)."""

from __future__ import annotations

import re

import click
import typer.main
from typer.testing import CliRunner

from warren.cli.main import app


def _paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found.extend(_paths(sub, (*path, name)))
    return found


def test_no_help_shows_a_type_name_or_braces() -> None:
    paths = _paths(typer.main.get_command(app))
    assert len(paths) > 25
    for path in paths:
        shown = CliRunner().invoke(app, [*path, "-h"], terminal_width=100)
        assert shown.exit_code == 0, (path, shown.output)
        assert not re.search(r"<\w+>|\{\w+\}|╭", shown.output), (path, shown.output)
