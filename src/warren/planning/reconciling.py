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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain

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


@dataclass(frozen=True, slots=True)
class _Slot:
    """One slot's tasks, sorted out once for every step (each newest first)."""

    number: int
    ended: tuple[Task, ...]
    """The first ``HISTORY_PER_SLOT`` are kept as history, the rest forgotten."""
    live: tuple[Task, ...]
    """Want to run and are active, on a node that is not down."""
    lost: tuple[Task, ...]
    """Want to run and are active, on a node that is down."""
    running: tuple[Task, ...]
    """Active, whatever they want, on a node that is not down: what ``stop-first`` waits for."""


def _sort_slot(number: int, tasks: Sequence[Task], down: Collection[str]) -> _Slot:
    """Sort a slot's tasks into ended, live, lost with a down node, and still running."""
    newest = _newest_first(tasks)
    live = [t for t in newest if t.wants_running and t.state.active]
    return _Slot(
        number,
        ended=tuple(t for t in newest if t.state.terminal),
        live=tuple(t for t in live if t.node not in down),
        lost=tuple(t for t in live if t.node in down),
        running=tuple(t for t in newest if t.state.active and t.node not in down),
    )


@dataclass(frozen=True, slots=True)
class _Steps:
    """What one step of the plan decides; the plan is the steps joined, in order."""

    create: tuple[NewTask, ...] = ()
    moves: tuple[NewTask, ...] = ()
    """Replacements of tasks on draining nodes, started up to the parallelism."""
    moving: int = 0
    """Slots whose replacement (off a draining node) is not ready yet."""
    shutdown: tuple[tuple[str, str], ...] = ()
    forget: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    requeue_at: float | None = None


def _join(steps: Iterable[_Steps]) -> _Steps:
    """The steps as one, in order; the earliest requeue wins."""
    parts = list(steps)
    due = [s.requeue_at for s in parts if s.requeue_at is not None]
    return _Steps(
        create=tuple(chain.from_iterable(s.create for s in parts)),
        moves=tuple(chain.from_iterable(s.moves for s in parts)),
        moving=sum(s.moving for s in parts),
        shutdown=tuple(chain.from_iterable(s.shutdown for s in parts)),
        forget=tuple(chain.from_iterable(s.forget for s in parts)),
        notes=tuple(chain.from_iterable(s.notes for s in parts)),
        requeue_at=min(due, default=None),
    )


@dataclass(frozen=True, slots=True)
class _Context:
    """What every slot of a service is planned with."""

    service: Service
    now: float
    order: UpdateOrder
    draining: Collection[str]


def _forget_history(slot: _Slot) -> _Steps:
    """Forget the slot's ended tasks beyond the newest ``HISTORY_PER_SLOT``."""
    return _Steps(forget=tuple(t.id for t in slot.ended[HISTORY_PER_SLOT:]))


def _shut_down_lost(slot: _Slot) -> _Steps:
    """Shut down, at once, the tasks lost with a down node: they may still run, but nobody can
    see or reach them."""
    return _Steps(shutdown=tuple((t.id, f"node {t.node} is down") for t in slot.lost))


def _shut_down_slot(slot: _Slot, why: str) -> _Steps:
    """A slot no longer wanted (scaled away, or the service removed): shut down its tasks and
    forget its history too."""
    return _Steps(
        forget=tuple(t.id for t in slot.ended[:HISTORY_PER_SLOT]),
        shutdown=tuple((t.id, why) for t in slot.live),
    )


@dataclass(frozen=True, slots=True)
class _Kept:
    """The task of a revision a slot keeps, on a node that is not draining (``current``) and on
    one that is (``old``), and the duplicates to shut down."""

    current: Task | None
    old: Task | None
    duplicates: tuple[Task, ...]


def _keep_one_task(slot: _Slot, target: int, draining: Collection[str]) -> _Kept:
    """Which task of revision ``target`` the slot keeps, and which duplicates it shuts down."""
    # Keep the newest ready task of the revision, else the newest: a duplicate never costs the
    # slot its only ready task. A task on a draining node is kept apart: it serves until a task
    # elsewhere is ready to take over.
    mine = [t for t in slot.live if t.revision == target]
    current = sorted((t for t in mine if t.node not in draining), key=lambda t: not t.ready)
    old = sorted((t for t in mine if t.node in draining), key=lambda t: not t.ready)
    return _Kept(
        current=current[0] if current else None,
        old=old[0] if old else None,
        duplicates=(*current[1:], *old[1:]),
    )


def _restart_after_back_off(new: NewTask, last: Task, ctx: _Context, refused: str) -> _Steps:
    """Start ``new`` once the restart back-off after ``last`` (the slot's newest ended task of
    the revision) is over: now, at a later sync (requeue), or never (``refused``, a note).
    ``new`` with ``replaces`` set is a move, started up to the parallelism."""
    due = restart_due(last, ctx.service.spec.restart_policy)
    if due is None:
        return _Steps(notes=(refused,))
    attempt, at = due
    if at <= ctx.now:
        started = replace(new, attempt=attempt)
        return _Steps(moves=(started,)) if new.replaces is not None else _Steps(create=(started,))
    return _Steps(requeue_at=at)


