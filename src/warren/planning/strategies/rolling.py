"""The rolling update: replace the tasks slot by slot, ``parallelism`` slots per batch. Pure.

One call looks at the deployment and the service's tasks and returns the next record, in four
named steps:

1. ``count_failures`` — new failures among the new revision's tasks in the slots already moved
   (a task that failed before it was ready or within ``monitor`` after, failed its health check,
   or was not ready within ``healthyDeadline``); a slot counts once. When the failed slots
   exceed ``maxFailureRatio`` of the replicas, ``failureAction`` applies: ``rollback`` (the
   deployment becomes rolling_back and the controller starts the rollback), ``pause``, or
   ``continue`` (the failure is logged and the rollout goes on). A failure within the ratio —
   or ignored — is not waited for: its slot is left to the restart policy, as in Swarm.
2. ``check_progress`` — past ``progressDeadline`` without progress: the same failure action
   (``continue`` fails it).
3. ``watch_batch`` — while a moved slot is not done (new task ready, stayed ready for
   ``monitor``, old task gone): wait — the reconciler is replacing it. The last batch too is
   watched for ``monitor`` before the rollout succeeds.
4. ``next_batch`` — all moved slots done: after ``delay``, move the next ``parallelism`` slots
   (lowest first); when every slot is done, the deployment has succeeded.

The reconciler does the replacing (``planning.reconciling``): in a moved slot it starts the new
task and stops the old one once the new one is ready (``start-first``), or the other way round
(``stop-first``). Tasks on a node that is down are lost, not failed: the reconciler replaces
them at once and the rollout neither waits for nor counts them.

Worked example: 6 replicas, parallelism 2, start-first, tasks ready 1 s after start, monitor 0,
delay 0 → batches {1,2}, {3,4}, {5,6}; never fewer than 6 ready tasks, never more than 8 tasks;
about 3 s in all (3 batches x 1 s). With stop-first: never more than 6 tasks, never fewer than 4
ready.
"""

from __future__ import annotations

import math

from ...domain import transitions
from ...domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ...domain.specs import FailureAction, ServiceSpec
from ..previews import PlannedStep, RolloutPlan
from ..rollouts import (
    Failure,
    RolloutView,
    Step,
    by_slot,
    earliest,
    find_failures,
    monitor_ends,
    slot_done,
)
from .kinds import StrategyKind

__all__ = ["ROLLING", "next_step", "preview"]


def next_step(view: RolloutView) -> Step:
    d = view.deployment
    if d.phase != Phase.PROGRESSING:
        return Step(d)
    d, health_due, stop = count_failures(view, d)
    if stop is not None:
        return stop
    stop = check_progress(view, d)
    if stop is not None:
        return stop
    d, wait = watch_batch(view, d, health_due)
    if wait is not None:
        return wait
    return next_batch(view, d)


def count_failures(
    view: RolloutView, d: Deployment
) -> tuple[Deployment, float | None, Step | None]:
    """Step 1: ``(d with the new failures counted, the next healthy deadline, the Step that
    ends this look — a rollback, a pause — or None to go on)``."""
    cfg, now, replicas = d.config, view.now, view.replicas
    failures, health_due = find_failures(d, view.live_tasks, now, cfg.healthy_deadline, cfg.monitor)
    if not failures:
        return d, health_due, None
    slots = (*d.failed_slots, *sorted({f.slot for f in failures}))
    d = d.decide(
        now, failures[0].reason, "; ".join(f.message for f in failures),
        measured={"failed_slots": len(slots), "replicas": replicas},
        failed_tasks=(*d.failed_tasks, *(f.task_id for f in failures)), failed_slots=slots,
    )  # fmt: skip
    if len(slots) / max(replicas, 1) <= cfg.max_failure_ratio:
        return d, health_due, None  # tolerated: the slot is left to the restart policy
    outcome = on_failure(
        d, now, _ratio_reason(d, failures[0]), _ratio_message(d, replicas, failures)
    )
    if isinstance(outcome, Step):
        return d, health_due, outcome
    return outcome, health_due, None


