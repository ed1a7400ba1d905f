"""Fencing and leader election on the memory store with a fake clock: a FencedStore whose
leadership was taken over has its writes refused and reported as lost leadership (an ordinary
lost race is not); exactly one of several managers leads; a leader that stops hands over at
once, one that is cut off steps down before its lease could have expired, and one that still
believes it leads (its keepalives "succeed", it hears nothing) is stopped by its first write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from warren.clocks import FakeClock
from warren.control.leading import Election
from warren.domain.errors import ValidationError
from warren.ports import Compare, Delete, KeyValue, Op, Put, StateStore, TxnResult, WatchEvent
from warren.store import MemoryStore
from warren.store.fencing import LEADER_KEY, FencedStore, LeadershipLostError

TTL = 2.0


async def take_leader_key(store: StateStore, name: str) -> tuple[int, int]:
    """Create the leader key on a fresh lease the way a campaign does: (lease, fence)."""
    lease = await store.grant(TTL)
    res = await store.txn([Compare.absent(LEADER_KEY)], [Put(LEADER_KEY, name.encode(), lease)])
    assert res.succeeded
    return lease, res.revision


# ── the fenced store ─────────────────────────────────────────────────────────────────────────


async def test_a_fenced_store_writes_while_its_leadership_holds() -> None:
    store = MemoryStore(FakeClock())
    _, fence = await take_leader_key(store, "a")
    lost: list[str] = []
    fenced = FencedStore(store)
    fenced.arm(fence, lost.append)
    rev = await fenced.put("/services/web", b"v1")
    assert (await store.get("/services/web")) == KeyValue("/services/web", b"v1", rev, rev, 1)
    kv = await store.get("/services/web")
    assert kv is not None
    res = await fenced.txn([Compare.unchanged(kv)], [Put("/services/web", b"v2")])
    assert res.succeeded
    await fenced.delete("/services/", prefix=True)
    assert await store.range("/services/") == ([], res.revision + 1)
    assert lost == []


async def test_a_lost_race_is_not_a_lost_leadership() -> None:
    store = MemoryStore(FakeClock())
    _, fence = await take_leader_key(store, "a")
    lost: list[str] = []
    fenced = FencedStore(store)
    fenced.arm(fence, lost.append)
    await store.put("/tasks/web/t1", b"1")
    stale = await store.get("/tasks/web/t1")
    assert stale is not None
    await store.put("/tasks/web/t1", b"2")  # an agent wrote in between
    res = await fenced.txn([Compare.unchanged(stale)], [Put("/tasks/web/t1", b"3")])
    assert not res.succeeded
    assert lost == [] and fenced.fence == fence
    assert (await store.get("/tasks/web/t1")).value == b"2"  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["expired", "revoked"])
async def test_a_taken_over_leadership_fences_every_write_off(how: str) -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    lease, old_fence = await take_leader_key(store, "a")
    lost: list[str] = []
    fenced = FencedStore(store)
    fenced.arm(old_fence, lost.append)
    if how == "expired":
        clock.advance(TTL + 0.1)  # "a" paused past its lease
    else:
        await store.revoke(lease)
    _, new_fence = await take_leader_key(store, "b")
    assert new_fence != old_fence
    await store.put("/tasks/web/t1", b"1")
    kv = await store.get("/tasks/web/t1")
    assert kv is not None
    before = store.revision

    writes = [
        fenced.txn([Compare.unchanged(kv)], [Put("/tasks/web/t1", b"by a")]),
        fenced.put("/events/1", b"by a"),
        fenced.delete("/tasks/web/t1"),
    ]
    for write in writes:
        with pytest.raises(LeadershipLostError, match=f"leads since revision {new_fence}"):
            await write
    assert store.revision == before  # nothing written
    assert len(lost) == 3 and all(f"revision {new_fence}" in why for why in lost)


async def test_a_vanished_leader_key_fences_writes_off() -> None:
    store = MemoryStore(FakeClock())
    lease, fence = await take_leader_key(store, "a")
    lost: list[str] = []
    fenced = FencedStore(store)
    fenced.arm(fence, lost.append)
    await store.revoke(lease)
    with pytest.raises(LeadershipLostError, match="gone"):
        await fenced.put("/events/1", b"x")
    assert lost == ["the leader key is gone"]


async def test_a_follower_writes_nothing() -> None:
    store = MemoryStore(FakeClock())
    fenced = FencedStore(store)
    with pytest.raises(LeadershipLostError, match="does not lead"):
        await fenced.put("/events/1", b"x")
    _, fence = await take_leader_key(store, "a")
    fenced.arm(fence, lambda why: None)
    fenced.disarm()
    with pytest.raises(LeadershipLostError):
        await fenced.txn([], [Delete("/", prefix=True)])
    assert await store.get("/leader") is not None
    fenced.arm(fence, lambda why: None)
    with pytest.raises(ValidationError, match="failure ops"):
        await fenced.txn([], [], [Put("/x", b"")])


# ── the election ─────────────────────────────────────────────────────────────────────────────


@dataclass
class Link:
    """A manager's view of the shared store, which a test can cut off or make lie."""

    store: MemoryStore
    lying: bool = False
    """Keepalives "succeed" without reaching the store, and watches hear nothing: the view of
    a leader that paused (GC, SIGSTOP) and does not know it yet."""
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._open.set()

    def cut(self) -> None:
        """From now on every call hangs until ``heal``: a partition."""
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def _gate(self) -> None:
        await self._open.wait()

    async def get(self, key: str) -> KeyValue | None:
        await self._gate()
        return await self.store.get(key)

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        await self._gate()
        return await self.store.range(prefix)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        await self._gate()
        return await self.store.txn(compares, success, failure)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        await self._gate()
        return await self.store.put(key, value, lease)

    async def delete(self, key: str, prefix: bool = False) -> int:
        await self._gate()
        return await self.store.delete(key, prefix)

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[list[WatchEvent]]:
        async for batch in self.store.watch(prefix, from_revision):
            await self._gate()
            if self.lying:
                await self._never.wait()
            yield batch

    async def grant(self, ttl: float) -> int:
        await self._gate()
        return await self.store.grant(ttl)

    async def keepalive(self, lease: int) -> None:
        await self._gate()
        if not self.lying:
            await self.store.keepalive(lease)

    async def revoke(self, lease: int) -> None:
        await self._gate()
        await self.store.revoke(lease)

    async def close(self) -> None:
        pass


