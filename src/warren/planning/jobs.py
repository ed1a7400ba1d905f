"""Jobs: the one-off tasks of a service — a release's pre-deploy job, run before any task of
its new revision starts; its post-deploy job, run once it has succeeded; and ``warren run``'s.
Pure.

A job is a task in no slot (``slot`` 0, ``job`` set) that runs its own command with its
revision's image, env and placement, once, to its end: the agent never probes or restarts it,
the ingress never routes to it, and its exit code is its outcome. A release's job has the
release's number in its id (``web.pre-deploy.7``), so the reconciler creates it once whatever
the crashes; the reconciler stops a job at its deadline (its ``timeout``) and forgets all but
the last ``JOBS_KEPT`` ended ones, whose logs ``warren service logs NAME --job`` shows.

Pre-deploy, worked example (``preDeploy: {command: [./migrate], timeout: 60s}``): the update
to revision 2 is stored; while its job has not passed, every slot keeps the revision it runs
(``held_slots``) and the reconciler creates ``web.pre-deploy.7``; the job exits 0 → the
deployment logs ``JobSucceeded`` and its strategy starts; it exits 3, or is still running
60 s after it was created → the deployment fails with ``JobFailed``, revision 1 is the
service's again in the same write, and no task of revision 2 ever started. A rollback runs
no job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..domain import transitions
from ..domain.deployments import Deployment, DeploymentKind, Phase, Reason
from ..domain.durations import format_duration
from ..domain.specs import Job
from ..domain.tasks import JobKind, Task, TaskState, job_id
from .reconciling import SlotTarget
from .rollouts import RolloutView, Step, by_slot

__all__ = [
    "JOBS_KEPT",
    "JobPlan",
    "held_slots",
    "holds_new_tasks",
    "job_outcome",
    "plan_jobs",
    "post_deploy_step",
    "pre_deploy_pending",
    "pre_deploy_step",
    "release_job_id",
]

JOBS_KEPT = 5
"""Ended jobs of a service kept (with their logs) beyond the one a release waits for."""


def release_job_id(d: Deployment, kind: JobKind) -> str:
    """``web.pre-deploy.7``: the job ``kind`` of deployment ``web-7``."""
    return job_id(d.service, kind, d.id.rsplit("-", 1)[1])


def holds_new_tasks(d: Deployment) -> bool:
    """Whether no task of ``d``'s new revision may start: its pre-deploy job has not passed
    (yet, or ever: a first release whose job failed starts no task)."""
    return (
        d.kind == DeploymentKind.UPDATE
        and d.config.pre_deploy is not None
        and JobKind.PRE_DEPLOY not in d.hooks_done
    )


def pre_deploy_pending(d: Deployment | None) -> bool:
    """Whether ``d`` waits for its pre-deploy job."""
    return d is not None and d.active and holds_new_tasks(d)


def _wanted(d: Deployment | None) -> tuple[JobKind, Job] | None:
    """The job the service's newest deployment asks for now, if any."""
    if d is None or d.kind != DeploymentKind.UPDATE:
        return None
    if pre_deploy_pending(d):
        assert d.config.pre_deploy is not None
        return JobKind.PRE_DEPLOY, d.config.pre_deploy
    post = d.config.post_deploy
    if d.phase == Phase.SUCCEEDED and post is not None and JobKind.POST_DEPLOY not in d.hooks_done:
        return JobKind.POST_DEPLOY, post
    return None


def held_slots(d: Deployment, tasks: Iterable[Task], replicas: int) -> dict[int, SlotTarget]:
    """The slots' revisions while ``d`` holds its new tasks (``holds_new_tasks``): each keeps
    the revisions its live tasks run, but never the new one; a slot with none gets the
    revision the release starts from — or nothing, for a first release."""
    slots = by_slot(t for t in tasks if t.wants_running and t.state.active)
    keep: SlotTarget = d.from_revision if d.from_revision is not None else ()
    held: dict[int, SlotTarget] = {}
    for slot in range(1, replicas + 1):
        running = tuple(
            dict.fromkeys(t.revision for t in slots.get(slot, ()) if t.revision != d.to_revision)
        )
        held[slot] = running or keep
    return held


@dataclass(frozen=True, slots=True)
class JobPlan:
    """What the reconciler does with a service's jobs."""

    create: tuple[Task, ...] = ()
    shutdown: tuple[tuple[str, str], ...] = ()
    forget: tuple[str, ...] = ()
    requeue_at: float | None = None
    """The earliest deadline of a job still running."""


