"""The reconciler: keeps each service's tasks matching its spec (replicas, revision, restart
policy), places new tasks on nodes, and forgets what is no longer needed.

It decides with ``planning.reconciling.plan_service`` and ``planning.placement.place`` and applies
the result as one compare-and-swap transaction per service. It reacts to changes of services,
tasks and nodes (informer events), and to its own back-off deadlines — it never polls.

Drain: the nodes whose availability is ``drain`` go into the plan, which moves their tasks to
other nodes; what a drain has done so far is read from the tasks alone, so a restarted server
carries on where the last one stopped.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

from ..domain.deployments import Deployment
from ..domain.events import Level
from ..domain.nodes import Node, NodeStatus
from ..domain.services import Revision, Service
from ..domain.specs import UpdateOrder
from ..domain.tasks import DesiredState, Task, TaskState, task_id
from ..planning.placement import PlacementRequest, place, why_unplaced
from ..planning.reconciling import plan_service
from ..planning.strategies import drives, slot_revisions
from ..ports import Clock, Compare, Delete, Op, Put
from ..store.cluster import (
    DEPLOYMENTS,
    REVISIONS,
    TASKS,
    ClusterStore,
    encode,
    request_key,
    revision_key,
    service_key,
    task_key,
)
from ..store.informing import Informer
from .controlling import Controller
from .indexing import DeploymentIndex, TaskIndex

__all__ = ["Reconciler"]

LAG_RETRY = 0.02
LAG_LIMIT = 2.0

log = logging.getLogger("warren.control")


class Reconciler(Controller):
    name = "reconciler"

    def __init__(
        self,
        cluster: ClusterStore,
        services: Informer[Service],
        tasks: Informer[Task],
        nodes: Informer[Node],
        revisions: Informer[Revision],
        index: TaskIndex,
        deployments: DeploymentIndex,
        clock: Clock,
    ) -> None:
        super().__init__(clock)
        self.cluster = cluster
        self.services = services
        self.tasks = tasks
        self.nodes = nodes
        self.revisions = revisions
        self.index = index
        self.deployments = deployments
        self._unplaced: set[str] = set()  # services with tasks waiting for a node
        self._notes: dict[str, tuple[str, ...]] = {}
        self._lag_since: dict[str, float] = {}
        """Services waiting for their deployment to reach this manager's cache (see
        ``_deployment_lags``): a cache's lag, not rollout progress."""
        services.on_change(lambda key, old, new: self.queue.add((new or old).name))  # type: ignore[union-attr]
        tasks.on_change(self._task_changed)
        nodes.on_change(self._node_changed)

    def deployment_changed(self, key: str, old: Deployment | None, new: Deployment | None) -> None:
        self.queue.add((new or old).service)  # type: ignore[union-attr]

    def _task_changed(self, key: str, old: Task | None, new: Task | None) -> None:
        task = new or old
        assert task is not None
        # Only what the plan looks at: state, readiness, desired state, existence.
        if (
            old is None
            or new is None
            or old.state != new.state
            or old.ready != new.ready
            or old.desired_state != new.desired_state
            or old.node != new.node
        ):
            self.queue.add(task.service)

    def _node_changed(self, key: str, old: Node | None, new: Node | None) -> None:
        if new is not None and (old is None or (new.schedulable and not old.schedulable)):
            for name in self._unplaced:
                self.queue.add(name)
        if (
            old is not None
            and new is not None
            and (old.availability != new.availability or old.status != new.status)
        ):
            # Drained: its tasks move; activated: replacements not started yet are dropped;
            # down: its tasks are replaced elsewhere.
            for name, tasks in self.index.by_service.items():
                if any(t.node == new.name and t.state.active for t in tasks.values()):
                    self.queue.add(name)

    def enqueue_all(self) -> None:
        for service in self.services.values():
            self.queue.add(service.name)
        for name in list(self.index.by_service):
            self.queue.add(name)

    def _deployment_lags(
        self, service: Service, deployment: Deployment | None, tasks: Iterable[Task], now: float
    ) -> bool:
        """Whether the service moved to a revision whose deployment this manager has not seen
        yet. Both are written in one txn, but with etcd each prefix has its own watch stream:
        the service can arrive first, and planning then would move every slot at once. Wait
        for the deployment — a moment, and at most LAG_LIMIT (a deployment lost for good must
        not freeze the service)."""
        name = service.name
        known = deployment is not None and service.revision in (
            deployment.to_revision,
            deployment.from_revision,
        )
        if known or not any(t.revision != service.revision and t.state.active for t in tasks):
            self._lag_since.pop(name, None)
            return False
        since = self._lag_since.setdefault(name, now)
        if now - since < LAG_LIMIT:
            return True
        log.warning(
            "service %s: no deployment to revision %d seen; going on", name, service.revision
        )
        self._lag_since.pop(name, None)
        return False

    async def sync(self, key: str) -> float | None:
        name = key
        service = self.services.items.get(service_key(name))
        tasks = self.index.tasks(name)
        now = self.clock.now()
        # While a deployment moves the service to its current revision, it says which slots
        # have moved; the others keep what they run.
        deployment = self.deployments.latest(name)
        if service is not None and self._deployment_lags(service, deployment, tasks, now):
            return now + LAG_RETRY
        slot_map, order = None, UpdateOrder.START_FIRST
        if service is not None and deployment is not None and drives(service, deployment):
            slot_map = slot_revisions(deployment, tasks, service.spec.replicas)
            order = deployment.config.order
        draining = {n.name for n in self.nodes.values() if n.draining}
        down = {n.name for n in self.nodes.values() if n.status == NodeStatus.DOWN}
        plan = plan_service(name, service, tasks, now, slot_map, order, draining, down)
        compares: list[Compare] = []
        ops: list[Op] = []

        new_tasks: list[Task] = []
        for new in plan.create:
            tid = task_id(name, new.slot, secrets.token_hex(3))
            new_tasks.append(
                Task(
                    id=tid,
                    service=name,
                    revision=new.revision,
                    slot=new.slot,
                    created_at=now,
                    updated_at=now,
                    attempt=new.attempt,
                )
            )
        # Place the new tasks and any still waiting for a node.
        waiting = [t for t in tasks if t.node is None and t.state == TaskState.PENDING]
        # A task the plan shuts down is not placed: it is ended below, in the same transaction.
        ending = {tid for tid, _why in plan.shutdown}
        waiting = [t for t in waiting if t.wants_running and t.id not in ending]
        to_place = waiting + new_tasks
        placed: dict[str, Task] = {}
        if to_place:
            nodes = self.nodes.values()
            requests = [self._request(t) for t in to_place]
            where = place(requests, nodes, self.index.loads)
            for task, req in zip(to_place, requests, strict=True):
                node = where[task.id]
                if node is not None:
                    placed[task.id] = task.changed(now, node=node, message="")
                else:
                    reason = why_unplaced(req, nodes, self.index.loads)
                    if task.message != reason:
                        placed[task.id] = task.changed(now, message=reason)
            unplaced = any(where[t.id] is None for t in to_place)
            if unplaced:
                self._unplaced.add(name)
            else:
                self._unplaced.discard(name)
        for task in new_tasks:
            created = placed.get(task.id, task)
            compares.append(Compare.absent(task_key(created)))
            ops.append(Put(task_key(created), encode(created)))
        for task in waiting:
            if task.id in placed:
                self._cas(task, placed[task.id], compares, ops)

        by_id = {t.id: t for t in tasks}
        for tid, why in plan.shutdown:
            task = by_id[tid]
            if task.state == TaskState.PENDING and task.node is None:
                # No agent will ever see it: end it here.
                done = task.transition(TaskState.STOPPED, now, message=why)
                self._cas(
                    task, done.changed(now, desired_state=DesiredState.SHUTDOWN), compares, ops
                )
            else:
                changed = task.changed(now, desired_state=DesiredState.SHUTDOWN, message=why)
                self._cas(task, changed, compares, ops)
        for tid in plan.forget:
            key_ = task_key(by_id[tid])
            kv = self.tasks.kvs.get(key_)
            if kv is not None:
                compares.append(Compare.unchanged(kv))
                ops.append(Delete(key_))
        if plan.forget_revisions:
            ops.append(Delete(f"{REVISIONS}{name}/", prefix=True))
            ops.append(Delete(f"{DEPLOYMENTS}{name}/", prefix=True))
            ops.append(Delete(request_key(name)))

        if ops:
            res = await self.cluster.raw.txn(compares, ops)
            if not res.succeeded:
                await self.tasks.wait_for(self.tasks.revision + 1, timeout=0.05)
                return now  # lost a race with an agent or a user; look again
            if any(op.key.startswith(TASKS) for op in ops):
                # Our own write must be in the cache before the next sync decides again.
                await self.tasks.wait_for(res.revision)
            for task, new in zip(new_tasks, plan.create, strict=True):
                if new.replaces is not None:
                    log.info("%s moves off a draining node: replaced by %s", new.replaces, task.id)
                else:
                    log.debug("created %s (revision %d)", task.id, task.revision)
        if plan.notes and plan.notes != self._notes.get(name):
            self._notes[name] = plan.notes
            for note in plan.notes:
                await self.cluster.record("service.slot_empty", note, Level.WARNING, service=name)
        return plan.requeue_at

    def _request(self, task: Task) -> PlacementRequest:
        rev = self.revisions.items.get(revision_key(task.service, task.revision))
        service = self.services.items.get(service_key(task.service))
        spec = rev.spec if rev else service.spec if service else None
        if spec is None:
            return PlacementRequest(task.id, task.service, self.index.resources_of(task), "process")
        return PlacementRequest(task.id, task.service, spec.resources, spec.effective_driver)

    def _cas(self, old: Task, new: Task, compares: list[Compare], ops: list[Op]) -> None:
        kv = self.tasks.kvs.get(task_key(old))
        if kv is None:
            return
        compares.append(Compare.unchanged(kv))
        ops.append(Put(kv.key, encode(new)))
