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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import chain

from ..domain.deployments import Deployment
from ..domain.events import Level
from ..domain.nodes import Node, NodeStatus
from ..domain.services import Revision, Service
from ..domain.specs import UpdateOrder
from ..domain.tasks import DesiredState, Task, TaskState, task_id
from ..planning.jobs import JobPlan, plan_jobs
from ..planning.placement import PlacementRequest, place, why_unplaced
from ..planning.reconciling import NewTask, ReconcilePlan, plan_service
from ..planning.strategies import drives, slot_revisions
from ..ports import Clock, Compare, Delete, Op, Put
from ..store.cluster import (
    DEPLOYMENTS,
    NOTIFICATIONS,
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
            or (new.image_digest is not None and old.image_digest != new.image_digest)
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
        """Plan service ``key``, then apply the plan as one transaction: create its new tasks,
        place them and those still waiting, shut down, forget. Returns when to look again."""
        name = key
        service = self.services.items.get(service_key(name))
        tasks = self.index.tasks(name)
        now = self.clock.now()
        # While a deployment moves the service to its current revision, it says which slots
        # have moved; the others keep what they run.
        deployment = self.deployments.latest(name)
        if service is not None and self._deployment_lags(service, deployment, tasks, now):
            return now + LAG_RETRY
        await self._pin_images(name, tasks)
        jobs = self.index.jobs(name)
        job_plan = plan_jobs(name, service is not None, deployment, jobs, now)
        plan = _with_jobs(self._plan(name, service, deployment, tasks, now), job_plan, jobs)
        slot_tasks = _new_tasks(name, plan.create, now)
        new_tasks = slot_tasks + list(job_plan.create)
        everything = tasks + jobs
        waiting = _waiting_tasks(everything, plan)
        placed = self._place(name, waiting + new_tasks, now)
        writes = _join(
            [
                _create(new_tasks, placed),
                self._update_waiting(waiting, placed),
                self._shut_down(everything, plan, now),
                self._forget(everything, plan),
                _forget_revisions(name) if plan.forget_revisions else _Writes(),
            ]
        )
        if writes.ops:
            if not await self._write(writes):
                return now  # lost a race with an agent or a user; look again
            _log_created(slot_tasks, plan.create)
            for job in job_plan.create:
                log.info("service %s: job %s started", name, job.id)
        await self._record_notes(name, plan.notes)
        return plan.requeue_at

    async def _pin_images(self, name: str, tasks: Iterable[Task]) -> None:
        """Keep with each revision the first image digest one of its tasks reported, and the
        nodes that ran it (a write per revision and node for its whole life: once kept,
        nothing more to do)."""
        ran: dict[int, dict[str, set[str]]] = {}  # revision → digest → nodes, first digest first
        for t in sorted(tasks, key=lambda t: t.started_at or t.created_at):
            if t.image_digest is not None and t.node is not None:
                ran.setdefault(t.revision, {}).setdefault(t.image_digest, set()).add(t.node)
        for number, digests in ran.items():
            rev = self.revisions.items.get(revision_key(name, number))
            if rev is None:
                continue
            digest = rev.image_digest or next(iter(digests))
            nodes = digests.get(digest, set())
            if rev.image_digest is not None and nodes <= set(rev.image_nodes):
                continue
            if await self.cluster.pin_image(name, number, digest, nodes):
                log.info("service %s: revision %d runs %s on %s", name, number, digest, nodes)

    def _plan(
        self,
        name: str,
        service: Service | None,
        deployment: Deployment | None,
        tasks: list[Task],
        now: float,
    ) -> ReconcilePlan:
        """Plan the service with what it depends on besides its tasks: the slots' revisions and
        the update order of the deployment that drives it (if any), the draining nodes, and the
        nodes that are down."""
        slot_map, order = None, UpdateOrder.START_FIRST
        if service is not None and deployment is not None and drives(service, deployment):
            slot_map = slot_revisions(deployment, tasks, service.spec.replicas)
            order = deployment.config.order
        draining = {n.name for n in self.nodes.values() if n.draining}
        down = {n.name for n in self.nodes.values() if n.status == NodeStatus.DOWN}
        return plan_service(name, service, tasks, now, slot_map, order, draining, down)

    def _place(self, name: str, to_place: list[Task], now: float) -> dict[str, Task]:
        """Place the new tasks and those still waiting for a node: task id → the task on its
        node, or with the reason no node can take it as its message (when that is news)."""
        placed: dict[str, Task] = {}
        if not to_place:
            return placed
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
        # A node that turns schedulable wakes the services with tasks still waiting.
        if any(where[t.id] is None for t in to_place):
            self._unplaced.add(name)
        else:
            self._unplaced.discard(name)
        return placed

    def _update_waiting(self, waiting: Iterable[Task], placed: Mapping[str, Task]) -> _Writes:
        """Write the waiting tasks placed now, or with a new reason why no node can take them."""
        return _join(self._cas(t, placed[t.id]) for t in waiting if t.id in placed)

    def _shut_down(self, tasks: list[Task], plan: ReconcilePlan, now: float) -> _Writes:
        """Set the desired state of the tasks the plan shuts down, with the plan's why as their
        message."""
        by_id = {t.id: t for t in tasks}
        writes: list[_Writes] = []
        for tid, why in plan.shutdown:
            task = by_id[tid]
            if task.state == TaskState.PENDING and task.node is None:
                # No agent will ever see it: end it here.
                done = task.transition(TaskState.STOPPED, now, message=why)
                writes.append(
                    self._cas(task, done.changed(now, desired_state=DesiredState.SHUTDOWN))
                )
            else:
                changed = task.changed(now, desired_state=DesiredState.SHUTDOWN, message=why)
                writes.append(self._cas(task, changed))
        return _join(writes)

    def _forget(self, tasks: list[Task], plan: ReconcilePlan) -> _Writes:
        """Delete the ended tasks the plan forgets, unless they changed since they were read."""
        by_id = {t.id: t for t in tasks}
        compares: list[Compare] = []
        ops: list[Op] = []
        for tid in plan.forget:
            key = task_key(by_id[tid])
            kv = self.tasks.kvs.get(key)
            if kv is not None:
                compares.append(Compare.unchanged(kv))
                ops.append(Delete(key))
        return _Writes(tuple(compares), tuple(ops))

    async def _write(self, writes: _Writes) -> bool:
        """Write the sync's changes as one transaction; False when it lost a race (a task
        changed since it was read), after giving the cache a moment to catch up."""
        res = await self.cluster.raw.txn(writes.compares, writes.ops)
        if not res.succeeded:
            await self.tasks.wait_for(self.tasks.revision + 1, timeout=0.05)
            return False
        if any(op.key.startswith(TASKS) for op in writes.ops):
            # Our own write must be in the cache before the next sync decides again.
            await self.tasks.wait_for(res.revision)
        return True

    async def _record_notes(self, name: str, notes: tuple[str, ...]) -> None:
        """Record why slots stay empty as events, once for each new set of notes."""
        if notes and notes != self._notes.get(name):
            self._notes[name] = notes
            for note in notes:
                await self.cluster.record("service.slot_empty", note, Level.WARNING, service=name)

    def _request(self, task: Task) -> PlacementRequest:
        rev = self.revisions.items.get(revision_key(task.service, task.revision))
        service = self.services.items.get(service_key(task.service))
        spec = rev.spec if rev else service.spec if service else None
        if spec is None:
            return PlacementRequest(task.id, task.service, self.index.resources_of(task), "process")
        return PlacementRequest(task.id, task.service, spec.resources, spec.effective_driver)

    def _cas(self, old: Task, new: Task) -> _Writes:
        """Replace ``old`` by ``new``, unless it changed since it was read (or is gone)."""
        kv = self.tasks.kvs.get(task_key(old))
        if kv is None:
            return _Writes()
        return _Writes((Compare.unchanged(kv),), (Put(kv.key, encode(new)),))


@dataclass(frozen=True, slots=True)
class _Writes:
    """Part of a sync's transaction: the compares it needs and the operations it makes."""

    compares: tuple[Compare, ...] = ()
    ops: tuple[Op, ...] = ()


def _join(parts: Iterable[_Writes]) -> _Writes:
    """The parts as one transaction, in order (the order of the operations matters)."""
    items = list(parts)
    return _Writes(
        tuple(chain.from_iterable(p.compares for p in items)),
        tuple(chain.from_iterable(p.ops for p in items)),
    )


def _with_jobs(plan: ReconcilePlan, jobs: JobPlan, known: list[Task]) -> ReconcilePlan:
    """The slots' plan with the jobs' shutdowns, forgets and requeue (the jobs it creates are
    ``jobs.create``); a removed service forgets its revisions only once its jobs are gone
    too."""
    due = [t for t in (plan.requeue_at, jobs.requeue_at) if t is not None]
    return replace(
        plan,
        shutdown=plan.shutdown + jobs.shutdown,
        forget=plan.forget + jobs.forget,
        requeue_at=min(due, default=None),
        forget_revisions=plan.forget_revisions and not known,
    )


def _new_tasks(name: str, create: Iterable[NewTask], now: float) -> list[Task]:
    """The tasks the plan creates, each with a fresh id, not placed yet."""
    return [
        Task(
            id=task_id(name, new.slot, secrets.token_hex(3)),
            service=name,
            revision=new.revision,
            slot=new.slot,
            created_at=now,
            updated_at=now,
            attempt=new.attempt,
        )
        for new in create
    ]


def _waiting_tasks(tasks: Iterable[Task], plan: ReconcilePlan) -> list[Task]:
    """The service's tasks still waiting for a node, to be placed again."""
    # A task the plan shuts down is not placed: it is ended in the same transaction.
    ending = {tid for tid, _why in plan.shutdown}
    return [
        t
        for t in tasks
        if t.node is None
        and t.state == TaskState.PENDING
        and t.wants_running
        and t.id not in ending
    ]


def _create(new_tasks: Iterable[Task], placed: Mapping[str, Task]) -> _Writes:
    """Write the new tasks (placed, or waiting for a node), each only if its key is free."""
    created = [placed.get(t.id, t) for t in new_tasks]
    return _Writes(
        tuple(Compare.absent(task_key(t)) for t in created),
        tuple(Put(task_key(t), encode(t)) for t in created),
    )


def _forget_revisions(name: str) -> _Writes:
    """A deleted service with no tasks left: delete its revisions, deployments (and what was
    told of them) and request."""
    return _Writes(
        ops=(
            Delete(f"{REVISIONS}{name}/", prefix=True),
            Delete(f"{DEPLOYMENTS}{name}/", prefix=True),
            Delete(f"{NOTIFICATIONS}{name}/", prefix=True),
            Delete(request_key(name)),
        )
    )


def _log_created(new_tasks: Iterable[Task], create: Iterable[NewTask]) -> None:
    """Log the tasks written: a move off a draining node at info, any other at debug."""
    for task, new in zip(new_tasks, create, strict=True):
        if new.replaces is not None:
            log.info("%s moves off a draining node: replaced by %s", new.replaces, task.id)
        else:
            log.debug("created %s (revision %d)", task.id, task.revision)
