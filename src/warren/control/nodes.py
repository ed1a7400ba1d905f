"""The node watcher: a node is ready while its heartbeat key (bound to the node's lease) exists,
and down when the lease expired. Writes ``Node.status``; records node events."""

from __future__ import annotations

from ..domain.events import Level
from ..domain.nodes import Node, NodeStatus
from ..ports import Clock, Compare, Put
from ..store.cluster import NODES, ClusterStore, encode
from ..store.informing import Informer
from .controlling import Controller

__all__ = ["NodeWatcher"]


class NodeWatcher(Controller):
    name = "nodes"

    def __init__(
        self,
        cluster: ClusterStore,
        nodes: Informer[Node],
        heartbeats: set[str],
        clock: Clock,
    ) -> None:
        super().__init__(clock)
        self.cluster = cluster
        self.nodes = nodes
        self.heartbeats = heartbeats
        nodes.on_change(lambda key, old, new: self.queue.add(key[len(NODES) :]))

    def heartbeat_changed(self, name: str, alive: bool) -> None:
        if alive:
            self.heartbeats.add(name)
        else:
            self.heartbeats.discard(name)
        self.queue.add(name)

    def enqueue_all(self) -> None:
        for node in self.nodes.values():
            self.queue.add(node.name)

    async def sync(self, key: str) -> float | None:
        node = self.nodes.items.get(f"{NODES}{key}")
        kv = self.nodes.kvs.get(f"{NODES}{key}")
        if node is None or kv is None:
            return None
        status = NodeStatus.READY if key in self.heartbeats else NodeStatus.DOWN
        if node.status == status:
            return None
        updated = node.model_copy(update={"status": status, "updated_at": self.clock.now()})
        res = await self.cluster.raw.txn([Compare.unchanged(kv)], [Put(kv.key, encode(updated))])
        if res.succeeded:
            level = Level.INFO if status == NodeStatus.READY else Level.WARNING
            await self.cluster.record(f"node.{status}", f"node {key} is {status}", level, node=key)
        return None
