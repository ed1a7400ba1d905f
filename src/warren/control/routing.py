"""The routing controller: tells the data plane, per service, which endpoints get traffic.

Only tasks that want to run, run, and are ready are routed to; a task whose desired state turns
to shutdown leaves the routing table at once — before its agent stops it — so that the agent's
drain finds it already out of rotation.
"""

from __future__ import annotations

from ..domain.nodes import Node
from ..domain.services import Service
from ..domain.tasks import Task, TaskState
from ..ports import Clock, DataPlane, Endpoint, Route
from ..store.cluster import service_key
from ..store.informing import Informer
from .controlling import Controller
from .indexing import TaskIndex

__all__ = ["RoutingController", "route_for"]


def route_for(service: Service, tasks: list[Task]) -> Route:
    endpoints = tuple(
        Endpoint(t.endpoint, t.id, t.revision)
        for t in sorted(tasks, key=lambda t: (t.slot, t.id))
        if t.endpoint and t.ready and t.wants_running and t.state == TaskState.RUNNING
    )
    return Route(
        service=service.name,
        ports=tuple(p.published for p in service.spec.ports),
        host=service.spec.host,
        endpoints=endpoints,
    )


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
    ) -> None:
        super().__init__(clock)
        self.services = services
        self.index = index
        self.dataplane = dataplane
        self._applied: dict[str, Route] = {}
        services.on_change(lambda key, old, new: self.queue.add((new or old).name))  # type: ignore[union-attr]
        tasks.on_change(self._task_changed)

    def _task_changed(self, key: str, old: Task | None, new: Task | None) -> None:
        task = new or old
        assert task is not None
        self.queue.add(task.service)

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
        route = route_for(service, self.index.tasks(key))
        if self._applied.get(key) != route:
            await self.dataplane.update({key: route})
            self._applied[key] = route
        return None
