"""The live view of a rollout, as a tree (like ``kubectl argo rollouts get rollout --watch``): the
service and its release, what it waits for and how long is left, then each revision with its role
(stable, canary, preview …) and traffic weight, and under it each task with its state, readiness
and age. ``deploy status --watch`` and ``service update`` redraw it until the release ends.

``rollout_tree`` is pure: it draws what it is given, at the time it is given."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.tree import Tree

from ..domain.durations import format_duration
from .output import ago, moved

if TYPE_CHECKING:
    from ..client import Client
    from ..domain.deployments import Deployment, DeploymentStatus
    from ..domain.specs import ServiceSpec
    from ..domain.tasks import Task

__all__ = ["RolloutView", "follow_again", "rollout_tree", "watch_hint"]

_STATE_STYLE = {"running": "green", "failed": "red", "starting": "cyan", "stopping": "yellow"}
_PHASE_MARK = {
    "progressing": "[cyan]⟳ progressing[/]",
    "paused": "[yellow]॥ paused[/]",
    "awaiting_promotion": "[yellow]॥ awaiting promotion[/]",
    "succeeded": "[green]✔ succeeded[/]",
    "failed": "[red]✖ failed[/]",
    "rolling_back": "[yellow]↶ rolling back[/]",
    "rolled_back": "[red]↶ rolled back[/]",
    "superseded": "[dim]superseded[/]",
}


class RolloutView:
    """What one drawing needs, read from the API in one go."""

    def __init__(self, client: Client, name: str) -> None:
        self.status = client.deployment_status(name)
        self.spec = client.get_service(name).spec
        self.tasks = client.list_tasks(name)
        self.deployment: Deployment | None = None
        if self.status.deployment_id is not None:
            self.deployment = client.get_deployment(name, self.status.deployment_id)

    def tree(self, now: float | None = None) -> Tree:
        return rollout_tree(self.status, self.deployment, self.spec, self.tasks, now)


def _roles(status: DeploymentStatus, deployment: Deployment | None) -> dict[int, str]:
    """Each revision's part in the release: the stable one, and the one it moves to."""
    roles = {status.revision: "stable"}
    d = deployment
    if d is None or not d.active:
        return roles
    if d.kind == "rollback":
        roles = {d.to_revision: "rollback target"}
        if d.from_revision is not None:
            roles[d.from_revision] = "rolled back"
        return roles
    if d.from_revision is not None:
        roles = {d.from_revision: "stable"}
    new = {"canary": "canary", "blue-green": "preview" if not d.switched_at else "active"}
    roles[d.to_revision] = new.get(d.strategy, "new")
    if d.strategy == "blue-green" and d.switched_at and d.from_revision is not None:
        roles[d.from_revision] = "kept warm"
    return roles


def _waiting(
    status: DeploymentStatus, d: Deployment | None, spec: ServiceSpec, now: float
) -> str | None:
    """What the release waits for, and for how long still."""
    name = status.service_name
    if d is None or not d.active:
        return None
    if d.phase == "awaiting_promotion":
        return f"awaiting promotion: `warren deploy promote {name}`"
    if d.phase == "paused":
        return f"paused: {d.message or d.paused_reason} — `warren deploy resume {name}`"
    parts = []
    if d.pause_until is not None and d.pause_until > now:
        parts.append(f"pause: {format_duration(round(d.pause_until - now))} left")
    analysis = spec.deploy.canary.analysis if spec.deploy.canary else None
    if d.analysis_at is not None and analysis is not None:
        ends = d.analysis_at + analysis.interval
        if ends > now:
            parts.append(f"analysis window: {format_duration(round(ends - now))} left")
    if d.batch_ready_at is not None and d.config.monitor:
        ends = d.batch_ready_at + d.config.monitor
        if ends > now:
            parts.append(f"monitor: {format_duration(round(ends - now))} left")
    return ", ".join(parts) or None


def rollout_tree(
    status: DeploymentStatus,
    deployment: Deployment | None,
    spec: ServiceSpec,
    tasks: Sequence[Task],
    now: float | None = None,
) -> Tree:
    now = time.time() if now is None else now
    d = deployment
    phase = _PHASE_MARK.get(str(status.phase), "[green]✔ steady[/]") if d else "[green]✔ steady[/]"
    head = f"[bold]{escape(status.service_name)}[/]  {status.strategy}  {phase}"
    tree = Tree(head)
    if d is not None:
        moves = f"{d.kind} {moved(d.from_revision, d.to_revision)}"
        where = (
            f"step {d.step}" if status.moves_by == "step" else f"batch {d.step}/{status.batches}"
        )
        elapsed = format_duration(round((d.finished_at or now) - d.started_at))
        tree.add(f"deployment {d.id} ({moves}), {where}, {elapsed}")
        waiting = _waiting(status, d, spec, now)
        if waiting is not None:
            tree.add(f"[yellow]{escape(waiting)}[/]")
        if d.message and not d.active:
            tree.add(escape(d.message))
    roles = _roles(status, d)
    weights = {int(rev): w for rev, w in status.weights.items()}
    live = [t for t in tasks if t.state.active]
    revisions = sorted(set(roles) | set(weights) | {t.revision for t in live}, reverse=True)
    for rev in revisions:
        mine = sorted((t for t in live if t.revision == rev), key=lambda t: t.slot)
        ready = sum(1 for t in mine if t.ready)
        label = f"[bold]revision {rev}[/]"
        if rev in roles:
            label += f"  {roles[rev]}"
        if rev in weights:
            label += f"  {weights[rev]}%"
        branch = tree.add(f"{label}  {ready}/{len(mine)} ready")
        for t in mine:
            style = _STATE_STYLE.get(str(t.state), "white")
            readiness = "ready" if t.ready else "not ready"
            branch.add(
                f"{t.id}  [{style}]{t.state}[/]  {readiness}  {ago(t.created_at, now)}"
                + (f"  {escape(t.message)}" if t.message and not t.ready else "")
            )
    return tree


def watch_hint(name: str) -> str:
    return f"`warren deploy status {name} --watch`"


def follow_again(name: str) -> str:
    """What Ctrl-C during a watch says: the release goes on without the watcher."""
    return f"stopped watching; the release goes on — follow it again with {watch_hint(name)}"
