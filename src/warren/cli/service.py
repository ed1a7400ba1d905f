"""``warren service …``: create, ls, inspect, revisions, ps, scale, update, rollback, rm, logs."""

from __future__ import annotations

import contextlib
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..client import Client
from ..domain.base import parse_model
from ..domain.errors import ValidationError
from ..domain.logs import STAMP_LENGTH
from ..domain.services import EnvChange, RevisionEntry, env_changes
from ..domain.specs import ServiceSpec, patch_spec, service_to_document
from ..domain.tasks import Task, TaskState
from .changes import (
    Command,
    Delay,
    DrainTimeout,
    Driver,
    Env,
    EnvRm,
    FailureAction,
    HealthCmd,
    HealthHttp,
    HealthTcp,
    HealthyDeadline,
    Host,
    Image,
    Interval,
    MaxFailureRatio,
    Monitor,
    Order,
    Parallelism,
    ProgressDeadline,
    Publish,
    PublishAdd,
    PublishRm,
    Pull,
    Replicas,
    Retries,
    RollbackOrder,
    RollbackParallelism,
    StartPeriod,
    StopGrace,
    StopSignal,
    Strategy,
    Timeout,
    TlsCert,
    TlsKey,
    spec_changes,
)  # fmt: skip
from .deploy import follow
from .documents import load_services
from .flags import SINCE, change_ports, parse_publish
from .output import advise_on, ago, console

__all__ = ["app"]

app = typer.Typer(help="Create and manage services.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str | None, typer.Argument(help="Service name.")] = None,
    image: Image = None,
    command: Command = None,
    driver: Driver = None,
    pull: Pull = None,
    stop_signal: StopSignal = None,
    replicas: Replicas = None,
    env: Env = [],  # noqa: B006 (typer reads the default; it is never mutated)
    publish: Publish = [],  # noqa: B006
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    host: Host = None,
    health_http: HealthHttp = None,
    health_tcp: HealthTcp = False,
    health_cmd: HealthCmd = None,
    health_interval: Interval = None,
    health_timeout: Timeout = None,
    health_retries: Retries = None,
    health_start_period: StartPeriod = None,
    strategy: Strategy = None,
    parallelism: Parallelism = None,
    delay: Delay = None,
    failure_action: FailureAction = None,
    order: Order = None,
    monitor: Monitor = None,
    max_failure_ratio: MaxFailureRatio = None,
    healthy_deadline: HealthyDeadline = None,
    progress_deadline: ProgressDeadline = None,
    rollback_parallelism: RollbackParallelism = None,
    rollback_order: RollbackOrder = None,
    stop_grace: StopGrace = None,
    drain_timeout: DrainTimeout = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A service YAML.")] = None,
) -> None:
    """Create a service from flags (or from -f FILE.yaml)."""
    changes = spec_changes(locals())
    if file is not None:
        specs = load_services(file)
        if len(specs) != 1:
            raise ValidationError(f"{file} holds {len(specs)} services; use `warren apply -f`")
        base = specs[0].to_wire()
        if name and name != specs[0].name:
            raise ValidationError(f"the file names the service {specs[0].name!r}, not {name!r}")
        spec = patch_spec(specs[0], changes) if changes else ServiceSpec.model_validate(base)
    else:
        if not name:
            raise ValidationError("give a service NAME (or -f FILE.yaml)")
        if "image" not in changes and "command" not in changes:
            raise ValidationError("give --image IMAGE or --command CMD")
        spec = parse_model(ServiceSpec, {"name": name, **changes})
    with Client() as client:
        service = client.create_service(spec)
    console.print(f"service {service.name} created (revision {service.revision})")
    advise_on(service.spec)


@app.command("ls")
def list_services() -> None:
    """List services."""
    with Client() as client:
        services = client.service_summaries()
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "REPLICAS", "VERSION", "PORTS", "STRATEGY", "REVISION", "UPDATED"):
        table.add_column(col)
    for s in services:
        table.add_row(
            s["name"],
            f"{s['ready']}/{s['replicas']}",
            s["version"],
            ",".join(str(p) for p in s.get("ports", [])) or (s.get("host") or "-"),
            s["strategy"],
            str(s["revision"]),
            ago(s["updatedAt"]),
        )
    console.print(table)


@app.command()
def inspect(
    name: str,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml | json")] = "yaml",
) -> None:
    """Show a service's current spec (as the YAML `warren apply -f` takes)."""
    with Client() as client:
        service = client.get_service(name)
    doc = service_to_document(service.spec)
    doc["status"] = {"revision": service.revision}
    if output == "json":
        console.print_json(json.dumps(doc))
    elif output == "yaml":
        console.print(yaml.safe_dump(doc, sort_keys=False).rstrip(), markup=False)
    else:
        raise ValidationError(f"expected yaml or json, got {output!r}", "--output")


