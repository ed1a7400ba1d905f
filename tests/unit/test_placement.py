"""Placement: spread, resource fit, schedulable nodes, drivers, and why a task stays unplaced."""

from __future__ import annotations

import copy

import pytest

from warren.domain.nodes import Node, NodeAvailability, NodeStatus
from warren.domain.specs import Resources
from warren.planning.placement import NodeLoad, PlacementRequest, place, why_unplaced

MiB = 1024 * 1024
GiB = 1024 * MiB


def node(
    name: str,
    cpus: float = 4.0,
    memory: int = 8 * GiB,
    drivers: tuple[str, ...] = ("process",),
    status: NodeStatus = NodeStatus.READY,
    availability: NodeAvailability = NodeAvailability.ACTIVE,
) -> Node:
    return Node(
        name=name,
        cpus=cpus,
        memory=memory,
        drivers=drivers,
        status=status,
        availability=availability,
        registered_at=0.0,
        updated_at=0.0,
    )


def req(
    task_id: str,
    service: str = "web",
    cpus: float = 0.0,
    memory: int = 0,
    driver: str = "process",
) -> PlacementRequest:
    return PlacementRequest(task_id, service, Resources(cpus=cpus, memory=memory), driver)


def test_worked_example_of_the_docstring() -> None:
    # web asks for 3 tasks of 1 cpu; a (2 cpus) runs 1 web task, b (4 cpus) is empty.
    nodes = [node("a", cpus=2), node("b", cpus=4)]
    loads = {"a": NodeLoad(cpus=1.0, tasks=1, per_service={"web": 1})}
    requests = [req(f"web.{i}", cpus=1) for i in (1, 2, 3)]
    assert place(requests, nodes, loads) == {"web.1": "b", "web.2": "a", "web.3": "b"}


def test_spreads_a_service_evenly_in_name_order() -> None:
    nodes = [node("n3"), node("n1"), node("n2")]
    result = place([req(f"t{i}") for i in range(6)], nodes, {})
    assert list(result.values()) == ["n1", "n2", "n3", "n1", "n2", "n3"]


def test_fewest_tasks_of_the_service_beats_fewest_tasks_overall() -> None:
    nodes = [node("a"), node("b")]
    loads = {
        "a": NodeLoad(tasks=5, per_service={"db": 5}),
        "b": NodeLoad(tasks=1, per_service={"web": 1}),
    }
    assert place([req("w")], nodes, loads) == {"w": "a"}


def test_fewest_tasks_overall_breaks_a_tie_between_services() -> None:
    nodes = [node("a"), node("b")]
    loads = {"a": NodeLoad(tasks=2, per_service={"db": 2})}
    assert place([req("w")], nodes, loads) == {"w": "b"}


def test_cpus_must_fit() -> None:
    nodes = [node("a", cpus=1)]
    assert place([req("t1", cpus=0.6), req("t2", cpus=0.6)], nodes, {}) == {"t1": "a", "t2": None}


def test_memory_must_fit() -> None:
    nodes = [node("a", memory=512 * MiB)]
    requests = [req(f"t{i}", memory=256 * MiB) for i in range(3)]
    assert place(requests, nodes, {}) == {"t0": "a", "t1": "a", "t2": None}


def test_existing_load_counts_against_capacity() -> None:
    nodes = [node("a", cpus=2, memory=GiB), node("b", cpus=2, memory=GiB)]
    loads = {"a": NodeLoad(cpus=1.5, memory=0), "b": NodeLoad(cpus=0, memory=GiB)}
    assert place([req("t", cpus=1, memory=1)], nodes, loads) == {"t": None}
    assert place([req("t", cpus=0.5)], nodes, loads) == {"t": "a"}


def test_float_sums_fit_exactly() -> None:
    # 0.1 + 0.2 > 0.3 in floating point; three tenths still fit into 0.3 cpus.
    nodes = [node("a", cpus=0.3)]
    result = place([req("t1", cpus=0.1), req("t2", cpus=0.2)], nodes, {})
    assert result == {"t1": "a", "t2": "a"}


def test_a_big_task_skips_a_full_node() -> None:
    nodes = [node("a", cpus=1), node("b", cpus=4)]
    loads = {"b": NodeLoad(cpus=1, tasks=3, per_service={"web": 3})}
    assert place([req("t", cpus=2)], nodes, loads) == {"t": "b"}


@pytest.mark.parametrize(
    "unusable",
    [
        node("a", status=NodeStatus.DOWN),
        node("a", availability=NodeAvailability.DRAIN),
        node("a", status=NodeStatus.DOWN, availability=NodeAvailability.DRAIN),
    ],
)
def test_down_or_drained_nodes_are_never_chosen(unusable: Node) -> None:
    # "a" would win every tie on name; it must still never be chosen.
    assert place([req(f"t{i}") for i in range(3)], [unusable, node("b")], {}) == {
        "t0": "b",
        "t1": "b",
        "t2": "b",
    }
    assert place([req("t")], [unusable], {}) == {"t": None}


def test_driver_must_be_supported() -> None:
    nodes = [node("a", drivers=("process",)), node("b", drivers=("process", "docker"))]
    requests = [req("d1", driver="docker"), req("d2", driver="docker"), req("f", driver="fake")]
    assert place(requests, nodes, {}) == {"d1": "b", "d2": "b", "f": None}


def test_loads_are_not_modified() -> None:
    loads = {"a": NodeLoad(cpus=1.0, tasks=1, per_service={"web": 1})}
    before = copy.deepcopy(loads)
    place([req("t1", cpus=1), req("t2", cpus=1)], [node("a")], loads)
    assert loads == before


def test_no_requests_no_nodes() -> None:
    assert place([], [node("a")], {}) == {}
    assert place([req("t")], [], {}) == {"t": None}


def test_loads_of_unknown_nodes_are_ignored() -> None:
    loads = {"gone": NodeLoad(cpus=100, tasks=100, per_service={"web": 100})}
    assert place([req("t", cpus=1)], [node("a", cpus=1)], loads) == {"t": "a"}


@pytest.mark.parametrize(
    ("nodes", "request_", "expected"),
    [
        ([], req("t"), "no node has joined the cluster"),
        (
            [node("a", status=NodeStatus.DOWN), node("b", availability=NodeAvailability.DRAIN)],
            req("t"),
            "no node is ready (all down or drained)",
        ),
        ([node("a")], req("t", driver="docker"), "no ready node runs the docker driver"),
        ([node("a", cpus=1)], req("t", cpus=2), "no ready node has 2 cpus free"),
        ([node("a", cpus=1)], req("t", cpus=0.5), "no ready node has 0.5 cpus free"),
        ([node("a")], req("t", memory=512 * MiB), "no ready node has 512 MiB memory free"),
        (
            [node("a")],
            req("t", cpus=2, memory=GiB),
            "no ready node has 2 cpus and 1024 MiB memory free",
        ),
        ([node("a")], req("t"), "no ready node has room free"),
    ],
)
def test_why_unplaced(nodes: list[Node], request_: PlacementRequest, expected: str) -> None:
    assert why_unplaced(request_, nodes, {}) == expected


def test_why_unplaced_agrees_with_place() -> None:
    nodes = [node("a", cpus=1, drivers=("process", "docker"))]
    request_ = req("t", cpus=2, driver="docker")
    assert place([request_], nodes, {}) == {"t": None}
    assert "2 cpus" in why_unplaced(request_, nodes, {})
