"""The controller loop shares the event loop: a key it looks at again at once (a rollout of
many batches, each planned the moment the last was written) still leaves the API and the other
controllers their turn between two syncs."""

from __future__ import annotations

import asyncio

from warren.clocks import FakeClock
from warren.control.controlling import Controller

ENOUGH = 2_000
"""Syncs after which the busy controller stops by itself: a loop that never yields ends then."""


class _Busy(Controller):
    name = "busy"

    def __init__(self) -> None:
        super().__init__(FakeClock())
        self.count = 0

    async def sync(self, key: str) -> float | None:
        # Memory-store writes complete without a pause: nothing here yields to the loop.
        self.count += 1
        return self.clock.now() if self.count < ENOUGH else None


async def test_a_key_looked_at_again_at_once_leaves_others_their_turn() -> None:
    busy = _Busy()
    busy.queue.add("web")
    seen_at: list[int] = []

    async def other() -> None:
        seen_at.append(busy.count)

    busy.start()
    waiting = asyncio.ensure_future(other())
    for _ in range(10_000):
        if busy.count >= ENOUGH or seen_at:
            break
        await asyncio.sleep(0)
    await waiting
    await busy.stop()
    assert seen_at[0] < 10, f"another coroutine first ran after {seen_at[0]} syncs"
