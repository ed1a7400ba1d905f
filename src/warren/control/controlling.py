"""The controller loop shared by every controller: take a key from the work queue, sync it,
requeue it when the sync asks for a later look or failed.

A sync is level-triggered: it reads the current state (the informers' caches), decides with a
pure planner, and applies the decision with compare-and-swap. A lost race (ConflictError) is
normal and retried quickly; any other error is logged and retried with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..domain.errors import ConflictError, NotFoundError
from ..ports import Clock
from .queueing import WorkQueue

__all__ = ["Controller"]

log = logging.getLogger("warren.control")


class Controller:
    name = "controller"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queue = WorkQueue(clock)
        self._failures: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0

    async def sync(self, key: str) -> float | None:
        """Bring ``key`` to its desired state; return when to look at it again, if ever."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=self.name)

    async def run(self) -> None:
        while True:
            key = await self.queue.get()
            again: float | None = None
            try:
                again = await self.sync(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except (ConflictError, NotFoundError) as exc:
                log.debug("%s: %s: %s; retrying", self.name, key, exc)
                again = self.clock.now() + 0.02
            except Exception:
                count = self._failures[key] = self._failures.get(key, 0) + 1
                log.exception("%s: sync of %s failed (attempt %d)", self.name, key, count)
                again = self.clock.now() + min(0.1 * 2**count, 10.0)
            finally:
                self.syncs += 1
                self.queue.done(key)
            if again is not None:
                self.queue.add_at(key, again)
            # A turn for the rest of the loop (the API, the other controllers): a key looked at
            # again at once, synced with writes that complete without a pause (the memory
            # store), would else hold the loop for as long as its rollout has batches.
            await asyncio.sleep(0)

    async def drain_queue(self) -> None:
        """Sync every queued key now (tests and start-up)."""
        while len(self.queue):
            key = await self.queue.get()
            try:
                again = await self.sync(key)
            finally:
                self.queue.done(key)
            if again is not None:
                self.queue.add_at(key, again)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.queue.close()
