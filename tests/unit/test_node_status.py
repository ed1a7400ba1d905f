"""A node's status and its agent's restarts, in an in-process cluster (memory store, fake driver,
fake clock): the status is observed — the node watcher alone writes it, from the node's
heartbeat — and an agent that restarts within its lease adopts its tasks, while one that
restarts later finds them replaced and stops the old copies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import SimCluster
from warren.domain.nodes import Node, NodeStatus
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task
from warren.store.cluster import HEARTBEATS

TTL = 10.0
"""SimCluster's agents register on a 10 s heartbeat lease."""


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = await SimCluster(nodes=3).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


def live(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.wants_running and t.state.active]


async def start_web(sim: SimCluster) -> list[Task]:
    spec = ServiceSpec.model_validate(
        {"name": "web", "command": ["app"], "driver": "fake", "replicas": 6}
    )
    await sim.cluster.create_service(spec)
    await sim.advance(2)
    tasks = live(await sim.tasks("web"))
    assert len(tasks) == 6 and all(t.ready for t in tasks)
    return tasks


async def node_events(sim: SimCluster, name: str) -> list[str]:
    return [e.kind for e in await sim.cluster.list_events(limit=1000) if e.node == name]


class StatusWatch:
    """Every status a node's record takes, with the store revision it was written at."""

    def __init__(self, sim: SimCluster, name: str) -> None:
        self.sim, self.name = sim, name
        self.seen: list[tuple[NodeStatus, int]] = []
        sim.plane.nodes.on_change(self._changed)

    def _changed(self, key: str, old: Node | None, new: Node | None) -> None:
        if new is not None and new.name == self.name and (old is None or old.status != new.status):
            self.seen.append((new.status, self.sim.plane.nodes.kvs[key].mod_revision))


async def test_a_joining_node_is_recorded_ready_once(sim: SimCluster) -> None:
    assert await node_events(sim, "n1") == ["node.ready"]
    assert (await sim.cluster.get_node("n1")).status == NodeStatus.READY


async def test_an_agent_restarted_within_its_lease_adopts_its_tasks(sim: SimCluster) -> None:
    before = {t.id: t for t in await start_web(sim)}
    on_n1 = [tid for tid, t in before.items() if t.node == "n1"]
    assert on_n1
    await sim.agents.pop("n1").stop()  # the agent dies: its processes keep running
    # Back before its lease expires: it was renewed at most ttl/3 before the agent died, so it
    # has 2/3 of the ttl left at least (10 s ttl: 6.7 s).
    await sim.advance(TTL / 2)
    await sim.start_agent("n1")
    await sim.advance(TTL * 2)  # the old lease's time passes: nothing moves
    after = {t.id: t for t in live(await sim.tasks("web"))}
    assert after.keys() == before.keys()
    assert all(after[tid].runtime_id == before[tid].runtime_id for tid in before)
    assert set(on_n1) <= set(sim.drivers["n1"].running())
    assert all(sim.drivers["n1"].started.count(tid) == 1 for tid in on_n1)  # not started again
    assert await node_events(sim, "n1") == ["node.ready"]


async def test_a_node_back_after_its_lease_expired_is_down_then_ready_once(
    sim: SimCluster,
) -> None:
    """Its status is written by the node watcher only: registering again does not make it
    ready before its heartbeat is seen (which would put it back in placement with no lease,
    record a second ``node.down`` when the watcher corrects it, or no ``node.ready`` at all)."""
    await start_web(sim)
    await sim.agents.pop("n1").stop()
    await sim.advance(TTL + 1)
    assert (await sim.cluster.get_node("n1")).status == NodeStatus.DOWN
    watch = StatusWatch(sim, "n1")
    await sim.start_agent("n1")
    await sim.quiesce()
    heartbeat = await sim.store.get(f"{HEARTBEATS}n1")
    assert heartbeat is not None
    assert [status for status, _ in watch.seen] == [NodeStatus.READY]
    assert watch.seen[0][1] > heartbeat.mod_revision  # ready once its heartbeat was there
    assert await node_events(sim, "n1") == ["node.ready", "node.down", "node.ready"]
