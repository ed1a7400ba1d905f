"""Fencing: the StateStore a leader's controllers write through, so that a manager that lost its
leadership without knowing it (a long GC pause, a partition) cannot write any more.

Every write becomes a txn guarded by ``Compare(LEADER_KEY, "create_revision", "==", fence)``,
where ``fence`` is the revision at which this manager created the leader key. A new leader
creates the key anew (the old one was deleted with its lease), so its create_revision differs:
from that instant every txn of the old leader fails, whatever it believes. Example: manager A
creates ``/leader`` at revision 120 and pauses; its lease expires, B creates ``/leader`` at 131;
A wakes and sends ``txn([create_revision(/leader) == 120, mod_revision(/tasks/web/…) == 118],
[put …])`` — it fails on the first compare, and A steps down.

A failed txn is an ordinary lost race unless the leader key says otherwise: only then (one extra
``get``, on failure only) is it ``LeadershipLostError``, and the ``on_lost`` callback of the
current term tells the elector to step down — not to retry. While no fence is armed (this
manager follows), every write is refused at once without reaching the store.

Reads, watches and leases pass through unchanged: followers read freely, and user writes (the
API's) do not go through this store at all.

Must not import anything of Warren's but ``domain`` and ``ports``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

from ..domain.errors import ConflictError, ValidationError
from ..ports import Compare, Delete, KeyValue, Op, Put, StateStore, TxnResult, WatchEvent

__all__ = ["LEADER_KEY", "FencedStore", "LeadershipLostError"]

log = logging.getLogger("warren.store")

LEADER_KEY = "/leader"
"""Who leads the managers sharing a store: the leader's name, bound to its lease."""


class LeadershipLostError(ConflictError):
    """A fenced write was refused because this manager no longer leads (the leader key is gone
    or was created by another manager), or because it does not lead at all. Never retried: the
    manager steps down — stops its controllers — and campaigns again.

    A ConflictError, like the lost compare-and-swap it is, so that a controller's sync that
    meets it ends quietly while the elector stops the controllers."""

    code = "not_leader"


class FencedStore:
    """``store`` with every write fenced by the leader key's create_revision (see the module's
    docstring). ``arm`` starts a term, ``disarm`` ends it; the owner of ``store`` closes it."""

    def __init__(self, store: StateStore, key: str = LEADER_KEY) -> None:
        self.inner = store
        self.key = key
        self._fence: int | None = None
        self._on_lost: Callable[[str], None] | None = None

    @property
    def fence(self) -> int | None:
        """The create_revision of the leader key this manager holds; None while it follows."""
        return self._fence

    def arm(self, fence: int, on_lost: Callable[[str], None]) -> None:
        """Write as the leader that created the leader key at revision ``fence``; call
        ``on_lost(reason)`` when a write finds that this leadership is over."""
        self._fence, self._on_lost = fence, on_lost

    def disarm(self) -> None:
        """Refuse every write from now on (before anything else when stepping down)."""
        self._fence, self._on_lost = None, None

    # ── reads, watches, leases: unfenced ─────────────────────────────────────────────────────

    async def get(self, key: str) -> KeyValue | None:
        return await self.inner.get(key)

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self.inner.range(prefix)

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[list[WatchEvent]]:
        return self.inner.watch(prefix, from_revision)

    async def grant(self, ttl: float) -> int:
        return await self.inner.grant(ttl)

    async def keepalive(self, lease: int) -> None:
        await self.inner.keepalive(lease)

    async def revoke(self, lease: int) -> None:
        await self.inner.revoke(lease)

    async def close(self) -> None:
        """Nothing to do: the store is its owner's to close."""

    # ── writes: fenced ───────────────────────────────────────────────────────────────────────

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        if failure:
            # A failed fence runs the failure ops: they would be written by a deposed leader.
            raise ValidationError("a fenced txn cannot have failure ops", "txn")
        fence, on_lost = self._fence, self._on_lost
        if fence is None:
            raise LeadershipLostError("this manager does not lead: it does not write")
        guard = Compare(self.key, "create_revision", "==", fence)
        result = await self.inner.txn([guard, *compares], success)
        if not result.succeeded:
            leader = await self.inner.get(self.key)
            if leader is None or leader.create_revision != fence:
                reason = (
                    "the leader key is gone"
                    if leader is None
                    else f"another manager leads since revision {leader.create_revision}"
                )
                log.warning("a write was fenced off (%s): stepping down", reason)
                if on_lost is not None and self._fence == fence:
                    on_lost(reason)
                raise LeadershipLostError(f"this manager no longer leads: {reason}")
        return result

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return (await self.txn((), (Put(key, value, lease),))).revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        return (await self.txn((), (Delete(key, prefix),))).revision
