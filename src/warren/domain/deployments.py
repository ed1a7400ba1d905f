"""Deployments (rollouts): the stored record of moving a service from one revision to another.
Pure, frozen.

Everything a rollout must remember lives here — phase, the slots already moved, counters,
timestamps, conditions, and an append-only decision log — so that a restarted manager continues
exactly where the last one stood. The planner (``planning.strategies``) turns one record into
the next; the deployment controller stores it with compare-and-swap.

Phases (their transitions, one pure function per event: ``domain.transitions``)::

    progressing ─▶ succeeded
        │  ▲  ▲
        ▼  │  └── awaiting_promotion     (canary ``pause: {}``, blue/green without autoPromote)
      paused                              (resume, promote → progressing)
        │
        ├─▶ failed                      (failure action pause/continue exhausted, or abort)
        ├─▶ rolling_back ─▶ rolled_back (failure action rollback, abort: a rollback runs)
        └─▶ superseded                  (a newer update of the same service took over)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import Model
from .notifications import DeploymentEvent
from .specs import (
    DeployConfig,
    FailureAction,
    Job,
    RollbackConfig,
    ServiceSpec,
    Strategy,
    UpdateConfig,
    UpdateOrder,
)  # fmt: skip
from .tasks import Task, current_tasks

__all__ = [
    "ACTIVE_PHASES",
    "Condition",
    "Decision",
    "Deployment",
    "DeploymentKind",
    "DeploymentStatus",
    "Milestone",
    "Phase",
    "Reason",
    "RolloutConfig",
    "check_progress",
    "deployment_id",
    "status_deployment",
]


class Phase(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    AWAITING_PROMOTION = "awaiting_promotion"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"

    @property
    def active(self) -> bool:
        """The deployment drives the service's tasks (at most one per service is active)."""
        return self in ACTIVE_PHASES

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_PHASES


ACTIVE_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.AWAITING_PROMOTION})
_TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.ROLLED_BACK, Phase.SUPERSEDED})


class Reason(StrEnum):
    """Reason codes of conditions and decisions (stable: scripts may match on them)."""

    NEW_REVISION = "NewRevision"
    HEADER_ROUTE_SET = "HeaderRouteSet"
    """A canary step: matching requests go to the canary whatever its weight."""
    OVERRIDDEN = "Overridden"
    """Started outside the service's deployment windows or in a freeze (``--override``)."""
    BATCH_STARTED = "BatchStarted"
    BATCH_READY = "BatchReady"
    DELAY = "Delay"
    COMPLETE = "RolloutComplete"
    TASK_FAILED = "TaskFailed"
    HEALTH_CHECK_FAILED = "HealthCheckFailed"
    HEALTHY_DEADLINE_EXCEEDED = "HealthyDeadlineExceeded"
    MAX_FAILURE_RATIO_EXCEEDED = "MaxFailureRatioExceeded"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    SUPERSEDED = "Superseded"
    MANUAL_ROLLBACK = "ManualRollback"
    AUTOMATIC_ROLLBACK = "AutomaticRollback"
    ROLLBACK_COMPLETE = "RollbackComplete"
    ROLLBACK_FAILED = "RollbackFailed"
    CANARY_SCALED = "CanaryScaled"
    WEIGHT_SET = "WeightSet"
    PAUSED_FOR = "Pause"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTED = "Promoted"
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    GREEN_READY = "GreenReady"
    SWITCHED = "Switched"
    SWITCHED_BACK = "SwitchedBack"
    BLUE_RETIRED = "BlueRetired"
    INSTANT_ROLLBACK = "InstantRollback"
    MANUAL_PAUSE = "ManualPause"
    RESUMED = "Resumed"
    ABORTED = "Aborted"
    FAILURE_IGNORED = "FailureIgnored"
    FAST_ROLLBACK = "FastRollback"
    WEBHOOKS_PASSED = "WebhooksPassed"
    WEBHOOK_FAILED = "WebhookFailed"
    WEBHOOKS_CALLED = "WebhooksCalled"
    EXPERIMENT_STARTED = "ExperimentStarted"
    EXPERIMENT_FIGURES = "ExperimentFigures"
    """An A/B test's figures of both revisions, side by side (in ``measured``)."""
    EXPERIMENT_WON = "ExperimentWon"
    """The new revision won its A/B test: it is promoted."""
    EXPERIMENT_LOST = "ExperimentLost"
    """The stable revision won, or neither did: it is kept."""
    JOB_STARTED = "JobStarted"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"


