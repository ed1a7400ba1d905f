"""How the CLI shows things: rich tables, relative times, one-line errors, and the documents of
``-o json|yaml`` (ISO-8601 UTC times) that scripts read."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from ..domain.specs import ServiceSpec

__all__ = [
    "DETACH",
    "OUTPUT",
    "QUIET",
    "Format",
    "advise_on",
    "ago",
    "console",
    "document",
    "err_console",
    "fail",
    "group",
    "iso",
    "moved",
    "show",
    "warn",
]

# Piped output (a file, grep, a test) is not cut to 80 columns: tables keep whole ids.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)


def moved(from_revision: int | None, to_revision: int) -> str:
    """``1 → 2``; a new service's first release: ``new → 1``."""
    return f"{'new' if from_revision is None else from_revision} → {to_revision}"


def ago(when: float | None, now: float | None = None) -> str:
    """12.3 seconds ago → ``12s``; 4000 → ``1h6m``."""
    if not when:
        return "-"
    seconds = max(0, int((now or time.time()) - when))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def fail(message: str) -> None:
    # Escaped: a message may hold brackets (a URL, a user's value) that are not markup.
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, soft_wrap=True)


def advise_on(spec: ServiceSpec) -> None:
    """Warn of the release practices ``spec`` departs from (``domain.advice``): on stderr, so
    that a script reading stdout is not disturbed."""
    from ..domain.advice import advise

    for sentence in advise(spec):
        warn(f"service {spec.name}: {sentence}")


class Format(StrEnum):
    """What ``-o`` prints: the view for people, or a document for scripts."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OUTPUT = Annotated[
    Format,
    typer.Option(
        "--output", "-o", metavar="FORMAT", case_sensitive=False,
        help="table | json | yaml (times in ISO-8601 UTC).",
    ),
]  # fmt: skip
QUIET = Annotated[bool, typer.Option("--quiet", "-q", help="Names or ids only, one per line.")]
DETACH = Annotated[bool, typer.Option("--detach", "-d", help="Return at once.")]
OVERRIDE = Annotated[
    bool,
    typer.Option(
        "--override",
        help="Start the release even outside the service's deployment windows or in a freeze "
        "(said in its decision log).",
    ),
]


def iso_seconds(when: float) -> str:
    """A Unix time as ``2026-12-24T17:00:00Z`` (a time a person reads)."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(when: float | None) -> str | None:
    """A Unix time as ISO-8601 UTC: ``2026-12-07T07:15:35.123456+00:00``."""
    return (
        None if when is None else datetime.fromtimestamp(when, UTC).isoformat("T", "microseconds")
    )


# The fields of the API's (camelCase) documents that hold a Unix time: createdAt, pauseUntil,
# time … (a plan's earliestAfter and earliestFinish are offsets from its start, not times).
_TIME_KEY = re.compile(r"(At|Until|^time|^until)$")


def document(value: Any) -> Any:
    """``value`` (models, dicts, lists) as plain JSON data, camelCase as the API's, with every
    time in ISO-8601 UTC."""
    if hasattr(value, "to_wire"):
        value = value.to_wire()
    if isinstance(value, dict):
        return {
            k: iso(v) if _TIME_KEY.search(k) and isinstance(v, int | float) else document(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [document(v) for v in value]
    return value


def show(
    fmt: Format, doc: Callable[[], Any], view: Callable[[], None], ids: Iterable[str] | None = None
) -> None:
    """Print ``ids`` one per line (``-q``), else the document (``-o json|yaml``), else the view
    for people. Documents go straight to stdout: no colour, no wrapping, whatever the
    terminal."""
    if ids is not None:
        for one in ids:
            sys.stdout.write(f"{one}\n")
    elif fmt is Format.TABLE:
        view()
    elif fmt is Format.JSON:
        sys.stdout.write(json.dumps(document(doc()), indent=2) + "\n")
    else:
        import yaml  # only -o yaml needs it

        sys.stdout.write(yaml.safe_dump(document(doc()), sort_keys=False))


def _plain_help() -> None:
    """typer 0.29 prints a Python type beside every argument and flag (``name <str>``, ``--help
    <bool>``) and a required argument as ``{name}``; an argument's name says what it takes and a
    flag takes nothing, so show neither, and write arguments as docker does: ``NAME``,
    ``[NAME]``. (Where typer has no such hooks, its own help stands.)"""
    core = typer.core
    if hasattr(core.TyperArgument, "_usage_display_name"):

        def usage(self: Any) -> str:
            name = str(self.display_name_raw).upper() + ("..." if self.nargs != 1 else "")
            return name if self.required else f"[{name}]"

        core.TyperArgument._usage_display_name = usage  # type: ignore[method-assign]
    if hasattr(core.TyperArgument, "display_type_rich"):
        core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
        option_type = core.TyperOption.display_type_rich

        def option(self: Any, ctx: Any) -> str | None:
            return None if self.is_flag else option_type(self, ctx)

        core.TyperOption.display_type_rich = option  # type: ignore[method-assign]


_plain_help()


def _plain_coercion() -> None:
    """typer 0.29 passes every value through a pydantic TypeAdapter, built for each parameter
    at each run: importing pydantic and building them is a third of the CPU time of a
    ``warren service ls``. What a command line gives is text already: a text, a list of texts
    or an enum's own value is taken as is; anything else goes to typer's adapter, which says
    what is wrong. (Where typer has no such hook, its own coercion stands.)"""
    core = typer.core
    build: Any = getattr(core, "build_runtime_param", None)
    runtime: Any = getattr(core, "RuntimeParam", None)
    if build is None or runtime is None:
        return

    @dataclasses.dataclass(frozen=True)
    class Plain(runtime):  # type: ignore[misc]
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            found = _as_given(self.annotation, value)
            if found is not _NOT:
                return found
            return build(self.descriptor)._coerce_value(value, param=param, ctx=ctx)

    def plain(descriptor: Any) -> Any:
        info, kind = descriptor.parameter_info, descriptor.annotation
        if descriptor.file_annotation is not None or getattr(info, "parser", None) is not None:
            return build(descriptor)  # a file to open, a parser of our own to call
        return Plain(parameter_info=info, annotation=kind, descriptor=descriptor)

    setattr(core, "build_runtime_param", plain)  # noqa: B010 (not exported, for mypy)


_NOT = object()
_TEXT = (str, str | None)
_TEXTS = (list[str], list[str] | None)


def _as_given(kind: Any, value: Any) -> Any:
    """``value`` as a parameter of type ``kind`` takes it, where that is the value itself (or
    an enum's member); else ``_NOT``."""
    if kind in _TEXT and isinstance(value, str):
        return value
    if (
        kind in _TEXTS
        and isinstance(value, list | tuple)
        and all(isinstance(v, str) for v in value)
    ):
        return list(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if isinstance(value, kind):
            return value
        return next((m for m in kind if m.value == value), _NOT)
    return _NOT


_plain_coercion()


def group(help: str, **settings: Any) -> typer.Typer:
    """A command group. Help is plain text, as docker's and git's: typer's boxes cost a tenth of
    a second at every start (rich's markdown), and they hide nothing a script or a person
    needs."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        **settings,
    )
