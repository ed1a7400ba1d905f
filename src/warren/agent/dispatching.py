"""The dispatcher of an agent that runs in a manager's process (``warren server``): straight to
the store. A remote worker's goes through the API instead (``warren.worker``); the managers'
side of that API uses the same store calls."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from ..domain.errors import NotFoundError
from ..domain.events import Level
from ..domain.nodes import DrainStatus, Heartbeat, Node
from ..domain.services import Revision
from ..domain.tasks import Task
from ..store.cluster import HEARTBEATS, ClusterStore, encode

__all__ = ["StoreDispatcher", "bind_heartbeat"]


async def bind_heartbeat(cluster: ClusterStore, node: str, ttl: float) -> int:
    """A fresh lease of ``ttl`` seconds with the node's heartbeat key bound to it; the lease it
    was bound to before is revoked (it holds nothing now), so that registering again and again
    leaves no lease behind."""
    key = f"{HEARTBEATS}{node}"
    old = await cluster.raw.get(key)
    lease = await cluster.raw.grant(ttl)
    await cluster.raw.put(key, encode(Heartbeat(node=node)), lease=lease)
    if old is not None and old.lease and old.lease != lease:
        with contextlib.suppress(NotFoundError):
            await cluster.raw.revoke(old.lease)
    return lease


class StoreDispatcher:
    def __init__(self, cluster: ClusterStore) -> None:
        self.cluster = cluster
        self._node = ""
        self._ttl = 0.0
        self._lease = 0
        self.renewed_at = 0.0
        """time.monotonic() when the lease was last known alive (the call's start): on a shared
        store, a manager's agent fences its tasks when that is older than the ttl."""

    async def register(self, node: Node, ttl: float) -> None:
        sent = time.monotonic()
        await self.cluster.put_node(node)
        self._node, self._ttl = node.name, ttl
        self._lease = await bind_heartbeat(self.cluster, node.name, ttl)
        self.renewed_at = sent

    async def heartbeat(self) -> bool:
        sent = time.monotonic()
        try:
            await self.cluster.raw.keepalive(self._lease)
            renewed = True
        except NotFoundError:
            self._lease = await bind_heartbeat(self.cluster, self._node, self._ttl)
            renewed = False
        self.renewed_at = sent
        return renewed

    async def revision(self, service: str, number: int) -> Revision:
        return await self.cluster.get_revision(service, number)

    async def update_task(self, task_id: str, change: Callable[[Task], Task | None]) -> Task | None:
        return await self.cluster.update_task(task_id, change)

    async def record(self, kind: str, message: str, level: Level, task: Task) -> None:
        await self.cluster.record(
            kind, message, level, service=task.service, task=task.id, node=task.node
        )

    async def leave(self) -> None:
        await self.cluster.drain_for_shutdown(self._node)

    def drain_progress(self) -> AsyncIterator[DrainStatus]:
        return self.cluster.drain_progress(self._node)
