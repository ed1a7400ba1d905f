"""Tasks: one running instance of one revision of a service, and their state machine. Pure.

Desired state (``desired_state``, ``node``) is written by the control plane; observed state
(``state``, ``endpoint``, ``healthy``, ``ready``, ``exit_code`` …) only by the agent of the
task's node. ::

    pending ──▶ starting ──▶ running ──▶ stopping ──▶ stopped
       │           │            │           │
       │           ├────────────┴───────────┴──▶ failed | complete   (ended on its own)
       └──▶ stopped | failed                                         (never started)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from enum import StrEnum
from typing import Any

from .base import Model
from .errors import InvalidTransitionError

__all__ = [
    "OBSERVED_FIELDS",
    "DesiredState",
    "JobKind",
    "Task",
    "TaskState",
    "current_tasks",
    "job_id",
    "task_id",
]


class TaskState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    COMPLETE = "complete"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def active(self) -> bool:
        """Holds (or may soon hold) a process or container."""
        return self not in _TERMINAL


class DesiredState(StrEnum):
    RUNNING = "running"
    SHUTDOWN = "shutdown"


_TERMINAL = frozenset({TaskState.STOPPED, TaskState.FAILED, TaskState.COMPLETE})
_ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.STARTING, TaskState.STOPPED, TaskState.FAILED}),
    TaskState.STARTING: frozenset(
        {TaskState.RUNNING, TaskState.STOPPING, TaskState.FAILED, TaskState.COMPLETE}
    ),
    TaskState.RUNNING: frozenset({TaskState.STOPPING, TaskState.FAILED, TaskState.COMPLETE}),
    TaskState.STOPPING: frozenset({TaskState.STOPPED, TaskState.FAILED, TaskState.COMPLETE}),
    TaskState.STOPPED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.COMPLETE: frozenset(),
}


OBSERVED_FIELDS = frozenset(
    {
        "state", "updated_at", "started_at", "finished_at", "endpoint", "runtime_id", "healthy",
        "ready", "ready_at", "exit_code", "message", "image_digest",
    }
)  # fmt: skip
"""What an agent reports of a task; the rest is the control plane's."""


def task_id(service: str, slot: int, suffix: str) -> str:
    """``web.3.k2x9q1`` — service, slot, and a random suffix that tells replacements apart."""
    return f"{service}.{slot}.{suffix}"


class JobKind(StrEnum):
    """Why a job (a one-off task, in no slot) runs."""

    PRE_DEPLOY = "pre-deploy"
    POST_DEPLOY = "post-deploy"
    RUN = "run"
    """``warren run SERVICE -- CMD``."""


def job_id(service: str, kind: JobKind, suffix: str) -> str:
    """``web.pre-deploy.7`` (the 7th deployment's), ``web.run.k2x9q1``: a release's job has
    one id, so that it is created once whatever the crashes and retries."""
    return f"{service}.{kind}.{suffix}"


class Task(Model):
    id: str
    service: str
    revision: int
    slot: int
    node: str | None = None
    desired_state: DesiredState = DesiredState.RUNNING
    state: TaskState = TaskState.PENDING
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    endpoint: str | None = None
    """``host:port`` where the ingress and the http/tcp probes reach the task."""
    runtime_id: str | None = None
    """The driver's handle: a pid for processes, a container id for containers."""
    image_digest: str | None = None
    """The image the task runs, as a reference that cannot move: ``repo@sha256:…`` (its repo
    digest) or ``sha256:…`` (its image ID, for an image that came from no registry). Docker
    driver only; the first one seen for a revision is kept with it (``Revision.image_digest``)."""
    healthy: bool | None = None
    ready: bool = False
    ready_at: float | None = None
    exit_code: int | None = None
    message: str = ""
    attempt: int = 0
    """Consecutive failures of this slot before this task: the restart back-off exponent."""
    job: JobKind | None = None
    """A job runs once to its end, in no slot (``slot`` 0): never restarted, probed or
    routed to; its exit code is its outcome."""
    command: tuple[str, ...] | None = None
    """A job's command, instead of its revision's."""
    deadline: float | None = None
    """When a job still running is stopped (its timeout)."""

    def transition(self, to: TaskState, now: float, **changes: Any) -> Task:
        """The task in state ``to``; InvalidTransitionError if the state machine forbids it."""
        if to == self.state and to.terminal:
            return self  # reported twice: the first report's times stand
        if to != self.state and to not in _ALLOWED[self.state]:
            raise InvalidTransitionError(f"task {self.id}: cannot go from {self.state} to {to}")
        if to.terminal or to == TaskState.STOPPING:
            changes.setdefault("ready", False)
        if to.terminal:
            changes.setdefault("finished_at", now)
        return self.model_copy(update={"state": to, "updated_at": now, **changes})

    def changed(self, now: float, **changes: Any) -> Task:
        return self.model_copy(update={"updated_at": now, **changes})

    @property
    def wants_running(self) -> bool:
        return self.desired_state == DesiredState.RUNNING


def current_tasks(tasks: Iterable[Task], revisions: Collection[int] | None = None) -> list[Task]:
    """The tasks that stand for their slot now: those that want to run, minus the ended ones
    that are history — replaced by a newer task of the slot, or of a revision the service has
    left (``revisions``: those it runs or moves between). A slot whose new task is ready is not
    also "failed"; nor is a service whose failed update was rolled back."""
    wanted = [t for t in tasks if t.wants_running]
    newest: dict[int, float] = {}
    for t in wanted:
        newest[t.slot] = max(newest.get(t.slot, t.created_at), t.created_at)
    return [
        t for t in wanted
        if t.state.active
        or (t.created_at >= newest[t.slot] and (revisions is None or t.revision in revisions))
    ]  # fmt: skip