def _move_off_draining(
    slot: _Slot, target: int, kept: _Kept, last: Task | None, ctx: _Context
) -> _Steps:
    """The slot's task of revision ``target`` is on a draining node (``kept.old``): shut it down
    once its replacement elsewhere is ready, wait while the replacement starts, else start one
    (a move, up to the parallelism; after a failed one, subject to the restart back-off)."""
    old, current = kept.old, kept.current
    assert old is not None
    if current is not None and current.ready:
        return _Steps(shutdown=((old.id, f"node {old.node} drained: moved to {current.node}"),))
    if current is not None:
        return _Steps(moving=1)  # its replacement is starting (or waiting for a node)
    move = NewTask(slot.number, target, 0, replaces=old.id)
    if last is None or last.created_at < old.created_at:
        return _Steps(moves=(move,))
    # A replacement failed: the next one waits for the restart back-off.
    why = f"slot {slot.number}: cannot move off node {old.node} (restart policy)"
    return _restart_after_back_off(move, last, ctx, why)


def _create_task(slot: _Slot, target: int, last: Task | None, ctx: _Context) -> _Steps:
    """The slot has no task of revision ``target``: create one, at once when it is the first or
    replaces a task lost with its node, else after the restart back-off."""
    new = NewTask(slot.number, target, 0)
    if last is None or any(
        t.revision == target and t.created_at > last.created_at for t in slot.lost
    ):
        # A first task, or one replacing a task lost with its node (not a failure of its own:
        # no back-off).
        return _Steps(create=(new,))
    return _restart_after_back_off(
        new, last, ctx, f"slot {slot.number}: not restarted (restart policy)"
    )


def _plan_revision(slot: _Slot, target: int, ctx: _Context, waiting_for_stop: bool) -> _Steps:
    """Keep one task of revision ``target`` running in the slot: shut down its duplicates, move
    it off a draining node, or create it when the slot has none (unless ``stop-first`` still
    waits for the slot's old tasks to end)."""
    kept = _keep_one_task(slot, target, ctx.draining)
    duplicates = _Steps(shutdown=tuple((t.id, "duplicate task in slot") for t in kept.duplicates))
    last = next((t for t in slot.ended if t.revision == target and t.wants_running), None)
    if kept.old is not None:
        return _join([duplicates, _move_off_draining(slot, target, kept, last, ctx)])
    if kept.current is not None or waiting_for_stop:
        return duplicates
    return _join([duplicates, _create_task(slot, target, last, ctx)])


def _shut_down_old_revisions(slot: _Slot, wanted: tuple[int, ...], ctx: _Context) -> _Steps:
    """Shut down the slot's tasks of other revisions: once a task of every wanted revision is
    ready (``start-first``), or at once (``stop-first``)."""
    others = [t for t in slot.live if t.revision not in wanted]
    all_ready = all(any(t.ready for t in slot.live if t.revision == target) for target in wanted)
    if not others or not (all_ready or ctx.order == UpdateOrder.STOP_FIRST):
        return _Steps()
    return _Steps(shutdown=tuple((t.id, f"replaced by revision {wanted[-1]}") for t in others))


def _plan_wanted_slot(slot: _Slot, wanted: tuple[int, ...], ctx: _Context) -> _Steps:
    """A slot the service wants: one task of each wanted revision, the others shut down."""
    # stop-first: the slot's old tasks must have ended before their replacements start.
    waiting_for_stop = ctx.order == UpdateOrder.STOP_FIRST and any(
        t.revision not in wanted for t in slot.running
    )
    return _join(
        [
            *(_plan_revision(slot, target, ctx, waiting_for_stop) for target in wanted),
            _shut_down_old_revisions(slot, wanted, ctx),
        ]
    )


def _plan_slot(slot: _Slot, wanted: tuple[int, ...] | None, ctx: _Context | None) -> _Steps:
    """One slot's part of the plan: its history trimmed, its lost tasks shut down, then either
    every task shut down (the slot is not wanted: ``wanted`` None; the service removed: ``ctx``
    None) or the wanted revisions kept running."""
    found = [_forget_history(slot), _shut_down_lost(slot)]
    if ctx is None:
        return _join([*found, _shut_down_slot(slot, "service removed")])
    if wanted is None:
        return _join([*found, _shut_down_slot(slot, "scaled down")])
    return _join([*found, _plan_wanted_slot(slot, wanted, ctx)])


def _wanted_revisions(
    service: Service | None, slot_revisions: Mapping[int, SlotTarget] | None
) -> dict[int, tuple[int, ...]]:
    """Slot → the revisions it should run, for every slot the service wants (none once it is
    removed)."""
    if service is None:
        return {}
    targets = slot_revisions or {}
    # Slots a rollout asks for above replicas (rare: more canary tasks than replicas) count too.
    slots = set(range(1, service.spec.replicas + 1)) | set(targets)
    return {slot: _revisions(targets.get(slot, service.revision)) for slot in slots}


def _start_moves(steps: _Steps, service: Service | None) -> tuple[NewTask, ...]:
    """The moves to start now: lowest slots first, up to the service's parallelism (0: all at
    once). Worked example: parallelism 2, one slot already moving, three waiting → one more
    starts now."""
    if not steps.moves or service is None:
        return ()
    parallelism = service.spec.deploy.update_config.parallelism
    room = max(0, parallelism - steps.moving) if parallelism else len(steps.moves)
    return steps.moves[:room]


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
    wanted = _wanted_revisions(service, slot_revisions)
    ctx = _Context(service, now, order, draining) if service is not None else None
    steps = _join(
        _plan_slot(_sort_slot(number, by_slot.get(number, []), down), wanted.get(number), ctx)
        for number in sorted(set(by_slot) | set(wanted))
    )
    return ReconcilePlan(
        create=steps.create + _start_moves(steps, service),
        shutdown=steps.shutdown,
        forget=steps.forget,
        requeue_at=steps.requeue_at,
        forget_revisions=service is None and not tasks,
        notes=steps.notes,
    )
