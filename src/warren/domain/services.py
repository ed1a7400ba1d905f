"""Stored service records and revisions. Pure, frozen.

A ``Service`` is the current desired state of one service: its spec and the number of the
revision that spec's template was stored as. A ``Revision`` is an immutable snapshot of a spec; a
new one is made only when the template changes (``ServiceSpec.same_template``) — its one later
addition is the image digest its first task ran. A
``RevisionEntry`` is a revision as the API lists it, marked current and/or stable; an
``EnvChange`` is one line of the env's difference between two revisions.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import Model
from .specs import ServiceSpec

__all__ = ["EnvChange", "Revision", "RevisionEntry", "Service", "env_changes"]


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
    image_digest: str | None = None
    """The image the revision's first task ran (``Task.image_digest``), kept once seen: its
    later tasks — a scale up, a replacement, a rollback to it — run exactly that image, not
    whatever its tag names by then. The spec stays as written; this is what it resolved to."""
    image_nodes: tuple[str, ...] = ()
    """The nodes where a task of this revision ran ``image_digest``: where the image is, as far
    as Warren knows (what a rollback checks when the image cannot be pulled)."""

    def runnable_spec(self) -> ServiceSpec:
        """The spec a task of this revision runs: the image pinned to its digest once known."""
        if self.image_digest is None or not self.spec.image:
            return self.spec
        return self.spec.model_copy(update={"image": self.image_digest})


class RevisionEntry(Revision):
    """A revision as ``GET /v1/services/NAME/revisions`` lists it."""

    current: bool = False
    """The service's spec is this revision now (after a rollback, an older number)."""
    stable: bool = False
    """The revision the last good release left serving: what a failed update falls back to
    (``planning.releases.newest_good_revision``)."""


class EnvChange(Model):
    """One env key that differs between two revisions: ``old`` None, it was added; ``new``
    None, it was removed; both set, its value changed."""

    key: str
    old: str | None = None
    new: str | None = None

    def __str__(self) -> str:
        if self.old is None:
            return f"+{self.key}={self.new}"
        if self.new is None:
            return f"-{self.key}"
        return f"~{self.key}={self.old}→{self.new}"


def env_changes(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[EnvChange, ...]:
    """What changed from ``before`` to ``after``, by key: {A: 1, B: 2} → {A: 1, B: 3, C: 4}
    is (~B=2→3, +C=4)."""
    keys = sorted(before.keys() | after.keys())
    return tuple(
        EnvChange(key=k, old=before.get(k), new=after.get(k))
        for k in keys
        if before.get(k) != after.get(k)
    )
