"""Leader election among the managers that share one store (etcd): exactly one leader runs the
controllers that write; the others serve the API and wait.

    campaign  grant a lease of ``ttl``; txn: if LEADER_KEY is absent, put it (our name) bound to
              the lease. The txn's revision is the key's create_revision: the fence.
    lead      arm the FencedStore with the fence, start the controllers, keep the lease alive
              every ttl/3 — until the first sign of loss: a keepalive that fails or is not
              confirmed before the lease could have expired, the leader key deleted or created
              anew by someone else, a fenced write refused. Then disarm the fence first (no
              write from this instant), stop the controllers, revoke the lease.
    follow    watch LEADER_KEY; campaign again as soon as it is deleted — by its leader's
              revoke (a clean stop hands over at once) or by its lease's expiry (a crashed
              leader: within ttl, plus etcd's expiry check every 0.5 s).

Worked example with ttl = 2 s: A leads, keepalives at 0.67 s intervals. A is SIGKILLed at
t = 10.0, its last keepalive was at 9.8; etcd expires the lease at ~11.8 to 12.3 and deletes the
key; B's watch sees the delete and B's txn creates the key a few ms later; B's controllers
resync from the store and the rollout goes on. Had A only paused, its first write after waking
fails on the fence and A steps down without retrying.

Must not import anything of Warren's but ``domain``, ``ports`` and ``store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..domain.errors import NotFoundError, WarrenError
from ..ports import Clock, Compare, EventType, KeyValue, Put, StateStore
from ..store.fencing import LEADER_KEY, FencedStore

__all__ = ["DEFAULT_TTL", "Election"]

log = logging.getLogger("warren.control")

DEFAULT_TTL = 2.0
"""Seconds a leader's lease lasts without a keepalive: how long a crashed leader delays the
takeover. (etcd counts leases in whole seconds, and raises a ttl below 1.5 election timeouts.)"""

_REVOKE_TIMEOUT = 1.0
"""Bound on the best-effort revoke when stepping down: past it, the lease expires by itself."""


def _leader_of(kv: KeyValue) -> tuple[str, str | None]:
    """The leader's name and API URL, from its key."""
    try:
        value = json.loads(kv.value)
        if isinstance(value, dict):
            return str(value["name"]), value.get("api") or None
    except (ValueError, KeyError):
        pass
    return "?", None


def _name_of(kv: KeyValue) -> str:
    return _leader_of(kv)[0]


