"""``warren deploy …`` (status, history, pause, resume, abort, promote, plan, freeze) and the
live view of a rollout that ``service update`` and ``service rollback`` follow until it ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..domain.durations import format_duration
from ..domain.errors import WarrenError
from .changes import PLAN, Changes, change_flags
from .connect import connect
from .flags import UNTIL
from .live import RolloutView, follow_again
from .output import (
    OUTPUT,
    QUIET,
    Format,
    ago,
    console,
    err_console,
    group,
    iso_seconds,
    moved,
    show,
)

if TYPE_CHECKING:
    from ..client import Client
    from ..domain.deployments import Deployment, DeploymentStatus, Phase
    from ..domain.diffs import Change
    from ..domain.services import Service
    from ..domain.tasks import Task

__all__ = ["app", "follow", "follow_start", "print_changes"]

app = group("Follow and steer deployments (rollouts).")

# By the phases' values (``Phase`` is a StrEnum): no pydantic model to import at start-up.
_PHASE_STYLE = {
    "progressing": "cyan",
    "paused": "yellow",
    "awaiting_promotion": "yellow",
    "succeeded": "green",
    "failed": "red",
    "rolling_back": "yellow",
    "rolled_back": "red",
    "superseded": "dim",
}


def _phase(phase: Phase | None) -> str:
    if phase is None:
        return "-"
    return f"[{_PHASE_STYLE.get(phase, 'white')}]{phase}[/]"


def status_table(status: DeploymentStatus) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("service", f"{status.service_name} (revision {status.revision})")
    table.add_row("version", status.version)
    table.add_row("strategy", status.strategy)
    table.add_row(
        "tasks", f"{status.ready_tasks}/{status.desired_tasks} ready, {status.total_tasks} total"
    )
    by_state = ", ".join(f"{n} {state}" for state, n in sorted(status.tasks.items()))
    table.add_row("by state", by_state or "-")
    if status.deployment_id:
        assert status.to_revision is not None
        moves = f"{status.kind}: {moved(status.from_revision, status.to_revision)}"
        table.add_row("deployment", f"{status.deployment_id} ({moves})")
        table.add_row("phase", _phase(status.phase))
        # Releases by weights (canary, blue/green) move by steps, not by batches of slots.
        where = (
            f"step {status.step}"
            if status.moves_by == "step"
            else f"batch {status.step}/{status.batches}"
        )
        table.add_row(
            "progress",
            f"{where}, {status.updated_slots}/{status.desired_tasks} updated, "
            f"{status.failed_tasks} failed",
        )
        table.add_row("elapsed", format_duration(status.elapsed or 0))
        if status.weights:
            shares = ", ".join(f"revision {rev}: {w}%" for rev, w in status.weights.items())
            table.add_row("weights", shares)
        analyses = [d for d in status.decisions if d.reason.startswith("Analysis")]
        # The last window judged, with its figures (a verdict on the release has none).
        judged = [d for d in analyses if d.measured] or analyses
        if judged:
            last = judged[-1]
            figures = ", ".join(f"{k} {v}" for k, v in last.measured.items())
            table.add_row(
                "analysis", f"{last.reason}: {last.message}" + (f" ({figures})" if figures else "")
            )
        for label, line in _experiment_rows(status.experiment, status.done):
            table.add_row(label, line)
        if status.rollback_id:
            table.add_row(
                "rollback",
                f"{status.rollback_id} to revision {status.rolled_back_to}: "
                f"{_phase(status.rollback_phase)}",
            )
        if status.message:
            table.add_row("message", status.message)
    return table


def _experiment_rows(figures: dict[str, Any], ended: bool) -> list[tuple[str, str]]:
    """An A/B test's figures, one line per revision, and who leads."""
    rows: list[tuple[str, str]] = []
    for side in ("a", "b"):
        of = figures.get(side)
        if not isinstance(of, dict):
            return []
        latency = "".join(f", {key} {of[key] * 1000:.1f}ms" for key in ("p50", "p95") if key in of)
        rows.append(
            (
                "A/B test" if side == "a" else "",
                f"revision {of.get('revision')}: {of.get('requests', 0)} requests, "
                f"{of.get('successRate', 1):.2%} ok{latency}",
            )
        )
    winner = figures.get("winner")
    lead = (
        f"revision {winner} better (confidence {figures.get('confidence', 0):.1%})"
        if winner is not None
        else "no significant difference"
    )
    ends = figures.get("endsAt")
    verb = "ended" if ended else "ends"
    when = f"; {verb} {time.strftime('%H:%M:%S', time.localtime(ends))}" if ends else ""
    rows.append(("", lead + when))
    return rows


