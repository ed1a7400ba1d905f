"""The store contract: one suite, every backend (memory, sqlite; etcd joins later)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from warren.clocks import FakeClock
from warren.domain.errors import CompactedError, NotFoundError
from warren.ports import Compare, Delete, EventType, Put, WatchEvent
from warren.store import MemoryStore, SqliteStore

Factory = Callable[[], MemoryStore]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, FakeClock, Factory]:
    clock = FakeClock()
    if request.param == "memory":
        shared = MemoryStore(clock, history=100)
        return "memory", clock, lambda: shared
    return "sqlite", clock, lambda: SqliteStore(tmp_path / "state.db", clock, history=100)


@pytest.fixture
async def store(backend: tuple[str, FakeClock, Factory]) -> AsyncIterator[MemoryStore]:
    s = backend[2]()
    yield s
    await s.close()


async def take(it: AsyncIterator[list[WatchEvent]], n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    while len(out) < n:
        out.extend(await asyncio.wait_for(it.__anext__(), 2))
    return out


async def test_put_get_versions(store: MemoryStore) -> None:
    r1 = await store.put("/a", b"1")
    r2 = await store.put("/a", b"2")
    kv = await store.get("/a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r1, r2, 2)
    assert r2 == r1 + 1
    assert await store.get("/missing") is None


async def test_range_is_prefix_and_sorted(store: MemoryStore) -> None:
    for key in ["/t/b", "/t/a", "/u/a", "/t/c", "/ta"]:
        await store.put(key, b"x")
    kvs, rev = await store.range("/t/")
    assert [kv.key for kv in kvs] == ["/t/a", "/t/b", "/t/c"]
    assert rev == store.revision


async def test_txn_cas_conflict(store: MemoryStore) -> None:
    await store.put("/k", b"v1")
    kv = await store.get("/k")
    assert kv is not None
    ok = await store.txn([Compare.unchanged(kv)], [Put("/k", b"v2")])
    assert ok.succeeded
    lost = await store.txn([Compare.unchanged(kv)], [Put("/k", b"v3")], [Put("/lost", b"1")])
    assert not lost.succeeded
    current = await store.get("/k")
    assert current is not None and current.value == b"v2"
    assert await store.get("/lost") is not None


async def test_txn_create_only_if_absent(store: MemoryStore) -> None:
    assert (await store.txn([Compare.absent("/x")], [Put("/x", b"1")])).succeeded
    assert not (await store.txn([Compare.absent("/x")], [Put("/x", b"2")])).succeeded
    kv = await store.get("/x")
    assert kv is not None and kv.value == b"1"


async def test_txn_is_atomic_one_revision(store: MemoryStore) -> None:
    res = await store.txn([], [Put("/m/1", b"a"), Put("/m/2", b"b"), Delete("/m/1")])
    kvs, _ = await store.range("/m/")
    assert [kv.key for kv in kvs] == ["/m/2"]
    assert kvs[0].mod_revision == res.revision


async def test_delete_prefix(store: MemoryStore) -> None:
    for key in ["/d/1", "/d/2", "/e/1"]:
        await store.put(key, b"x")
    await store.delete("/d/", prefix=True)
    kvs, _ = await store.range("/")
    assert [kv.key for kv in kvs] == ["/e/1"]


async def test_watch_from_revision_has_no_gaps(store: MemoryStore) -> None:
    first = await store.put("/w/a", b"1")
    await store.put("/other", b"x")
    await store.put("/w/b", b"2")
    watch = store.watch("/w/", first)
    events = await take(watch, 2)
    assert [(e.type, e.kv.key) for e in events] == [
        (EventType.PUT, "/w/a"),
        (EventType.PUT, "/w/b"),
    ]
    await store.delete("/w/a")
    (deleted,) = await take(watch, 1)
    assert deleted.type == EventType.DELETE and deleted.prev is not None
    assert deleted.prev.value == b"1"
    await watch.aclose()


async def test_watch_sees_every_write_in_order(store: MemoryStore) -> None:
    _, rev = await store.range("/n/")
    watch = store.watch("/n/", rev + 1)
    for i in range(50):
        await store.put(f"/n/{i % 5}", str(i).encode())
    events = await take(watch, 50)
    assert [e.kv.value for e in events] == [str(i).encode() for i in range(50)]
    revs = [e.kv.mod_revision for e in events]
    assert revs == sorted(revs) and len(set(revs)) == 50
    await watch.aclose()


async def test_watch_from_compacted_revision_fails(store: MemoryStore) -> None:
    for i in range(150):  # history=100 in these fixtures
        await store.put("/c", str(i).encode())
    with pytest.raises(CompactedError):
        await store.watch("/c", 1).__anext__()


async def test_lease_expiry_deletes_keys_and_notifies(
    store: MemoryStore, backend: tuple[str, FakeClock, Factory]
) -> None:
    clock = backend[1]
    lease = await store.grant(2.0)
    await store.put("/l/hb", b"alive", lease=lease)
    _, rev = await store.range("/l/")
    watch = store.watch("/l/", rev + 1)
    await clock.advance_settled(1.5)
    await store.keepalive(lease)
    await clock.advance_settled(1.5)
    assert await store.get("/l/hb") is not None  # kept alive
    await clock.advance_settled(2.5)
    assert await store.get("/l/hb") is None
    (event,) = await take(watch, 1)
    assert event.type == EventType.DELETE
    with pytest.raises(NotFoundError):
        await store.keepalive(lease)
    with pytest.raises(NotFoundError):
        await store.put("/l/again", b"x", lease=lease)
    await watch.aclose()


async def test_revoke_deletes_bound_keys(store: MemoryStore) -> None:
    lease = await store.grant(60)
    await store.put("/r/1", b"x", lease=lease)
    await store.put("/r/2", b"x")
    await store.revoke(lease)
    kvs, _ = await store.range("/r/")
    assert [kv.key for kv in kvs] == ["/r/2"]


async def test_close_ends_watchers(store: MemoryStore) -> None:
    watch = store.watch("/", store.revision + 1)
    pending = asyncio.ensure_future(watch.__anext__())
    await asyncio.sleep(0)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 2)


async def test_restart_keeps_every_acknowledged_write(
    backend: tuple[str, FakeClock, Factory],
) -> None:
    name, _, factory = backend
    store = factory()
    lease = await store.grant(30)
    revs = [await store.put(f"/p/{i}", str(i).encode()) for i in range(20)]
    await store.put("/p/leased", b"x", lease=lease)
    await store.delete("/p/3")
    last = store.revision
    if name == "sqlite":
        # No close(): an acknowledged write must be on disk already, as after kill -9.
        store = factory()
    kvs, rev = await store.range("/p/")
    assert rev == last
    assert len(kvs) == 20 and "/p/3" not in {kv.key for kv in kvs}
    kv0 = await store.get("/p/0")
    assert kv0 is not None and kv0.mod_revision == revs[0]
    await store.keepalive(lease)  # leases survive too
    nxt = await store.put("/p/new", b"y")
    assert nxt == last + 1
    await store.close()