class Election:
    """Campaigns for ``name`` on ``store`` until stopped; calls ``on_elected`` when this manager
    starts leading and ``on_deposed`` when it stops (both awaited, both quick). ``fenced`` is the
    store the controllers write through: armed for the length of each term."""

    def __init__(
        self,
        store: StateStore,
        fenced: FencedStore,
        name: str,
        clock: Clock,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
        ttl: float = DEFAULT_TTL,
        key: str = LEADER_KEY,
        api: str = "",
    ) -> None:
        self._store = store
        self._fenced = fenced
        self.name = name
        self._clock = clock
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.ttl = ttl
        self.key = key
        self.leading = False
        self.leader: str | None = None
        """The leader's name as last seen (ours while we lead); None while nobody leads."""
        self.api = api
        """Our API's URL, in the leader key while we lead: where the other nodes send their
        ingress's traffic for the analysis."""
        self.leader_api: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="election")

    async def stop(self) -> None:
        """Step down (the lease is revoked: another manager takes over at once) and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ── the loop: follow, campaign, lead ─────────────────────────────────────────────────────

    async def _run(self) -> None:
        pause = self.ttl / 3
        while True:
            try:
                current = await self._read()
                while True:
                    if current is None:
                        self.leader = self.leader_api = None
                        current = await self._campaign()
                        continue
                    self.leader, self.leader_api = _leader_of(current)
                    current = await self._until_changed(current.create_revision)
            except asyncio.CancelledError:
                raise
            except WarrenError as exc:
                log.warning("election: %s; trying again in %.1fs", exc, pause)
            except Exception:
                log.exception("election failed; trying again in %.1fs", pause)
            await self._clock.sleep(pause)

    async def _read(self) -> KeyValue | None:
        kv, _ = await self._read_at()
        return kv

    async def _read_at(self) -> tuple[KeyValue | None, int]:
        """The leader key (None when vacant) and the store revision it was read at. (A range,
        not a get: the revision to watch from must be recent, not the key's own, which may be
        compacted away.)"""
        kvs, revision = await self._store.range(self.key)
        return next((kv for kv in kvs if kv.key == self.key), None), revision

    async def _until_changed(self, create_revision: int) -> KeyValue | None:
        """Wait until the leader key created at ``create_revision`` is deleted or replaced;
        return the new one (None: vacant). Outages of the store only delay the answer."""
        while True:
            try:
                current, revision = await self._read_at()
                if current is None or current.create_revision != create_revision:
                    return current
                events = self._store.watch(self.key, revision + 1)
                try:
                    async for batch in events:
                        for event in batch:
                            if event.kv.key != self.key:  # the watch is on a prefix
                                continue
                            if event.type == EventType.DELETE:
                                return None
                            if event.kv.create_revision != create_revision:
                                return event.kv
                finally:
                    close = getattr(events, "aclose", None)  # end the stream now, not at GC
                    if close is not None:
                        await close()
                return None  # the store closed: nothing more to wait for
            except WarrenError as exc:  # compacted, or etcd away for long: read again
                log.info("election: watch on %s ended (%s); reading again", self.key, exc)
            await self._clock.sleep(self.ttl / 3)

    async def _campaign(self) -> KeyValue | None:
        """Try to become the leader; lead if so (until the term ends). Returns the leader key
        as it is afterwards: the winner's when we lost, re-read after our term."""
        granted_at = self._clock.now()
        lease = await self._store.grant(self.ttl)
        value = json.dumps({"name": self.name, "since": granted_at, "api": self.api}).encode()
        try:
            res = await self._store.txn([Compare.absent(self.key)], [Put(self.key, value, lease)])
        except BaseException:
            # Unknown outcome: if the key was written, the revoke deletes it with the lease.
            await self._revoke(lease)
            raise
        if not res.succeeded:
            await self._revoke(lease)
            return await self._read()
        await self._lead(lease, res.revision, granted_at)
        return await self._read()

    async def _lead(self, lease: int, fence: int, granted_at: float) -> None:
        fenced_off: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_lost(reason: str) -> None:
            if not fenced_off.done():
                fenced_off.set_result(f"a write was fenced off: {reason}")

        self._fenced.arm(fence, on_lost)
        self.leading, self.leader, self.leader_api = True, self.name, self.api or None
        log.info("leading the managers (fence: revision %d, lease ttl %gs)", fence, self.ttl)
        ends: list[asyncio.Future[str]] = [
            asyncio.ensure_future(self._keep_alive(lease, granted_at)),
            asyncio.ensure_future(self._key_lost(fence)),
            fenced_off,
        ]
        try:
            await self._on_elected()
            done, _ = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            log.warning("no longer leading: %s", done.pop().result())
        finally:
            self._fenced.disarm()  # first: no write from here on
            self.leading, self.leader, self.leader_api = False, None, None
            for end in ends:
                end.cancel()
            for end in ends:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await end
            await self._on_deposed()
            await self._revoke(lease)

    async def _key_lost(self, fence: int) -> str:
        new = await self._until_changed(fence)
        if new is None:
            return "the leader key was deleted"
        return f"{_name_of(new)} leads since revision {new.create_revision}"

    async def _keep_alive(self, lease: int, granted_at: float) -> str:
        """Renew the lease every ttl/3; return why it is lost. A keepalive must be confirmed
        before the lease could have expired — ttl after the last confirmed one was sent — or
        this manager must assume that another may lead already."""
        expires = granted_at + self.ttl
        while True:
            await self._clock.sleep(self.ttl / 3)
            sent = self._clock.now()
            try:
                if not await self._within(self._store.keepalive(lease), expires - sent):
                    return f"no keepalive of the lease confirmed within its ttl ({self.ttl:g}s)"
            except NotFoundError:
                return "the lease expired"
            except WarrenError as exc:
                return f"the lease could not be kept alive: {exc}"
            expires = sent + self.ttl

    async def _revoke(self, lease: int) -> None:
        """Best effort, bounded: the lease expires by itself anyway."""
        with contextlib.suppress(WarrenError):
            await self._within(self._store.revoke(lease), _REVOKE_TIMEOUT)

    async def _within(self, call: Awaitable[None], seconds: float) -> bool:
        """Await ``call`` for at most ``seconds`` on the Clock; False (and cancelled) if it
        took longer. Its errors propagate."""
        work = asyncio.ensure_future(call)
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.cancelled():
            return False
        work.result()
        return True

    def info(self) -> dict[str, Any]:
        return {"leader": self.leading, "leaderName": self.leader, "leaderApi": self.leader_api}
