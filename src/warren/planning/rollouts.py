"""What every rollout strategy needs to know about a service's slots: which revision each slot
should run, which slots are done, and which tasks of the new revision have failed. Pure.

A slot is *done* when its live task runs the deployment's ``to_revision``, is ready, has stayed
ready for ``monitor``, and no task of another revision is still active in the slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ..domain.specs import Analysis, BlueGreenConfig, CanaryConfig, Strategy
from ..domain.tasks import Task, TaskState
from .analysis import Sample
from .checks import Check, CheckKey, CheckResult
from .reconciling import SlotTarget

__all__ = [
    "Failure",
    "RolloutView",
    "Step",
    "by_slot",
    "counts",
    "earliest",
    "find_failures",
    "monitor_ends",
    "slot_done",
    "slot_revisions",
]


@dataclass(frozen=True, slots=True)
class RolloutView:
    deployment: Deployment
    replicas: int
    """The service's current replica count (it may change during a rollout)."""
    tasks: Sequence[Task]
    now: float
    canary: CanaryConfig | None = None
    blue_green: BlueGreenConfig | None = None
    """The new revision's release settings (canary / blue-green strategies)."""
    samples: Mapping[int, Sample] = field(default_factory=dict)
    """Per revision, its traffic over the last analysis interval (from the ingress)."""
    checks: Mapping[CheckKey, CheckResult] = field(default_factory=dict)
    """The answers of the external checks (webhooks, provider metrics) run so far for this
    deployment."""

    @property
    def analysis(self) -> Analysis | None:
        """The release's analysis (and webhooks), by the deployment's strategy."""
        strategy = self.deployment.strategy
        if strategy == Strategy.CANARY and self.canary is not None:
            return self.canary.analysis
        if strategy == Strategy.BLUE_GREEN and self.blue_green is not None:
            return self.blue_green.analysis
        return None


@dataclass(frozen=True, slots=True)
class Step:
    """A planner's decision: the deployment's next record (equal to the input when there is
    nothing to do), whether to start a rollback to ``rollback_to`` now, whether to make
    ``revert_to`` the service's revision again without a rollback (a failed canary: the stable
    revision never moved), and when to look again even if nothing changes (a monitor period, a
    delay or a pause ending, an analysis window closing, a deadline falling due). ``checks``:
    external checks the planner needs answered before it can go on (the controller runs them
    and syncs again when they have answered)."""

    deployment: Deployment
    rollback_to: int | None = None
    revert_to: int | None = None
    requeue_at: float | None = None
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    task_id: str
    reason: Reason
    message: str


def by_slot(tasks: Iterable[Task]) -> dict[int, list[Task]]:
    """Tasks per slot, newest first."""
    slots: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        slots[t.slot].append(t)
    for group in slots.values():
        group.sort(key=lambda t: (t.created_at, t.id), reverse=True)
    return slots


def slot_revisions(
    deployment: Deployment | None, tasks: Iterable[Task], replicas: int
) -> dict[int, SlotTarget]:
    """The revision each slot should run while ``deployment`` drives the service. Rolling: its
    target slots run ``to_revision``; every other slot keeps the revision of its newest live
    task, else of its newest task (a slot the rollout has not reached yet is left alone, even if
    its task crashes and is restarted); a slot with no task at all (scaled up mid-rollout) gets
    ``to_revision``. Canary and blue/green: see ``_side_by_side``."""
    if deployment is None:
        return {}
    side_by_side = _side_by_side(deployment, replicas)
    if side_by_side is not None:
        return side_by_side
    targets = set(deployment.target_slots)
    slots = by_slot(t for t in tasks if t.wants_running)
    # A rollback its planner has not looked at yet may be an instant switch back to warm tasks
    # (blue beside green): until it has decided, a slot keeps every revision it runs.
    undecided = deployment.kind == DeploymentKind.ROLLBACK and not targets
    result: dict[int, SlotTarget] = {}
    for slot in range(1, replicas + 1):
        group = slots.get(slot)
        if slot in targets or not group:
            result[slot] = deployment.to_revision
            continue
        # The live task's revision first: a crashed task of the revision being left must
        # not come back while the slot still runs a live task of another one.
        live = [t for t in group if t.state.active]
        running = tuple(dict.fromkeys(t.revision for t in live))
        if undecided and len(running) > 1:
            result[slot] = running
        else:
            result[slot] = (live or group)[0].revision
    return result


