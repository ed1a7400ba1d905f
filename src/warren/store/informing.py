"""Informers: a local cache of one key prefix, kept current by a store watch.

The cache is a convenience rebuilt from the store at any time (list, then watch from the listed
revision); it never holds anything the store does not. Controllers read from it and write to the
store with compare-and-swap on the cached ``mod_revision``; ``wait_for`` lets a controller wait
until its own write is visible, so it never acts twice on a stale view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

from ..domain.errors import CompactedError
from ..ports import EventType, KeyValue, StateStore, WatchEvent
from .cluster import decode

__all__ = ["Informer"]

log = logging.getLogger("warren.store")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[str, M | None, M | None], None]


class Informer(Generic[M]):
    """Caches every key under ``prefix`` decoded as ``cls``; calls each handler with
    (key, old, new) after a change is applied (new is None for a delete)."""

    def __init__(self, store: StateStore, prefix: str, cls: type[M]) -> None:
        self._store = store
        self.prefix = prefix
        self._cls = cls
        self.items: dict[str, M] = {}
        self.kvs: dict[str, KeyValue] = {}
        self.revision = 0
        self._handlers: list[Handler[M]] = []
        self._synced = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        """The first listing is done: later changes are news, not history."""
        return self._synced.is_set()

    def on_change(self, handler: Handler[M]) -> None:
        self._handlers.append(handler)

    async def start(self) -> None:
        """List once (the cache is complete when this returns), then follow the watch."""
        await self._list()
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _list(self) -> None:
        kvs, rev = await self._store.range(self.prefix)
        old = self.items
        self.items = {}
        self.kvs = {}
        for kv in kvs:
            self._set(kv)
        self.revision = rev
        for key in set(old) | set(self.items):
            if old.get(key) != self.items.get(key):
                self._notify(key, old.get(key), self.items.get(key))
        self._synced.set()
        self._wake()

    def _set(self, kv: KeyValue) -> M | None:
        try:
            item = decode(self._cls, kv)
        except ValueError:
            log.error("ignoring unreadable record %s", kv.key)
            return None
        self.items[kv.key] = item
        self.kvs[kv.key] = kv
        return item

    async def _follow(self) -> None:
        while True:
            try:
                async for batch in self._store.watch(self.prefix, self.revision + 1):
                    self._apply(batch)
                return  # the store closed
            except CompactedError:
                log.warning("watch on %s fell behind the store's history; re-listing", self.prefix)
                await self._list()

    def _apply(self, batch: list[WatchEvent]) -> None:
        for event in batch:
            key = event.kv.key
            old = self.items.get(key)
            if event.type == EventType.DELETE:
                self.items.pop(key, None)
                self.kvs.pop(key, None)
                new = None
            else:
                new = self._set(event.kv)
            self.revision = max(self.revision, event.kv.mod_revision)
            self._notify(key, old, new)
        self._wake()

    def _notify(self, key: str, old: M | None, new: M | None) -> None:
        for handler in self._handlers:
            try:
                handler(key, old, new)
            except Exception:
                log.exception("informer handler failed for %s", key)

    def _wake(self) -> None:
        keep = []
        for rev, fut in self._waiters:
            if rev <= self.revision:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((rev, fut))
        self._waiters = keep

    async def wait_for(self, revision: int, timeout: float = 5.0) -> None:
        """Return once the cache reflects the store at ``revision`` (or later). The store's
        revision is global, so a write elsewhere may never show under this prefix: then the
        watch's next event, or the timeout, ends the wait."""
        if revision <= self.revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, fut))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await fut

    def values(self) -> list[M]:
        return list(self.items.values())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
