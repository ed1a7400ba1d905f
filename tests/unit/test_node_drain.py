"""Draining a node in an in-process cluster (memory store, fake driver, fake clock): the
reconciler and the agents move its tasks to the other nodes one slot at a time, each old task
stopped only after its replacement is ready — the service never has fewer ready tasks than
replicas — and what cannot move keeps running, reported by ``drain_status``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import SimCluster
from warren.domain.errors import ConflictError, NotFoundError
from warren.domain.nodes import NodeAvailability
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task
from warren.planning.draining import drain_status

DRAIN = NodeAvailability.DRAIN
ACTIVE = NodeAvailability.ACTIVE


def spec(replicas: int = 6, parallelism: int = 1) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["app"],
            "driver": "fake",
            "replicas": replicas,
            "minReady": "1s",  # a replacement is ready 1s after it started
            "deploy": {"updateConfig": {"parallelism": parallelism}},
        }
    )


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = await SimCluster(nodes=3).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


def live(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if t.wants_running and t.state.active]


class ReadyWatch:
    """The service's ready task count after every change the control plane sees."""

    def __init__(self, sim: SimCluster, service: str = "web") -> None:
        self.sim, self.service = sim, service
        self.lowest: int | None = None
        sim.plane.tasks.on_change(self._changed)

    def _changed(self, key: str, old: Task | None, new: Task | None) -> None:
        tasks = [t for t in self.sim.plane.tasks.values() if t.service == self.service]
        ready = sum(1 for t in tasks if t.ready and t.wants_running)
        self.lowest = ready if self.lowest is None else min(self.lowest, ready)


async def start_web(sim: SimCluster, **kw: int) -> None:
    await sim.cluster.create_service(spec(**kw))
    await sim.advance(2)
    tasks = live(await sim.tasks("web"))
    assert len([t for t in tasks if t.ready]) == spec(**kw).replicas


async def test_draining_moves_every_task_and_never_drops_a_ready_one(sim: SimCluster) -> None:
    await start_web(sim)
    on_n1 = {t.id for t in live(await sim.tasks("web")) if t.node == "n1"}
    assert len(on_n1) == 2  # spread: 2 per node
    watch = ReadyWatch(sim)

    node = await sim.cluster.set_node_availability("n1", DRAIN)
    assert node.availability == DRAIN
    await sim.quiesce()
    # One slot at a time (parallelism 1): one replacement, and both old tasks still serve.
    tasks = live(await sim.tasks("web"))
    assert {t.id for t in tasks if t.node == "n1"} == on_n1
    assert len(tasks) == 7
    status = drain_status("n1", await sim.tasks())
    assert (status.remaining, status.moving) == (2, 1)

    for _ in range(6):
        await sim.advance(1)
    tasks = await sim.tasks("web")
    assert not [t for t in live(tasks) if t.node == "n1"]
    assert not [t for t in tasks if t.node == "n1" and t.state.active]  # stopped, too
    assert len([t for t in live(tasks) if t.ready]) == 6
    assert {t.node for t in live(tasks)} == {"n2", "n3"}
    assert watch.lowest == 6, "the service went below its ready count"
    # Each old task was stopped after its replacement was ready.
    for old in (t for t in tasks if t.id in on_n1):
        replacement = next(t for t in live(tasks) if t.slot == old.slot)
        assert replacement.ready_at is not None and old.finished_at is not None
        assert replacement.ready_at <= old.finished_at
        assert old.message.startswith("node n1 drained: moved to")
    assert drain_status("n1", await sim.tasks()).done

    # Activated: takes new tasks again, but nothing moves back.
    await sim.cluster.set_node_availability("n1", ACTIVE)
    await sim.advance(1)
    assert not [t for t in live(await sim.tasks("web")) if t.node == "n1"]
    await sim.cluster.update_service("web", lambda s: s.model_copy(update={"replicas": 7}))
    await sim.advance(2)
    assert [t.slot for t in live(await sim.tasks("web")) if t.node == "n1"] == [7]


async def test_parallelism_moves_several_slots_at_once(sim: SimCluster) -> None:
    await start_web(sim, parallelism=2)
    await sim.cluster.set_node_availability("n1", DRAIN)
    await sim.quiesce()
    assert len(live(await sim.tasks("web"))) == 8  # both tasks of n1 have a replacement
    await sim.advance(2)
    assert not [t for t in live(await sim.tasks("web")) if t.node == "n1"]