@dataclass
class Manager:
    """One manager: its link to the store, its fenced store, its election, and a log of when
    (fake time) it started and stopped leading."""

    name: str
    link: Link
    clock: FakeClock
    terms: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fenced = FencedStore(self.link)
        self.election = Election(
            self.link, self.fenced, self.name, self.clock, self._elected, self._deposed, TTL
        )

    async def _elected(self) -> None:
        self.terms.append([self.clock.now()])

    async def _deposed(self) -> None:
        self.terms[-1].append(self.clock.now())


def managers(count: int) -> tuple[FakeClock, MemoryStore, list[Manager]]:
    clock = FakeClock()
    store = MemoryStore(clock, reap_interval=0.1)
    return clock, store, [Manager(f"m{i}", Link(store), clock) for i in range(count)]


def leaders(ms: list[Manager]) -> list[str]:
    return [m.name for m in ms if m.election.leading]


async def test_exactly_one_of_three_leads_and_a_stop_hands_over_at_once() -> None:
    clock, store, ms = managers(3)
    for m in ms:
        m.election.start()
    await clock.advance_settled(5 * TTL, step=0.1)
    assert leaders(ms) == ["m0"]
    assert {m.election.leader for m in ms} == {"m0"}
    leader_key = await store.get(LEADER_KEY)
    assert leader_key is not None and ms[0].fenced.fence == leader_key.create_revision
    assert ms[1].fenced.fence is None and ms[2].fenced.fence is None

    stopped_at = clock.now()
    await ms[0].election.stop()  # revokes: no waiting for the lease to expire
    await clock.settle()
    assert len(leaders(ms)) == 1 and leaders(ms) != ["m0"]
    new = next(m for m in ms if m.election.leading)
    assert new.terms == [[stopped_at]]
    assert [term[1] for term in ms[0].terms] == [stopped_at]
    for m in ms[1:]:
        await m.election.stop()
    await store.close()


async def test_a_cut_off_leader_steps_down_before_its_successor_is_elected() -> None:
    clock, store, (a, b) = managers(2)
    a.election.start()
    await clock.advance_settled(0.1)
    b.election.start()
    await clock.advance_settled(3 * TTL, step=0.1)
    assert leaders([a, b]) == ["m0"]

    cut_at = clock.now()
    a.link.cut()
    await clock.advance_settled(TTL + 0.5, step=0.05)
    assert leaders([a, b]) == ["m1"]
    (a_term,) = a.terms
    (b_term,) = b.terms
    assert a_term[1] <= cut_at + TTL  # stopped its controllers within ttl of its last keepalive
    assert a_term[1] <= b_term[0]  # ... and before anyone else led
    assert b_term[0] <= cut_at + TTL + 0.2  # the lease ran out, the watch saw it at once

    a.link.heal()  # the partition heals: a follows b
    await clock.advance_settled(2 * TTL, step=0.1)
    assert leaders([a, b]) == ["m1"] and a.election.leader == "m1"
    for m in (a, b):
        await m.election.stop()
    await store.close()


async def test_a_leader_that_still_believes_it_leads_is_stopped_by_its_first_write() -> None:
    clock, store, (a, b) = managers(2)
    a.election.start()
    await clock.advance_settled(0.1)
    b.election.start()
    await clock.advance_settled(TTL, step=0.1)
    assert leaders([a, b]) == ["m0"]

    a.link.lying = True  # paused: its lease runs out, b takes over, a hears nothing of it
    await clock.advance_settled(TTL + 0.5, step=0.1)
    assert a.election.leading and b.election.leading
    assert len(a.terms[0]) == 1  # a's controllers still run...
    with pytest.raises(LeadershipLostError):
        await a.fenced.put("/tasks/web/t1", b"by a")  # ... but cannot write
    assert await store.get("/tasks/web/t1") is None
    await clock.settle()
    assert leaders([a, b]) == ["m1"] and len(a.terms[0]) == 2  # a stepped down
    assert a.fenced.fence is None
    assert await b.fenced.put("/tasks/web/t1", b"by b")
    for m in (a, b):
        await m.election.stop()
    await store.close()


async def test_a_leader_whose_lease_is_revoked_steps_down_at_once() -> None:
    clock, store, (a, b) = managers(2)
    a.election.start()
    await clock.advance_settled(0.1)
    b.election.start()
    await clock.advance_settled(TTL, step=0.1)
    leader_key = await store.get(LEADER_KEY)
    assert leader_key is not None and leaders([a, b]) == ["m0"]

    revoked_at = clock.now()
    await store.revoke(leader_key.lease)  # etcdctl lease revoke, say
    await clock.settle()
    assert leaders([a, b]) == ["m1"]
    assert a.terms[0][1] == b.terms[0][0] == revoked_at
    for m in (a, b):
        await m.election.stop()
    await store.close()
