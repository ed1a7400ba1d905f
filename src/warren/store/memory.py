"""The in-memory store: the reference implementation of the etcd-shaped StateStore API.

It is also the engine of the sqlite store, which keeps this whole state in memory and writes every
change to disk before it becomes visible (``_persist``). No other module may know how state is
kept; everything above talks to ``warren.ports.StateStore``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from ..domain.errors import CompactedError, NotFoundError, UnavailableError, ValidationError
from ..ports import (
    Clock,
    Compare,
    Delete,
    EventType,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
)

__all__ = ["MemoryStore"]

_CLOSED: list[WatchEvent] = []  # sentinel put in watcher queues on close


@dataclass
class _Lease:
    id: int
    ttl: float
    deadline: float
    keys: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Watcher:
    prefix: str
    queue: asyncio.Queue[list[WatchEvent]]


class MemoryStore:
    """``history`` is how many revisions of change events are kept for watches that start in the
    past; older ones are compacted away (a watch from there raises CompactedError)."""

    def __init__(self, clock: Clock, history: int = 10_000, reap_interval: float = 0.1) -> None:
        self._clock = clock
        self._data: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for prefix ranges
        self._revision = 0
        self._log: deque[tuple[int, list[WatchEvent]]] = deque()
        self._history = history
        self._compacted = 0  # every revision <= this is gone from the log
        self._watchers: list[_Watcher] = []
        self._leases: dict[int, _Lease] = {}
        self._next_expiry = float("inf")  # no lease ends before this: most calls skip the scan
        self._next_lease = 1
        self._reap_interval = reap_interval
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # ── reads ────────────────────────────────────────────────────────────────────────────────

    @property
    def revision(self) -> int:
        return self._revision

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        self._expire_leases()
        return self._data.get(key)

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        self._check_open()
        self._expire_leases()
        return [self._data[k] for k in self._prefix_keys(prefix)], self._revision

    def _prefix_keys(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self._keys, prefix)
        end = start
        while end < len(self._keys) and self._keys[end].startswith(prefix):
            end += 1
        return self._keys[start:end]

    # ── writes ───────────────────────────────────────────────────────────────────────────────

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return (await self.txn((), (Put(key, value, lease),))).revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        return (await self.txn((), (Delete(key, prefix),))).revision

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._check_open()
        self._expire_leases()
        ok = all(self._holds(c) for c in compares)
        self._write(success if ok else failure)
        return TxnResult(ok, self._revision)

    def _holds(self, c: Compare) -> bool:
        kv = self._data.get(c.key)
        actual: int | bytes
        if c.target == "value":
            actual = kv.value if kv else b""
        elif kv is None:
            actual = 0
        else:
            actual = getattr(kv, c.target)
        expected = c.value
        if isinstance(actual, bytes) != isinstance(expected, bytes):
            raise ValidationError(f"compare of {c.target} needs a matching value type", "compare")
        if c.op == "==":
            return actual == expected
        if c.op == "!=":
            return actual != expected
        if c.op == "<":
            return actual < expected  # type: ignore[operator]
        return actual > expected  # type: ignore[operator]

    def _write(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` as one revision: compute the events, persist them, then publish."""
        if not ops:
            return
        rev = self._revision + 1
        staged: dict[str, KeyValue | None] = {}
        events: list[WatchEvent] = []

        def current(key: str) -> KeyValue | None:
            return staged[key] if key in staged else self._data.get(key)

        for op in ops:
            if isinstance(op, Put):
                if op.lease and op.lease not in self._leases:
                    raise NotFoundError(f"lease {op.lease} not found (expired or revoked)")
                prev = current(op.key)
                kv = KeyValue(
                    key=op.key,
                    value=op.value,
                    create_revision=prev.create_revision if prev else rev,
                    mod_revision=rev,
                    version=prev.version + 1 if prev else 1,
                    lease=op.lease,
                )
                staged[op.key] = kv
                events.append(WatchEvent(EventType.PUT, kv))  # no prev: history stays small
            else:
                if op.prefix:
                    keys = [k for k in self._prefix_keys(op.key) if current(k) is not None]
                    keys += [k for k, v in staged.items() if v and k.startswith(op.key)]
                    keys = sorted(set(keys))
                else:
                    keys = [op.key] if current(op.key) is not None else []
                for key in keys:
                    prev = current(key)
                    assert prev is not None
                    staged[key] = None
                    tomb = KeyValue(key, b"", 0, rev, 0, 0)
                    events.append(WatchEvent(EventType.DELETE, tomb, prev))
        if not events:
            return
        self._persist(rev, staged)
        self._apply(rev, staged)
        self._publish(rev, events)

    def _persist(self, revision: int, changes: dict[str, KeyValue | None]) -> None:
        """Hook for durable stores: make ``changes`` durable or raise; nothing is visible yet."""

    def _apply(self, revision: int, changes: dict[str, KeyValue | None]) -> None:
        self._revision = revision
        for key, kv in changes.items():
            old = self._data.get(key)
            if old is not None and old.lease:
                lease = self._leases.get(old.lease)
                if lease:
                    lease.keys.discard(key)
            if kv is None:
                if old is not None:
                    del self._data[key]
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if old is None:
                    bisect.insort(self._keys, key)
                self._data[key] = kv
                if kv.lease:
                    self._leases[kv.lease].keys.add(key)

    def _publish(self, revision: int, events: list[WatchEvent]) -> None:
        self._log.append((revision, events))
        while len(self._log) > self._history:
            self._compacted = self._log.popleft()[0]
        for w in self._watchers:
            batch = [e for e in events if e.kv.key.startswith(w.prefix)]
            if batch:
                w.queue.put_nowait(batch)

    # ── watches ──────────────────────────────────────────────────────────────────────────────

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[list[WatchEvent]]:
        self._check_open()
        if from_revision <= self._compacted:
            raise CompactedError(
                f"revision {from_revision} is compacted (oldest kept: {self._compacted + 1})"
            )
        watcher = _Watcher(prefix, asyncio.Queue())
        # Backlog and registration happen with no await in between: no event can slip through.
        backlog = [
            batch
            for rev, events in self._log
            if rev >= from_revision
            for batch in [[e for e in events if e.kv.key.startswith(prefix)]]
            if batch
        ]
        self._watchers.append(watcher)
        try:
            for batch in backlog:
                yield batch
            while True:
                batch = await watcher.queue.get()
                if batch is _CLOSED:
                    return
                yield batch
        finally:
            with contextlib.suppress(ValueError):
                self._watchers.remove(watcher)

    # ── leases ───────────────────────────────────────────────────────────────────────────────

    async def grant(self, ttl: float) -> int:
        self._check_open()
        if ttl <= 0:
            raise ValidationError("must be > 0", "ttl")
        lease = _Lease(self._next_lease, ttl, self._clock.now() + ttl)
        self._next_expiry = min(self._next_expiry, lease.deadline)
        self._next_lease += 1
        self._persist_lease(lease.id, ttl, self._next_lease)
        self._leases[lease.id] = lease
        self._ensure_reaper()
        return lease.id

    async def keepalive(self, lease: int) -> None:
        self._check_open()
        self._expire_leases()
        found = self._leases.get(lease)
        if found is None:
            raise NotFoundError(f"lease {lease} not found (expired or revoked)")
        found.deadline = self._clock.now() + found.ttl

    async def revoke(self, lease: int) -> None:
        self._check_open()
        self._drop_lease(lease)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        self._write([Delete(k) for k in sorted(lease.keys)])
        self._persist_lease(lease_id, None, self._next_lease)
        del self._leases[lease_id]

    def _persist_lease(self, lease_id: int, ttl: float | None, next_lease: int) -> None:
        """Hook for durable stores: record a granted (ttl) or ended (None) lease."""

    def _expire_leases(self) -> None:
        now = self._clock.now()
        if now < self._next_expiry:
            return
        for lease in [lease for lease in self._leases.values() if lease.deadline <= now]:
            self._drop_lease(lease.id)
        # Keepalives only push deadlines later, so this stays a lower bound until the next scan.
        self._next_expiry = min((lease.deadline for lease in self._leases.values()), default=now)
        if not self._leases:
            self._next_expiry = float("inf")

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        # Expiry is also checked on every operation; this loop makes an expired lease's keys
        # disappear (and watchers hear of it) even when nobody touches the store.
        while not self._closed and self._leases:
            await self._clock.sleep(self._reap_interval)
            if not self._closed:
                self._expire_leases()

    # ── life cycle ───────────────────────────────────────────────────────────────────────────

    def _check_open(self) -> None:
        if self._closed:
            raise UnavailableError("the store is closed")

    def _restore(
        self, revision: int, kvs: list[KeyValue], leases: dict[int, float], next_lease: int
    ) -> None:
        """Load a persisted state (used by the sqlite store on open). Leases get a fresh ttl, as
        etcd does after a leader change; history before this point counts as compacted."""
        now = self._clock.now()
        self._revision = self._compacted = revision
        self._next_lease = next_lease
        self._leases = {i: _Lease(i, ttl, now + ttl) for i, ttl in leases.items()}
        self._next_expiry = min((lease.deadline for lease in self._leases.values()), default=now)
        for kv in kvs:
            if kv.lease and kv.lease not in self._leases:
                kv = replace(kv, lease=0)
            self._data[kv.key] = kv
            if kv.lease:
                self._leases[kv.lease].keys.add(kv.key)
        self._keys = sorted(self._data)

    def start(self) -> None:
        """Start background lease expiry (needs a running loop)."""
        if self._leases:
            self._ensure_reaper()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._watchers:
            w.queue.put_nowait(_CLOSED)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
