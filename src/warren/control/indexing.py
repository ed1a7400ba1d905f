"""Indexes over the informers' caches that several controllers share: tasks by service, and
what each node carries (for placement). Updated incrementally from informer events, so a sync
costs O(tasks of one service), not O(all tasks)."""

from __future__ import annotations

from collections import defaultdict

from ..domain.deployments import Deployment
from ..domain.nodes import Node
from ..domain.services import Revision
from ..domain.specs import Resources
from ..domain.tasks import Task
from ..planning.placement import NodeLoad
from ..store.cluster import revision_key
from ..store.informing import Informer

__all__ = ["DeploymentIndex", "TaskIndex"]


class TaskIndex:
    def __init__(self, tasks: Informer[Task], revisions: Informer[Revision]) -> None:
        self._revisions = revisions
        self.by_service: dict[str, dict[str, Task]] = defaultdict(dict)
        """The tasks of each service's slots."""
        self.jobs_by_service: dict[str, dict[str, Task]] = defaultdict(dict)
        """Each service's jobs (``planning.jobs``): no slot, no route, no rollout counts them."""
        self.loads: dict[str, NodeLoad] = defaultdict(NodeLoad)
        self._counted: dict[str, tuple[str, str, Resources]] = {}
        tasks.on_change(self._changed)

    def resources_of(self, task: Task) -> Resources:
        rev = self._revisions.items.get(revision_key(task.service, task.revision))
        return rev.spec.resources if rev else Resources()

    def _changed(self, key: str, old: Task | None, new: Task | None) -> None:
        if new is None:
            if old is not None:
                index = self.jobs_by_service if old.job else self.by_service
                index[old.service].pop(old.id, None)
                if not index[old.service]:
                    del index[old.service]
        else:
            (self.jobs_by_service if new.job else self.by_service)[new.service][new.id] = new
        # Reserved resources: an active task with a node counts against that node.
        counted = self._counted.pop(key, None)
        if counted is not None:
            node, service, res = counted
            load = self.loads[node]
            load.cpus -= res.cpus
            load.memory -= res.memory
            load.tasks -= 1
            load.per_service[service] -= 1
            if not load.per_service[service]:
                del load.per_service[service]
        if new is not None and new.node and new.state.active:
            res = self.resources_of(new)
            self.loads[new.node].add(new.service, res)
            self._counted[key] = (new.node, new.service, res)

    def tasks(self, service: str) -> list[Task]:
        return list(self.by_service.get(service, {}).values())

    def jobs(self, service: str) -> list[Task]:
        return list(self.jobs_by_service.get(service, {}).values())

    def on_node(self, node: Node | str) -> int:
        name = node if isinstance(node, str) else node.name
        return self.loads[name].tasks if name in self.loads else 0


class DeploymentIndex:
    """The newest deployment of each service: the one that drives its tasks."""

    def __init__(self, deployments: Informer[Deployment]) -> None:
        self._deployments = deployments
        self.latest_key: dict[str, str] = {}
        deployments.on_change(self._changed)

    def _changed(self, key: str, old: Deployment | None, new: Deployment | None) -> None:
        service = (new or old).service  # type: ignore[union-attr]
        if new is not None:
            if key >= self.latest_key.get(service, ""):
                self.latest_key[service] = key
        elif self.latest_key.get(service) == key:
            prefix = key.rsplit("/", 1)[0] + "/"
            rest = [k for k in self._deployments.items if k.startswith(prefix)]
            if rest:
                self.latest_key[service] = max(rest)
            else:
                del self.latest_key[service]

    def latest(self, service: str) -> Deployment | None:
        key = self.latest_key.get(service)
        return self._deployments.items.get(key) if key else None
