"""The deployment controller: drives each service's newest deployment with its strategy's pure
planner, stores the next record with compare-and-swap, and starts rollbacks.

Level-triggered: every sync recomputes from the stored deployment and the observed tasks. It
reacts to task changes (a task turning ready moves the rollout within milliseconds), to
deployment and service changes, and to the planner's own deadlines (monitor, delay, healthy and
progress deadlines) — never to a polling tick. Kill the server at any instant: on restart the
next sync continues from the stored record; a rollback decided but not yet started is started.
"""

from __future__ import annotations

import dataclasses
import logging

from ..domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ..domain.events import Level
from ..domain.services import Revision, Service
from ..domain.specs import Strategy
from ..domain.tasks import Task
from ..planning.analysis import Sample
from ..planning.rollouts import RolloutView, Step
from ..planning.strategies import blue_green_step, canary_step, rollback_step, rolling_step
from ..planning.strategies.traffic import post_rollout_step
from ..ports import Clock, Compare, MetricSource, Put
from ..store.cluster import (
    DEPLOYMENTS,
    ClusterStore,
    deployment_key,
    encode,
    revision_key,
    service_key,
)
from ..store.informing import Informer
from .checking import CheckRunner
from .controlling import Controller
from .indexing import DeploymentIndex, TaskIndex

__all__ = ["DeploymentController"]

log = logging.getLogger("warren.control")

_LEVELS = {
    Phase.SUCCEEDED: Level.INFO,
    Phase.PAUSED: Level.WARNING,
    Phase.FAILED: Level.ERROR,
    Phase.ROLLING_BACK: Level.WARNING,
    Phase.ROLLED_BACK: Level.WARNING,
}


