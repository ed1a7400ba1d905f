"""The seed's ``Deployer``, in Python: update a service to a new image with a strategy, read the
rollout's status, roll it back.

It coordinates and does not execute: ``update_service`` changes the service's spec through the
manager and returns at once; the server's deployment controller moves the tasks, watches their
health and rolls back on failure — and keeps doing so if this process goes away. ::

    from warren.client import Client
    from warren.deploy import Deployer

    deployer = Deployer(Client())
    deployer.update_service("web", "nginx:1.21", strategy="rolling")
    status = deployer.get_deployment_status("web")
    print(status.ready_tasks, "/", status.desired_tasks, status.phase)
    deployer.rollback_deployment("web")

Must not import the server, the API or the CLI.
"""

from __future__ import annotations

from .domain.deployments import DeploymentStatus
from .domain.errors import ValidationError, WarrenError
from .domain.specs import Strategy
from .types import DeploymentManager, ServiceManager

__all__ = ["Deployer", "DeploymentStatus"]


class Deployer:
    def __init__(self, manager: ServiceManager) -> None:
        self.manager = manager

    def update_service(
        self, service_id: str, new_image: str, strategy: Strategy | str | None = None
    ) -> DeploymentStatus:
        """Start moving ``service_id`` to ``new_image`` (with ``strategy``, else the service's
        own). Returns the status right after the start; the rollout runs on the server."""
        service = self.manager.get_service(service_id)
        spec = service.spec
        if spec.image is None:
            raise ValidationError(
                f"service {service_id!r} runs a command, not an image: change its spec with "
                "manager.update_service instead",
                "new_image",
            )
        deploy = spec.deploy
        if strategy is not None:
            try:
                deploy = deploy.model_copy(update={"strategy": Strategy(strategy)})
            except ValueError:
                choices = ", ".join(s.value for s in Strategy)
                raise ValidationError(f"expected one of {choices}", "strategy") from None
        self.manager.update_service(spec.model_copy(update={"image": new_image, "deploy": deploy}))
        return self.get_deployment_status(service_id)

    def get_deployment_status(self, service_id: str) -> DeploymentStatus:
        """Tasks by state, ready vs desired, and — from a Warren manager — the deployment's
        phase, step and last decisions."""
        if isinstance(self.manager, DeploymentManager):
            return self.manager.deployment_status(service_id)
        service = self.manager.get_service(service_id)
        return DeploymentStatus.of(
            spec=service.spec,
            revision=service.revision,
            deployments=(),
            tasks=self.manager.list_tasks_by_service(service_id),
            now=0.0,
        )

    def rollback_deployment(
        self, service_id: str, to_revision: int | None = None
    ) -> DeploymentStatus:
        """Go back to the previous revision (or ``to_revision``); returns at once."""
        if not isinstance(self.manager, DeploymentManager):
            raise WarrenError("this manager keeps no revisions: it cannot roll back")
        self.manager.rollback_service(service_id, to_revision)
        return self.get_deployment_status(service_id)