def _ratio_reason(d: Deployment, first: Failure) -> Reason:
    return Reason.MAX_FAILURE_RATIO_EXCEEDED if d.config.max_failure_ratio else first.reason


def _ratio_message(d: Deployment, replicas: int, failures: list[Failure]) -> str:
    return (
        f"{len(d.failed_slots)} of {replicas} slots failed (max failure ratio "
        f"{d.config.max_failure_ratio:g}): {failures[0].message}"
    )


def check_progress(view: RolloutView, d: Deployment) -> Step | None:
    """Step 2: no slot done for ``progressDeadline`` → the failure action (``continue`` fails
    the deployment: it would never end)."""
    cfg = d.config
    if view.now < d.progress_at + cfg.progress_deadline:
        return None
    outcome = on_failure(
        d, view.now, Reason.PROGRESS_DEADLINE_EXCEEDED,
        f"no progress for {cfg.progress_deadline:g}s (progress deadline)", fail_on_continue=True,
    )  # fmt: skip
    assert isinstance(outcome, Step)
    return outcome


def watch_batch(
    view: RolloutView, d: Deployment, health_due: float | None
) -> tuple[Deployment, Step | None]:
    """Step 3: count the slots done; while a moved slot is not (and its failure was not
    counted), wait for it — until its monitor period ends, a healthy deadline or the progress
    deadline falls due. Once the batch is done, log it (``BatchReady``)."""
    cfg, now, replicas = d.config, view.now, view.replicas
    slots = by_slot(view.live_tasks)
    done = done_slots(view, d)
    deadline = d.progress_at + cfg.progress_deadline
    targets = [s for s in d.target_slots if s <= replicas]
    seen = tuple(sorted(set(d.done_slots) | (done & set(targets))))
    if len(done) > d.ready_slots or seen != d.done_slots:
        d = d.advance(now, ready_slots=max(len(done), d.ready_slots), done_slots=seen,
                      progress_at=now)  # fmt: skip
        deadline = now + cfg.progress_deadline
    given_up = set(d.failed_slots)
    waiting = [s for s in targets if s not in done and s not in given_up]
    if waiting:
        monitors = [monitor_ends(slots.get(s, []), d.to_revision, cfg.monitor) for s in waiting]
        pending = [m for m in monitors if m is not None and m > now]
        return d, Step(d, requeue_at=earliest(health_due, deadline, min(pending, default=None)))
    if targets and d.batch_ready_at is None:
        batch = [s for s in d.batch if s <= replicas] or targets
        d = d.decide(
            now, Reason.BATCH_READY, f"batch {d.step} ready: slots {_slots(batch)}",
            measured={"batch_seconds": round(now - (d.batch_started_at or now), 3)},
            batch_ready_at=now,
            # The delay before the next batch is planned waiting, not a lack of progress: the
            # progress deadline counts from its end.
            progress_at=now + cfg.delay,
        )  # fmt: skip
    return d, None


def done_slots(view: RolloutView, d: Deployment) -> set[int]:
    """The slots done now, and the target slots seen done before (a crash after the monitor
    period does not undo a slot)."""
    slots = by_slot(view.live_tasks)
    now_done = {
        s for s in range(1, view.replicas + 1)
        if slot_done(slots.get(s, []), d.to_revision, d.config.monitor, view.now)
    }  # fmt: skip
    return now_done | {s for s in d.done_slots if s <= view.replicas}


