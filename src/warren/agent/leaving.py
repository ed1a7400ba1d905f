"""A node that leaves cleanly: on the first SIGTERM or Ctrl-C, a worker (or a server that runs
tasks) drains its node before it exits — what ``warren node drain`` does, but marked as the
node's own drain (``DrainedBy.SHUTDOWN``), so that the node is active again when it comes back.
The control plane moves each task start-first (its replacement on another node ready before
the old task is drained and stopped: no request fails), and this agent stops the old ones as it
would for any shutdown. The process exits once every task has moved.

Bounded: after ``timeout`` the tasks that have not moved are stopped anyway (drained, then their
stop signal and grace); a second signal stops them at once (killed). Tasks that no other node
can take (a single node; every other node full, down or drained) are not waited for: the drain
says so at once (``DrainStatus.all_stuck``), and they keep running, as after a stop without a
drain — a drain never takes away a task it cannot replace, and a node restarted (an upgrade)
adopts them. If no manager answers at all, the node leaves as it did before drains: its tasks
keep running.

Worked example, a worker with 3 tasks, ``--drain-timeout 60s``, and room on other nodes::

    draining: 3 tasks to move
    moved 1/3
    moved 2/3
    moved 3/3
    left the cluster

Must not import control, api, ingress or the CLI (the drain's progress comes through the
agent's dispatcher: the store, or the managers' API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import StrEnum

from ..domain.errors import UnavailableError, WarrenError
from ..domain.nodes import DrainStatus
from ..ports import Clock
from .supervising import Agent

__all__ = ["Leaving", "Outcome"]

log = logging.getLogger("warren.agent")

RETRY = 0.5
"""Seconds before the drain's progress is asked again after a manager stopped answering."""
REPORT_SLACK = 5.0
"""Seconds, beyond the tasks' own stop times, that the stopped tasks' reports may take before
the agent stops waiting for a manager and kills what still runs (``Agent.fence``)."""


class Outcome(StrEnum):
    LEFT = "left"
    """Every task moved to another node."""
    STAYED = "stayed"
    """The tasks left cannot move: they keep running (a restarted node adopts them)."""
    UNREACHED = "unreached"
    """No manager answered: nothing was drained; the tasks keep running."""
    TIMED_OUT = "timed out"
    """The drain timeout came: the tasks that had not moved were stopped."""
    INTERRUPTED = "interrupted"
    """A second signal: the tasks that had not moved were stopped at once."""

    @property
    def exit_status(self) -> int:
        return 1 if self == Outcome.INTERRUPTED else 0


def _tasks(n: int) -> str:
    return f"{n} task{'' if n == 1 else 's'}"


class _Progress:
    """What the operator reads, one line per step: "draining: 3 tasks to move", "moved 1/3"
    … Counts a task moved once it no longer wants to run here (its replacement is ready)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.total: int | None = None
        self.moved = 0

    def seen(self, status: DrainStatus) -> None:
        if self.total is None:
            self.total = status.remaining
            self.say(f"draining: {_tasks(self.total) if self.total else 'no tasks'} to move")
            return
        # A task placed here just before the drain began counts too.
        self.total = max(self.total, self.moved + status.remaining)
        moved = self.total - status.remaining
        if moved > self.moved:
            self.moved = moved
            self.say(f"moved {moved}/{self.total}")


class Leaving:
    def __init__(
        self,
        agent: Agent,
        clock: Clock,
        say: Callable[[str], None],
        interrupted: asyncio.Event,
    ) -> None:
        """``say``: one line for the operator (stderr); ``interrupted``: set by a second
        signal."""
        self.agent = agent
        self.clock = clock
        self.say = say
        self.interrupted = interrupted
        self.progress = _Progress(say)

    async def run(self, timeout: float) -> Outcome:
        """Drain the node, and wait up to ``timeout`` seconds for its tasks to move."""
        loop = asyncio.get_running_loop()
        follow = loop.create_task(self._follow())
        deadline = loop.create_task(self.clock.sleep(timeout))
        interrupt = loop.create_task(self.interrupted.wait())
        try:
            await asyncio.wait({follow, deadline, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (follow, deadline, interrupt):
                waiting.cancel()
            await asyncio.gather(follow, deadline, interrupt, return_exceptions=True)
        if follow.done() and not follow.cancelled():
            return follow.result()
        if self.interrupted.is_set():
            await self._stop_at_once()
            return Outcome.INTERRUPTED
        left = len(self.agent.supervisors)
        self.say(f"drain timeout ({timeout:g}s): stopping {_tasks(left)} that did not move")
        return await self._stop_gracefully()

    async def _follow(self) -> Outcome:
        """Mark the node drained, then follow the drain until every task moved, or until what
        is left cannot move."""
        try:
            await self.agent.dispatcher.leave()
        except UnavailableError as exc:
            self.say(f"cannot drain: {exc.message}; its tasks keep running")
            return Outcome.UNREACHED
        while True:
            try:
                async for status in self.agent.dispatcher.drain_progress():
                    self.progress.seen(status)
                    if status.done:
                        self.say("left the cluster")
                        return Outcome.LEFT
                    if status.all_stuck:
                        self.say(
                            f"{status.summary()}; they keep running here "
                            "(a restarted node adopts them)"
                        )
                        return Outcome.STAYED
            except UnavailableError as exc:
                log.warning("drain: %s; asking again", exc.message)
            await self.clock.sleep(RETRY)
            with contextlib.suppress(WarrenError):
                await self.agent.dispatcher.leave()  # another manager: the drain is kept there

    async def _stop_gracefully(self) -> Outcome:
        """Stop what did not move — drained, its stop signal and grace — unless a second signal
        comes meanwhile."""
        loop = asyncio.get_running_loop()
        stopping = loop.create_task(self._halt("stopped: its node left (drain timeout)", False))
        interrupt = loop.create_task(self.interrupted.wait())
        await asyncio.wait({stopping, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        interrupt.cancel()
        if not stopping.done():
            await self._stop_at_once()
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
            return Outcome.INTERRUPTED
        await stopping
        return Outcome.TIMED_OUT

    async def _stop_at_once(self) -> None:
        left = len(self.agent.supervisors)
        self.say(f"interrupted: stopping {_tasks(left)} at once, without moving them")
        await self._halt("stopped: its node left (interrupted)", True)

    async def _halt(self, why: str, at_once: bool) -> None:
        """``Agent.halt``, bounded: when the reports cannot get through (no manager answers),
        what still runs is killed all the same."""
        bound = (0.0 if at_once else self.agent.stop_takes()) + REPORT_SLACK
        try:
            async with asyncio.timeout(bound):
                await self.agent.halt(why, at_once)
        except TimeoutError:
            log.warning("no manager took the reports of the stopped tasks in %gs", bound)
            await self.agent.fence(default_grace=0.0 if at_once else 10.0)
