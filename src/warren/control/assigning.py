"""What a manager streams to each remote worker connected to it: its node's tasks and the
routing table (for the worker's own ingress), as NDJSON lines::

    {"type": "task", "task": {...}, "modRevision": 812}   a task of the node, new or changed
    {"type": "gone", "id": "web.1.k2x9q1"}                 forgotten
    {"type": "route", "service": "web", "route": {...}}   a service's route (null: removed)
    {"type": "synced"}                                     the snapshot is complete
    {"type": "ping"}                                       nothing new for PING seconds

A stream starts with a snapshot of everything, then sends changes in order: a worker that
reconnects (to this manager or another) simply takes the new snapshot as the truth. The
``modRevision`` of a task is what the worker's report compares against.

The routing stream (``routes``) is the same without the tasks: what an ingress that runs as a
process of its own (``warren ingress``) follows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..domain.tasks import Task
from ..ports import DataPlane, Route, RouteStats
from ..store.informing import Informer

__all__ = ["AssignmentFeed", "RouteBroadcast"]

PING = 2.0
QUEUE_LIMIT = 10_000


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class RouteBroadcast:
    """A data plane that passes every route to ``inner`` (this manager's ingress) and keeps the
    table, for the workers' ingresses."""

    def __init__(self, inner: DataPlane) -> None:
        self.inner = inner
        self.routes: dict[str, Route] = {}
        self._listeners: list[Callable[[Mapping[str, Route | None]], None]] = []

    def listen(self, listener: Callable[[Mapping[str, Route | None]], None]) -> None:
        self._listeners.append(listener)

    async def update(self, routes: Mapping[str, Route | None]) -> None:
        await self.inner.update(routes)
        for name, route in routes.items():
            if route is None:
                self.routes.pop(name, None)
            else:
                self.routes[name] = route
        for listener in self._listeners:
            listener(routes)

    async def drain(self, address: str, timeout: float) -> int:
        return await self.inner.drain(address, timeout)

    def stats(self) -> Mapping[str, RouteStats]:
        return self.inner.stats()

    def revision_stats(self) -> Mapping[tuple[str, int], RouteStats]:
        return self.inner.revision_stats()


class AssignmentFeed:
    def __init__(self, tasks: Informer[Task], routes: RouteBroadcast) -> None:
        self.tasks = tasks
        self.routes = routes
        self._streams: set[tuple[str | None, asyncio.Queue[bytes | None]]] = set()
        tasks.on_change(self._task_changed)
        routes.listen(self._routes_changed)

    def _send(self, line: bytes, node: str | None = None) -> None:
        """To every stream (``node`` None: a route), or to ``node``'s (a task)."""
        for name, queue in list(self._streams):
            if node is not None and name != node:
                continue
            if queue.qsize() >= QUEUE_LIMIT:
                # A worker that does not read: end its stream; it reconnects to a snapshot.
                queue.put_nowait(None)
                self._streams.discard((name, queue))
            else:
                queue.put_nowait(line)

    def close(self) -> None:
        """End every stream (the server stops): its worker moves to another manager."""
        for _, queue in self._streams:
            queue.put_nowait(None)
        self._streams.clear()

    def _task_message(self, key: str, task: Task) -> bytes:
        kv = self.tasks.kvs[key]
        return _line({"type": "task", "task": task.to_wire(), "modRevision": kv.mod_revision})

    def _task_changed(self, key: str, old: Task | None, new: Task | None) -> None:
        if new is not None and new.node:
            self._send(self._task_message(key, new), new.node)
        elif old is not None and old.node:
            self._send(_line({"type": "gone", "id": old.id}), old.node)

    def _routes_changed(self, routes: Mapping[str, Route | None]) -> None:
        for name, route in routes.items():
            wire = route.to_wire() if route is not None else None
            self._send(_line({"type": "route", "service": name, "route": wire}))

    def routes_stream(self) -> AsyncIterator[bytes]:
        """The routing table: the snapshot, then every change, until the client leaves."""
        return self.stream(None)

    async def stream(self, node: str | None) -> AsyncIterator[bytes]:
        """``node``'s assignments (None: the routes alone): the snapshot, then every change,
        until the client leaves."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        # The snapshot is taken with no await between it and the subscription: no change is
        # lost, and none arrives before what it changes.
        snapshot = [
            self._task_message(key, task)
            for key, task in self.tasks.items.items()
            if node is not None and task.node == node
        ]
        snapshot += [
            _line({"type": "route", "service": name, "route": route.to_wire()})
            for name, route in self.routes.routes.items()
        ]
        # The store revision the snapshot stands at: a task the worker knows at a later one is
        # newer than this manager's cache (it lags), not gone.
        snapshot.append(_line({"type": "synced", "revision": self.tasks.revision}))
        entry = (node, queue)
        self._streams.add(entry)
        try:
            yield b"".join(snapshot)
            while True:
                try:
                    async with asyncio.timeout(PING):
                        line = await queue.get()
                except TimeoutError:
                    yield _line({"type": "ping"})
                    continue
                if line is None:
                    return
                yield line
        finally:
            self._streams.discard(entry)