def decisions_table(deployment: Deployment | DeploymentStatus, last: int = 10) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("TIME", "STEP", "REASON", "DECISION"):
        table.add_column(col, overflow="fold" if col == "DECISION" else "ellipsis")
    for d in deployment.decisions[-last:]:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(d.time)), str(d.step), d.reason, d.message
        )
    return table


@app.command()
def status(
    name: str,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="The release as a live tree until it ends (Ctrl-C: stop watching).",
        ),
    ] = False,
    output: OUTPUT = Format.TABLE,
) -> None:
    """Rollout status: tasks by state, phase, step, the last decisions."""
    with connect() as client:
        st = client.deployment_status(name)
        if output is not Format.TABLE:
            show(output, lambda: st, lambda: None)
            return
        if not watch:
            console.print(status_table(st))
            if st.decisions:
                console.print()
                console.print(decisions_table(st))
            return
        try:
            with Live(console=console, refresh_per_second=4) as live:
                while True:
                    view = RolloutView(client, name)
                    st = view.status
                    live.update(Group(view.tree(), Text(""), decisions_table(st)))
                    if st.done:
                        break
                    time.sleep(0.25)
        except KeyboardInterrupt:
            err_console.print(follow_again(name), markup=False)
            raise typer.Exit(130) from None
        if not st.succeeded:
            raise WarrenError(f"deployment {st.deployment_id} {st.phase}: {st.message}")


@app.command()
def history(name: str, output: OUTPUT = Format.TABLE, quiet: QUIET = False) -> None:
    """Every deployment of a service kept (newest last), with how each ended."""
    with connect() as client:
        deployments = client.list_deployments(name)

    def view() -> None:
        table = Table(box=None, header_style="bold")
        for col in ("DEPLOYMENT", "KIND", "REVISIONS", "PHASE", "STARTED", "DURATION"):
            table.add_column(col, no_wrap=True)
        table.add_column("MESSAGE", overflow="ellipsis", no_wrap=True, max_width=60)
        for d in deployments:
            took = (d.finished_at or time.time()) - d.started_at
            table.add_row(
                d.id,
                str(d.kind),
                moved(d.from_revision, d.to_revision),
                _phase(d.phase),
                ago(d.started_at) + " ago",
                format_duration(round(took, 1)),
                d.message,
            )
        console.print(table)

    show(output, lambda: deployments, view, [d.id for d in deployments] if quiet else None)


@app.command()
def freeze(
    until: Annotated[
        float,
        typer.Option(
            "--until",
            parser=UNTIL,
            metavar="DUR|TIME",
            help="Until when: a duration from now (2h) or an RFC 3339 time.",
        ),
    ],
    reason: Annotated[str, typer.Option("--reason", metavar="TEXT", help="Why (shown to all).")],
    service: Annotated[
        str | None,
        typer.Option("--service", metavar="NAME", help="Only this service (default: every one)."),
    ] = None,
) -> None:
    """Refuse new releases until a time: an update that would start one fails, saying until when
    (`--override` goes anyway). A rollback still runs; so does a change of replicas."""
    with connect() as client:
        made = client.freeze(until, reason, service)
    scope = f"service {service}" if service else "every service"
    console.print(f"releases of {scope} frozen until {iso_seconds(made['until'])}: {reason}")


@app.command()
def unfreeze(
    service: Annotated[
        str | None,
        typer.Option(
            "--service",
            metavar="NAME",
            help="The freeze of this service (default: the one of every service).",
        ),
    ] = None,
) -> None:
    """End a freeze."""
    with connect() as client:
        client.unfreeze(service)
    console.print(f"releases of {f'service {service}' if service else 'every service'} unfrozen")


@app.command()
def freezes(output: OUTPUT = Format.TABLE) -> None:
    """The freezes that hold now."""
    with connect() as client:
        found = client.list_freezes()

    def view() -> None:
        table = Table(box=None)
        for column in ("SCOPE", "UNTIL", "REASON"):
            table.add_column(column)
        for f in found:
            table.add_row(
                f.get("service") or "(every service)", iso_seconds(f["until"]), f["reason"]
            )
        console.print(table)

    show(output, lambda: found, view)


