"""The cluster's events over HTTP: ``GET /v1/events`` (the newest kept ones) and
``GET /v1/events/stream`` (server-sent events, served by sse-starlette).

An event's SSE ``id`` is the store revision that wrote it (its key's ``mod_revision``): global,
monotonic, kept with the event, the same on every manager of a cluster and across restarts. So a
client that reconnects with ``Last-Event-ID: R`` — to this server after a restart, or to another
manager — gets every kept event written after R, read from the store, then the live ones,
watched from the revision that read was made at: no gap and no duplicate. (Only the kept events
can be sent again: the newest ``EVENTS_KEPT`` of the cluster.)

Must not import the control plane: it reads the store, as the rest of the API does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..domain.errors import CompactedError, ValidationError
from ..domain.events import Event
from ..ports import EventType
from ..store.cluster import EVENTS, ClusterStore, decode
from .errors import error_responses
from .guards import GuardedRoute

__all__ = ["PING", "EventStreams", "event_routes", "pick_backlog"]

log = logging.getLogger("warren.api")

PING = 15.0
"""Seconds between keep-alive pings on a quiet stream: under the idle timeout of the proxies
between a client and the server (often 30 to 60 s), and what lets a client tell a quiet stream
from a dead connection."""

Kept = Sequence[tuple[int, Event]]
"""Events with the store revision that wrote each, in the order they were written."""

_Item = tuple[int, Event] | None
"""What a stream's queue carries: an event and its revision, or None: the stream ends."""


class EventStreams:
    """The event streams this server serves, so that stopping it ends them at once: the HTTP
    server waits for every response to finish before it stops, and a stream never finishes by
    itself (a stopping server waited its 5 s time-out for a connected ``warren events -f``).
    A client that loses its stream so reconnects with ``Last-Event-ID`` and misses nothing."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[_Item]] = set()
        self._closed = False

    def open(self) -> asyncio.Queue[_Item]:
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        self._queues.add(queue)
        return queue

    def discard(self, queue: asyncio.Queue[_Item]) -> None:
        self._queues.discard(queue)

    def close(self) -> None:
        """End every stream, and every one opened from now on."""
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)


@dataclass(frozen=True, slots=True)
class _Start:
    """Where a stream starts: the kept events it sends first, and the store revision after
    which it watches."""

    backlog: Kept
    revision: int


def pick_backlog(
    kept: Kept,
    after: int | None = None,
    since: float | None = None,
    limit: int | None = None,
    service: str | None = None,
) -> list[tuple[int, Event]]:
    """The kept events a stream sends before the live ones: with ``after`` (a Last-Event-ID)
    every one written after that revision; else the newest ``limit`` of those at or after the
    Unix time ``since`` (either may be None: no bound); with neither, none — from now on.

    E.g. kept at revisions 7, 9, 12: after=7 → 9, 12; after=12 → none; limit=1 → 12.
    """
    events = [(r, e) for r, e in kept if not service or e.service == service]
    if after is not None:
        return [(r, e) for r, e in events if r > after]
    if since is None and limit is None:
        return []
    if since is not None:
        events = [(r, e) for r, e in events if e.time >= since]
    return events[-limit:] if limit is not None else events


def _revision(last_event_id: str | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return None
    text = last_event_id.strip()
    if not text.isdigit():
        raise ValidationError(
            f"expected an event id of this stream (a store revision), got {last_event_id!r}",
            "Last-Event-ID",
        )
    return int(text)


def _frame(revision: int, event: Event) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(event.to_wire()), event=event.kind, id=str(revision), sep="\n"
    )


async def _pump(cluster: ClusterStore, revision: int, queue: asyncio.Queue[_Item]) -> None:
    """Every event written after ``revision`` into ``queue``, in order, until the store closes.
    A watch that falls behind the store's history reads the kept events again and goes on from
    the last one it passed on."""
    position = revision
    try:
        while True:
            try:
                async for batch in cluster.raw.watch(EVENTS, position + 1):
                    for change in batch:
                        if change.type == EventType.PUT:
                            position = change.kv.mod_revision
                            queue.put_nowait((position, decode(Event, change.kv)))
                break  # the store closed
            except CompactedError:
                kept, now = await cluster.kept_events()
                for r, event in kept:
                    if r > position:
                        queue.put_nowait((r, event))
                position = max(position, now)
    except Exception as exc:  # the store failed: the client reconnects, maybe elsewhere
        log.warning("event stream ends: %s", exc)
    queue.put_nowait(None)


async def _frames(
    cluster: ClusterStore, start: _Start, service: str | None, streams: EventStreams
) -> AsyncIterator[ServerSentEvent]:
    queue = streams.open()
    pump = asyncio.ensure_future(_pump(cluster, start.revision, queue))
    try:
        for revision, event in start.backlog:
            yield _frame(revision, event)
        while (item := await queue.get()) is not None:
            revision, event = item
            if not service or event.service == service:
                yield _frame(revision, event)
    finally:
        # A client gone: sse-starlette cancels us at the await above. The pump ends with it;
        # its watch's cleanup runs as the cancellation passes through it.
        pump.cancel()
        streams.discard(queue)


_STREAM_DOC = """Server-sent events (`text/event-stream`), one frame per event:

```
id: 4711
event: service.created
data: {"id": "…", "time": 1796621735.12, "kind": "service.created", "message": "…", …}
```

`id` is the store revision that wrote the event: reconnect with the header
`Last-Event-ID: 4711` to get every kept event written after it, then the live ones, with no
gap and no duplicate (the server keeps the newest 1000 events). Without it the stream starts
now, or, with `since` (Unix time) and/or `limit`, with the kept events since then / the newest
`limit` of them. A comment line (`: ping …`) comes every 15 s while nothing happens. The stream
ends when the server stops: reconnect with `Last-Event-ID`."""


_EVENT_ID = r"^\s*[0-9]*\s*$"
"""A Last-Event-ID: a store revision, or nothing (from now on)."""
_FRAME = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string"},
    },
    "required": ["id", "event", "data"],
}
"""One frame of the stream, as the OpenAPI document states it (``data``: the event's JSON)."""


def event_routes(
    cluster: ClusterStore,
    auth: Callable[..., Any],
    streams: EventStreams,
    ping: float = PING,
) -> APIRouter:
    """``auth``: the dependency every route of the router needs (the admin token)."""
    router = APIRouter(
        prefix="/v1/events",
        tags=["events"],
        dependencies=[Depends(auth)],
        route_class=GuardedRoute,
        responses=error_responses(400, 401, 403, 503),
    )

    @router.get("")
    async def list_events(
        service: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    ) -> list[dict[str, Any]]:
        """The newest `limit` kept events, oldest first; `service`: of that service only;
        `since`: at or after that Unix time."""
        return [e.to_wire() for e in await cluster.list_events(service, limit, since)]

    @router.get(
        "/stream",
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {"schema": _FRAME}}}},
        description=_STREAM_DOC,
    )
    async def stream_events(
        service: str | None = None,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
        # Its form stated (a string, not a nullable one: an absent header is None), checked by
        # ``_revision``, whose error names the header as sent.
        last_event_id: Annotated[
            str | None,
            Header(json_schema_extra={"anyOf": [{"type": "string", "pattern": _EVENT_ID}]}),
        ] = None,
    ) -> EventSourceResponse:
        after = _revision(last_event_id)
        # Read before the answer starts: once a client has the answer's head, every event
        # written from then on is in its stream.
        kept, revision = await cluster.kept_events()
        start = _Start(pick_backlog(kept, after, since, limit, service), revision)
        return EventSourceResponse(_frames(cluster, start, service, streams), ping=ping, sep="\n")

    return router
