"""Events: what happened, for people (``warren service ps``, the SSE stream). Pure, frozen."""

from __future__ import annotations

from enum import StrEnum

from .base import Model

__all__ = ["Event", "Level"]


class Level(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Event(Model):
    id: str
    time: float
    kind: str
    """Dotted: ``service.created``, ``task.failed``, ``node.down`` …"""
    message: str
    level: Level = Level.INFO
    service: str | None = None
    task: str | None = None
    node: str | None = None
