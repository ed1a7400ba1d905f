"""``warren events``: what happened in the cluster — the kept events, then, with ``--follow``, the
new ones as they happen (the API's server-sent event stream; a lost connection, a restarted
server, is resumed where it stopped).

``--since`` is filtered by the server (``?since=``, a Unix time), for two reasons: ``--limit``
then counts the events that pass it, and with ``--follow`` the same request that sends them goes
on with the live ones, so that nothing falls between a listing and a stream, nor shows twice.
Talks to the API only, through ``warren.client``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from .connect import connect
from .flags import DURATION
from .output import OUTPUT, Format, console, document

if TYPE_CHECKING:
    from ..domain.events import Event

__all__ = ["events", "json_line", "table_line"]

LIMIT = 100
"""Past events shown without --since (the server keeps the newest 1000)."""

# TIME, LEVEL, KIND, SERVICE/TASK/NODE: the widths a column has at least (a longer value pushes
# the rest along: with --follow, rows are printed as they come, and cannot be measured first).
_WIDTHS = (19, 7, 24, 17)
_HEADER = ("TIME", "LEVEL", "KIND", "SERVICE/TASK/NODE", "MESSAGE")
# By the levels' values (``Level`` is a StrEnum): no pydantic model to import at start-up.
_STYLES = {"warning": "yellow", "error": "red"}


def _subject(event: Event) -> str:
    """What the event is about: its task, else its service, else its node."""
    return event.task or event.service or event.node or "-"


def _columns(cells: Iterable[str]) -> str:
    cells = list(cells)
    padded = [c.ljust(w) for c, w in zip(cells, _WIDTHS, strict=False)]
    return "  ".join([*padded, *cells[len(_WIDTHS) :]])


def table_line(event: Event) -> str:
    """One row: the time in local time, to the second."""
    when = datetime.fromtimestamp(event.time).strftime("%Y-%m-%d %H:%M:%S")
    return _columns((when, str(event.level), event.kind, _subject(event), event.message))


def json_line(event: Event) -> str:
    """One JSON object on one line, its time in ISO 8601, UTC, to the microsecond."""
    return json.dumps(document(event))


def _show(event: Event, output: Format) -> None:
    if output is Format.JSON:
        sys.stdout.write(json_line(event) + "\n")
        sys.stdout.flush()  # each line as it comes, into a pipe too
    elif output is Format.YAML:
        import yaml

        # One document per event: a stream a YAML reader takes as it comes.
        sys.stdout.write("---\n" + yaml.safe_dump(document(event), sort_keys=False))
        sys.stdout.flush()
    else:
        line = table_line(event)
        console.print(line, style=_STYLES.get(event.level), markup=False, soft_wrap=True)


def events(
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", metavar="", help="Then show new events as they happen (Ctrl-C ends)."
        ),
    ] = False,
    service: Annotated[
        str | None, typer.Option("--service", metavar="NAME", help="Only this service's events.")
    ] = None,
    since: Annotated[
        float | None,
        typer.Option(
            "--since",
            parser=DURATION,
            metavar="DUR",
            help="Only the events of the last DUR (10m, 1h30m …).",
        ),
    ] = None,
    output: OUTPUT = Format.TABLE,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            max=1000,
            metavar="N",
            show_default=f"all since --since, else {LIMIT}",
            help="At most the newest N past events.",
        ),
    ] = None,
) -> None:
    """Show the cluster's events (newest last); -o json: one JSON object per line, -o yaml: one
    document per event."""
    after = time.time() - since if since is not None else None
    if limit is None and after is None:
        limit = LIMIT
    if output is Format.TABLE:
        console.print(_columns(_HEADER), style="bold", markup=False, soft_wrap=True)
    with connect() as client:
        if not follow:
            for event in client.list_events(service, limit or 1000, after):
                _show(event, output)
            return
        try:
            for event in client.stream_events(service, since=after, limit=limit):
                _show(event, output)
        except KeyboardInterrupt:
            return  # the way to stop following: no error