@app.command()
def pause(name: str) -> None:
    """Pause the active rollout: no new batch starts until `deploy resume`."""
    with connect() as client:
        d = client.pause_deployment(name)
    console.print(f"deployment {d.id} {d.phase}")


@app.command()
def resume(name: str) -> None:
    """Resume a paused rollout."""
    with connect() as client:
        d = client.resume_deployment(name)
    console.print(f"deployment {d.id} {d.phase}")


@app.command()
def promote(
    name: str,
    full: Annotated[
        bool, typer.Option("--full", metavar="", help="Skip every remaining step.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", metavar="", help="Even while the new tasks are not all ready."),
    ] = False,
) -> None:
    """Canary: skip the current pause (--full: all remaining steps). Blue/green: switch now.
    Refused while the new revision's tasks are not all ready (--force to promote anyway)."""
    with connect() as client:
        d = client.promote_deployment(name, full, force)
    console.print(f"deployment {d.id}: {d.message}")


@app.command()
def abort(name: str) -> None:
    """Stop the active rollout and roll back to the revision it started from."""
    with connect() as client:
        d = client.abort_deployment(name)
    console.print(f"deployment {d.id}: {d.message}")


def follow(client: Client, service: str, deployment_id: str) -> None:
    """Show a rollout live until it ends — including the automatic rollback it may trigger —
    and raise (exit status 1) unless it succeeded: each decision as a line as it is made, and
    below them the release as a tree (``live``), redrawn. Ctrl-C stops watching, not the
    release, and says how to follow it again."""
    from ..domain.deployments import Phase

    seen: set[tuple[str, float, str, int]] = set()
    try:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while True:
                followed = client.get_deployment(service, deployment_id)
                current = [followed]
                if followed.rolled_back_by:
                    current.append(client.get_deployment(service, followed.rolled_back_by))
                for d in current:
                    for decision in d.decisions:
                        key = (d.id, decision.time, decision.reason, decision.step)
                        if key not in seen:
                            seen.add(key)
                            live.console.print(
                                f"  [dim]{d.id}[/dim] {decision.reason}: {escape(decision.message)}"
                            )
                live.update(RolloutView(client, service).tree())
                last = current[-1]
                if followed.phase.terminal and (last is followed or last.phase.terminal):
                    break
                if followed.phase in (Phase.PAUSED, Phase.AWAITING_PROMOTION):
                    raise WarrenError(
                        f"deployment {followed.id} {followed.phase}: {followed.message} — "
                        f"continue with `warren deploy promote {service}` or "
                        f"`warren deploy resume {service}`"
                    )
                time.sleep(0.25)
    except KeyboardInterrupt:
        err_console.print(follow_again(service), markup=False)
        raise typer.Exit(130) from None
    if followed.phase != Phase.SUCCEEDED:
        raise WarrenError(f"deployment {followed.id} {followed.phase}: {followed.message}")
    took = (followed.finished_at or time.time()) - followed.started_at
    console.print(f"deployment {followed.id} succeeded in {format_duration(round(took, 1))}")


