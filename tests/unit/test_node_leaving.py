"""A node that leaves (``agent.leaving``), in an in-process cluster (memory store, fake driver,
fake clock): it drains itself, its tasks move start-first — the service never has fewer ready
tasks than replicas — and it says how far it came; what cannot move keeps running and is said
at once; the drain timeout and a second signal stop the tasks; and a node back after its own
drain is active again, while an operator's drain outlasts a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.helpers import SimCluster
from tests.unit.test_node_drain import ReadyWatch, live, spec
from warren.agent.leaving import Leaving, Outcome
from warren.domain.nodes import DrainedBy, NodeAvailability
from warren.domain.tasks import TaskState

DRAIN = NodeAvailability.DRAIN
ACTIVE = NodeAvailability.ACTIVE


@pytest.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = await SimCluster(nodes=3).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


async def start_web(sim: SimCluster, replicas: int = 6) -> set[str]:
    """The service's tasks on n1 (spread: 2 of 6)."""
    await sim.cluster.create_service(spec(replicas, parallelism=1))
    await sim.advance(2)
    tasks = live(await sim.tasks("web"))
    assert len([t for t in tasks if t.ready]) == replicas
    return {t.id for t in tasks if t.node == "n1"}


async def leave(
    sim: SimCluster,
    timeout: float = 60,
    interrupt_after: float | None = None,
    step: float = 0.25,
) -> tuple[Outcome, list[str]]:
    """Leave n1 while the fake clock runs; the outcome and what it said."""
    said: list[str] = []
    interrupted = asyncio.Event()
    leaving = Leaving(sim.agents["n1"], sim.clock, said.append, interrupted)
    run = asyncio.get_running_loop().create_task(leaving.run(timeout))
    elapsed = 0.0
    while not run.done():
        assert elapsed < 120, f"still leaving: {said}"
        if interrupt_after is not None and elapsed >= interrupt_after:
            interrupted.set()
        await sim.advance(step)
        elapsed += step
    return run.result(), said


async def test_a_leaving_node_moves_its_tasks_first_then_says_it_left(sim: SimCluster) -> None:
    on_n1 = await start_web(sim)
    watch = ReadyWatch(sim)

    outcome, said = await leave(sim)

    assert outcome == Outcome.LEFT and outcome.exit_status == 0
    assert said == ["draining: 2 tasks to move", "moved 1/2", "moved 2/2", "left the cluster"]
    tasks = live(await sim.tasks("web"))
    assert len(tasks) == 6 and all(t.ready for t in tasks)
    assert not {t.node for t in tasks} & {"n1"}
    assert watch.lowest is not None and watch.lowest >= 6, f"ready fell to {watch.lowest}"
    for task_id in on_n1:  # stopped by its agent, drained first, as any task shut down
        old, _ = await sim.cluster.get_task(task_id)
        assert old.state == TaskState.STOPPED and "drained: moved to" in old.message
    node = await sim.cluster.get_node("n1")
    assert node.availability == DRAIN and node.drained_by == DrainedBy.SHUTDOWN and node.leaving

    # Back (its agent registers again): active again, since the drain was its own.
    await sim.restart_agent("n1")
    node = await sim.cluster.get_node("n1")
    assert node.availability == ACTIVE and node.drained_by is None
    kinds = [e.kind for e in await sim.cluster.list_events(None, 100) if e.node == "n1"]
    assert "node.drain" in kinds and "node.active" in kinds


async def test_an_operators_drain_outlasts_the_nodes_restart(sim: SimCluster) -> None:
    await start_web(sim)
    await sim.cluster.set_node_availability("n1", DRAIN)
    outcome, said = await leave(sim)  # the node stops while the operator's drain runs
    assert outcome == Outcome.LEFT and said[-1] == "left the cluster"
    node = await sim.cluster.get_node("n1")
    assert node.drained_by == DrainedBy.OPERATOR and not node.leaving
    await sim.restart_agent("n1")
    assert (await sim.cluster.get_node("n1")).availability == DRAIN

    # And an operator who drains a node that is leaving makes the drain theirs.
    await sim.cluster.set_node_availability("n1", ACTIVE)
    await sim.cluster.drain_for_shutdown("n1")
    await sim.cluster.set_node_availability("n1", DRAIN)
    await sim.restart_agent("n1")
    assert (await sim.cluster.get_node("n1")).availability == DRAIN


async def test_tasks_no_node_can_take_are_said_at_once_and_keep_running(
    sim: SimCluster,
) -> None:
    await start_web(sim, replicas=3)
    await sim.cluster.set_node_availability("n2", DRAIN)
    await sim.cluster.set_node_availability("n3", DRAIN)
    await sim.advance(2)
    assert {t.node for t in live(await sim.tasks("web"))} == {"n1"}

    outcome, said = await leave(sim, timeout=60)

    assert outcome == Outcome.STAYED and outcome.exit_status == 0
    assert said == [
        "draining: 3 tasks to move",
        "draining: 3 tasks cannot move: no node is ready (all down or drained); "
        "they keep running here (a restarted node adopts them)",
    ]
    running = [t for t in live(await sim.tasks("web")) if t.node == "n1"]
    assert len(running) == 3 and all(t.ready for t in running)
    assert len(sim.drivers["n1"].running()) == 3


async def test_the_drain_timeout_stops_what_did_not_move(sim: SimCluster) -> None:
    on_n1 = await start_web(sim)
    # A replacement is ready 1s after it starts (minReady): a 0.5s drain ends before.
    outcome, said = await leave(sim, timeout=0.5, step=0.1)

    assert outcome == Outcome.TIMED_OUT and outcome.exit_status == 0
    assert said == [
        "draining: 2 tasks to move",
        "drain timeout (0.5s): stopping 2 tasks that did not move",
    ]
    for task_id in on_n1:
        old, _ = await sim.cluster.get_task(task_id)
        assert (
            old.state == TaskState.STOPPED
            and old.message == "stopped: its node left (drain timeout)"
        )
    assert not sim.drivers["n1"].running()
    await sim.advance(3)
    tasks = live(await sim.tasks("web"))
    assert len(tasks) == 6 and all(t.ready for t in tasks) and "n1" not in {t.node for t in tasks}


async def test_a_second_signal_stops_the_tasks_at_once(sim: SimCluster) -> None:
    on_n1 = await start_web(sim)
    outcome, said = await leave(sim, timeout=60, interrupt_after=0.2, step=0.1)

    assert outcome == Outcome.INTERRUPTED and outcome.exit_status == 1
    assert said == [
        "draining: 2 tasks to move",
        "interrupted: stopping 2 tasks at once, without moving them",
    ]
    for task_id in on_n1:
        old, _ = await sim.cluster.get_task(task_id)
        assert old.state == TaskState.STOPPED and "interrupted" in old.message
    assert not sim.drivers["n1"].running()


async def test_a_node_without_tasks_leaves_at_once(sim: SimCluster) -> None:
    outcome, said = await leave(sim)
    assert outcome == Outcome.LEFT
    assert said == ["draining: no tasks to move", "left the cluster"]