class DeploymentKind(StrEnum):
    UPDATE = "update"
    ROLLBACK = "rollback"


class RolloutConfig(Model):
    """The knobs a deployment runs with, copied from the spec when it starts (the update config,
    or the rollback config for a rollback), so that a later spec change does not alter a
    rollout in flight."""

    parallelism: int = Field(1, ge=0)
    delay: float = 0.0
    failure_action: FailureAction = FailureAction.ROLLBACK
    order: UpdateOrder = UpdateOrder.START_FIRST
    monitor: float = 0.0
    max_failure_ratio: float = 0.0
    healthy_deadline: float = 60.0
    progress_deadline: float = 600.0
    pre_deploy: Job | None = None
    """An update's job before any task of its new revision starts (``planning.jobs``)."""
    post_deploy: Job | None = None
    """An update's job once it has succeeded."""

    @staticmethod
    def for_update(deploy: DeployConfig) -> RolloutConfig:
        c = deploy.update_config
        return RolloutConfig(
            pre_deploy=deploy.pre_deploy,
            post_deploy=deploy.post_deploy,
            parallelism=c.parallelism,
            delay=c.delay,
            failure_action=c.failure_action,
            order=c.order,
            monitor=c.monitor,
            max_failure_ratio=c.max_failure_ratio,
            healthy_deadline=c.healthy_deadline,
            progress_deadline=c.progress_deadline,
        )

    @staticmethod
    def for_rollback(c: RollbackConfig, update: UpdateConfig) -> RolloutConfig:
        """A rollback uses its own parallelism, order, monitor and failure action (pause or
        continue: a rollback never rolls back); deadlines come from the update config."""
        return RolloutConfig(
            parallelism=c.parallelism,
            delay=c.delay,
            failure_action=FailureAction(c.failure_action),
            order=c.order,
            monitor=c.monitor,
            max_failure_ratio=c.max_failure_ratio,
            healthy_deadline=update.healthy_deadline,
            progress_deadline=update.progress_deadline,
        )


class Condition(Model):
    type: str
    """``Progressing``, ``Available``, ``Failed``, ``Paused`` …"""
    status: bool
    reason: str
    message: str
    time: float


class Decision(Model):
    """One line of the decision log: what was measured, which verdict, what was done."""

    time: float
    step: int
    reason: str
    message: str
    measured: dict[str, Any] = {}
    action: str = ""


class Milestone(Model):
    """A moment of a deployment's life that people may want to be told of: its start, a change
    of phase, a resume, a promotion (``domain.transitions`` records them; the notifier sends
    them). Numbered from 1, in order."""

    number: int
    event: DeploymentEvent
    phase: Phase
    """The phase the deployment was in right after it."""
    time: float
    reason: str
    message: str
    decision: int
    """The number of the decision that logged it (``decision_count`` right after)."""


MILESTONES_KEPT = 100
"""A deployment has a handful; an operator who pauses and resumes one in a loop is capped."""


