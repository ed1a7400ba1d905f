"""Placement properties: never over-commit, unplaced only when nothing fits, even spread."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from warren.domain.nodes import Node, NodeAvailability, NodeStatus
from warren.domain.specs import Resources
from warren.planning.placement import NodeLoad, PlacementRequest, place

MiB = 1024 * 1024
DRIVERS = ("process", "docker", "fake")
SERVICES = ("web", "api", "db")
# Quarter cpus are exact in binary floating point, so sums compare exactly.
quarters = st.integers(min_value=0, max_value=32).map(lambda q: q / 4)


@dataclass
class World:
    nodes: list[Node]
    loads: dict[str, NodeLoad]
    requests: list[PlacementRequest]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    count = draw(st.integers(min_value=0, max_value=5))
    nodes: list[Node] = []
    loads: dict[str, NodeLoad] = {}
    for i in range(count):
        name = f"n{i}"
        cpus = draw(quarters)
        memory = draw(st.integers(min_value=0, max_value=16)) * 256 * MiB
        nodes.append(
            Node(
                name=name,
                cpus=cpus,
                memory=memory,
                drivers=tuple(
                    draw(st.lists(st.sampled_from(DRIVERS), min_size=1, max_size=3, unique=True))
                ),
                status=draw(st.sampled_from(NodeStatus)),
                availability=draw(st.sampled_from(NodeAvailability)),
                registered_at=0.0,
                updated_at=0.0,
            )
        )
        if draw(st.booleans()):
            per_service = {
                s: draw(st.integers(min_value=0, max_value=3))
                for s in draw(st.lists(st.sampled_from(SERVICES), unique=True))
            }
            loads[name] = NodeLoad(
                cpus=draw(st.integers(min_value=0, max_value=int(cpus * 4))) / 4,
                memory=draw(st.integers(min_value=0, max_value=memory)),
                tasks=sum(per_service.values()) + draw(st.integers(min_value=0, max_value=3)),
                per_service=per_service,
            )
    requests = [
        PlacementRequest(
            task_id=f"t{i}",
            service=draw(st.sampled_from(SERVICES)),
            resources=Resources(
                cpus=draw(st.integers(min_value=0, max_value=12)) / 4,
                memory=draw(st.integers(min_value=0, max_value=8)) * 128 * MiB,
            ),
            driver=draw(st.sampled_from(DRIVERS)),
        )
        for i in range(draw(st.integers(min_value=0, max_value=25)))
    ]
    return World(nodes, loads, requests)


def fits(node: Node, load: NodeLoad, r: PlacementRequest) -> bool:
    return (
        node.schedulable
        and r.driver in node.drivers
        and load.cpus + r.resources.cpus <= node.cpus
        and load.memory + r.resources.memory <= node.memory
    )


def replay(world: World, result: dict[str, str | None]) -> dict[str, NodeLoad]:
    """Walk the requests in order, checking each decision against the loads at that point."""
    working = {n.name: copy.deepcopy(world.loads.get(n.name, NodeLoad())) for n in world.nodes}
    by_name = {n.name: n for n in world.nodes}
    for r in world.requests:
        chosen = result[r.task_id]
        feasible = [n for n in world.nodes if fits(n, working[n.name], r)]
        if chosen is None:
            assert not feasible, f"{r.task_id} left unplaced but {feasible[0].name} had room"
            continue
        assert by_name[chosen] in feasible, f"{r.task_id} placed on {chosen}, which cannot take it"
        # Spread: no feasible node had fewer tasks of this service.
        fewest = min(working[n.name].per_service.get(r.service, 0) for n in feasible)
        assert working[chosen].per_service.get(r.service, 0) == fewest
        working[chosen].add(r.service, r.resources)
    return working


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_every_decision_is_feasible_and_unplaced_means_nothing_fits(world: World) -> None:
    before = copy.deepcopy(world.loads)
    result = place(world.requests, world.nodes, world.loads)
    assert set(result) == {r.task_id for r in world.requests}
    assert world.loads == before
    replay(world, result)


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_no_node_is_over_committed(world: World) -> None:
    result = place(world.requests, world.nodes, world.loads)
    for n in world.nodes:
        existing = world.loads.get(n.name, NodeLoad())
        placed = [r for r in world.requests if result[r.task_id] == n.name]
        assert existing.cpus + sum(r.resources.cpus for r in placed) <= n.cpus
        assert existing.memory + sum(r.resources.memory for r in placed) <= n.memory


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=6),
    services=st.lists(st.sampled_from(SERVICES), max_size=40),
)
def test_equal_nodes_get_per_service_counts_within_one(count: int, services: list[str]) -> None:
    nodes = [
        Node(name=f"n{i}", cpus=64, memory=64 * 1024 * MiB, registered_at=0, updated_at=0)
        for i in range(count)
    ]
    requests = [
        PlacementRequest(f"t{i}", s, Resources(cpus=0.25, memory=64 * MiB), "process")
        for i, s in enumerate(services)
    ]
    result = place(requests, nodes, {})
    assert None not in result.values()
    for service in SERVICES:
        counts = [
            sum(1 for r in requests if r.service == service and result[r.task_id] == n.name)
            for n in nodes
        ]
        assert max(counts) - min(counts) <= 1, (service, counts)
