"""Where an event stream starts (``api.events``): the kept events it sends first, picked by a
Last-Event-ID, a time or a count; the events it follows after them, in order, even when its
watch falls behind the store's history; and the streams a stopping server ends."""

from __future__ import annotations

import asyncio

import pytest

from warren.api.events import EventStreams, _pump, pick_backlog
from warren.clocks import FakeClock
from warren.domain.events import Event
from warren.store.cluster import ClusterStore
from warren.store.memory import MemoryStore


def event(time: float, service: str | None = "web") -> Event:
    return Event(id=f"e{time:g}", time=time, kind="service.updated", message="", service=service)


KEPT = [(7, event(100)), (9, event(200, "api")), (12, event(300)), (15, event(400))]


@pytest.mark.parametrize(
    ("after", "since", "limit", "service", "revisions"),
    [
        (None, None, None, None, []),  # from now on
        (7, None, None, None, [9, 12, 15]),  # resumed: everything after the id
        (15, None, None, None, []),
        (0, None, None, None, [7, 9, 12, 15]),
        (99, None, None, None, []),  # an id from the future (another store): nothing to send
        (7, 350.0, 1, None, [9, 12, 15]),  # resuming ignores since and limit
        (7, None, None, "web", [12, 15]),
        (None, 200.0, None, None, [9, 12, 15]),  # at or after the time
        (None, None, 2, None, [12, 15]),  # the newest 2
        (None, 150.0, 2, "web", [12, 15]),
        (None, 300.0, 5, "api", []),
    ],
)
def test_the_backlog_of_a_stream(
    after: int | None,
    since: float | None,
    limit: int | None,
    service: str | None,
    revisions: list[int],
) -> None:
    assert [r for r, _ in pick_backlog(KEPT, after, since, limit, service)] == revisions


async def test_events_are_listed_since_a_time_and_kept_with_the_revision_that_wrote_them() -> None:
    clock = FakeClock(1000.0)
    cluster = ClusterStore(MemoryStore(clock), clock)
    for name in ("a", "b", "c"):
        await cluster.record("service.created", f"service {name} created", service=name)
        clock.advance(10)
    assert [e.service for e in await cluster.list_events(since=1010.0)] == ["b", "c"]
    assert [e.service for e in await cluster.list_events(since=1010.0, limit=1)] == ["c"]
    kept, revision = await cluster.kept_events()
    assert [e.service for _, e in kept] == ["a", "b", "c"]
    assert [r for r, _ in kept] == sorted(r for r, _ in kept) and kept[-1][0] == revision


async def test_a_stream_whose_watch_fell_behind_the_history_misses_nothing() -> None:
    clock = FakeClock()
    store = MemoryStore(clock, history=2)  # the watch history keeps 2 revisions
    cluster = ClusterStore(store, clock)
    await cluster.record("service.created", "before", service="before")
    _, revision = await cluster.kept_events()
    for i in range(5):  # written after the stream's start, and gone from the watch history
        await cluster.record("service.created", f"missed {i}", service=f"m{i}")
    queue: asyncio.Queue[tuple[int, Event] | None] = asyncio.Queue()
    pump = asyncio.create_task(_pump(cluster, revision, queue))
    try:
        missed = [await asyncio.wait_for(queue.get(), 5) for _ in range(5)]
        await cluster.record("service.created", "live", service="live")
        live = await asyncio.wait_for(queue.get(), 5)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
    assert [item[1].service for item in (*missed, live) if item] == [
        "m0", "m1", "m2", "m3", "m4", "live",
    ]  # fmt: skip
    revisions = [item[0] for item in (*missed, live) if item]
    assert revisions == sorted(set(revisions)) and revisions[0] > revision


async def test_closing_ends_every_stream_and_each_opened_afterwards() -> None:
    streams = EventStreams()
    before = streams.open()
    streams.close()
    after = streams.open()
    assert before.get_nowait() is None and after.get_nowait() is None