def _side_by_side(d: Deployment, replicas: int) -> dict[int, SlotTarget] | None:
    """Canary and blue/green updates run both revisions in their target slots (a canary task
    beside a stable one; green beside blue) and the stable one alone elsewhere, until
    promotion; then the new one everywhere. A release that ended without promotion leaves the
    stable revision alone everywhere."""
    if d.kind != DeploymentKind.UPDATE or d.strategy == Strategy.ROLLING or d.promoting:
        return None
    stable = d.from_revision
    if stable is None or d.phase == Phase.SUCCEEDED:
        return None
    if d.phase.terminal:
        # Failed (or superseded) before promotion: the stable revision everywhere, also in the
        # moment before the service is reverted to it — its tasks were never to be touched.
        return {slot: stable for slot in range(1, replicas + 1)}
    targets = set(d.target_slots)
    pair = (stable, d.to_revision)
    wanted = set(range(1, replicas + 1)) | targets
    return {slot: pair if slot in targets else stable for slot in sorted(wanted)}


def slot_done(tasks: Sequence[Task], revision: int, monitor: float, now: float) -> bool:
    """``tasks``: one slot's tasks, newest first."""
    live = [t for t in tasks if t.state.active]
    if any(t.revision != revision for t in live):
        return False
    current = [t for t in live if t.wants_running and t.revision == revision]
    if not current or not current[0].ready or current[0].state != TaskState.RUNNING:
        return False
    ready_at = current[0].ready_at or current[0].updated_at
    return now >= ready_at + monitor


def monitor_ends(tasks: Sequence[Task], revision: int, monitor: float) -> float | None:
    """When the slot's ready task of ``revision`` completes its monitor period, if it is ready."""
    for t in tasks:
        if t.revision == revision and t.wants_running and t.ready and t.state.active:
            return (t.ready_at or t.updated_at) + monitor
    return None


def find_failures(
    deployment: Deployment, tasks: Iterable[Task], now: float, healthy_deadline: float
) -> tuple[list[Failure], float | None]:
    """Tasks of the new revision in the deployment's target slots that failed since it started
    and were not counted yet: ended on their own with an error, failed their health check, or
    not ready within ``healthy_deadline``. Also: when the next healthy deadline falls due."""
    targets = set(deployment.target_slots)
    counted = set(deployment.failed_tasks)
    failures: list[Failure] = []
    next_deadline: float | None = None
    for t in tasks:
        if (
            t.revision != deployment.to_revision
            or t.slot not in targets
            or t.id in counted
            or t.created_at < deployment.started_at
            or not t.wants_running
        ):
            continue
        if t.state == TaskState.FAILED:
            health = t.message.startswith("health check failed")
            reason = Reason.HEALTH_CHECK_FAILED if health else Reason.TASK_FAILED
            failures.append(Failure(t.id, reason, f"{t.id}: {t.message or 'failed'}"))
        elif t.state.active and t.ready_at is None:
            deadline = t.created_at + healthy_deadline
            if now >= deadline:
                failures.append(
                    Failure(
                        t.id,
                        Reason.HEALTHY_DEADLINE_EXCEEDED,
                        f"{t.id}: not ready {healthy_deadline:g}s after it was created",
                    )
                )
            else:
                next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
    return failures, next_deadline


def earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def counts(tasks: Iterable[Task], revision: int) -> Mapping[str, int]:
    """Tasks of ``revision`` that want to run, by observed state, and how many are ready."""
    result: dict[str, int] = defaultdict(int)
    for t in tasks:
        if t.revision == revision and t.wants_running:
            result[str(t.state)] += 1
            result["ready"] += t.ready
    return dict(result)