def sequence_of(deployment_id: str) -> int:
    return int(deployment_id.rsplit("-", 1)[1])


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
    ) -> None:
        super().__init__(clock)
        self.cluster = cluster
        self.revisions = revisions
        self.metrics = metrics
        self.services = services
        self.deployments = deployments
        self.latest = latest
        self.index = index
        self.checks = CheckRunner(lambda deployment: self.queue.add(deployment.rsplit("-", 1)[0]))
        services.on_change(lambda key, old, new: self.queue.add((new or old).name))  # type: ignore[union-attr]
        tasks.on_change(self._task_changed)
        deployments.on_change(lambda key, old, new: self.queue.add((new or old).service))  # type: ignore[union-attr]

    def _task_changed(self, key: str, old: Task | None, new: Task | None) -> None:
        task = new or old
        assert task is not None
        changed = old is None or new is None or (old.state, old.ready) != (new.state, new.ready)
        if changed and self.latest.latest(task.service) is not None:
            self.queue.add(task.service)

    def enqueue_all(self) -> None:
        for service in list(self.latest.latest_key):
            self.queue.add(service)

    async def sync(self, key: str) -> float | None:
        deployment = self.latest.latest(key)
        service = self.services.items.get(service_key(key))
        if deployment is None or service is None:
            return None
        if deployment.phase == Phase.ROLLING_BACK and deployment.rolled_back_by is None:
            await self._start_rollback(deployment)
            return None
        await self._finish_rollbacks(key)
        view = self._view(deployment, service)
        if not deployment.active:
            await self._after_end(view)
            return None
        step = self._plan(view)
        if step.deployment != deployment:
            if not await self._store(deployment, step.deployment):
                return self.clock.now()  # lost a race (a user paused, a newer update): again
            await self._announce(deployment, step.deployment)
        self.checks.ensure(step.checks)
        if step.rollback_to is not None:
            await self._start_rollback(step.deployment)
        if step.revert_to is not None:
            await self.cluster.revert_service(key, step.revert_to)
        return step.requeue_at

    def _view(self, deployment: Deployment, service: Service) -> RolloutView:
        """What the planner sees: the deployment, the tasks, the new revision's release settings
        and — for analysis — both revisions' traffic over the last analysis interval."""
        revision = self.revisions.items.get(revision_key(service.name, deployment.to_revision))
        spec = revision.spec if revision is not None else service.spec
        view = RolloutView(
            deployment=deployment,
            replicas=service.spec.replicas,
            tasks=self.index.tasks(service.name),
            now=self.clock.now(),
            canary=spec.deploy.canary,
            blue_green=spec.deploy.blue_green,
            checks=self.checks.results(deployment.id),
        )
        analysis = view.analysis
        if analysis is None or self.metrics is None or not deployment.active:
            return view
        samples: dict[int, Sample] = {}
        for rev in (deployment.from_revision, deployment.to_revision):
            if rev is not None:
                w = self.metrics.window(service.name, rev, analysis.interval)
                samples[rev] = Sample(w.requests, w.errors, w.latencies)
        return dataclasses.replace(view, samples=samples)

    async def _after_end(self, view: RolloutView) -> None:
        """An ended release calls its post-rollout webhooks (once); then its checks' answers
        are dropped."""
        d = view.deployment
        step = Step(d)
        if d.kind == DeploymentKind.UPDATE:
            step = post_rollout_step(view, view.analysis)
        if step.deployment != d and await self._store(d, step.deployment):
            await self.cluster.record(
                "deployment.webhooks",
                f"deployment {d.id}: {step.deployment.decisions[-1].message}",
                service=d.service,
            )
        if step.checks:
            self.checks.ensure(step.checks)
        else:
            self.checks.forget(d.id)

    async def stop(self) -> None:
        await super().stop()
        await self.checks.close()

    def _plan(self, view: RolloutView) -> Step:
        d = view.deployment
        if d.kind == DeploymentKind.ROLLBACK:
            return rollback_step(view)
        if d.strategy == Strategy.CANARY and d.from_revision is not None:
            return canary_step(view)
        if d.strategy == Strategy.BLUE_GREEN and d.from_revision is not None:
            return blue_green_step(view)
        return rolling_step(view)

    async def _store(self, old: Deployment, new: Deployment) -> bool:
        key = deployment_key(old.service, sequence_of(old.id))
        kv = self.deployments.kvs.get(key)
        if kv is None:
            return False
        res = await self.cluster.raw.txn([Compare.unchanged(kv)], [Put(key, encode(new))])
        if res.succeeded:
            await self.deployments.wait_for(res.revision)
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
        """The planner decided to roll back (or a crash came between that decision and the
        rollback's start): make the previous revision current and start the rollback."""
        assert failed.from_revision is not None
        # The cache may lag our own writes: only the store says whether it already started.
        latest = await self.cluster.latest_deployment(failed.service)
        if latest is None or latest[0].id != failed.id or latest[0].rolled_back_by:
            return
        log.info("deployment %s: rolling back to revision %d", failed.id, failed.from_revision)
        _, rollback, revision = await self.cluster.rollback_service(
            failed.service, failed.from_revision, Reason.AUTOMATIC_ROLLBACK
        )
        await self.deployments.wait_for(revision)
        await self.cluster.record(
            "deployment.rolling_back",
            f"deployment {failed.id} of {failed.service}: rolling back to revision "
            f"{failed.from_revision} ({rollback.id}): {failed.message}",
            Level.WARNING,
            service=failed.service,
        )

    async def _finish_rollbacks(self, service: str) -> None:
        """Every deployment rolling back whose rollback has ended ends too: rolled_back when the
        rollback succeeded, superseded or failed with it otherwise."""
        prefix = f"{DEPLOYMENTS}{service}/"
        items = {d.id: d for k, d in self.deployments.items.items() if k.startswith(prefix)}
        for original in list(items.values()):
            if original.phase != Phase.ROLLING_BACK or original.rolled_back_by is None:
                continue
            rollback = items.get(original.rolled_back_by)
            if rollback is None or not rollback.phase.terminal:
                continue
            now = self.clock.now()
            if rollback.phase == Phase.SUCCEEDED:
                done = original.decide(
                    now, Reason.ROLLBACK_COMPLETE,
                    f"rolled back to revision {rollback.to_revision} by {rollback.id}",
                    phase=Phase.ROLLED_BACK, finished_at=now,
                )  # fmt: skip
            elif rollback.phase == Phase.SUPERSEDED:
                done = original.decide(
                    now, Reason.SUPERSEDED, f"its rollback {rollback.id} was superseded",
                    phase=Phase.SUPERSEDED, finished_at=now,
                )  # fmt: skip
            else:
                done = original.decide(
                    now, Reason.ROLLBACK_FAILED, f"rollback {rollback.id} {rollback.phase}",
                    phase=Phase.FAILED, finished_at=now,
                )  # fmt: skip
            if await self._store(original, done):
                await self._announce(original, done)