@app.command()
def revisions(
    name: str,
    output: Annotated[str, typer.Option("--output", "-o", help="table | json")] = "table",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", metavar="", help="Print the numbers only.")
    ] = False,
) -> None:
    """List a service's revisions, newest first: image or command, env changes, and which is
    CURRENT (its spec now) and STABLE (what the last good release left serving)."""
    if output not in ("table", "json"):
        raise ValidationError(f"expected table or json, got {output!r}", "--output")
    with Client() as client:
        kept = client.list_revisions(name)
    rows = _with_changes(kept)
    if quiet:
        for rev, _changes in rows:
            console.print(str(rev.number))
    elif output == "json":
        console.print_json(json.dumps([_revision_json(rev, changes) for rev, changes in rows]))
    else:
        console.print(revisions_table(rows))


def _with_changes(
    kept: list[RevisionEntry],
) -> list[tuple[RevisionEntry, tuple[EnvChange, ...] | None]]:
    """Newest first, each with its env changes since the revision kept before it. Revision 1
    is compared with no env at all; an older one whose predecessors were trimmed
    (``revisionHistoryLimit``) with nothing: None."""
    rows: list[tuple[RevisionEntry, tuple[EnvChange, ...] | None]] = []
    before: RevisionEntry | None = None
    for rev in sorted(kept, key=lambda r: r.number):
        if before is not None:
            rows.append((rev, env_changes(before.spec.env, rev.spec.env)))
        else:
            rows.append((rev, env_changes({}, rev.spec.env) if rev.number == 1 else None))
        before = rev
    return rows[::-1]


def _revision_json(rev: RevisionEntry, changes: tuple[EnvChange, ...] | None) -> dict[str, object]:
    return {
        "number": rev.number,
        "created_at": datetime.fromtimestamp(rev.created_at, UTC).isoformat(),
        "image": rev.spec.image,
        "command": list(rev.spec.command) if rev.spec.command is not None else None,
        "env": dict(rev.spec.env),
        "env_changes": None if changes is None else [c.model_dump(mode="json") for c in changes],
        "change": rev.change,
        "current": rev.current,
        "stable": rev.stable,
    }


def revisions_table(rows: list[tuple[RevisionEntry, tuple[EnvChange, ...] | None]]) -> Table:
    """One row per revision; an IMAGE column if any revision has an image, a COMMAND column if
    any has a command (a process service's, or a container's own)."""
    images = any(rev.spec.image for rev, _ in rows)
    commands = any(rev.spec.command for rev, _ in rows)
    table = Table(box=None, header_style="bold")
    table.add_column("REVISION", justify="right")
    table.add_column("")
    table.add_column("CREATED", no_wrap=True)
    if images:
        table.add_column("IMAGE", overflow="fold")
    if commands:
        table.add_column("COMMAND", overflow="fold")
    table.add_column("ENV", overflow="fold")
    table.add_column("CHANGE", overflow="fold")
    for rev, changes in rows:
        marks = " ".join(m for m, on in (("CURRENT", rev.current), ("STABLE", rev.stable)) if on)
        cells = [str(rev.number), f"[bold]{marks}[/bold]" if marks else ""]
        cells.append(datetime.fromtimestamp(rev.created_at).strftime("%Y-%m-%d %H:%M:%S"))
        if images:
            cells.append(escape(rev.spec.image or "-"))
        if commands:
            cells.append(escape(shlex.join(rev.spec.command or ()) or "-"))
        cells.append(escape(_env_cell(changes)))
        cells.append(escape(rev.change))
        table.add_row(*cells)
    return table


def _env_cell(changes: tuple[EnvChange, ...] | None) -> str:
    if changes is None:
        return "-"
    return " ".join(str(c) for c in changes) or "(same)"


def tasks_table(tasks: list[Task]) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("TASK", "REV", "NODE", "DESIRED", "STATE", "READY", "ENDPOINT", "SINCE", "MESSAGE"):
        table.add_column(col, overflow="fold" if col == "MESSAGE" else "ellipsis")
    order = {s: i for i, s in enumerate(TaskState)}
    for t in sorted(tasks, key=lambda t: (t.slot, t.state.terminal, order[t.state], -t.created_at)):
        state = str(t.state)
        if t.state == TaskState.FAILED:
            state = f"[red]{state}[/red]"
        elif t.state == TaskState.RUNNING:
            state = f"[green]{state}[/green]"
        table.add_row(
            t.id,
            str(t.revision),
            t.node or "-",
            str(t.desired_state),
            state,
            "yes" if t.ready else "no",
            t.endpoint or "-",
            ago(t.updated_at),
            t.message or (f"exit {t.exit_code}" if t.exit_code is not None else ""),
        )
    return table


@app.command()
def ps(name: str) -> None:
    """List a service's tasks: running ones and recent history."""
    with Client() as client:
        tasks = client.list_tasks(name)
    console.print(tasks_table(tasks))


@app.command()
def scale(name: str, replicas: Annotated[int, typer.Argument(min=0)]) -> None:
    """Set the number of replicas (no new revision, no rollout)."""
    with Client() as client:
        service = client.scale_service(name, replicas)
    console.print(f"service {name} scaled to {service.spec.replicas}")


