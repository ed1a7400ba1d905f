"""Fencing: an agent cut off from the control plane for longer than its node's lease stops every
task it runs. By then the managers have declared the node down and started its tasks elsewhere;
stopping them here is what keeps a task from running twice for longer than its stop grace.

One watch serves both kinds of node: a remote worker (whose heartbeats go through the managers'
API) and a manager that runs tasks on a shared store (whose heartbeats go to etcd)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from ..ports import Clock
from .supervising import Agent

__all__ = ["LeaseWatch"]

log = logging.getLogger("warren.agent")


class LeaseWatch:
    def __init__(
        self,
        agent: Agent,
        renewed_at: Callable[[], float],
        ttl: float,
        clock: Clock,
        fenced: Callable[[], Awaitable[None]],
        lost: Callable[[], None] = lambda: None,
    ) -> None:
        """``renewed_at()``: ``time.monotonic()`` when a heartbeat last got through (its start);
        ``lost()``: called when the lease is deemed lost, before the tasks are stopped;
        ``fenced()``: once they are, to start the agent again when the control plane can be
        reached."""
        self.agent = agent
        self.renewed_at = renewed_at
        self.ttl = ttl
        self.clock = clock
        self.fenced = fenced
        self.lost = lost
        self.fencing = False
        """Stopping every task: the agent must not start meanwhile (it would adopt the
        processes being stopped)."""

    async def run(self) -> None:
        while True:
            await self.clock.sleep(min(0.25, self.ttl / 8))
            if not self.agent.running or time.monotonic() - self.renewed_at() <= self.ttl:
                continue
            log.warning(
                "node %s: no heartbeat got through for %.1fs (the lease's ttl): stopping every "
                "task — they run elsewhere now", self.agent.name, self.ttl,
            )  # fmt: skip
            self.fencing = True
            self.lost()
            try:
                await self.agent.fence()
            finally:
                self.fencing = False
            await self.fenced()
