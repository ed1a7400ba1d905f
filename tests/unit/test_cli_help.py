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


def test_server_and_worker_flags_come_from_the_environment_too() -> None:
    for command in ("server", "worker", "ingress"):
        shown = CliRunner().invoke(app, [command, "-h"], terminal_width=200).output
        assert "[env var: WARREN_HTTP_PORT" in shown and "WARREN_DATA_DIR" in shown, command
    refused = CliRunner().invoke(app, ["server"], env={"WARREN_HTTP_PORT": "abc"})
    assert refused.exit_code == 2 and "--http-port" in refused.output
