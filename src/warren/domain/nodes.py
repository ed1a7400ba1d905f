"""Nodes: the machines tasks run on. Pure, frozen.

``status`` is observed (heartbeats); ``availability`` is the operator's wish (drain). A node in
``drain`` gets no new tasks, and its tasks move to other nodes (``planning.reconciling``);
``DrainStatus`` says how far that has come — it is computed from the tasks, never stored. A node
also drains itself when its process is stopped (SIGTERM, Ctrl-C): ``drained_by`` tells that
drain from an operator's, for the first is undone when the node registers again and the second
is not.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import Model
from .tasks import Task

__all__ = [
    "DrainStatus",
    "DrainedBy",
    "Heartbeat",
    "Node",
    "NodeAvailability",
    "NodeStatus",
    "NodeSummary",
]


class NodeStatus(StrEnum):
    READY = "ready"
    DOWN = "down"


class NodeAvailability(StrEnum):
    ACTIVE = "active"
    DRAIN = "drain"


class DrainedBy(StrEnum):
    """Who put a node in ``drain``: an operator (``warren node drain``), or the node itself on
    its way out (its worker or server got SIGTERM or Ctrl-C: ``agent.leaving``)."""

    OPERATOR = "operator"
    SHUTDOWN = "shutdown"


class Node(Model):
    name: str
    address: str = "127.0.0.1"
    """Where the ingress and probes reach this node's tasks."""
    api: str | None = None
    """Where the managers read this node's tasks' logs (``POST /v1/node/logs``)."""
    cpus: float = Field(ge=0)
    memory: int = Field(ge=0)
    labels: dict[str, str] = {}
    drivers: tuple[str, ...] = ("process",)
    status: NodeStatus = NodeStatus.READY
    availability: NodeAvailability = NodeAvailability.ACTIVE
    drained_by: DrainedBy | None = None
    """Set while in ``drain``. A drain by ``shutdown`` ends when the node registers again (its
    process is back); an operator's lasts until ``warren node activate``. (A drain stored
    before this field existed counts as an operator's.)"""
    registered_at: float
    updated_at: float

    @property
    def schedulable(self) -> bool:
        return self.status == NodeStatus.READY and self.availability == NodeAvailability.ACTIVE

    @property
    def draining(self) -> bool:
        return self.availability == NodeAvailability.DRAIN

    @property
    def leaving(self) -> bool:
        """Drained by its own shutdown, not by an operator."""
        return self.draining and self.drained_by == DrainedBy.SHUTDOWN


class Heartbeat(Model):
    """Stored under the node's lease: it exists exactly while the node's agent is alive."""

    node: str


def _tasks(n: int) -> str:
    return f"{n} task{'' if n == 1 else 's'}"


class DrainStatus(Model):
    """Where the drain of a node stands. ``remaining`` tasks still want to run on it: of them,
    ``moving`` have a replacement starting on another node, ``stuck`` cannot move (``reason``:
    why no node can take them), and the rest wait for their turn (the service's
    ``updateConfig.parallelism``). ``stopping``: tasks already replaced, finishing their
    in-flight requests."""

    remaining: int = 0
    moving: int = 0
    stuck: int = 0
    stopping: int = 0
    reason: str = ""

    @property
    def done(self) -> bool:
        return not self.remaining and not self.stopping

    @property
    def all_stuck(self) -> bool:
        """Every task left cannot move, and none is stopping: waiting will not change that
        until a node frees up."""
        return bool(self.remaining) and self.stuck >= self.remaining and not self.stopping

    def summary(self) -> str:
        """One line: ``draining: 2 tasks cannot move: no ready node runs the process driver``."""
        if self.stuck:
            return f"draining: {_tasks(self.stuck)} cannot move: {self.reason}"
        if self.remaining:
            return f"draining: {_tasks(self.remaining)} left, {self.moving} moving"
        if self.stopping:
            return f"draining: {_tasks(self.stopping)} stopping"
        return "drained: no tasks left"


class NodeSummary(Model):
    """A node as the API shows it: the record, how many active tasks it carries, and while it is
    in ``drain`` how far that has come. ``task_list`` (one node only): those tasks."""

    node: Node
    tasks: int
    drain: DrainStatus | None = None
    task_list: tuple[Task, ...] | None = None
