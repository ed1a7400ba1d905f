"""The deployment controller: the one writer of deployments. For each service it settles the
history (a deployment a newer one took over is superseded, or linked to the rollback that
undoes it, and ends when that rollback does), starts a rollback that was decided, applies the
operator's request (pause, resume, promote, abort) and answers it, and drives the newest
deployment with its strategy's pure planner — storing each next record with compare-and-swap,
and only while it is still the newest.

Level-triggered: every sync recomputes from the stored deployments, the request and the observed
tasks. It reacts to task changes (a task turning ready moves the rollout within milliseconds),
to deployment, request, service and node changes, and to the planner's own deadlines (monitor,
delay, healthy and progress deadlines) — never to a polling tick. Kill the server at any
instant: on restart the next sync continues from the stored records; a rollback decided but not
yet started is started; a failed release's revert is written with its failure, in one
transaction.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging

from ..domain import transitions
from ..domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ..domain.events import Level
from ..domain.nodes import Node, NodeStatus
from ..domain.requests import OperatorRequest
from ..domain.services import Revision, Service
from ..domain.tasks import Task
from ..planning import intents
from ..planning.analysis import Sample
from ..planning.jobs import post_deploy_step
from ..planning.releases import last_good_revision
from ..planning.rollouts import RolloutView, Step
from ..planning.strategies import kind_of, plan_step
from ..planning.strategies.traffic import post_rollout_step
from ..ports import Clock, Compare, MetricSource, Op, Put
from ..store.cluster import (
    DEPLOYMENTS,
    REVISIONS,
    ClusterStore,
    deployment_key,
    encode,
    request_key,
    revision_key,
    sequence_of,
    service_key,
)
from ..store.informing import Informer
from .checking import CheckRunner
from .controlling import Controller
from .indexing import DeploymentIndex, TaskIndex

__all__ = ["DeploymentController", "sequence_of"]

log = logging.getLogger("warren.control")

_LEVELS = {
    Phase.SUCCEEDED: Level.INFO,
    Phase.PAUSED: Level.WARNING,
    Phase.FAILED: Level.ERROR,
    Phase.ROLLING_BACK: Level.WARNING,
    Phase.ROLLED_BACK: Level.WARNING,
}


class DeploymentController(Controller):
    name = "deployments"

    def __init__(
        self,
        cluster: ClusterStore,
        services: Informer[Service],
        tasks: Informer[Task],
        deployments: Informer[Deployment],
        revisions: Informer[Revision],
        latest: DeploymentIndex,
        index: TaskIndex,
        clock: Clock,
        metrics: MetricSource | None = None,
        nodes: Informer[Node] | None = None,
        requests: Informer[OperatorRequest] | None = None,
    ) -> None:
        super().__init__(clock)
        self.cluster = cluster
        self.revisions = revisions
        self.metrics = metrics
        self.services = services
        self.deployments = deployments
        self.latest = latest
        self.index = index
        self.nodes = nodes
        self.requests = requests
        self.checks = CheckRunner(lambda deployment: self.queue.add(deployment.rsplit("-", 1)[0]))
        services.on_change(lambda key, old, new: self.queue.add((new or old).name))  # type: ignore[union-attr]
        tasks.on_change(self._task_changed)
        deployments.on_change(lambda key, old, new: self.queue.add((new or old).service))  # type: ignore[union-attr]
        if nodes is not None:
            nodes.on_change(self._node_changed)
        if requests is not None:
            requests.on_change(lambda key, old, new: self.queue.add((new or old).service))  # type: ignore[union-attr]

    def _task_changed(self, key: str, old: Task | None, new: Task | None) -> None:
        task = new or old
        assert task is not None
        changed = old is None or new is None or (old.state, old.ready) != (new.state, new.ready)
        if changed and self.latest.latest(task.service) is not None:
            self.queue.add(task.service)

    def _node_changed(self, key: str, old: Node | None, new: Node | None) -> None:
        if old is not None and new is not None and old.status != new.status:
            self.enqueue_all()  # its tasks are lost (or back) for every rollout

    def enqueue_all(self) -> None:
        for service in list(self.latest.latest_key):
            self.queue.add(service)

    # ── the sync, step by step ───────────────────────────────────────────────────────────────

    async def sync(self, key: str) -> float | None:
        deployment = self.latest.latest(key)
        service = self.services.items.get(service_key(key))
        if deployment is None or service is None:
            return None
        if await self._settle_history(key):
            return self.clock.now()  # look again once the write is in the cache
        if deployment.phase == Phase.ROLLING_BACK and deployment.rolled_back_by is None:
            await self._start_rollback(deployment)
            return None
        view = self._view(deployment, service)
        request = self._pending_request(key)
        if request is not None:
            return await self._apply_request(view, request)
        if not deployment.active:
            await self._after_end(view)
            return None
        step = plan_step(view)
        if step.deployment != deployment:
            if not await self._store(deployment, step.deployment, service):
                return self.clock.now()  # lost a race (a request, a newer update): again
            await self._announce(deployment, step.deployment)
        self.checks.ensure(step.checks)
        return step.requeue_at

    def _history(self, service: str) -> list[Deployment]:
        prefix = f"{DEPLOYMENTS}{service}/"
        return [d for k, d in sorted(self.deployments.items.items()) if k.startswith(prefix)]

    async def _settle_history(self, service: str) -> bool:
        """Every deployment a newer one took over ends: linked to the rollback that undoes it
        (then ended as that rollback ends), or superseded. True when it wrote."""
        history = self._history(service)
        by_id = {d.id: d for d in history}
        now = self.clock.now()
        for older, successor in itertools.pairwise(history):
            if older.phase.terminal:
                continue
            new: Deployment | None = None
            if older.phase == Phase.ROLLING_BACK and older.rolled_back_by is not None:
                rollback = by_id.get(older.rolled_back_by)
                if rollback is not None and rollback.phase.terminal:
                    new = transitions.end_rollback(older, now, rollback)
            elif successor.rollback_of == older.id:
                new = transitions.link_rollback(older, now, successor)
            else:
                new = transitions.supersede(older, now, successor)
            if new is not None and await self._write(older, new, newest=False):
                await self._announce(older, new)
                return True
        return False

    def _pending_request(self, service: str) -> OperatorRequest | None:
        if self.requests is None:
            return None
        request = self.requests.items.get(request_key(service))
        return request if request is not None and request.pending else None

    async def _apply_request(self, view: RolloutView, request: OperatorRequest) -> float | None:
        """Apply the operator's request and answer it, in one write with the deployment."""
        d = view.deployment
        new, answer, message = intents.answer(view, request)
        now = self.clock.now()
        answered = request.model_copy(
            update={"answer": answer, "message": message, "answered_at": now}
        )
        kv = self.requests.kvs.get(request_key(request.service)) if self.requests else None
        if kv is None:
            return now
        extra: tuple[list[Compare], list[Op]] = (
            [Compare.unchanged(kv)],
            [Put(kv.key, encode(answered))],
        )
        if not await self._write(d, new, extra=extra):
            return now
        if new != d:
            await self._announce(d, new)
        return now  # plan with the request applied (a promotion acts at once)

    def _view(self, deployment: Deployment, service: Service) -> RolloutView:
        """What the planner sees: the deployment, the tasks, the nodes that are down, the new
        revision's release settings and — for analysis — both revisions' traffic over the last
        analysis interval (or the strategy's own window: ``StrategyKind.sample_window``)."""
        revision = self.revisions.items.get(revision_key(service.name, deployment.to_revision))
        spec = revision.spec if revision is not None else service.spec
        down = frozenset(
            n.name
            for n in (self.nodes.values() if self.nodes else ())
            if n.status == NodeStatus.DOWN
        )
        view = RolloutView(
            deployment=deployment,
            replicas=service.spec.replicas,
            tasks=self.index.tasks(service.name),
            now=self.clock.now(),
            canary=spec.deploy.canary,
            blue_green=spec.deploy.blue_green,
            ab_test=spec.deploy.ab_test,
            checks=self.checks.results(deployment.id),
            down=down,
            jobs=self.index.jobs(service.name),
        )
        kind = kind_of(deployment)
        analysis = kind.analysis(spec)
        if analysis is None or self.metrics is None or not deployment.active:
            return view
        seconds = kind.sample_window(deployment, analysis, view.now)
        samples: dict[int, Sample] = {}
        for rev in (deployment.from_revision, deployment.to_revision):
            if rev is not None:
                w = self.metrics.window(service.name, rev, seconds)
                samples[rev] = Sample(w.requests, w.errors, w.latencies)
        return dataclasses.replace(view, samples=samples)

    async def _after_end(self, view: RolloutView) -> None:
        """An ended release calls its post-rollout webhooks (once) and logs its post-deploy
        job's outcome (once it has ended); then its checks' answers are dropped."""
        d = view.deployment
        step = Step(d)
        if d.kind == DeploymentKind.UPDATE:
            revision = self.revisions.items.get(revision_key(d.service, d.to_revision))
            step = post_rollout_step(view, kind_of(d).analysis(revision.spec if revision else None))
        if step.deployment != d and await self._write(d, step.deployment):
            await self.cluster.record(
                "deployment.webhooks",
                f"deployment {d.id}: {step.deployment.decisions[-1].message}",
                service=d.service,
            )
            return  # the rest at the next sync, from the record just written
        logged = post_deploy_step(view)
        if logged != d and await self._write(d, logged):
            last = logged.decisions[-1]
            failed = last.reason == Reason.JOB_FAILED
            await self.cluster.record(
                "deployment.job",
                f"deployment {d.id}: {last.message}",
                Level.ERROR if failed else Level.INFO,
                service=d.service,
            )
        if step.checks:
            self.checks.ensure(step.checks)
        else:
            self.checks.forget(d.id)

    async def stop(self) -> None:
        await super().stop()
        await self.checks.close()

    # ── writes ───────────────────────────────────────────────────────────────────────────────

    async def _store(self, old: Deployment, new: Deployment, service: Service) -> bool:
        """Store the planner's record; a release that failed and fell back to its stable
        revision (``reverted_to``) makes that the service's revision again in the same write,
        so that no crash can leave the service on the failed one."""
        ops: list[Op] = []
        compares: list[Compare] = []
        if new.reverted_to is not None and old.reverted_to is None:
            await self._revert(service, new.reverted_to, compares, ops)
        return await self._write(old, new, extra=(compares, ops))

    async def _revert(
        self, service: Service, revision: int, compares: list[Compare], ops: list[Op]
    ) -> None:
        if service.revision == revision:
            return
        kv = self.services.kvs.get(service_key(service.name))
        target = await self.cluster.get_revision(service.name, revision)
        if kv is None:
            return
        spec = target.spec.keeping_settings_of(service.spec)
        reverted = service.model_copy(
            update={"spec": spec, "revision": revision, "updated_at": self.clock.now()}
        )
        compares.append(Compare.unchanged(kv))
        ops.append(Put(kv.key, encode(reverted)))

    async def _write(
        self,
        old: Deployment,
        new: Deployment,
        newest: bool = True,
        extra: tuple[list[Compare], list[Op]] = ([], []),
    ) -> bool:
        """Compare-and-swap ``old`` → ``new`` (with ``extra`` compares and ops in the same
        transaction). ``newest``: only while no newer deployment exists — a release a newer
        update took over is never moved on by its planner."""
        sequence = sequence_of(old.id)
        key = deployment_key(old.service, sequence)
        kv = self.deployments.kvs.get(key)
        if kv is None:
            return False
        compares = [Compare.unchanged(kv), *extra[0]]
        if newest:
            compares.append(Compare.absent(deployment_key(old.service, sequence + 1)))
        ops = [*extra[1], Put(key, encode(new))] if new != old else list(extra[1])
        res = await self.cluster.raw.txn(compares, ops)
        if res.succeeded:
            # Our own write must be in the caches before the next sync decides again (only
            # those it touched: a cache whose prefix it did not touch would wait in vain).
            touched = {op.key for op in ops}
            for informer in (self.deployments, self.requests, self.services):
                if informer is not None and any(k.startswith(informer.prefix) for k in touched):
                    await informer.wait_for(res.revision)
        return res.succeeded

    async def _announce(self, old: Deployment, new: Deployment) -> None:
        if old.phase != new.phase:
            await self.cluster.record(
                f"deployment.{new.phase}",
                f"deployment {new.id} of {new.service} {new.phase}: {new.message}",
                _LEVELS.get(new.phase, Level.INFO),
                service=new.service,
            )
        elif old.step != new.step:
            await self.cluster.record(
                "deployment.step", f"deployment {new.id}: {new.message}", service=new.service
            )

    async def _start_rollback(self, failed: Deployment) -> None:
        """The planner (or an abort) decided to roll back, or a crash came between that
        decision and the rollback's start: make the last good revision current and start the
        rollback (its link to ``failed`` is the next sync's)."""
        # The cache may lag our own writes: only the store says whether it already started.
        latest = await self.cluster.latest_deployment(failed.service)
        if latest is None or latest[0].id != failed.id or latest[0].rolled_back_by:
            return
        history = self._history(failed.service)
        prefix = f"{REVISIONS}{failed.service}/"
        kept = {r.number for k, r in self.revisions.items.items() if k.startswith(prefix)}
        target = last_good_revision(history, failed, kept)
        if target is None:
            why = "no revision left to roll back to (trimmed by revisionHistoryLimit)"
            ended = transitions.fail(failed, self.clock.now(), Reason.ROLLBACK_FAILED, why)
            if await self._write(failed, ended):
                await self._announce(failed, ended)
            return
        aborted = bool(failed.decisions) and failed.decisions[-1].reason == Reason.ABORTED
        cause = Reason.ABORTED if aborted else Reason.AUTOMATIC_ROLLBACK
        why = ""
        if target != failed.from_revision:
            why = f", the last that succeeded (revision {failed.from_revision} never did)"
        log.info("deployment %s: rolling back to revision %d%s", failed.id, target, why)
        started = await self.cluster.start_rollback(
            failed.service, target, cause, note=why.lstrip(", "), undoes=failed.id
        )
        if started is None:
            return  # a newer deployment took over meanwhile: it supersedes this one
        _, rollback, revision = started
        await self.deployments.wait_for(revision)
        await self.cluster.record(
            "deployment.rollback",
            f"deployment {failed.id} of {failed.service}: rolling back to revision "
            f"{target}{why} ({rollback.id}): {failed.message}",
            Level.WARNING,
            service=failed.service,
        )
