"""A service's logs as the API serves them (``GET /v1/services/NAME/logs``): the last lines of
each task, merged by the time each line was read; and ``follow``, the stream that goes on with
every new line and picks up the tasks that start after it began — a rolling update's new tasks
appear in it — saying when a task starts and when one ends.

An entry is ``{"task", "time", "line"}`` (``time``: ``domain.logs``, ``""`` when not known); an
entry that says something of the task rather than print its output has ``"event"`` too
(``started``, ``ended``), and a ``line`` saying it in words, so that any client can print it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from ..domain.errors import WarrenError
from ..domain.logs import LogLine, merge_by_time, stamp_of
from ..domain.tasks import Task, TaskState
from ..store.cluster import ClusterStore
from .nodes import FollowLogs, ReadLogs

__all__ = ["LogFollow", "read_logs", "shown"]

Entry = dict[str, str]
_FOLLOWED = frozenset({TaskState.RUNNING, TaskState.STOPPING})
"""A task whose output a follow picks up: it has (or had) a process or container. A starting
one may not have a log yet: it is picked up once running (or ended: a start that failed)."""


def shown(tasks: Iterable[Task]) -> list[Task]:
    """The tasks whose logs are read, in slot order: all but those not started yet."""
    ordered = sorted(tasks, key=lambda t: (t.slot, t.created_at))
    return [t for t in ordered if t.state not in (TaskState.PENDING, TaskState.STARTING)]


async def read_logs(
    tasks: list[Task], read: ReadLogs, tail: int | None, since: str | None
) -> list[Entry]:
    """The last ``tail`` lines since ``since`` of each task, merged by time."""

    async def task_lines(t: Task) -> list[LogLine]:
        try:
            return await read(t, tail, since)
        except WarrenError as exc:  # one node away: the others' logs still shown
            return [LogLine("", f"[warren] cannot read the logs of {t.id}: {exc.message}")]

    # At once: a node that does not answer costs its timeout once, not once per task.
    found = await asyncio.gather(*map(task_lines, tasks))
    return _merged({t.id: lines for t, lines in zip(tasks, found, strict=True)})


def _merged(lines: dict[str, list[LogLine]]) -> list[Entry]:
    return merge_by_time(
        [[(x.time, _entry(tid, x)) for x in batch] for tid, batch in lines.items()]
    )


def _entry(task_id: str, line: LogLine) -> Entry:
    return {"task": task_id, "time": line.time, "line": line.text}


# ── following ────────────────────────────────────────────────────────────────────────────────


@dataclass
class _Batch:
    task: str
    lines: list[LogLine]
    first: bool = False
    """The history a follow starts with."""


@dataclass
class _Done:
    task: str


@dataclass
class _Changes:
    tasks: list[tuple[str, Task | None]]


_Item = _Batch | _Done | _Changes


@dataclass
class LogFollow:
    """One ``logs --follow``, from the service's tasks as the store lists them to the end of the
    client's interest. One queue takes everything that happens — batches of lines from every
    task followed, the end of a task's output, changes of the service's tasks — and one loop
    turns it into entries, so that no two things race."""

    cluster: ClusterStore
    service: str
    only: str | None
    """Follow only this task or job (``--task``, ``--job``); None: every task of the service's
    slots (no job)."""
    tail: int | None
    since: str | None
    read: ReadLogs
    follow: FollowLogs
    now: Callable[[], float]
    _queue: asyncio.Queue[_Item] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    _pumps: list[asyncio.Task[None]] = field(default_factory=list)
    _latest: dict[str, Task | None] = field(default_factory=dict)
    """Each task seen, as last seen (None: deleted)."""
    _following: set[str] = field(default_factory=set)
    """Tasks whose output is still coming."""
    _drained: set[str] = field(default_factory=set)
    """Tasks whose output has ended, not yet said to."""

    async def stream(self) -> AsyncIterator[bytes]:
        changes = self.cluster.watch_tasks(self.service)
        try:
            listing = {tid: t for tid, t in await anext(changes) if t is not None}
            for entry in await self._history(listing):
                yield _ndjson(entry)
            self._pumps.append(asyncio.ensure_future(self._watch(changes)))
            while True:
                items = [await self._queue.get()]
                while not self._queue.empty():
                    items.append(self._queue.get_nowait())
                for entry in self._handle(items):
                    yield _ndjson(entry)
        finally:
            for pump in self._pumps:
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
            await changes.aclose()

    async def _history(self, listing: dict[str, Task]) -> list[Entry]:
        """The last lines of the tasks there now: a follow for each that may still write, a
        read for the ended ones; merged once every follow has given its history."""
        tasks = shown(t for t in listing.values() if self._wanted(t.id, t))
        self._latest.update({t.id: t for t in tasks})
        histories: dict[str, list[LogLine]] = {}
        for t in tasks:
            if not t.state.terminal:
                histories[t.id] = []
                self._start(t, self.tail)
        ended = [t for t in tasks if t.state.terminal]
        read = await read_logs(ended, self.read, self.tail, self.since)
        waiting, later = set(histories), []
        while waiting:
            item = await self._queue.get()
            if isinstance(item, _Batch) and item.first:
                histories[item.task] = item.lines
                waiting.discard(item.task)
            else:
                later.append(item)  # after the history: a follow's next lines, or its end
                if isinstance(item, _Done):
                    waiting.discard(item.task)
        streams = [[(x.time, _entry(tid, x)) for x in lines] for tid, lines in histories.items()]
        entries = merge_by_time([[(e["time"], e) for e in read], *streams]) + self._handle(later)
        if self.only is not None:
            # The one task followed has ended already: say so (``warren run`` waits for it).
            entries += [_ended_entry(t) for t in ended]
        return entries

    def _wanted(self, task_id: str, task: Task | None) -> bool:
        if self.only is not None:
            return task_id == self.only
        return task is None or task.job is None

    def _start(self, task: Task, tail: int | None) -> None:
        self._following.add(task.id)
        self._pumps.append(asyncio.ensure_future(self._pump(task, tail)))

    async def _pump(self, task: Task, tail: int | None) -> None:
        first = True
        try:
            async for lines in self.follow(task, tail, self.since):
                await self._queue.put(_Batch(task.id, lines, first))
                first = False
        except WarrenError as exc:  # one node away: say so, and follow the others
            line = LogLine("", f"[warren] cannot follow the logs of {task.id}: {exc.message}")
            await self._queue.put(_Batch(task.id, [line], first))
        await self._queue.put(_Done(task.id))

    async def _watch(self, changes: AsyncIterator[list[tuple[str, Task | None]]]) -> None:
        try:
            async for batch in changes:
                await self._queue.put(_Changes(batch))
        except WarrenError as exc:
            line = LogLine(stamp_of(self.now()), f"[warren] no new tasks will show: {exc.message}")
            await self._queue.put(_Batch("", [line]))

    # ── what happens, in order ───────────────────────────────────────────────────────────────

    def _handle(self, items: list[_Item]) -> list[Entry]:
        """Entries for ``items``; the lines that came together are merged by time."""
        out: list[Entry] = []
        lines: dict[str, list[LogLine]] = {}
        for item in items:
            if isinstance(item, _Batch):
                lines.setdefault(item.task, []).extend(item.lines)
                continue
            out += _merged(lines)
            lines = {}
            if isinstance(item, _Done):
                self._following.discard(item.task)
                self._drained.add(item.task)
                out += self._ended(item.task)
            else:
                out += self._changed(item.tasks)
        return out + _merged(lines)

    def _changed(self, changes: list[tuple[str, Task | None]]) -> list[Entry]:
        out: list[Entry] = []
        for tid, task in changes:
            if not self._wanted(tid, task):
                continue
            if tid in self._latest:
                self._latest[tid] = task
                out += self._ended(tid)
            elif task is not None and (task.state in _FOLLOWED or task.state.terminal):
                # New since the follow began: all its output, and say that it started.
                self._latest[tid] = task
                if not task.state.terminal:
                    out.append(_started(task))
                self._start(task, None)
        return out

    def _ended(self, task_id: str) -> list[Entry]:
        """Once a task's output has ended *and* the store says it ended: say how."""
        task = self._latest.get(task_id)
        if task_id not in self._drained or (task is not None and not task.state.terminal):
            return []
        self._drained.discard(task_id)
        if task is None:
            return [_event(task_id, stamp_of(self.now()), "ended", "[warren] ended: removed")]
        return [_ended_entry(task)]


def _ended_entry(task: Task) -> Entry:
    how = f"{task.state}, {task.message}" if task.message else str(task.state)
    when = stamp_of(task.finished_at or task.updated_at)
    return _event(task.id, when, "ended", f"[warren] ended: {how}")


def _started(task: Task) -> Entry:
    where = f" on node {task.node}" if task.node else ""
    text = f"[warren] started: revision {task.revision}{where}"
    return _event(task.id, stamp_of(task.started_at or task.updated_at), "started", text)


def _event(task_id: str, time: str, event: str, text: str) -> Entry:
    return {"task": task_id, "time": time, "line": text, "event": event}


def _ndjson(entry: Entry) -> bytes:
    return json.dumps(entry).encode() + b"\n"
