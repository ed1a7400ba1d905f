"""Nodes: the machines tasks run on. Pure, frozen.

``status`` is observed (heartbeats); ``availability`` is the operator's wish (drain).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .base import Model

__all__ = ["Heartbeat", "Node", "NodeAvailability", "NodeStatus"]


class NodeStatus(StrEnum):
    READY = "ready"
    DOWN = "down"


class NodeAvailability(StrEnum):
    ACTIVE = "active"
    DRAIN = "drain"


class Node(Model):
    name: str
    address: str = "127.0.0.1"
    """Where the ingress and probes reach this node's tasks."""
    cpus: float = Field(ge=0)
    memory: int = Field(ge=0)
    labels: dict[str, str] = {}
    drivers: tuple[str, ...] = ("process",)
    status: NodeStatus = NodeStatus.READY
    availability: NodeAvailability = NodeAvailability.ACTIVE
    registered_at: float
    updated_at: float

    @property
    def schedulable(self) -> bool:
        return self.status == NodeStatus.READY and self.availability == NodeAvailability.ACTIVE


class Heartbeat(Model):
    """Stored under the node's lease: it exists exactly while the node's agent is alive."""

    node: str