def plan_jobs(
    service: str, alive: bool, deployment: Deployment | None, jobs: Sequence[Task], now: float
) -> JobPlan:
    """Create the job ``deployment`` (the service's newest) waits for, unless it exists; stop
    the jobs past their deadline, a pre-deploy job whose release has ended, and every job of a
    removed service (``alive`` False); forget the ended jobs beyond ``JOBS_KEPT``."""
    wanted = _wanted(deployment) if alive else None
    wanted_id: str | None = None
    create: tuple[Task, ...] = ()
    if wanted is not None:
        assert deployment is not None
        kind, job = wanted
        wanted_id = release_job_id(deployment, kind)
        if all(t.id != wanted_id for t in jobs):
            create = (
                Task(
                    id=wanted_id, service=service, revision=deployment.to_revision, slot=0,
                    job=kind, command=job.command, deadline=now + job.timeout,
                    created_at=now, updated_at=now,
                ),
            )  # fmt: skip
    shutdown: list[tuple[str, str]] = []
    deadlines: list[float] = []
    for t in jobs:
        if not (t.wants_running and t.state.active):
            continue
        why = _why_stop(t, alive, wanted_id, now)
        if why:
            shutdown.append((t.id, why))
        elif t.deadline is not None:
            deadlines.append(t.deadline)
    ended = sorted(
        (t for t in jobs if t.state.terminal and t.id != wanted_id),
        key=lambda t: (t.created_at, t.id),
        reverse=True,
    )
    return JobPlan(
        create=create,
        shutdown=tuple(shutdown),
        forget=tuple(t.id for t in (ended[JOBS_KEPT:] if alive else ended)),
        requeue_at=min(deadlines, default=None),
    )


def _why_stop(job: Task, alive: bool, wanted_id: str | None, now: float) -> str:
    if not alive:
        return "service removed"
    if job.deadline is not None and now >= job.deadline:
        return f"did not finish within {format_duration(job.deadline - job.created_at)}"
    if job.job == JobKind.PRE_DEPLOY and job.id != wanted_id:
        return "its release ended"
    return ""


def job_outcome(job: Task) -> str:
    """``exited 0 after 1.2s``, ``exited 3``, ``did not finish within 1m`` …"""
    if job.state == TaskState.COMPLETE or (job.exit_code is not None and job.state.terminal):
        took = ""
        if job.started_at is not None and job.finished_at is not None:
            took = f" after {format_duration(round(job.finished_at - job.started_at, 3))}"
        # The driver's own words, unless they only say the exit code again.
        plain = not job.message or job.message.startswith("exited")
        told = "" if plain or job.exit_code == 0 else f": {job.message}"
        return f"exited {job.exit_code if job.exit_code is not None else 0}{took}{told}"
    return job.message or str(job.state)


def _job_of(jobs: Iterable[Task], tid: str) -> Task | None:
    return next((t for t in jobs if t.id == tid), None)


def pre_deploy_step(view: RolloutView) -> Step | None:
    """None once the deployment's pre-deploy job has passed (or it has none); else the Step:
    waiting for the job, the job's success logged, or the release failed — nothing replaced —
    by a job that exited non-zero or did not finish in time."""
    d, now = view.deployment, view.now
    if not pre_deploy_pending(d):
        return None
    assert d.config.pre_deploy is not None
    tid = release_job_id(d, JobKind.PRE_DEPLOY)
    job = _job_of(view.jobs, tid)
    if job is not None and job.state == TaskState.COMPLETE:
        done = d.decide(
            now, Reason.JOB_SUCCEEDED, f"pre-deploy job {tid} {job_outcome(job)}",
            hooks_done=(*d.hooks_done, JobKind.PRE_DEPLOY.value), progress_at=now,
        )  # fmt: skip
        return Step(done, requeue_at=now)
    if job is not None and job.state.terminal:
        why = f"pre-deploy job {tid} {job_outcome(job)}"
        return Step(transitions.fail_unstarted(d, now, Reason.JOB_FAILED, why))
    timeout = d.config.pre_deploy.timeout
    deadline = job.deadline if job is not None and job.deadline is not None else None
    deadline = deadline if deadline is not None else d.started_at + timeout
    if now >= deadline:
        why = f"pre-deploy job {tid} did not finish within {format_duration(timeout)}"
        return Step(transitions.fail_unstarted(d, now, Reason.JOB_FAILED, why))
    if job is not None and job.state == TaskState.RUNNING and not _said_started(d):
        # Once, so that whoever follows the release sees what it waits for.
        where = f" on node {job.node}" if job.node else ""
        d = d.decide(now, Reason.JOB_STARTED, f"pre-deploy job {tid} running{where}")
    return Step(d, requeue_at=deadline)


def _said_started(d: Deployment) -> bool:
    return any(x.reason == Reason.JOB_STARTED for x in d.decisions)


def post_deploy_step(view: RolloutView) -> Deployment:
    """A succeeded release logs its post-deploy job's outcome once it has ended (a failure is
    the operator's to look at: the release stays succeeded); the deployment as it is until
    then."""
    d = view.deployment
    wanted = _wanted(d)
    if wanted is None or wanted[0] != JobKind.POST_DEPLOY:
        return d
    tid = release_job_id(d, JobKind.POST_DEPLOY)
    job = _job_of(view.jobs, tid)
    if job is None or not job.state.terminal:
        return d
    reason = Reason.JOB_SUCCEEDED if job.state == TaskState.COMPLETE else Reason.JOB_FAILED
    logged = d.decide(
        view.now, reason, f"post-deploy job {tid} {job_outcome(job)}",
        hooks_done=(*d.hooks_done, JobKind.POST_DEPLOY.value),
    )  # fmt: skip
    return logged.checked(message=d.message)