def follow_start(client: Client, service: Service) -> None:
    """Show a new service's tasks starting until every replica has been ready for the monitor
    period (``updateConfig.monitor``), as ``docker service create`` verifies; raise (exit
    status 1) if they are not by the progress deadline, with the last failure. Each failed
    start is one line as it happens. A service with a pre-deploy job: its first release,
    followed as an update is."""
    from ..domain.tasks import TaskState

    name, revision, replicas = service.name, service.revision, service.spec.replicas
    config = service.spec.deploy.update_config
    if service.spec.deploy.pre_deploy is not None:
        # Its first release runs the job, then starts the tasks: follow that release.
        follow(client, name, f"{name}-1")
        return
    if replicas == 0:
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        TextColumn("{task.completed:.0f}/{task.total:.0f} ready"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    started = time.monotonic()
    ready_since: dict[str, float] = {}  # by task id: when this command first saw it ready
    failed: dict[str, Task] = {}
    with progress:
        bar = progress.add_task(f"{name} revision {revision}", total=replicas)
        while True:
            now = time.monotonic()
            tasks = [t for t in client.list_tasks(name) if t.revision == revision]
            for t in tasks:
                if t.state == TaskState.FAILED and t.id not in failed:
                    failed[t.id] = t
                    why = t.message or (f"exit {t.exit_code}" if t.exit_code is not None else "")
                    progress.console.print(f"  [red]task {t.id} failed[/red]: {escape(why)}")
            ready = {t.id for t in tasks if t.ready and t.wants_running}
            ready_since = {i: ready_since.get(i, now) for i in ready}
            stable = sum(1 for since in ready_since.values() if now - since >= config.monitor)
            progress.update(bar, completed=stable)
            if stable >= replicas:
                break
            if now - started > config.progress_deadline:
                last = max(failed.values(), key=lambda t: t.updated_at, default=None)
                why = f"; last failure: task {last.id}: {last.message}" if last else ""
                raise WarrenError(
                    f"service {name}: {stable}/{replicas} tasks ready after the progress "
                    f"deadline ({format_duration(config.progress_deadline)}){why} — "
                    f"`warren service ps {name}` and `warren service logs {name}` say more"
                )
            time.sleep(0.25)
    console.print(f"service {name}: {replicas}/{replicas} tasks ready")


@app.command()
@change_flags(PLAN)
def plan(
    name: str,
    # The flags' values, given by @change_flags.
    changes: Changes = None,  # type: ignore[assignment]
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", metavar="FILE", help="The whole new spec instead."),
    ] = None,
    output: OUTPUT = Format.TABLE,
) -> None:
    """Show a change field by field and the rollout it would perform — steps, tasks per
    revision, weights, analysis, earliest finish, peak tasks — without performing it; the
    change flags are those of `service update`. Impossible settings are refused."""
    from .documents import load_services

    with connect() as client:
        if file is not None:
            specs = load_services(file)
            spec = next((s for s in specs if s.name == name), None)
            if spec is None:
                raise WarrenError(f"{file} holds no service named {name!r}")
            result = client.plan(name, spec.to_wire(), replace=True)
        else:
            result = client.plan(name, changes.to_spec(), changes.get("env_rm"))
    show(output, lambda: result, lambda: _print_plan(name, result))


def print_changes(name: str, plan: dict[str, Any]) -> None:
    """The spec's changes, field by field, under one line that says what they lead to — as
    ``nomad job plan`` shows them::

        +/- service "web" (revision 3 → 4, a rollout)
          ~ env.VERSION: "v1" => "v2"
          ~ deploy.updateConfig.parallelism: 1 => 2   (settings only: no new tasks)
    """
    from ..domain.diffs import Change

    changes = [Change.from_wire(c) for c in plan.get("changes", ())]
    head, to = plan["fromRevision"], plan["toRevision"]
    if not changes:
        _plain(f'  service "{name}": unchanged (revision {head})')
        return
    if to is None:
        _plain(f'~ service "{name}" (revision {head}, no new tasks)')
    else:
        what = "a fast-track rollback" if plan["strategy"] == "fast-track rollback" else "a rollout"
        _plain(f'+/- service "{name}" (revision {head} → {to}, {what})')
    for change in changes:
        _plain(f"  {change}" + ("" if change.new_tasks else f"   ({_why_no_tasks(change)})"))


def _why_no_tasks(change: Change) -> str:
    return "scale only" if change.path == "replicas" else "settings only: no new tasks"


def _plain(line: str) -> None:
    """Values are JSON: a list's brackets are not rich markup."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_plan(name: str, result: dict[str, Any]) -> None:
    print_changes(name, result)
    console.print()
    to = result["toRevision"]
    head = f"{result['strategy']}: revision {result['fromRevision']}"
    console.print(head + (f" → {to}" if to else ""))
    table = Table(box=None, header_style="bold")
    for col in ("STEP", "TASKS", "WEIGHTS", "ANALYSIS", "EARLIEST"):
        table.add_column(col, overflow="fold")
    for step in result["steps"]:
        tasks = ", ".join(f"{k} {v}" for k, v in step["tasks"].items())
        weights = ", ".join(f"{k} {v}%" for k, v in step["weights"].items())
        at = step["earliestAfter"]
        table.add_row(
            step["description"], tasks, weights or "-", step["analysis"] or "-",
            "when promoted" if at is None else f"+{format_duration(round(at, 3))}",
        )  # fmt: skip
    console.print(table)
    finish = result["earliestFinish"]
    console.print(
        f"peak tasks: {result['peakTasks']}; earliest finish: "
        + ("when promoted" if finish is None else f"+{format_duration(round(finish, 3))}")
        + " (plus the tasks' own start-up)"
    )
    for note in result["notes"]:
        console.print(f"note: {note}")