def next_batch(view: RolloutView, d: Deployment) -> Step:
    """Step 4: after ``delay``, the next ``parallelism`` slots not moved yet, lowest first;
    none left → succeeded."""
    cfg, now, replicas = d.config, view.now, view.replicas
    done = done_slots(view, d)
    moved = set(d.target_slots)
    remaining = [s for s in range(1, replicas + 1) if s not in done and s not in moved]
    if not remaining:
        return Step(_succeeded(d, now, replicas))
    deadline = d.progress_at + cfg.progress_deadline
    if d.step > 0 and cfg.delay > 0:
        ready_at = d.batch_ready_at or now
        if now < ready_at + cfg.delay:
            return Step(d, requeue_at=earliest(ready_at + cfg.delay, deadline))
    batch = remaining[: batch_size(d, replicas)]
    d = d.decide(
        now, Reason.BATCH_STARTED, f"batch {d.step + 1}: replacing slots {_slots(batch)}",
        action=f"move slots to revision {d.to_revision}",
        measured={"done": len(done), "replicas": replicas},
        step=d.step + 1, target_slots=(*d.target_slots, *batch), batch=tuple(batch),
        batch_started_at=now, batch_ready_at=None,
        delay_total=d.delay_total + (cfg.delay if d.step > 0 else 0.0), progress_at=now,
    )  # fmt: skip
    return Step(d, requeue_at=earliest(now + cfg.healthy_deadline, now + cfg.progress_deadline))


def batch_size(d: Deployment, replicas: int) -> int:
    """``parallelism`` 0 means every slot at once."""
    return d.config.parallelism or max(replicas, 1)


def _span(first: int, last: int) -> str:
    return f"slot {first}" if first == last else f"slots {first}-{last}"


def _slots(slots: list[int]) -> str:
    return ", ".join(str(s) for s in slots)


def _succeeded(d: Deployment, now: float, replicas: int) -> Deployment:
    kind = "rollback" if d.kind == DeploymentKind.ROLLBACK else "rollout"
    reason = Reason.ROLLBACK_COMPLETE if d.kind == DeploymentKind.ROLLBACK else Reason.COMPLETE
    failed = len(d.failed_slots)
    note = f", {failed} failed slot(s) left to the restart policy" if failed else ""
    return transitions.finish(
        d, now, reason,
        f"{kind} complete: {replicas}/{replicas} tasks on revision {d.to_revision}{note}",
        measured={"seconds": round(now - d.started_at, 3), "batches": d.step},
    )  # fmt: skip


def on_failure(
    d: Deployment, now: float, reason: Reason, message: str, fail_on_continue: bool = False
) -> Step | Deployment:
    """Apply the failure action: a Step that ends this look (rollback, pause, fail), or — for
    ``continue`` — the deployment with the failure logged, to carry on with."""
    action = d.config.failure_action
    if action == FailureAction.ROLLBACK and d.kind == DeploymentKind.UPDATE and d.from_revision:
        return Step(transitions.roll_back(d, now, reason, message, "roll back"))
    if action == FailureAction.CONTINUE and not fail_on_continue:
        return d.decide(now, Reason.FAILURE_IGNORED, message, action="continue (failure action)")
    if action == FailureAction.CONTINUE:
        return Step(transitions.fail(d, now, reason, message))
    return Step(transitions.pause(d, now, reason, message))


def preview(spec: ServiceSpec, revision: int, new: int) -> RolloutPlan:
    cfg = spec.deploy.update_config
    n = spec.replicas
    per_batch = cfg.parallelism or max(n, 1)
    batches = math.ceil(n / per_batch) if n else 0
    steps = []
    at = 0.0
    for b in range(batches):
        first, last = b * per_batch + 1, min(n, (b + 1) * per_batch)
        at += (cfg.delay if b else 0.0) + cfg.monitor
        steps.append(
            PlannedStep(
                f"batch {b + 1}/{batches}: {_span(first, last)} to revision {new}",
                {"old": n - last, "new": last},
                earliest_after=at,
            )
        )
    surge = per_batch if cfg.order == "start-first" else 0
    return RolloutPlan(
        "rolling", revision, new, tuple(steps), n + surge, at,
        (f"{cfg.order}: at most {n + surge} tasks at once, at least "
         f"{n if surge else n - per_batch} ready",),
    )  # fmt: skip


ROLLING = StrategyKind(name="rolling", next_step=next_step, preview=preview)
