"""The reconciler's decisions: keep ``replicas`` tasks of the right revision running. Pure.

A service's tasks are numbered by *slot* (1 … replicas). For every slot the plan makes sure one
task of the slot's target revision wants to run:

- none yet → create one (subject to the restart policy when the slot's last task ended);
- a task of another revision in the slot → shut it down once the target task is ready
  (``start-first``) or at once (``stop-first``);
- duplicates → shut down all but one (the newest ready one, else the newest);
- slots above ``replicas`` → shut down (scale down); a deleted service → shut everything down.

Ended tasks are kept as history (``HISTORY_PER_SLOT`` per slot) and the rest forgotten.

Restart back-off, worked example with ``delay: 1s, maxDelay: 30s``: a task that fails before it
was ever ready is replaced 1s after it ended, its replacement 2s after, then 4s, 8s, 16s, 30s,
30s … A task that was ready at some point starts the count again at 1s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..domain.services import Service
from ..domain.specs import RestartCondition, RestartPolicy, UpdateOrder
from ..domain.tasks import Task, TaskState

__all__ = [
    "HISTORY_PER_SLOT",
    "NewTask",
    "ReconcilePlan",
    "SlotTarget",
    "plan_service",
    "restart_due",
]

HISTORY_PER_SLOT = 3


@dataclass(frozen=True, slots=True)
class NewTask:
    slot: int
    revision: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    create: tuple[NewTask, ...] = ()
    shutdown: tuple[tuple[str, str], ...] = ()
    """(task id, why) of tasks whose desired state becomes shutdown."""
    forget: tuple[str, ...] = ()
    """Ids of ended tasks to remove from the store."""
    requeue_at: float | None = None
    """The earliest time a back-off ends and the service must be looked at again."""
    forget_revisions: bool = False
    """The service is deleted and none of its tasks remain."""
    notes: tuple[str, ...] = field(default=())
    """Why a slot stays empty (restart policy), for events."""

    @property
    def empty(self) -> bool:
        return not (self.create or self.shutdown or self.forget or self.forget_revisions)


def restart_due(last: Task, policy: RestartPolicy) -> tuple[int, float] | None:
    """After ``last`` (the newest ended task of a slot) ended on its own: (attempt, due time) of
    its replacement, or None when the policy says the slot stays empty."""
    if policy.condition == RestartCondition.NONE:
        return None
    if last.state == TaskState.COMPLETE and policy.condition == RestartCondition.ON_FAILURE:
        return None
    if last.state == TaskState.COMPLETE:
        attempt = 0
    else:
        attempt = 1 if last.ready_at is not None else last.attempt + 1
    if policy.max_attempts and attempt > policy.max_attempts:
        return None
    # The exponent is capped so that a crash loop of thousands of attempts cannot overflow.
    backoff = policy.delay * 2 ** min(attempt - 1, 32)
    delay = 0.0 if attempt == 0 else min(backoff, policy.max_delay)
    return attempt, (last.finished_at or last.updated_at) + delay


def _newest_first(tasks: Sequence[Task]) -> list[Task]:
    return sorted(tasks, key=lambda t: (t.created_at, t.id), reverse=True)


SlotTarget = int | tuple[int, ...]
"""The revision a slot runs — or, during a canary or blue/green release, the revisions (one task
of each, side by side)."""


def _revisions(target: SlotTarget) -> tuple[int, ...]:
    return target if isinstance(target, tuple) else (target,)


def plan_service(
    name: str,
    service: Service | None,
    tasks: Sequence[Task],
    now: float,
    slot_revisions: Mapping[int, SlotTarget] | None = None,
    order: UpdateOrder = UpdateOrder.START_FIRST,
) -> ReconcilePlan:
    """The plan for one service. ``slot_revisions`` maps a slot to the revision (or revisions)
    it should run (a rollout in progress); slots not in it run the service's current revision.
    Tasks of any other revision in a slot are shut down once every wanted one is ready
    (start-first), or at once (stop-first)."""
    by_slot: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        by_slot[t.slot].append(t)
    create: list[NewTask] = []
    shutdown: list[tuple[str, str]] = []
    forget: list[str] = []
    notes: list[str] = []
    requeue_at: float | None = None

    replicas = service.spec.replicas if service else 0
    targets = slot_revisions or {}
    # Slots a rollout asks for above replicas (rare: more canary tasks than replicas) count too.
    wanted_slots = set(range(1, replicas + 1)) | (set(targets) if service else set())
    for slot in sorted(set(by_slot) | wanted_slots):
        slot_tasks = _newest_first(by_slot.get(slot, []))
        ended = [t for t in slot_tasks if t.state.terminal]
        forget.extend(t.id for t in ended[HISTORY_PER_SLOT:])
        live = [t for t in slot_tasks if t.wants_running and t.state.active]
        if service is None or slot not in wanted_slots:
            forget.extend(t.id for t in ended[:HISTORY_PER_SLOT])
            why = "service removed" if service is None else "scaled down"
            shutdown.extend((t.id, why) for t in live)
            continue
        wanted = _revisions(targets.get(slot, service.revision))
        # stop-first: the slot's old tasks must have ended before their replacements start.
        waiting_for_stop = order == UpdateOrder.STOP_FIRST and any(
            t.state.active and t.revision not in wanted for t in slot_tasks
        )
        all_ready = True
        for target in wanted:
            # Keep the newest ready task of the revision, else the newest: a duplicate never
            # costs the slot its only ready task.
            current = sorted((t for t in live if t.revision == target), key=lambda t: not t.ready)
            shutdown.extend((t.id, "duplicate task in slot") for t in current[1:])
            all_ready = all_ready and bool(current) and current[0].ready
            if current or waiting_for_stop:
                continue
            last = next((t for t in ended if t.revision == target and t.wants_running), None)
            if last is None:
                create.append(NewTask(slot, target, 0))
                continue
            due = restart_due(last, service.spec.restart_policy)
            if due is None:
                notes.append(f"slot {slot}: not restarted (restart policy)")
            elif due[1] <= now:
                create.append(NewTask(slot, target, due[0]))
            else:
                requeue_at = due[1] if requeue_at is None else min(requeue_at, due[1])
        others = [t for t in live if t.revision not in wanted]
        if others and (all_ready or order == UpdateOrder.STOP_FIRST):
            shutdown.extend((t.id, f"replaced by revision {wanted[-1]}") for t in others)

    return ReconcilePlan(
        create=tuple(create),
        shutdown=tuple(shutdown),
        forget=tuple(forget),
        requeue_at=requeue_at,
        forget_revisions=service is None and not tasks,
        notes=tuple(notes),
    )
