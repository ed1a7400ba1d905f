"""The store contract: one suite, every backend (memory, sqlite, etcd).

Lease time is the one thing the backends keep differently: memory and sqlite follow a FakeClock,
etcd its own clock, in real time and whole seconds. ``Backend.advance`` moves lease time forward
either way (for etcd by sleeping), so the lease test uses whole-second TTLs and short advances.
History too: memory and sqlite keep the last 100 revisions here, etcd keeps all until compacted
(``Backend.compact``). The etcd backend runs on one session etcd, each test under its own prefix.

After the contract: what only etcd does (several endpoints and failover, prefixes, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster, EtcdTlsFiles, make_tls_files
from warren.clocks import FakeClock
from warren.domain.errors import (
    CompactedError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from warren.ports import Compare, Delete, EventType, Put, WatchEvent
from warren.store import MemoryStore, SqliteStore, open_store
from warren.store.etcd import EtcdStore, EtcdTls

Store = MemoryStore | EtcdStore


async def _nothing(store: Store) -> None:
    """Memory and sqlite compact by themselves: they keep ``history=100`` revisions here."""


async def _compact(store: Store) -> None:
    assert isinstance(store, EtcdStore)
    await store.compact(store.revision)


@dataclass
class Backend:
    name: str
    open: Callable[[], Store]
    """A store on this backend's data: the same one (memory) or a new client of it."""
    advance: Callable[[float], Awaitable[None]]
    """Let lease time pass: a FakeClock's advance, or a real sleep for etcd."""
    compact: Callable[[Store], Awaitable[None]] = _nothing
    """Drop the history before the store's revision."""
    opened: list[Store] = field(default_factory=list)


