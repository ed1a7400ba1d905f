"""Clock adapters: the system clock, and a fake clock that tests advance by hand.

Must not import anything of Warren's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

__all__ = ["FakeClock", "SystemClock"]


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Time stands still until ``advance``; sleepers wake in deadline order when their deadline
    is reached. ``settle`` lets every runnable coroutine run until all are blocked again."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def settle(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance_settled(self, seconds: float, step: float | None = None) -> None:
        """Advance in steps (default: deadline to deadline), settling after each, so that
        timers set while handling one wake-up are honoured within the same call."""
        target = self._now + seconds
        await self.settle()
        while True:
            nxt = self.next_deadline
            if step is not None:
                nxt = min(self._now + step, target)
            if nxt is None or nxt > target:
                break
            self.advance(max(0.0, nxt - self._now))
            await self.settle()
            if self._now >= target:
                break
        if self._now < target:
            self.advance(target - self._now)
            await self.settle()
