"""The reconciler's decisions: keep ``replicas`` tasks of the right revision running. Pure.

A service's tasks are numbered by *slot* (1 … replicas). For every slot the plan makes sure one
task of the slot's target revision wants to run:

- none yet → create one (subject to the restart policy when the slot's last task ended);
- a task of another revision in the slot → shut it down once the target task is ready
  (``start-first``) or at once (``stop-first``);
- duplicates → shut down all but one (the newest ready one, else the newest);
- slots above ``replicas`` → shut down (scale down); a deleted service → shut everything down;
- a task on a *draining* node (availability ``drain``) → start a replacement in its slot (placed
  on another node, since a draining node is not schedulable), and shut the old task down only
  once the replacement is ready — the slot never goes without a ready task, like a start-first
  rolling update. At most ``updateConfig.parallelism`` slots of a service move at once (0: all).
  A replacement no node can take waits, unplaced, with the reason as its message; the old task
  keeps serving meanwhile. Nothing is remembered: a slot is *moving* while it holds a task on a
  draining node and a not-yet-ready one elsewhere.
- a task on a node that is *down* (its heartbeat lease expired) → shut down at once and
  replaced on another node, at once: it may still run, but nobody can see or reach it. Its agent
  stops it when the node returns (a worker cut off stops its tasks itself after its lease's ttl).

Ended tasks are kept as history (``HISTORY_PER_SLOT`` per slot) and the rest forgotten.

Drain, worked example with ``replicas: 3, parallelism: 1``, every task on node a, a drained:
sync 1 → create a replacement for slot 1 (slots 2 and 3 wait: one move at a time); the slot 1
replacement turns ready → sync 2 shuts down slot 1's task on a and creates slot 2's
replacement; and so on. Ready tasks never fall below 3.

Restart back-off, worked example with ``delay: 1s, maxDelay: 30s``: a task that fails before it
was ever ready is replaced 1s after it ended, its replacement 2s after, then 4s, 8s, 16s, 30s,
30s … A task that was ready at some point starts the count again at 1s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
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
    replaces: str | None = None
    """The id of the task this one moves off a draining node."""


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
    draining: Collection[str] = frozenset(),
    down: Collection[str] = frozenset(),
) -> ReconcilePlan:
    """The plan for one service. ``slot_revisions`` maps a slot to the revision (or revisions)
    it should run (a rollout in progress); slots not in it run the service's current revision.
    Tasks of any other revision in a slot are shut down once every wanted one is ready
    (start-first), or at once (stop-first). ``draining``: the nodes in ``drain``, whose tasks
    move to other nodes; ``down``: the nodes whose heartbeat stopped, whose tasks are replaced."""
    by_slot: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        by_slot[t.slot].append(t)
    create: list[NewTask] = []
    shutdown: list[tuple[str, str]] = []
    forget: list[str] = []
    notes: list[str] = []
    requeue_at: float | None = None
    moves: list[NewTask] = []
    moving = 0  # slots whose replacement is not ready yet

    replicas = service.spec.replicas if service else 0
    targets = slot_revisions or {}
    # Slots a rollout asks for above replicas (rare: more canary tasks than replicas) count too.
    wanted_slots = set(range(1, replicas + 1)) | (set(targets) if service else set())
    for slot in sorted(set(by_slot) | wanted_slots):
        slot_tasks = _newest_first(by_slot.get(slot, []))
        ended = [t for t in slot_tasks if t.state.terminal]
        forget.extend(t.id for t in ended[HISTORY_PER_SLOT:])
        live = [t for t in slot_tasks if t.wants_running and t.state.active]
        lost = [t for t in live if t.node in down]
        if lost:
            shutdown.extend((t.id, f"node {t.node} is down") for t in lost)
            live = [t for t in live if t.node not in down]
        if service is None or slot not in wanted_slots:
            forget.extend(t.id for t in ended[:HISTORY_PER_SLOT])
            why = "service removed" if service is None else "scaled down"
            shutdown.extend((t.id, why) for t in live)
            continue
        wanted = _revisions(targets.get(slot, service.revision))
        # stop-first: the slot's old tasks must have ended before their replacements start.
        waiting_for_stop = order == UpdateOrder.STOP_FIRST and any(
            t.state.active and t.revision not in wanted and t.node not in down for t in slot_tasks
        )
        all_ready = True
        for target in wanted:
            # Keep the newest ready task of the revision, else the newest: a duplicate never
            # costs the slot its only ready task. A task on a draining node is kept apart: it
            # serves until a task elsewhere is ready to take over.
            mine = [t for t in live if t.revision == target]
            current = sorted((t for t in mine if t.node not in draining), key=lambda t: not t.ready)
            old = sorted((t for t in mine if t.node in draining), key=lambda t: not t.ready)
            shutdown.extend((t.id, "duplicate task in slot") for t in (*current[1:], *old[1:]))
            ready = bool(current) and current[0].ready
            all_ready = all_ready and (ready or (bool(old) and old[0].ready))
            last = next((t for t in ended if t.revision == target and t.wants_running), None)
            if old and ready:
                why = f"node {old[0].node} drained: moved to {current[0].node}"
                shutdown.append((old[0].id, why))
            elif old and current:
                moving += 1  # its replacement is starting (or waiting for a node)
            elif old and (last is None or last.created_at < old[0].created_at):
                moves.append(NewTask(slot, target, 0, replaces=old[0].id))
            elif old:
                # A replacement failed: the next one waits for the restart back-off.
                assert last is not None
                due = restart_due(last, service.spec.restart_policy)
                if due is None:
                    why = f"slot {slot}: cannot move off node {old[0].node} (restart policy)"
                    notes.append(why)
                elif due[1] <= now:
                    moves.append(NewTask(slot, target, due[0], replaces=old[0].id))
                else:
                    requeue_at = due[1] if requeue_at is None else min(requeue_at, due[1])
            if current or old or waiting_for_stop:
                continue
            if last is None or any(
                t.revision == target and t.created_at > last.created_at for t in lost
            ):
                # A first task, or one replacing a task lost with its node (not a failure of
                # its own: no back-off).
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

    # Moves, lowest slots first, up to the service's parallelism (0: all at once). Worked
    # example: parallelism 2, one slot already moving, three waiting → one more starts now.
    if moves and service is not None:
        parallelism = service.spec.deploy.update_config.parallelism
        room = max(0, parallelism - moving) if parallelism else len(moves)
        create.extend(moves[:room])

    return ReconcilePlan(
        create=tuple(create),
        shutdown=tuple(shutdown),
        forget=tuple(forget),
        requeue_at=requeue_at,
        forget_revisions=service is None and not tasks,
        notes=tuple(notes),
    )