class Deployment(Model):
    id: str
    service: str
    kind: DeploymentKind = DeploymentKind.UPDATE
    strategy: str = Strategy.ROLLING.value
    """The name of a registered strategy (``planning.strategies``)."""
    from_revision: int | None = None
    to_revision: int
    replicas: int
    config: RolloutConfig
    phase: Phase = Phase.PROGRESSING
    step: int = 0
    """Batches started so far."""
    target_slots: tuple[int, ...] = ()
    """Slots moved to ``to_revision`` (in order). Slots not in it keep the revision they run."""
    ready_slots: int = 0
    """Slots done so far (new task ready, monitored, old task gone): progress."""
    done_slots: tuple[int, ...] = ()
    """The target slots seen done: a slot done stays done — a task that crashes after its
    monitor period is the restart policy's, not the rollout's (as in Swarm)."""
    failed_tasks: tuple[str, ...] = ()
    """Tasks of ``to_revision`` counted as failures (each at most once)."""
    failed_slots: tuple[int, ...] = ()
    """The slots those tasks ran in (each at most once): what the failure ratio counts, so
    that a slot whose replacements keep failing counts once, never more than the slots."""
    batch: tuple[int, ...] = ()
    """The slots of the current batch (the last ``BatchStarted``)."""
    started_at: float
    updated_at: float
    finished_at: float | None = None
    batch_started_at: float | None = None
    batch_ready_at: float | None = None
    """When the current batch's last task turned ready (for ``delay``)."""
    progress_at: float
    """The last time the rollout made progress (for ``progressDeadline``)."""
    delay_total: float = 0.0
    paused_reason: str = ""
    weights: tuple[tuple[int, int], ...] = ()
    """(revision, percent) the ingress applies while this deployment is active (canary,
    blue/green); empty: traffic follows the ready tasks."""
    canary_step: int = 0
    """Index of the next canary step to run."""
    pause_until: float | None = None
    analysis_at: float | None = None
    """Start of the current analysis window."""
    analysis_failures: int = 0
    """Consecutive failed analysis windows."""
    promoting: bool = False
    """Canary: the steps are done (or skipped by ``promote --full``): the new revision takes
    every slot."""
    promote: str = ""
    """A promotion the operator asked for and the planner has not applied yet: ``step`` (skip
    the current pause) or ``full`` (skip every remaining step)."""
    green_started: bool = False
    """Blue/green: green's tasks were asked for (even for 0 replicas)."""
    green_ready_at: float | None = None
    switched_at: float | None = None
    """Blue/green: when traffic moved to the new revision."""
    hooks_done: tuple[str, ...] = ()
    """Webhook stages already passed (``pre-rollout``, ``pre-promotion``) or called
    (``post-rollout``): each runs once per deployment."""
    rollback_of: str | None = None
    """For a rollback: the id of the deployment it undoes."""
    cause: str = ""
    """For a rollback: why it was started (``ManualRollback``, ``AutomaticRollback``,
    ``Aborted``, ``FastRollback``)."""
    rolled_back_by: str | None = None
    reverted_to: int | None = None
    """A canary or blue/green release that failed before promotion: the stable revision the
    service went back to (in the same write), without a rollback deployment."""
    conditions: tuple[Condition, ...] = ()
    decisions: tuple[Decision, ...] = ()
    decision_count: int = 0
    """Decisions made so far: the log keeps the last DECISIONS_KEPT, and this tells a reader
    how many are new since it last looked."""
    milestones: tuple[Milestone, ...] = ()
    """The last MILESTONES_KEPT milestones, oldest first (each with its number)."""
    message: str = ""
    """The latest human summary: why it is paused, failed, rolled back …"""

    @property
    def active(self) -> bool:
        return self.phase.active

    def decide(
        self,
        now: float,
        reason: Reason | str,
        message: str,
        action: str = "",
        measured: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Deployment:
        """This deployment with a decision appended and some of its *progress* changed (the log
        keeps the last DECISIONS_KEPT). Only the fields of PROGRESS_FIELDS may change here, and
        their values are checked: a phase moves only by a transition
        (``domain.transitions``)."""
        check_progress(changes)
        return self.logged(now, reason, message, action, measured, **changes)

    def advance(self, now: float, **changes: Any) -> Deployment:
        """Progress too small for the log (slots done, a window's start): checked like
        ``decide``."""
        check_progress(changes)
        return self.checked(updated_at=now, **changes)

    def logged(
        self,
        now: float,
        reason: Reason | str,
        message: str,
        action: str = "",
        measured: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Deployment:
        """``decide`` without the progress check: for ``domain.transitions`` alone."""
        entry = Decision(
            time=now,
            step=changes.get("step", self.step),
            reason=str(reason),
            message=message,
            measured=measured or {},
            action=action,
        )
        decisions = (*self.decisions, entry)[-DECISIONS_KEPT:]
        return self.checked(
            decisions=decisions,
            decision_count=self.decision_count + 1,
            updated_at=now,
            message=message,
            **changes,
        )

    def checked(self, **changes: Any) -> Deployment:
        """A copy with ``changes``, validated like a record read from the store: an unknown
        field or a value of the wrong kind (``phase="not-a-phase"``) is an error, not a
        record that breaks its reader later."""
        data = {name: getattr(self, name) for name in type(self).model_fields}
        unknown = set(changes) - set(data)
        if unknown:
            raise TypeError(f"not a field of a deployment: {', '.join(sorted(unknown))}")
        return type(self).model_validate({**data, **changes})

    def with_milestone(self, event: DeploymentEvent) -> Deployment:
        """This deployment with ``event`` recorded as a milestone, told by its last decision
        (for ``domain.transitions`` alone)."""
        last = self.decisions[-1] if self.decisions else None
        milestone = Milestone(
            number=self.milestones[-1].number + 1 if self.milestones else 1,
            event=event,
            phase=self.phase,
            time=last.time if last else self.updated_at,
            reason=last.reason if last else "",
            message=last.message if last else self.message,
            decision=self.decision_count,
        )
        milestones = (*self.milestones, milestone)[-MILESTONES_KEPT:]
        return self.model_copy(update={"milestones": milestones})

    def with_condition(self, condition: Condition) -> Deployment:
        others = tuple(c for c in self.conditions if c.type != condition.type)
        return self.model_copy(update={"conditions": (*others, condition)})


PROGRESS_FIELDS = frozenset(
    {
        "step", "target_slots", "ready_slots", "done_slots", "failed_tasks", "failed_slots",
        "batch",
        "batch_started_at", "batch_ready_at", "progress_at", "delay_total", "weights",
        "canary_step", "pause_until", "analysis_at", "analysis_failures", "promoting", "promote",
        "green_started", "green_ready_at", "switched_at", "hooks_done",
    }
)  # fmt: skip
"""What a planner may change as a rollout goes on. The rest — phase, finish, links between
deployments, identity — changes only through ``domain.transitions``."""


def check_progress(changes: dict[str, Any]) -> None:
    unknown = set(changes) - PROGRESS_FIELDS
    if unknown:
        raise TypeError(f"not a progress field of a deployment: {', '.join(sorted(unknown))}")


DECISIONS_KEPT = 200


def deployment_id(service: str, sequence: int) -> str:
    """``web-7``: the service's 7th deployment."""
    return f"{service}-{sequence}"


def status_deployment(
    deployments: Sequence[Deployment],
) -> tuple[Deployment | None, Deployment | None]:
    """What a service's status is about: its newest deployment — but when that is the
    automatic rollback (or the abort) of an update, the update itself, with the rollback inside
    it: the status of a release that failed is never the "succeeded" of its rollback. Returns
    ``(deployment, its rollback or None)``."""
    if not deployments:
        return None, None
    newest = deployments[-1]
    undoing = newest.cause in (Reason.AUTOMATIC_ROLLBACK, Reason.ABORTED)
    if newest.kind == DeploymentKind.ROLLBACK and undoing and newest.rollback_of:
        undone = next((d for d in deployments if d.id == newest.rollback_of), None)
        if undone is not None:
            return undone, newest
    return newest, None


_FIGURES = (Reason.EXPERIMENT_FIGURES, Reason.EXPERIMENT_WON)


class DeploymentStatus(Model):
    """The seed's DeploymentStatus, and more: what ``warren deploy status`` and
    ``Deployer.get_deployment_status`` show. Computed from the service, its deployments and its
    tasks; never stored. It is about the service's last release (``status_deployment``)."""

    service_id: str
    service_name: str
    image: str | None = None
    """The container image (None for a process service)."""
    command: tuple[str, ...] | None = None
    """The command line (a process service's; a container's own, if it sets one)."""
    version: str
    """A short label of the revision: the image, else ``VERSION=…`` from env, else the
    command."""
    strategy: str
    revision: int
    desired_tasks: int
    ready_tasks: int
    """Ready tasks of the current revision."""
    total_tasks: int
    """Tasks that hold (or may soon hold) a process or container, any revision."""
    tasks: dict[str, int]
    """The current tasks by observed state: each slot's tasks that want to run, without those
    a newer task of the slot has replaced (``domain.tasks.current_tasks``)."""
    deployment_id: str | None = None
    kind: str | None = None
    phase: Phase | None = None
    from_revision: int | None = None
    to_revision: int | None = None
    step: int = 0
    moves_by: str = "batch"
    """``batch`` (slot by slot) or ``step`` (by weights: canary, blue/green): how ``step``
    reads."""
    batches: int = 0
    updated_slots: int = 0
    failed_tasks: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    elapsed: float | None = None
    message: str = ""
    weights: dict[str, int] = {}
    """Traffic share per revision (percent), as the ingress applies it."""
    decisions: tuple[Decision, ...] = ()
    """The last few decisions of the deployment (and of its rollback)."""
    experiment: dict[str, Any] = {}
    """An A/B test's last figures of both revisions side by side (``a``, ``b``: requests,
    successRate, p50, p95; ``winner`` so far, its ``confidence``, ``endsAt``)."""
    rollback_id: str | None = None
    """The automatic rollback (or abort) that undid the update, if any."""
    rollback_phase: Phase | None = None
    rolled_back_to: int | None = None

    @property
    def done(self) -> bool:
        return self.phase is None or self.phase.terminal

    @property
    def succeeded(self) -> bool:
        return self.phase is None or self.phase == Phase.SUCCEEDED

    @staticmethod
    def of(
        spec: ServiceSpec,
        revision: int,
        deployments: Sequence[Deployment],
        tasks: Sequence[Task],
        now: float,
        weighted: bool = False,
    ) -> DeploymentStatus:
        """``weighted``: the deployment it is about moves by weights."""
        newest = deployments[-1] if deployments else None
        revisions = {revision}
        if newest is not None and newest.active:
            revisions |= {r for r in (newest.from_revision, newest.to_revision) if r is not None}
        current = current_tasks(tasks, revisions)
        replicas = spec.replicas
        status = DeploymentStatus(
            service_id=spec.name,
            service_name=spec.name,
            image=spec.image,
            command=spec.command,
            version=spec.version_label,
            strategy=str(spec.deploy.strategy),
            revision=revision,
            desired_tasks=replicas,
            ready_tasks=sum(1 for t in current if t.ready and t.revision == revision),
            total_tasks=sum(1 for t in tasks if t.state.active),
            tasks=dict(Counter(str(t.state) for t in current)),
        )
        d, rollback = status_deployment(deployments)
        if d is None:
            return status
        per_batch = d.config.parallelism or max(d.replicas, 1)
        decisions = d.decisions if rollback is None else (*d.decisions, *rollback.decisions)
        return status.model_copy(
            update={
                "deployment_id": d.id,
                "kind": str(d.kind),
                # Its own: the service's strategy may have changed since (for the next one).
                "strategy": str(d.strategy),
                "phase": d.phase,
                "from_revision": d.from_revision,
                "to_revision": d.to_revision,
                "step": d.step,
                "moves_by": "step" if weighted and d.kind == DeploymentKind.UPDATE else "batch",
                "batches": -(-replicas // per_batch) if replicas else 0,
                "updated_slots": d.ready_slots,
                "failed_tasks": len(d.failed_tasks),
                "started_at": d.started_at,
                "finished_at": d.finished_at,
                "elapsed": (d.finished_at or now) - d.started_at,
                "message": d.message,
                "weights": {str(rev): w for rev, w in deployments[-1].weights},
                "decisions": decisions[-10:],
                "experiment": next(
                    (x.measured for x in reversed(d.decisions) if x.reason in _FIGURES), {}
                ),
                "rollback_id": rollback.id if rollback else None,
                "rollback_phase": rollback.phase if rollback else None,
                "rolled_back_to": rollback.to_revision if rollback else None,
            }
        )