@app.command()
def update(
    name: str,
    image: Image = None,
    command: Command = None,
    driver: Driver = None,
    pull: Pull = None,
    stop_signal: StopSignal = None,
    env: Env = [],  # noqa: B006
    env_rm: EnvRm = [],  # noqa: B006
    replicas: Replicas = None,
    publish: Publish = [],  # noqa: B006
    publish_add: PublishAdd = [],  # noqa: B006
    publish_rm: PublishRm = [],  # noqa: B006
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    host: Host = None,
    health_http: HealthHttp = None,
    health_tcp: HealthTcp = False,
    health_cmd: HealthCmd = None,
    health_interval: Interval = None,
    health_timeout: Timeout = None,
    health_retries: Retries = None,
    health_start_period: StartPeriod = None,
    strategy: Strategy = None,
    parallelism: Parallelism = None,
    delay: Delay = None,
    failure_action: FailureAction = None,
    order: Order = None,
    monitor: Monitor = None,
    max_failure_ratio: MaxFailureRatio = None,
    healthy_deadline: HealthyDeadline = None,
    progress_deadline: ProgressDeadline = None,
    rollback_parallelism: RollbackParallelism = None,
    rollback_order: RollbackOrder = None,
    stop_grace: StopGrace = None,
    drain_timeout: DrainTimeout = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", metavar="", help="Return at once.")
    ] = False,
) -> None:
    """Change a service. A change of image, command, env, health check … makes a new revision
    and starts a deployment; without --detach, follows it live and exits 0 only if it succeeds."""
    published = publish_add or publish_rm
    changes = spec_changes({**locals(), "tls_cert": None if published else tls_cert,
                            "tls_key": None if published else tls_key})  # fmt: skip
    if not changes and not env_rm and not published:
        raise ValidationError("nothing to change: give at least one flag")
    with Client() as client:
        if published:
            if publish:
                raise ValidationError("--publish replaces every port: not with --publish-add/-rm")
            current = [p.to_wire() for p in client.get_service(name).spec.ports]
            added = parse_publish(publish_add, tls_cert, tls_key, "--publish-add")
            changes["ports"] = change_ports(current, added, publish_rm)
        service, changed, deployment = client.patch_service(name, changes, env_rm)
        if changed:
            advise_on(service.spec)
        if not changed:
            console.print(f"service {name}: nothing changed (revision {service.revision})")
            return
        if deployment is None:
            console.print(f"service {name} updated (revision {service.revision}, no new tasks)")
            return
        console.print(
            f"service {name} updated to revision {service.revision}: deployment {deployment}"
        )
        if not detach:
            follow(client, name, deployment)


@app.command()
def rollback(
    name: str,
    to_revision: Annotated[
        int | None, typer.Option("--to-revision", min=1, help="Default: the previous one.")
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", metavar="", help="Return at once.")
    ] = False,
) -> None:
    """Go back to the previous revision (or --to-revision N) with the rollback config."""
    with Client() as client:
        service, deployment = client.rollback_service(name, to_revision)
        console.print(
            f"service {name} rolling back to revision {service.revision}: deployment {deployment}"
        )
        if not detach:
            follow(client, name, deployment)


@app.command("rm")
def remove(names: Annotated[list[str], typer.Argument(help="Services to remove.")]) -> None:
    """Remove services; their tasks are drained and stopped."""
    with Client() as client:
        for name in names:
            client.delete_service(name)
            console.print(f"service {name} removed")


@app.command()
def logs(
    name: str,
    tail: Annotated[
        int | None,
        typer.Option(
            "--tail",
            "-n",
            min=1,
            max=100_000,
            metavar="N",
            show_default="100; with --since, all",
            help="The last N lines of each task.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            parser=SINCE,
            metavar="DUR|TIME",
            help="Only lines written since then: a duration back from now (10m, 1h30m) or an "
            "RFC 3339 time (2024-05-01T12:00:00Z).",
        ),
    ] = None,
    timestamps: Annotated[
        bool,
        typer.Option(
            "--timestamps", "-t", metavar="", help="Each line with its time (ISO-8601, UTC)."
        ),
    ] = False,
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            metavar="",
            help="Then print new lines as they come, from the tasks that start meanwhile too, "
            "and say when a task starts or ends (Ctrl-C ends).",
        ),
    ] = False,
) -> None:
    """Print the recent output of a service's tasks, their lines merged by time."""
    lines: int | None = tail if tail is not None else (None if since else 100)
    with Client() as client:
        if not follow:
            entries = client.logs(name, lines, task, since)
            width = max((len(entry["task"]) for entry in entries), default=0)
            for entry in entries:
                _print_line(entry, width, timestamps)
            return
        with contextlib.suppress(KeyboardInterrupt):
            for entry in client.follow_logs(name, lines, task, since):
                _print_line(entry, len(entry["task"]), timestamps)


def _print_line(entry: dict[str, str], width: int, timestamps: bool) -> None:
    # A Text, not markup: a log line's own brackets must print as they are.
    text = Text()
    if timestamps:
        text.append(f"{entry.get('time') or '-':<{STAMP_LENGTH}} ")
    text.append(f"{entry['task']:<{width}}", style="dim")
    text.append(" | ")
    text.append(entry["line"], style="bold" if "event" in entry else "")
    console.print(text, soft_wrap=True, highlight=False)