async def test_tasks_no_node_can_take_keep_running_and_move_once_one_can(
    sim: SimCluster,
) -> None:
    await start_web(sim, replicas=3)
    await sim.cluster.set_node_availability("n2", DRAIN)
    await sim.cluster.set_node_availability("n3", DRAIN)
    await sim.cluster.set_node_availability("n1", DRAIN)
    await sim.advance(3)
    tasks = await sim.tasks("web")
    running = [t for t in live(tasks) if t.node is not None]
    assert len(running) == 3 and all(t.ready for t in running)
    status = drain_status("n1", await sim.tasks())
    assert status.stuck == 1
    why = "no node is ready (all down or drained)"
    assert status.summary() == f"draining: 1 task cannot move: {why}"

    await sim.cluster.set_node_availability("n3", ACTIVE)
    for _ in range(3):  # one slot at a time
        await sim.advance(1)
    tasks = live(await sim.tasks("web"))
    assert {t.node for t in tasks} == {"n3"}
    assert len(tasks) == 3 and all(t.ready for t in tasks)


async def test_a_drained_node_stays_drained_when_its_agent_restarts(sim: SimCluster) -> None:
    await sim.cluster.set_node_availability("n2", DRAIN)
    await sim.restart_agent("n2")
    await sim.quiesce()
    assert (await sim.cluster.get_node("n2")).availability == DRAIN


async def test_unknown_node(sim: SimCluster) -> None:
    with pytest.raises(NotFoundError, match="node 'nope' not found"):
        await sim.cluster.set_node_availability("nope", DRAIN)


async def test_a_dead_nodes_tasks_run_elsewhere_and_are_stopped_when_it_returns(
    sim: SimCluster,
) -> None:
    await start_web(sim)
    on_n1 = [t for t in live(await sim.cluster.list_tasks("web")) if t.node == "n1"]
    assert on_n1
    await sim.agents.pop("n1").stop()  # the agent dies: its processes keep running
    await sim.advance(11)  # the 10 s heartbeat lease expires
    await sim.quiesce()
    assert (await sim.cluster.get_node("n1")).status == "down"
    tasks = await sim.cluster.list_tasks("web")
    assert {t.node for t in live(tasks)} == {"n2", "n3"}
    assert sum(t.ready for t in live(tasks)) == 6
    lost = {t.id: t for t in tasks if t.node == "n1"}
    assert all(t.desired_state == "shutdown" for t in lost.values())
    assert {t.message for t in lost.values()} == {"node n1 is down"}
    assert set(lost) <= set(sim.drivers["n1"].running())  # nobody could stop them

    await sim.start_agent("n1")  # back: its stale tasks are stopped, nothing moves back
    await sim.quiesce()
    assert (await sim.cluster.get_node("n1")).status == "ready"
    after = {t.id: t for t in await sim.cluster.list_tasks("web")}
    assert all(after[tid].state == "stopped" for tid in lost)
    assert not set(lost) & set(sim.drivers["n1"].running())
    assert {t.node for t in live(list(after.values()))} == {"n2", "n3"}


async def test_a_node_down_for_good_is_removed_and_its_tasks_end(sim: SimCluster) -> None:
    await start_web(sim)
    with pytest.raises(ConflictError, match="node n1 is ready: only a node that is down"):
        await sim.cluster.remove_node("n1")
    on_n1 = {t.id for t in live(await sim.cluster.list_tasks("web")) if t.node == "n1"}
    await sim.agents.pop("n1").stop()
    await sim.advance(11)
    await sim.quiesce()
    assert set(await sim.cluster.remove_node("n1")) == on_n1
    await sim.quiesce()
    with pytest.raises(NotFoundError):
        await sim.cluster.get_node("n1")
    tasks = {t.id: t for t in await sim.cluster.list_tasks("web")}
    assert {tasks[tid].state for tid in on_n1} == {"stopped"}
    assert {tasks[tid].message for tid in on_n1} == {"node n1 removed"}
    # The service can now be removed completely: nothing waits for a dead node.
    await sim.cluster.delete_service("web")
    await sim.advance(30)
    await sim.quiesce()
    assert await sim.cluster.list_tasks("web") == []
