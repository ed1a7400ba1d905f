"""Stored service records and revisions. Pure, frozen.

A ``Service`` is the current desired state of one service: its spec and the number of the
revision that spec's template was stored as. A ``Revision`` is an immutable snapshot of a spec; a
new one is made only when the template changes (``ServiceSpec.same_template``).
"""

from __future__ import annotations

from .base import Model
from .specs import ServiceSpec

__all__ = ["Revision", "Service"]


class Service(Model):
    spec: ServiceSpec
    revision: int
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name


class Revision(Model):
    service: str
    number: int
    spec: ServiceSpec
    created_at: float
    change: str = ""
    """What made this revision, e.g. ``create``, ``update: env VERSION=v2``, ``rollback to 1``."""
