"""Placement: which ready node a new task goes to. Pure.

Rules, in order: the node must be schedulable (ready and active), support the task's driver, and
have room for the task's reserved cpus and memory; among those, spread — the fewest tasks of the
same service, then the fewest tasks overall, then the name (so that equal nodes fill in a stable
order).

Worked example: service web asks for 3 tasks of 1 cpu; node a (2 cpus) already runs 1 web task,
node b (4 cpus) is empty. 1st → b (0 web tasks beats 1); 2nd → a (1 web each, 1 task each, name);
3rd → b (1 web task beats 2; a would also be full). Result: b, a, b.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..domain.nodes import Node
from ..domain.specs import Resources

__all__ = ["NodeLoad", "PlacementRequest", "place", "why_unplaced"]


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    task_id: str
    service: str
    resources: Resources
    driver: str


@dataclass(slots=True)
class NodeLoad:
    """What a node already carries: reserved resources and task counts."""

    cpus: float = 0.0
    memory: int = 0
    tasks: int = 0
    per_service: dict[str, int] = field(default_factory=dict)

    def add(self, service: str, resources: Resources) -> None:
        self.cpus += resources.cpus
        self.memory += resources.memory
        self.tasks += 1
        self.per_service[service] = self.per_service.get(service, 0) + 1


def _fits(node: Node, load: NodeLoad, req: PlacementRequest) -> bool:
    # A tiny epsilon keeps 0.1 + 0.2 cpus from failing to fit into 0.3.
    return (
        load.cpus + req.resources.cpus <= node.cpus + 1e-9
        and load.memory + req.resources.memory <= node.memory
    )


def place(
    requests: Iterable[PlacementRequest],
    nodes: Sequence[Node],
    loads: Mapping[str, NodeLoad],
) -> dict[str, str | None]:
    """task id → node name, or None when no node can take it (see ``why_unplaced``).
    ``loads`` is not modified; placements made here count against later requests."""
    working = {
        n.name: NodeLoad(
            loads[n.name].cpus, loads[n.name].memory, loads[n.name].tasks,
            dict(loads[n.name].per_service),
        ) if n.name in loads else NodeLoad()
        for n in nodes
    }  # fmt: skip
    candidates = [n for n in nodes if n.schedulable]
    result: dict[str, str | None] = {}
    for req in requests:
        best: Node | None = None
        best_key: tuple[int, int, str] | None = None
        for node in candidates:
            load = working[node.name]
            if req.driver not in node.drivers or not _fits(node, load, req):
                continue
            key = (load.per_service.get(req.service, 0), load.tasks, node.name)
            if best_key is None or key < best_key:
                best, best_key = node, key
        if best is None:
            result[req.task_id] = None
        else:
            working[best.name].add(req.service, req.resources)
            result[req.task_id] = best.name
    return result


def why_unplaced(
    req: PlacementRequest, nodes: Sequence[Node], loads: Mapping[str, NodeLoad]
) -> str:
    """One line for ``warren service ps``: why ``req`` fits on no node."""
    if not nodes:
        return "no node has joined the cluster"
    ready = [n for n in nodes if n.schedulable]
    if not ready:
        return "no node is ready (all down or drained)"
    with_driver = [n for n in ready if req.driver in n.drivers]
    if not with_driver:
        return f"no ready node runs the {req.driver} driver"
    need = []
    if req.resources.cpus:
        need.append(f"{req.resources.cpus:g} cpus")
    if req.resources.memory:
        need.append(f"{req.resources.memory // (1024 * 1024)} MiB memory")
    return f"no ready node has {' and '.join(need) or 'room'} free"
