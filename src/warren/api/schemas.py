"""Wire schemas of the API that are not domain models: request bodies for partial updates and
scaling, and the summaries the list endpoints return."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from ..domain.base import Model, Whole
from ..domain.nodes import NodeSummary  # a domain model: the client reads it too
from ..domain.services import Service
from ..domain.tasks import DesiredState, Task

__all__ = ["ErrorBody", "NodeSummary", "ScaleRequest", "ServicePatch", "ServiceSummary"]


class ScaleRequest(Model):
    replicas: Whole = Field(ge=0, le=10_000)


class RollbackRequest(Model):
    to_revision: int | None = Field(None, ge=1)
    """Default: the revision before the newest deployment."""


class TaskPatch(Model):
    """Only the desired state can be changed from outside: ``shutdown`` stops a task (the
    reconciler replaces it if the service still wants it)."""

    desired_state: DesiredState


class ServicePatch(Model):
    """A partial update: ``spec`` holds only the camelCase fields to change (merged into the
    current spec; ``env`` merges key by key), ``envRm`` the env keys to remove."""

    spec: dict[str, Any] = {}
    env_rm: tuple[str, ...] = ()
    cause: str = ""
    replace: bool = Field(False, strict=True)
    """``spec`` is a whole spec, not a change (``deploy plan -f FILE``)."""
    force: bool = Field(False, strict=True)
    """Redeploy even when nothing changes (``service update --force``)."""


class ErrorDetail(Model):
    code: str
    message: str
    field: str | None = None


class ErrorBody(Model):
    error: ErrorDetail


class ServiceSummary(Model):
    name: str
    revision: int
    replicas: int
    running: int
    ready: int
    image: str | None = None
    command: tuple[str, ...] | None = None
    version: str
    ports: tuple[int, ...] = ()
    host: str | None = None
    strategy: str
    updated_at: float

    @staticmethod
    def of(service: Service, tasks: Iterable[Task]) -> ServiceSummary:
        """``tasks``: the service's own tasks."""
        mine = [t for t in tasks if t.wants_running]
        spec = service.spec
        return ServiceSummary(
            name=spec.name,
            revision=service.revision,
            replicas=spec.replicas,
            running=sum(1 for t in mine if t.state == "running"),
            ready=sum(1 for t in mine if t.ready),
            image=spec.image,
            command=spec.command,
            version=spec.version_label,
            ports=tuple(p.published for p in spec.ports),
            host=spec.host,
            strategy=spec.deploy.strategy,
            updated_at=service.updated_at,
        )
