"""``logs --follow`` as the API streams it (``api.logs.LogFollow``), on the memory store and the
fake driver: the history merged by time, a task that starts meanwhile, a task's end said after
its last line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from warren.agent.drivers import FakeDriver
from warren.api.logs import LogFollow
from warren.clocks import FakeClock
from warren.domain.logs import LogLine
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task, TaskState
from warren.store import MemoryStore
from warren.store.cluster import ClusterStore, encode, task_key

WAIT = 2.0
SPEC = ServiceSpec(name="web", command=["fake"], driver="fake")


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.cluster = ClusterStore(MemoryStore(self.clock), self.clock)
        self.fake = FakeDriver(self.clock)

    async def run(self, task_id: str, slot: int, revision: int = 1) -> Task:
        """A task started by the fake driver, and stored as running."""
        task = Task(
            id=task_id, service="web", revision=revision, slot=slot, node="n1",
            state=TaskState.RUNNING, created_at=self.clock.now(), updated_at=self.clock.now(),
            started_at=self.clock.now(),
        )  # fmt: skip
        await self.fake.start(task, SPEC)
        await self.put(task)
        return task

    async def put(self, task: Task) -> None:
        await self.cluster.raw.put(task_key(task), encode(task))

    async def read(self, task: Task, tail: int | None, since: str | None) -> list[LogLine]:
        return await self.fake.logs(task.id, tail, since)

    def follow(
        self, task: Task, tail: int | None, since: str | None
    ) -> AsyncIterator[list[LogLine]]:
        return self.fake.follow(task.id, tail, since)

    def stream(self, tail: int | None = 10) -> AsyncIterator[bytes]:
        follow = LogFollow(
            self.cluster, "web", None, tail, None, self.read, self.follow, self.clock.now
        )
        return follow.stream()

    def say(self, task: Task, text: str) -> None:
        self.clock.advance(1)
        self.fake.write(task.id, text)


async def entries(stream: AsyncIterator[bytes], count: int) -> list[str]:
    """The next ``count`` entries, as ``TASK | LINE``."""
    found = []
    for _ in range(count):
        entry = json.loads(await asyncio.wait_for(anext(stream), WAIT))
        found.append(f"{entry['task']} | {entry['line']}")
    return found


async def test_the_history_is_merged_by_time_then_new_lines_follow() -> None:
    world = World()
    a = await world.run("web.1.a", 1)
    b = await world.run("web.2.b", 2)
    world.say(a, "a1")
    world.say(b, "b1")
    world.say(a, "a2")
    stream = world.stream()

    assert await entries(stream, 5) == [
        "web.1.a | started web.1.a", "web.2.b | started web.2.b",
        "web.1.a | a1", "web.2.b | b1", "web.1.a | a2",
    ]  # fmt: skip
    world.say(b, "b2")
    assert await entries(stream, 1) == ["web.2.b | b2"]
    await stream.aclose()


async def test_a_task_started_meanwhile_is_followed_from_its_first_line() -> None:
    world = World()
    a = await world.run("web.1.a", 1)
    stream = world.stream(tail=1)
    assert await entries(stream, 1) == ["web.1.a | started web.1.a"]

    b = await world.run("web.1.b", 1, revision=2)
    world.say(b, "b1")

    assert await entries(stream, 3) == [
        "web.1.b | [warren] started: revision 2 on node n1",
        "web.1.b | started web.1.b",
        "web.1.b | b1",
    ]
    world.say(a, "a1")
    assert await entries(stream, 1) == ["web.1.a | a1"]
    await stream.aclose()


async def test_a_task_s_end_is_said_after_its_last_line() -> None:
    world = World()
    a = await world.run("web.1.a", 1)
    stream = world.stream()
    assert await entries(stream, 1) == ["web.1.a | started web.1.a"]

    # The store says it ended before its last lines are read: the end waits for them.
    ended = a.transition(TaskState.COMPLETE, world.clock.now(), message="exited with code 0")
    await world.put(ended)
    world.say(a, "last words")
    await world.fake.stop(a.id, 1)

    assert await entries(stream, 2) == [
        "web.1.a | last words",
        "web.1.a | [warren] ended: complete, exited with code 0",
    ]
    await stream.aclose()


async def test_a_task_that_could_not_start_is_said_to_have_ended() -> None:
    world = World()
    await world.run("web.1.a", 1)
    stream = world.stream()
    assert await entries(stream, 1) == ["web.1.a | started web.1.a"]
    task = Task(
        id="web.2.x", service="web", revision=1, slot=2, node="n1", state=TaskState.FAILED,
        message="start failed: command not found: nope", created_at=0, updated_at=0,
    )  # fmt: skip

    await world.put(task)

    assert await entries(stream, 1) == [
        "web.2.x | [warren] ended: failed, start failed: command not found: nope"
    ]
    await stream.aclose()
