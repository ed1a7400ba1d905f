"""The rolling update: replace the tasks slot by slot, ``parallelism`` slots per batch. Pure.

One call looks at the deployment and the service's tasks and returns the next record:

1. Count new failures among the new revision's tasks in the slots already moved (a task that
   failed, failed its health check, or was not ready within ``healthyDeadline``). When the
   failures exceed ``maxFailureRatio`` of the replicas, apply ``failureAction``: ``rollback``
   (the deployment becomes rolling_back and a rollback to the previous revision starts),
   ``pause``, or ``continue``.
2. Past ``progressDeadline`` without progress: the same failure action (``continue`` fails it).
3. While a moved slot is not done (new task ready, stayed ready for ``monitor``, old task gone):
   wait — the reconciler is replacing it.
4. All moved slots done: after ``delay``, move the next ``parallelism`` slots (lowest first);
   when every slot is done, the deployment has succeeded.

The reconciler does the replacing (``planning.reconciling``): in a moved slot it starts the new
task and stops the old one once the new one is ready (``start-first``), or the other way round
(``stop-first``).

Worked example: 6 replicas, parallelism 2, start-first, tasks ready 1 s after start, monitor 0,
delay 0 → batches {1,2}, {3,4}, {5,6}; never fewer than 6 ready tasks, never more than 8 tasks;
about 3 s in all (3 batches x 1 s). With stop-first: never more than 6 tasks, never fewer than 4
ready.
"""

from __future__ import annotations

from ...domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ...domain.specs import FailureAction
from ..rollouts import (
    RolloutView,
    Step,
    by_slot,
    earliest,
    find_failures,
    monitor_ends,
    slot_done,
)

__all__ = ["next_step"]


def next_step(view: RolloutView) -> Step:
    d, now = view.deployment, view.now
    if d.phase != Phase.PROGRESSING:
        return Step(d)
    cfg = d.config
    replicas = view.replicas
    slots = by_slot(view.tasks)

    # 1. failures
    failures, health_due = find_failures(d, view.tasks, now, cfg.healthy_deadline)
    if failures:
        d = d.decide(
            now,
            failures[0].reason,
            "; ".join(f.message for f in failures),
            measured={"failed": len(d.failed_tasks) + len(failures), "replicas": replicas},
            failed_tasks=(*d.failed_tasks, *(f.task_id for f in failures)),
        )
        ratio = len(d.failed_tasks) / max(replicas, 1)
        if ratio > cfg.max_failure_ratio:
            outcome = _on_failure(
                d,
                now,
                Reason.MAX_FAILURE_RATIO_EXCEEDED if cfg.max_failure_ratio else failures[0].reason,
                f"{len(d.failed_tasks)} of {replicas} new tasks failed "
                f"(max failure ratio {cfg.max_failure_ratio:g}): {failures[0].message}",
            )
            if isinstance(outcome, Step):
                return outcome
            d = outcome

    # 2. progress deadline
    if now >= d.progress_at + cfg.progress_deadline:
        outcome = _on_failure(
            d,
            now,
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"no progress for {cfg.progress_deadline:g}s (progress deadline)",
            fail_on_continue=True,
        )
        assert isinstance(outcome, Step)
        return outcome
    deadline = d.progress_at + cfg.progress_deadline

    # 3. the current batch
    done = {
        s for s in range(1, replicas + 1)
        if slot_done(slots.get(s, []), d.to_revision, cfg.monitor, now)
    }  # fmt: skip
    targets = [s for s in d.target_slots if s <= replicas]
    waiting = [s for s in targets if s not in done]
    if len(done) > d.ready_slots:
        d = d.model_copy(update={"ready_slots": len(done), "progress_at": now, "updated_at": now})
        deadline = now + cfg.progress_deadline
    if waiting:
        monitors = [monitor_ends(slots.get(s, []), d.to_revision, cfg.monitor) for s in waiting]
        pending = [m for m in monitors if m is not None and m > now]
        return Step(d, requeue_at=earliest(health_due, deadline, min(pending, default=None)))
    if targets and d.batch_ready_at is None:
        d = d.decide(
            now,
            Reason.BATCH_READY,
            f"batch {d.step} ready: slots {_slots(targets[-_batch(d, replicas) :])}",
            measured={"batch_seconds": round(now - (d.batch_started_at or now), 3)},
            batch_ready_at=now,
            # The delay before the next batch is planned waiting, not a lack of progress: the
            # progress deadline counts from its end.
            progress_at=now + cfg.delay,
        )

    # 4. the next batch, or done
    remaining = [s for s in range(1, replicas + 1) if s not in done and s not in targets]
    if not remaining:
        return Step(_succeeded(d, now, replicas))
    if d.step > 0 and cfg.delay > 0:
        ready_at = d.batch_ready_at or now
        if now < ready_at + cfg.delay:
            return Step(d, requeue_at=earliest(ready_at + cfg.delay, deadline))
    batch = remaining[: _batch(d, replicas)]
    d = d.decide(
        now,
        Reason.BATCH_STARTED,
        f"batch {d.step + 1}: replacing slots {_slots(batch)}",
        action=f"move slots to revision {d.to_revision}",
        measured={"done": len(done), "replicas": replicas},
        step=d.step + 1,
        target_slots=(*d.target_slots, *batch),
        batch_started_at=now,
        batch_ready_at=None,
        delay_total=d.delay_total + (cfg.delay if d.step > 0 else 0.0),
        progress_at=now,
    )
    return Step(d, requeue_at=earliest(now + cfg.healthy_deadline, now + cfg.progress_deadline))


def _batch(d: Deployment, replicas: int) -> int:
    """``parallelism`` 0 means every slot at once."""
    return d.config.parallelism or max(replicas, 1)


def _slots(slots: list[int]) -> str:
    return ", ".join(str(s) for s in slots)


def _succeeded(d: Deployment, now: float, replicas: int) -> Deployment:
    kind = "rollback" if d.kind == DeploymentKind.ROLLBACK else "rollout"
    reason = Reason.ROLLBACK_COMPLETE if d.kind == DeploymentKind.ROLLBACK else Reason.COMPLETE
    return d.decide(
        now,
        reason,
        f"{kind} complete: {replicas}/{replicas} tasks on revision {d.to_revision}",
        measured={"seconds": round(now - d.started_at, 3), "batches": d.step},
        phase=Phase.SUCCEEDED,
        finished_at=now,
        weights=(),
    )


def _on_failure(
    d: Deployment, now: float, reason: Reason, message: str, fail_on_continue: bool = False
) -> Step | Deployment:
    """Apply the failure action: a Step that ends this sync (rollback, pause, fail), or — for
    ``continue`` — the deployment with the failure logged, to carry on with."""
    action = d.config.failure_action
    if action == FailureAction.ROLLBACK and d.kind == DeploymentKind.UPDATE and d.from_revision:
        rollback = f"roll back to revision {d.from_revision}"
        d = d.decide(now, reason, message, action=rollback, phase=Phase.ROLLING_BACK)
        return Step(d, rollback_to=d.from_revision)
    if action == FailureAction.CONTINUE and not fail_on_continue:
        return d.decide(now, Reason.FAILURE_IGNORED, message, action="continue (failure action)")
    if action == FailureAction.CONTINUE:
        return Step(
            d.decide(now, reason, message, action="fail", phase=Phase.FAILED, finished_at=now)
        )
    return Step(
        d.decide(now, reason, message, action="pause", phase=Phase.PAUSED, paused_reason=message)
    )
