"""The routing controller: tells the data plane, per service, which endpoints get traffic.

Only tasks that want to run, run, and are ready are routed to; a task whose desired state turns
to shutdown leaves the routing table at once — before its agent stops it — so that the agent's
drain finds it already out of rotation.
"""

from __future__ import annotations

import dataclasses

from ..domain.deployments import Deployment, DeploymentKind
from ..domain.nodes import Node
from ..domain.services import Revision, Service
from ..domain.specs import HeaderRoute, RouteMatch, ServiceSpec
from ..domain.tasks import Task, TaskState
from ..planning.strategies import RouteExtras, kind_of
from ..ports import Clock, DataPlane, Endpoint, Pin, Route
from ..store.cluster import revision_key, service_key
from ..store.informing import Informer
from .controlling import Controller
from .indexing import DeploymentIndex, TaskIndex

__all__ = ["RoutingController", "route_for"]


def route_for(
    service: Service,
    tasks: list[Task],
    deployment: Deployment | None = None,
    release: ServiceSpec | None = None,
) -> Route:
    """The route of ``service``: its ready tasks, and — while a canary or blue/green release
    runs — the weights per revision, the preview pin and the sticky cookie (``release``: the new
    revision's spec). (The canary of a release a newer update dropped is shut down by the
    reconciler as soon as its slot's stable task is ready — at once — and so leaves the route.)"""
    endpoints = tuple(
        Endpoint(t.endpoint, t.id, t.revision)
        for t in sorted(tasks, key=lambda t: (t.slot, t.id))
        if t.endpoint and t.ready and t.wants_running and t.state == TaskState.RUNNING
    )
    weights = deployment.weights if deployment is not None else ()
    extras = RouteExtras()
    if deployment is not None and deployment.kind == DeploymentKind.UPDATE:
        extras = kind_of(deployment).route_extras(deployment, release)
    pins: tuple[Pin, ...] = ()
    if deployment is not None and extras.preview_header:
        pins = (Pin(deployment.to_revision, header=extras.preview_header),)
    if deployment is not None:
        pins += tuple(_pin(deployment.to_revision, r) for r in extras.header_routes)
    return Route(
        service=service.name,
        ports=tuple(p.published for p in service.spec.ports),
        host=service.spec.host,
        endpoints=endpoints,
        weights=weights,
        pins=pins,
        sticky_cookie=extras.sticky_cookie,
        tls=tuple((p.published, p.tls.cert, p.tls.key) for p in service.spec.ports if p.tls),
        paths=service.spec.paths,
    )


def _condition(revision: int, match: RouteMatch) -> Pin:
    value = match.header_value or match.cookie_value
    assert value is not None
    return Pin(
        revision, header=match.header_name, cookie=match.cookie_name, value=value.text,
        match=value.kind,
    )  # fmt: skip


def _pin(revision: int, route: HeaderRoute) -> Pin:
    """A canary's header route as the ingress reads it: every match must hold."""
    first, *more = (_condition(revision, m) for m in route.match)
    return dataclasses.replace(first, also=tuple(more))


class RoutingController(Controller):
    name = "routing"

    def __init__(
        self,
        services: Informer[Service],
        tasks: Informer[Task],
        nodes: Informer[Node],
        index: TaskIndex,
        dataplane: DataPlane,
        clock: Clock,
        deployments: DeploymentIndex | None = None,
        revisions: Informer[Revision] | None = None,
    ) -> None:
        super().__init__(clock)
        self.services = services
        self.index = index
        self.deployments = deployments
        self.revisions = revisions
        self.dataplane = dataplane
        self._applied: dict[str, Route] = {}
        services.on_change(lambda key, old, new: self.queue.add((new or old).name))  # type: ignore[union-attr]
        tasks.on_change(self._task_changed)

    def _task_changed(self, key: str, old: Task | None, new: Task | None) -> None:
        task = new or old
        assert task is not None
        self.queue.add(task.service)

    def deployment_changed(self, key: str, old: Deployment | None, new: Deployment | None) -> None:
        self.queue.add((new or old).service)  # type: ignore[union-attr]

    def enqueue_all(self) -> None:
        for service in self.services.values():
            self.queue.add(service.name)

    async def sync(self, key: str) -> float | None:
        service = self.services.items.get(service_key(key))
        if service is None:
            if key in self._applied:
                await self.dataplane.update({key: None})
                del self._applied[key]
            return None
        deployment = self.deployments.latest(key) if self.deployments else None
        release = None
        if deployment is not None and self.revisions is not None:
            rev = self.revisions.items.get(revision_key(key, deployment.to_revision))
            release = rev.spec if rev is not None else None
        route = route_for(service, self.index.tasks(key), deployment, release)
        if self._applied.get(key) != route:
            await self.dataplane.update({key: route})
            self._applied[key] = route
        return None
