"""Nodes through the API of a real (embedded) server with simulated nodes: drain one, and its
tasks move to the others while the service never has fewer ready tasks than replicas; the
drain status and the errors as the API gives them; activate."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import wait_for
from warren.client import Client
from warren.domain.errors import AuthError, NotFoundError
from warren.domain.nodes import NodeAvailability
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task
from warren.server import EmbeddedServer, ServerConfig

pytestmark = pytest.mark.integration

REPLICAS = 6


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedServer]:
    config = ServerConfig(
        data_dir=tmp_path / "data", api="127.0.0.1:0", http_port=0, worker=False,
        simulate_nodes=3,
    )  # fmt: skip
    with EmbeddedServer(config) as server:
        yield server


class ReadyWatch:
    """On the server's loop: the service's ready task count after every change its control
    plane sees — not sampled, every one."""

    def __init__(self, embedded: EmbeddedServer) -> None:
        self.lock = threading.Lock()
        self.counts: list[int] = []
        assert embedded.server is not None and embedded.server.plane is not None
        self.plane = embedded.server.plane

        async def register() -> None:
            self.plane.tasks.on_change(self._changed)

        embedded.call(register())

    def _changed(self, key: str, old: Task | None, new: Task | None) -> None:
        tasks = [t for t in self.plane.tasks.values() if t.service == "web"]
        with self.lock:
            self.counts.append(sum(1 for t in tasks if t.ready and t.wants_running))


def live(client: Client) -> list[Task]:
    return [t for t in client.list_tasks("web") if t.wants_running and t.state.active]


def test_drain_moves_tasks_without_dropping_below_the_ready_count(
    embedded: EmbeddedServer,
) -> None:
    client = embedded.client()
    spec = ServiceSpec.model_validate(
        {
            "name": "web",
            "command": ["app"],
            "driver": "fake",
            "replicas": REPLICAS,
            "minReady": "300ms",
            "deploy": {"updateConfig": {"parallelism": 1}},
        }
    )
    client.create_service(spec)
    wait_for(lambda: sum(t.ready for t in live(client)) == REPLICAS, 20, "6 ready tasks")
    assert {n.name for n, _ in client.list_nodes()} == {"sim-1", "sim-2", "sim-3"}
    moving = {t.id for t in live(client) if t.node == "sim-1"}
    assert moving
    watch = ReadyWatch(embedded)

    summary = client.drain_node("sim-1")
    assert summary.node.availability == NodeAvailability.DRAIN
    assert summary.drain is not None and summary.drain.remaining == len(moving)

    def drained() -> bool:
        node = client.get_node("sim-1")
        return node.drain is not None and node.drain.done and node.tasks == 0

    wait_for(drained, 30, "sim-1 to be drained")
    tasks = live(client)
    assert len(tasks) == REPLICAS and all(t.ready for t in tasks)
    assert {t.node for t in tasks} <= {"sim-2", "sim-3"}
    assert not moving & {t.id for t in tasks}
    with watch.lock:
        assert watch.counts, "no change seen"
        assert min(watch.counts) >= REPLICAS, f"ready tasks fell to {min(watch.counts)}"
    summaries = {s.node.name: s for s in client.node_summaries()}
    assert summaries["sim-1"].drain is not None
    assert summaries["sim-1"].drain.summary() == "drained: no tasks left"
    assert summaries["sim-2"].drain is None

    # Activate: schedulable again, nothing moves back.
    active = client.activate_node("sim-1")
    assert active.node.availability == NodeAvailability.ACTIVE and active.drain is None
    assert client.get_node("sim-1").tasks == 0
    events = [e.kind for e in client.list_events(limit=1000)]
    assert "node.drain" in events and "node.active" in events


def test_a_drain_that_cannot_move_says_why(embedded: EmbeddedServer) -> None:
    client = embedded.client()
    spec = ServiceSpec(name="web", command=("app",), driver="fake", replicas=3)
    client.create_service(spec)
    wait_for(lambda: sum(t.ready for t in live(client)) == 3, 20, "3 ready tasks")
    client.drain_node("sim-2")
    client.drain_node("sim-3")
    wait_for(lambda: client.get_node("sim-1").tasks == 3, 20, "every task on sim-1")
    client.drain_node("sim-1")  # and now there is nowhere to go

    def stuck() -> str:
        drain = client.get_node("sim-1").drain
        return drain.summary() if drain is not None and drain.stuck else ""

    message = wait_for(stuck, 20, "the drain to report it is stuck")
    assert message == "draining: 3 tasks cannot move: no node is ready (all down or drained)"
    running = [t for t in live(client) if t.node == "sim-1"]
    assert len(running) == 3 and all(t.ready for t in running)  # still serving
    detail = client.get_node("sim-1")
    assert detail.task_list is not None
    assert sorted(t.id for t in detail.task_list) == sorted(t.id for t in running)

    client.activate_node("sim-2")
    wait_for(lambda: client.get_node("sim-1").tasks == 0, 20, "sim-1's tasks to move")
    tasks = live(client)
    assert {t.node for t in tasks} == {"sim-2"} and all(t.ready for t in tasks)
    assert len(tasks) == 3


def test_errors(embedded: EmbeddedServer) -> None:
    client = embedded.client()
    with pytest.raises(NotFoundError, match="node 'nope' not found"):
        client.drain_node("nope")
    with pytest.raises(NotFoundError, match="node 'nope' not found"):
        client.get_node("nope")
    assert embedded.server is not None
    with Client(embedded.server.api_url, token="wrong") as stranger:
        with pytest.raises(AuthError):
            stranger.drain_node("sim-1")
        with pytest.raises(AuthError):
            stranger.activate_node("sim-1")
    response = httpx.post(f"{embedded.server.api_url}/v1/nodes/sim-1/drain")
    assert response.status_code == 401
    assert client.get_node("sim-1").node.availability == NodeAvailability.ACTIVE