@pytest.fixture(params=["memory", "sqlite", "etcd", "etcd-tls"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock()
    if request.param == "memory":
        shared = MemoryStore(clock, history=100)
        yield Backend("memory", lambda: shared, clock.advance_settled)
        return
    if request.param == "sqlite":
        yield Backend(
            "sqlite",
            lambda: SqliteStore(tmp_path / "state.db", clock, history=100),
            clock.advance_settled,
        )
        return
    tls: EtcdTls | None = None
    if request.param == "etcd-tls":  # https, and a client certificate that etcd asks for
        server, files = request.getfixturevalue("etcd_tls_server")
        tls = EtcdTls.load(str(files.ca), str(files.client_cert), str(files.client_key))
    else:
        server = request.getfixturevalue("etcd_server")
    prefix: str = request.getfixturevalue("etcd_prefix")

    def open_etcd() -> Store:
        store = EtcdStore(server.endpoints, prefix=prefix, tls=tls)
        backend.opened.append(store)
        return store

    backend = Backend(request.param, open_etcd, asyncio.sleep, _compact)
    yield backend
    # Remove this test's keys: no lease it granted can then change the revision of a later test.
    cleaner = EtcdStore(server.endpoints, prefix=prefix, tls=tls)
    await cleaner.delete("/", prefix=True)
    for store in [*backend.opened, cleaner]:
        await store.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.open()
    yield s
    await s.close()


async def take(
    it: AsyncIterator[list[WatchEvent]], n: int, timeout: float = 2.0
) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    while len(out) < n:
        out.extend(await asyncio.wait_for(it.__anext__(), timeout))
    return out


async def test_put_get_versions(store: Store) -> None:
    r1 = await store.put("/a", b"1")
    r2 = await store.put("/a", b"2")
    kv = await store.get("/a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r1, r2, 2)
    assert r2 == r1 + 1
    assert await store.get("/missing") is None


async def test_range_is_prefix_and_sorted(store: Store) -> None:
    for key in ["/t/b", "/t/a", "/u/a", "/t/c", "/ta"]:
        await store.put(key, b"x")
    kvs, rev = await store.range("/t/")
    assert [kv.key for kv in kvs] == ["/t/a", "/t/b", "/t/c"]
    assert rev == store.revision


async def test_txn_cas_conflict(store: Store) -> None:
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


async def test_txn_create_only_if_absent(store: Store) -> None:
    assert (await store.txn([Compare.absent("/x")], [Put("/x", b"1")])).succeeded
    assert not (await store.txn([Compare.absent("/x")], [Put("/x", b"2")])).succeeded
    kv = await store.get("/x")
    assert kv is not None and kv.value == b"1"


async def test_txn_is_atomic_one_revision(store: Store) -> None:
    res = await store.txn([], [Put("/m/1", b"a"), Put("/m/2", b"b"), Delete("/m/1")])
    kvs, _ = await store.range("/m/")
    assert [kv.key for kv in kvs] == ["/m/2"]
    assert kvs[0].mod_revision == res.revision


async def test_delete_prefix(store: Store) -> None:
    for key in ["/d/1", "/d/2", "/e/1"]:
        await store.put(key, b"x")
    await store.delete("/d/", prefix=True)
    kvs, _ = await store.range("/")
    assert [kv.key for kv in kvs] == ["/e/1"]


async def test_watch_from_revision_has_no_gaps(store: Store) -> None:
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


async def test_watch_sees_every_write_in_order(store: Store) -> None:
    _, rev = await store.range("/n/")
    watch = store.watch("/n/", rev + 1)
    for i in range(50):
        await store.put(f"/n/{i % 5}", str(i).encode())
    events = await take(watch, 50)
    assert [e.kv.value for e in events] == [str(i).encode() for i in range(50)]
    revs = [e.kv.mod_revision for e in events]
    assert revs == sorted(revs) and len(set(revs)) == 50
    await watch.aclose()


async def test_watch_from_compacted_revision_fails(store: Store, backend: Backend) -> None:
    first = await store.put("/c", b"first")
    for i in range(150):  # history=100 in the memory and sqlite fixtures
        await store.put("/c", str(i).encode())
    await backend.compact(store)
    with pytest.raises(CompactedError):
        await store.watch("/c", first).__anext__()


async def test_lease_expiry_deletes_keys_and_notifies(store: Store, backend: Backend) -> None:
    # A TTL of whole seconds (etcd's unit), and advances short enough for etcd's real time
    # that still leave 1.2 s of slack on a busy machine.
    lease = await store.grant(2)
    await store.put("/l/hb", b"alive", lease=lease)
    _, rev = await store.range("/l/")
    watch = store.watch("/l/", rev + 1)
    await backend.advance(0.8)
    await store.keepalive(lease)
    await backend.advance(0.8)
    assert await store.get("/l/hb") is not None  # kept alive: 1.6 s after the grant
    await backend.advance(1.6)  # 2.4 s after the keepalive: expired
    # etcd's lessor revokes expired leases every 0.5 s: wait for the event, not a fixed time.
    (event,) = await take(watch, 1, timeout=3.0)
    assert event.type == EventType.DELETE and event.kv.key == "/l/hb"
    assert await store.get("/l/hb") is None
    with pytest.raises(NotFoundError):
        await store.keepalive(lease)
    with pytest.raises(NotFoundError):
        await store.put("/l/again", b"x", lease=lease)
    await watch.aclose()


async def test_revoke_deletes_bound_keys(store: Store) -> None:
    lease = await store.grant(60)
    await store.put("/r/1", b"x", lease=lease)
    await store.put("/r/2", b"x")
    await store.revoke(lease)
    kvs, _ = await store.range("/r/")
    assert [kv.key for kv in kvs] == ["/r/2"]


async def test_close_ends_watchers(store: Store) -> None:
    _, rev = await store.range("/")
    watch = store.watch("/", rev + 1)
    pending = asyncio.ensure_future(watch.__anext__())
    await asyncio.sleep(0)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 2)


async def test_restart_keeps_every_acknowledged_write(backend: Backend) -> None:
    store = first = backend.open()
    lease = await store.grant(30)
    revs = [await store.put(f"/p/{i}", str(i).encode()) for i in range(20)]
    await store.put("/p/leased", b"x", lease=lease)
    await store.delete("/p/3")
    last = store.revision
    if backend.name != "memory":
        # No close(): an acknowledged write must be durable already, as after kill -9 (sqlite:
        # on disk; etcd: in the cluster, seen by a new client).
        store = backend.open()
    kvs, rev = await store.range("/p/")
    assert rev == last
    assert len(kvs) == 20 and "/p/3" not in {kv.key for kv in kvs}
    kv0 = await store.get("/p/0")
    assert kv0 is not None and kv0.mod_revision == revs[0]
    await store.keepalive(lease)  # leases survive too
    nxt = await store.put("/p/new", b"y")
    assert nxt == last + 1
    await store.close()
    await first.close()


# ── etcd only: what the other backends have no counterpart for ──────────────────────────────────


async def test_etcd_prefixes_keep_clusters_apart(etcd_server: EtcdCluster) -> None:
    # "/w" must not see "/w2": a prefix is a whole path segment.
    a = EtcdStore(etcd_server.endpoints, prefix="/apart/w")
    b = EtcdStore(etcd_server.endpoints, prefix="/apart/w2")
    try:
        _, rev = await a.range("")
        watch = a.watch("", rev + 1)
        await b.put("/k", b"b")
        await a.put("/k", b"a")
        (event,) = await take(watch, 1)
        assert (event.kv.key, event.kv.value) == ("/k", b"a")
        for prefix in ("", "/"):
            kvs, _ = await a.range(prefix)
            assert [(kv.key, kv.value) for kv in kvs] == [("/k", b"a")]
        await a.delete("", prefix=True)
        assert await a.get("/k") is None
        kv = await b.get("/k")
        assert kv is not None and kv.value == b"b"
        await watch.aclose()
    finally:
        await b.delete("/", prefix=True)
        await a.close()
        await b.close()


async def test_etcd_txn_folds_ops_on_one_key(etcd_server: EtcdCluster, etcd_prefix: str) -> None:
    """etcd refuses a txn that writes a key twice: the store sends the net effect instead."""
    store = EtcdStore(etcd_server.endpoints, prefix=etcd_prefix)
    res = await store.txn([], [Put("/f/a", b"1"), Put("/f/a", b"2"), Put("/f/b", b"x")])
    kv = await store.get("/f/a")
    assert kv is not None and (kv.value, kv.version, kv.mod_revision) == (b"2", 1, res.revision)
    await store.txn([], [Put("/f/c", b"1"), Delete("/f/", prefix=True)])
    assert (await store.range("/f/"))[0] == []
    with pytest.raises(ValidationError, match="after deleting it"):
        await store.txn([], [Delete("/f/", prefix=True), Put("/f/a", b"3")])
    await store.delete("/", prefix=True)
    await store.close()


async def test_etcd_unreachable_is_one_clear_line(etcd_server: EtcdCluster) -> None:
    with socket.socket() as s1, socket.socket() as s2:  # two ports with nothing listening
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        endpoints = [f"127.0.0.1:{s.getsockname()[1]}" for s in (s1, s2)]
    store = EtcdStore(endpoints, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        await store.get("/k")
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert "\n" not in message and all(e in message for e in endpoints), message
    assert "etcd is unreachable at" in message and "Connection refused" in message
    with pytest.raises(UnavailableError):
        await store.watch("/", 1).__anext__()
    await store.close()
    # --store: a dead endpoint first, a live one second, a prefix of its own.
    url = f"etcd://{endpoints[0]},{etcd_server.endpoints[0]}/url-test"
    via_url = open_store(url, Path("/nonexistent"), FakeClock())
    assert isinstance(via_url, EtcdStore) and via_url.prefix == "/url-test"
    await via_url.put("/k", b"v")
    assert (kv := await via_url.get("/k")) is not None and kv.value == b"v"
    await via_url.delete("/", prefix=True)
    await via_url.close()
    with pytest.raises(ValidationError):
        open_store("etcd://", Path("/nonexistent"), FakeClock())
    with pytest.raises(ValidationError):
        open_store("etcd://localhost", Path("/nonexistent"), FakeClock())


async def refusal(endpoint: str, tls: EtcdTls | None) -> str:
    """The one line a store with ``tls`` gets from the TLS etcd at ``endpoint``."""
    store = EtcdStore([endpoint], timeout=0.5, tls=tls)
    try:
        with pytest.raises(UnavailableError) as caught:
            await store.put("/k", b"v")
    finally:
        await store.close()
    message = str(caught.value)
    assert "\n" not in message and f"etcd is unreachable at {endpoint}" in message, message
    return message


async def test_etcd_tls_refuses_clients_without_its_certificates(
    etcd_tls_server: tuple[EtcdCluster, EtcdTlsFiles], tmp_path: Path
) -> None:
    server, files = etcd_tls_server
    (endpoint,) = server.endpoints
    ca = files.ca.read_bytes()
    other = make_tls_files(tmp_path)  # another CA, and a client certificate it signed
    refused = "TLS: it refused this client's certificate, or wants one"
    assert refused in await refusal(endpoint, EtcdTls(ca=ca))
    foreign = EtcdTls(ca, other.client_cert.read_bytes(), other.client_key.read_bytes())
    assert refused in await refusal(endpoint, foreign)
    # The other way round: this client does not trust etcd's certificate.
    mine = EtcdTls(
        other.ca.read_bytes(), files.client_cert.read_bytes(), files.client_key.read_bytes()
    )
    message = await refusal(endpoint, mine)
    assert "TLS: its certificate does not verify with the CA given (" in message, message
    # Without TLS at all (etcd:// to an https etcd): refused too, in one line.
    assert "Socket closed (if etcd serves TLS: --store etcds://)" in await refusal(endpoint, None)


def test_etcd_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    url, here, clock = "etcds://127.0.0.1:2379", tmp_path, FakeClock()
    cases = [
        ({"etcd_cert": str(files.client_cert)}, "give both --etcd-cert and --etcd-key"),
        ({"etcd_ca": str(tmp_path / "absent.pem")}, "cannot read --etcd-ca"),
        ({"etcd_ca": str(files.client_key)}, "holds no PEM certificate"),
        (
            {"etcd_cert": str(files.client_cert), "etcd_key": str(files.server_key)},
            "are not a PEM certificate and its key",
        ),
    ]
    for flags, words in cases:
        with pytest.raises(ValidationError) as caught:
            open_store(url, here, clock, **flags)
        assert words in caught.value.message, caught.value.message
    with pytest.raises(ValidationError) as caught:  # TLS files for a store without TLS
        open_store("etcd://127.0.0.1:2379", here, clock, etcd_ca=str(files.ca))
    assert "etcds://" in caught.value.message
    store = open_store(url, here, clock, etcd_ca=str(files.ca))  # no client certificate: allowed
    assert isinstance(store, EtcdStore) and store.prefix == "/warren"


@pytest.mark.integration
async def test_etcd_fails_over_when_the_leader_dies(
    etcd_cluster: EtcdCluster, caplog: pytest.LogCaptureFixture
) -> None:
    leader = etcd_cluster.leader()
    others = [m.endpoint for m in etcd_cluster.members if m is not leader]
    # The leader first: the store connects to it, so killing it breaks the store's connection
    # and its watch stream.
    store = EtcdStore([leader.endpoint, *others], prefix="/failover")
    loop = asyncio.get_running_loop()
    seen: list[WatchEvent] = []
    arrived = asyncio.Event()

    async def follow(watch: AsyncIterator[list[WatchEvent]]) -> None:
        async for batch in watch:
            seen.extend(batch)
            arrived.set()

    async def seen_up_to(revision: int) -> None:
        async with asyncio.timeout(10):
            while not seen or seen[-1].kv.mod_revision < revision:
                arrived.clear()
                await arrived.wait()

    caplog.set_level(logging.WARNING, logger="warren.store.etcd")
    _, rev = await store.range("/f/")
    follower = asyncio.create_task(follow(store.watch("/f/", rev + 1)))
    try:
        written = [await store.put(f"/f/{i}", b"before") for i in range(20)]
        leader.kill()
        started = loop.time()
        # A read first: it fails over transparently. (A write sent over the dead connection
        # before gRPC noticed would raise UnavailableError "may or may not have been applied".)
        assert (await store.get("/f/0")) is not None
        written.append(await store.put("/f/after", b"x"))
        kv = await store.get("/f/after")
        assert kv is not None and kv.value == b"x"
        failover = loop.time() - started
        assert failover < 5.0, f"failover took {failover:.2f}s"
        written += [await store.put(f"/f/{i}", b"after") for i in range(20)]
        await seen_up_to(written[-1])
        # Every write exactly once, in order, across the reconnect.
        assert [e.kv.mod_revision for e in seen] == written
        assert [e.kv.value for e in seen] == [b"before"] * 20 + [b"x"] + [b"after"] * 20
        assert any("resuming from revision" in r.getMessage() for r in caplog.records)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await store.close()
