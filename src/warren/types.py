"""The types of the seed's Go API, in Python: what a ``Deployer`` needs from the cluster.

``ServiceManager`` is the seed's ``types.ServiceManager``. ``warren.client.Client`` (over HTTP)
and ``warren.server.EmbeddedServer.manager`` (in the same process) implement it, together with
the optional ``DeploymentManager`` methods that let a Deployer show a rollout's phase and roll
back. Must not import anything but ``domain``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .domain.deployments import DeploymentStatus
from .domain.services import Service
from .domain.specs import ServiceSpec, Strategy
from .domain.tasks import Task

__all__ = [
    "DeployStrategy",
    "DeploymentManager",
    "DeploymentStatus",
    "Service",
    "ServiceManager",
    "ServiceSpec",
    "Task",
]

DeployStrategy = Strategy
"""``rolling``, ``blue-green`` or ``canary`` (the seed's ``types.DeployStrategy``)."""


@runtime_checkable
class ServiceManager(Protocol):
    def get_service(self, service_id: str) -> Service: ...

    def list_services(self) -> list[Service]: ...

    def create_service(self, service: ServiceSpec) -> Service: ...

    def update_service(self, service: ServiceSpec) -> Service:
        """Replace the spec; a changed template starts a deployment."""
        ...

    def delete_service(self, service_id: str) -> None: ...

    def list_tasks_by_service(self, service_id: str) -> list[Task]: ...

    def update_task(self, task: Task) -> Task:
        """Only the desired state is taken: ``shutdown`` stops the task."""
        ...


@runtime_checkable
class DeploymentManager(ServiceManager, Protocol):
    """A ServiceManager that also knows deployments (Warren's own managers do)."""

    def deployment_status(self, service: str) -> DeploymentStatus: ...

    def rollback_service(
        self, service: str, to_revision: int | None = None
    ) -> tuple[Service, str]: ...
