"""Deployments (rollouts): the stored record of moving a service from one revision to another.
Pure, frozen.

Everything a rollout must remember lives here — phase, the slots already moved, counters,
timestamps, conditions, and an append-only decision log — so that a restarted manager continues
exactly where the last one stood. The planner (``planning.strategies``) turns one record into
the next; the deployment controller stores it with compare-and-swap.

Phases::

    progressing ─▶ succeeded
        │  ▲
        ▼  │ resume
      paused
        │
        ├─▶ failed                      (failure action pause/continue exhausted, or abort)
        ├─▶ rolling_back ─▶ rolled_back (failure action rollback: a rollback deployment runs)
        └─▶ superseded                  (a newer update of the same service took over)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .base import Model
from .specs import FailureAction, RollbackConfig, Strategy, UpdateConfig, UpdateOrder

__all__ = [
    "ACTIVE_PHASES",
    "Condition",
    "Decision",
    "Deployment",
    "DeploymentKind",
    "DeploymentStatus",
    "Phase",
    "Reason",
    "RolloutConfig",
    "deployment_id",
    "previous_revision",
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
    WEBHOOKS_PASSED = "WebhooksPassed"
    WEBHOOK_FAILED = "WebhookFailed"
    WEBHOOKS_CALLED = "WebhooksCalled"


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

    @staticmethod
    def for_update(c: UpdateConfig) -> RolloutConfig:
        return RolloutConfig(
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


class Deployment(Model):
    id: str
    service: str
    kind: DeploymentKind = DeploymentKind.UPDATE
    strategy: Strategy = Strategy.ROLLING
    from_revision: int | None
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
    failed_tasks: tuple[str, ...] = ()
    """Tasks of ``to_revision`` counted as failures (each at most once)."""
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
    green_ready_at: float | None = None
    switched_at: float | None = None
    """Blue/green: when traffic moved to the new revision."""
    hooks_done: tuple[str, ...] = ()
    """Webhook stages already passed (``pre-rollout``, ``pre-promotion``) or called
    (``post-rollout``): each runs once per deployment."""
    rollback_of: str | None = None
    """For a rollback: the id of the deployment it undoes."""
    rolled_back_by: str | None = None
    conditions: tuple[Condition, ...] = ()
    decisions: tuple[Decision, ...] = ()
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
        """This deployment with a decision appended (the log keeps the last DECISIONS_KEPT)."""
        entry = Decision(
            time=now,
            step=changes.get("step", self.step),
            reason=str(reason),
            message=message,
            measured=measured or {},
            action=action,
        )
        decisions = (*self.decisions, entry)[-DECISIONS_KEPT:]
        return self.model_copy(
            update={"decisions": decisions, "updated_at": now, "message": message, **changes}
        )

    def with_condition(self, condition: Condition) -> Deployment:
        others = tuple(c for c in self.conditions if c.type != condition.type)
        return self.model_copy(update={"conditions": (*others, condition)})


DECISIONS_KEPT = 200


def previous_revision(deployments: list[Deployment], current: int) -> int | None:
    """The revision that served before ``current`` went live: what ``warren service rollback``
    goes back to. The update that made ``current`` live says; after an automatic rollback that
    is the last good revision before it, never the failed one. Failing that (``current`` came
    back by a rollback), the revision that rollback left — so two rollbacks flip back and forth,
    as in Swarm."""
    succeeded = [d for d in reversed(deployments) if d.phase == Phase.SUCCEEDED]
    for d in succeeded:
        if d.kind == DeploymentKind.UPDATE and d.to_revision == current and d.from_revision:
            return d.from_revision
    for d in succeeded:
        if d.to_revision == current and d.from_revision:
            return d.from_revision
    return None


def deployment_id(service: str, sequence: int) -> str:
    """``web-7``: the service's 7th deployment."""
    return f"{service}-{sequence}"


class DeploymentStatus(Model):
    """The seed's DeploymentStatus, and more: what ``warren deploy status`` and
    ``Deployer.get_deployment_status`` show. Computed from the service, its newest deployment
    and its tasks; never stored."""

    service_id: str
    service_name: str
    image: str
    """The image, or for a process service its version label (``VERSION=v2`` or the command)."""
    strategy: str
    revision: int
    desired_tasks: int
    ready_tasks: int
    """Ready tasks of the current revision."""
    total_tasks: int
    """Tasks that hold (or may soon hold) a process or container, any revision."""
    tasks: dict[str, int]
    """Tasks that want to run, by observed state."""
    deployment_id: str | None = None
    kind: str | None = None
    phase: Phase | None = None
    from_revision: int | None = None
    to_revision: int | None = None
    step: int = 0
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
    """The last few decisions of the deployment."""

    @property
    def done(self) -> bool:
        return self.phase is None or self.phase.terminal

    @staticmethod
    def of(
        service_name: str,
        image: str,
        strategy: str,
        revision: int,
        replicas: int,
        deployment: Deployment | None,
        states: dict[str, int],
        ready: int,
        total: int,
        now: float,
    ) -> DeploymentStatus:
        status = DeploymentStatus(
            service_id=service_name,
            service_name=service_name,
            image=image,
            strategy=strategy,
            revision=revision,
            desired_tasks=replicas,
            ready_tasks=ready,
            total_tasks=total,
            tasks=states,
        )
        if deployment is None:
            return status
        d = deployment
        per_batch = d.config.parallelism or max(d.replicas, 1)
        return status.model_copy(
            update={
                "deployment_id": d.id,
                "kind": str(d.kind),
                "phase": d.phase,
                "from_revision": d.from_revision,
                "to_revision": d.to_revision,
                "step": d.step,
                "batches": -(-replicas // per_batch) if replicas else 0,
                "updated_slots": d.ready_slots,
                "failed_tasks": len(d.failed_tasks),
                "started_at": d.started_at,
                "finished_at": d.finished_at,
                "elapsed": (d.finished_at or now) - d.started_at,
                "message": d.message,
                "weights": {str(rev): w for rev, w in d.weights},
                "decisions": d.decisions[-10:],
            }
        )
