"""What every rollout strategy needs to know about a service's slots: which revision each slot
should run, which slots are done, and which tasks of the new revision have failed. Pure.

A slot is *done* when its live task runs the deployment's ``to_revision``, is ready, has stayed
ready for ``monitor``, and no task of another revision is still active in the slot.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..domain.deployments import Deployment, Phase, Reason
from ..domain.specs import AbTestConfig, BlueGreenConfig, CanaryConfig
from ..domain.tasks import Task, TaskState
from .analysis import Sample
from .checks import Check, CheckKey, CheckResult

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
    ab_test: AbTestConfig | None = None
    """The new revision's release settings (canary / blue-green / A/B test strategies)."""
    samples: Mapping[int, Sample] = field(default_factory=dict)
    """Per revision, its traffic over the last analysis interval (from the ingress)."""
    checks: Mapping[CheckKey, CheckResult] = field(default_factory=dict)
    """The answers of the external checks (webhooks, provider metrics) run so far for this
    deployment."""
    down: frozenset[str] = frozenset()
    """Nodes whose heartbeat stopped: their tasks are lost to the rollout (replaced at once,
    never waited for, never a failure of the release)."""
    jobs: Sequence[Task] = ()
    """The service's jobs (``planning.jobs``): a release waits for its pre-deploy job."""

    @property
    def live_tasks(self) -> list[Task]:
        """The tasks not lost with a node that is down."""
        return [t for t in self.tasks if t.node not in self.down] if self.down else [*self.tasks]


@dataclass(frozen=True, slots=True)
class Step:
    """A planner's decision: the deployment's next record (equal to the input when there is
    nothing to do), and when to look again even if nothing changes (a monitor period, a delay or
    a pause ending, an analysis window closing, a deadline falling due). ``checks``: external
    checks the planner needs answered before it can go on (the controller runs them and syncs
    again when they have answered).

    What the controller does besides storing the record is read from the record itself, so that
    a crash between the decision and the act changes nothing: a deployment rolling_back with no
    rollback linked gets its rollback started; a failed one with ``reverted_to`` has the
    service's revision set back in the same write."""

    deployment: Deployment
    requeue_at: float | None = None
    checks: tuple[Check, ...] = ()

    @property
    def rollback_to(self) -> int | None:
        """The revision the update started from, when a rollback was decided (the controller
        goes back to the last revision that succeeded: this one, unless it never did)."""
        d = self.deployment
        decided = d.phase == Phase.ROLLING_BACK and d.rolled_back_by is None
        return d.from_revision if decided else None

    @property
    def revert_to(self) -> int | None:
        return self.deployment.reverted_to


@dataclass(frozen=True, slots=True)
class Failure:
    task_id: str
    reason: Reason
    message: str
    slot: int = 0


def by_slot(tasks: Iterable[Task]) -> dict[int, list[Task]]:
    """Tasks per slot, newest first."""
    slots: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        slots[t.slot].append(t)
    for group in slots.values():
        group.sort(key=lambda t: (t.created_at, t.id), reverse=True)
    return slots


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
    deployment: Deployment,
    tasks: Iterable[Task],
    now: float,
    healthy_deadline: float,
    monitor: float = math.inf,
    per_slot: bool = True,
) -> tuple[list[Failure], float | None]:
    """Tasks of the new revision in the deployment's target slots that failed since it started
    and were not counted yet: ended on their own with an error, failed their health check, or
    not ready within ``healthyDeadline``. Also: when the next healthy deadline falls due.

    - A slot counts once: a slot already counted (its failure tolerated, or ignored with
      ``failureAction: continue``) is left to the restart policy — its later tasks are not
      failures of the release, so the count never exceeds the slots.
    - ``monitor`` bounds it, as in Swarm: a task fails the release before it is ready or
      within ``monitor`` after it turned ready; a crash later belongs to the restart policy.
      E.g. monitor 5s, ready at t=1: a crash at t=4 counts, one at t=8 does not.
    - Tasks on a node that is down are not passed in: lost, not failed (see
      ``RolloutView.live_tasks``).

    ``per_slot=False`` (a canary or green, whose any failure fails it): each task counts once,
    a slot may fail again."""
    targets = set(deployment.target_slots)
    counted = set(deployment.failed_tasks)
    failed_slots = set(deployment.failed_slots) if per_slot else set()
    failures: list[Failure] = []
    next_deadline: float | None = None
    for t in sorted(tasks, key=lambda t: (t.slot, t.created_at, t.id)):
        if (
            t.revision != deployment.to_revision
            or t.slot not in targets
            or t.slot in failed_slots
            or t.id in counted
            or t.created_at < deployment.started_at
            or not t.wants_running
        ):
            continue
        if t.state == TaskState.FAILED:
            ended = t.finished_at if t.finished_at is not None else t.updated_at
            if t.ready_at is not None and ended > t.ready_at + monitor:
                continue  # it served past its monitor period: the restart policy's business
            health = t.message.startswith("health check failed")
            reason = Reason.HEALTH_CHECK_FAILED if health else Reason.TASK_FAILED
            failures.append(Failure(t.id, reason, f"{t.id}: {t.message or 'failed'}", t.slot))
            if per_slot:
                failed_slots.add(t.slot)
        elif t.state.active and t.ready_at is None:
            deadline = t.created_at + healthy_deadline
            if now >= deadline:
                failures.append(
                    Failure(
                        t.id,
                        Reason.HEALTHY_DEADLINE_EXCEEDED,
                        f"{t.id}: not ready {healthy_deadline:g}s after it was created",
                        t.slot,
                    )
                )
                if per_slot:
                    failed_slots.add(t.slot)
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
