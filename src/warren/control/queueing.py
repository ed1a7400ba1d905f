"""The work queue of a controller: keys to sync, deduplicated, with delayed re-adds.

A key added while it is queued is not added twice; a key added while it is being synced is synced
once more afterwards (level-triggered: the sync reads the latest state). Delays use the Clock
port, so tests drive them with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque

from ..ports import Clock

__all__ = ["WorkQueue"]


class WorkQueue:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._order: deque[str] = deque()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._ready = asyncio.Event()
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._timer_task: asyncio.Task[None] | None = None
        self._timer_wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._order.append(key)
            self._ready.set()

    def add_at(self, key: str, when: float) -> None:
        """Add ``key`` at wall-clock time ``when`` (at once if that has passed)."""
        if when <= self._clock.now():
            self.add(key)
            return
        heapq.heappush(self._timers, (when, next(self._seq), key))
        if self._timer_task is None or self._timer_task.done():
            self._timer_task = asyncio.get_running_loop().create_task(self._fire_timers())
        else:
            self._timer_wake.set()

    async def _fire_timers(self) -> None:
        while self._timers:
            when = self._timers[0][0]
            delay = when - self._clock.now()
            if delay > 0:
                self._timer_wake.clear()
                sleeper = asyncio.ensure_future(self._clock.sleep(delay))
                waker = asyncio.ensure_future(self._timer_wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for fut in (sleeper, waker):
                        fut.cancel()
                continue
            _, _, key = heapq.heappop(self._timers)
            self.add(key)

    async def get(self) -> str:
        while not self._order:
            self._ready.clear()
            await self._ready.wait()
        key = self._order.popleft()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    async def close(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
