"""``warren service …``: create, ls, inspect, revisions, ps, scale, update, rollback, rm, logs."""

from __future__ import annotations

import contextlib
import shlex
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..domain.errors import ValidationError
from ..domain.logs import STAMP_LENGTH
from .changes import CREATE, UPDATE, Changes, change_flags
from .connect import connect
from .deploy import follow, follow_start
from .flags import SINCE, change_ports, parse_publish
from .output import (
    DETACH,
    OUTPUT,
    OVERRIDE,
    QUIET,
    Format,
    advise_on,
    ago,
    console,
    group,
    show,
)

if TYPE_CHECKING:
    from ..domain.services import EnvChange, RevisionEntry
    from ..domain.tasks import Task

__all__ = ["app"]

app = group("Create and manage services.")


@app.command()
@change_flags(CREATE)
def create(
    name: Annotated[str | None, typer.Argument(help="Service name.")] = None,
    # The flags' values, given by @change_flags.
    changes: Changes = None,  # type: ignore[assignment]
    file: Annotated[
        Path | None, typer.Option("--file", "-f", metavar="FILE", help="A service YAML.")
    ] = None,
    detach: DETACH = False,
) -> None:
    """Create a service from flags (or from -f FILE.yaml). Without --detach, shows its tasks
    starting and exits 0 once every replica is ready, 1 if they are not by the progress
    deadline."""
    from ..domain.base import parse_model
    from ..domain.specs import ServiceSpec, patch_spec
    from .documents import load_services

    spec_changes = changes.to_spec()
    if file is not None:
        specs = load_services(file)
        if len(specs) != 1:
            raise ValidationError(f"{file} holds {len(specs)} services; use `warren apply -f`")
        base = specs[0].to_wire()
        if name and name != specs[0].name:
            raise ValidationError(f"the file names the service {specs[0].name!r}, not {name!r}")
        spec = (
            patch_spec(specs[0], spec_changes) if spec_changes else ServiceSpec.model_validate(base)
        )
    else:
        if not name:
            raise ValidationError("give a service NAME (or -f FILE.yaml)")
        if "image" not in spec_changes and "command" not in spec_changes:
            raise ValidationError("give --image IMAGE or --command CMD")
        spec = parse_model(ServiceSpec, {"name": name, **spec_changes})
    with connect() as client:
        service = client.create_service(spec)
        console.print(f"service {service.name} created (revision {service.revision})")
        advise_on(service.spec)
        if not detach:
            follow_start(client, service)


@app.command("ls")
def list_services(output: OUTPUT = Format.TABLE, quiet: QUIET = False) -> None:
    """List services."""
    with connect() as client:
        services = client.service_summaries()

    def view() -> None:
        table = Table(box=None, header_style="bold")
        for col in ("NAME", "REPLICAS", "VERSION", "PORTS", "STRATEGY", "REVISION", "UPDATED"):
            table.add_column(col)
        for s in services:
            table.add_row(
                s["name"],
                f"{s['ready']}/{s['replicas']}",
                s["version"],
                ",".join(str(p) for p in s.get("ports", [])) or _host(s),
                s["strategy"],
                str(s["revision"]),
                ago(s["updatedAt"]),
            )
        console.print(table)

    show(output, lambda: services, view, [s["name"] for s in services] if quiet else None)


def _host(summary: dict[str, Any]) -> str:
    """``shop.test /api,/static``: the host a service is reached by, and its path prefixes."""
    host = summary.get("host") or "-"
    paths = summary.get("paths") or []
    return f"{host} {','.join(paths)}" if paths else host


@app.command()
def inspect(name: str, output: OUTPUT = Format.YAML) -> None:
    """Show a service's current spec (as the YAML `warren apply -f` takes) and its revision."""
    from ..domain.specs import service_to_document

    with connect() as client:
        service = client.get_service(name)
    doc = service_to_document(service.spec)
    doc["status"] = {"revision": service.revision, "updatedAt": service.updated_at}
    # For people (table), the YAML itself.
    show(Format.YAML if output is Format.TABLE else output, lambda: doc, lambda: None)


@app.command()
def revisions(name: str, output: OUTPUT = Format.TABLE, quiet: QUIET = False) -> None:
    """List a service's revisions, newest first: image or command, env changes, and which is
    CURRENT (its spec now) and STABLE (what the last good release left serving)."""
    with connect() as client:
        kept = client.list_revisions(name)
    rows = _with_changes(kept)
    show(
        output,
        lambda: [_revision_document(rev, changes) for rev, changes in rows],
        lambda: console.print(revisions_table(rows)),
        [str(rev.number) for rev, _ in rows] if quiet else None,
    )


def _with_changes(
    kept: list[RevisionEntry],
) -> list[tuple[RevisionEntry, tuple[EnvChange, ...] | None]]:
    """Newest first, each with its env changes since the revision kept before it. Revision 1
    is compared with no env at all; an older one whose predecessors were trimmed
    (``revisionHistoryLimit``) with nothing: None."""
    from ..domain.services import env_changes

    rows: list[tuple[RevisionEntry, tuple[EnvChange, ...] | None]] = []
    before: RevisionEntry | None = None
    for rev in sorted(kept, key=lambda r: r.number):
        if before is not None:
            rows.append((rev, env_changes(before.spec.env, rev.spec.env)))
        else:
            rows.append((rev, env_changes({}, rev.spec.env) if rev.number == 1 else None))
        before = rev
    return rows[::-1]


def _revision_document(
    rev: RevisionEntry, changes: tuple[EnvChange, ...] | None
) -> dict[str, object]:
    return {
        "number": rev.number,
        "createdAt": rev.created_at,
        "image": rev.spec.image,
        "imageDigest": rev.image_digest,
        "imageNodes": list(rev.image_nodes),
        "command": list(rev.spec.command) if rev.spec.command is not None else None,
        "env": dict(rev.spec.env),
        "envChanges": None if changes is None else [c.model_dump(mode="json") for c in changes],
        "change": rev.change,
        "current": rev.current,
        "stable": rev.stable,
    }


def revisions_table(rows: list[tuple[RevisionEntry, tuple[EnvChange, ...] | None]]) -> Table:
    """One row per revision; IMAGE and DIGEST columns if any revision has an image (DIGEST: the
    image its tasks run, once one ran — short, ``sha256:`` and 12 hex digits), a COMMAND column
    if any has a command (a process service's, or a container's own)."""
    images = any(rev.spec.image for rev, _ in rows)
    commands = any(rev.spec.command for rev, _ in rows)
    table = Table(box=None, header_style="bold")
    table.add_column("REVISION", justify="right")
    table.add_column("")
    table.add_column("CREATED", no_wrap=True)
    if images:
        table.add_column("IMAGE", overflow="fold")
        table.add_column("DIGEST", no_wrap=True)
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
            cells.append(_short_digest(rev.image_digest))
        if commands:
            cells.append(escape(shlex.join(rev.spec.command or ()) or "-"))
        cells.append(escape(_env_cell(changes)))
        cells.append(escape(rev.change))
        table.add_row(*cells)
    return table


def _short_digest(digest: str | None) -> str:
    """``repo@sha256:0123456789abcdef…`` (or an image ID) → ``sha256:0123456789ab``."""
    if not digest:
        return "-"
    algorithm, _, hexits = digest.rsplit("@", 1)[-1].partition(":")
    return f"{algorithm}:{hexits[:12]}" if hexits else digest[:19]


def _env_cell(changes: tuple[EnvChange, ...] | None) -> str:
    if changes is None:
        return "-"
    return " ".join(str(c) for c in changes) or "(same)"


def tasks_table(tasks: list[Task]) -> Table:
    from ..domain.tasks import TaskState

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
def ps(name: str, output: OUTPUT = Format.TABLE, quiet: QUIET = False) -> None:
    """List a service's tasks: running ones and recent history."""
    with connect() as client:
        tasks = client.list_tasks(name)
    show(
        output,
        lambda: tasks,
        lambda: console.print(tasks_table(tasks)),
        [t.id for t in tasks] if quiet else None,
    )


@app.command()
def jobs(name: str, output: OUTPUT = Format.TABLE, quiet: QUIET = False) -> None:
    """List a service's jobs kept, oldest first: its releases' pre- and post-deploy jobs and
    `warren run`'s (their logs: `warren service logs NAME --task ID`)."""
    with connect() as client:
        found = client.list_jobs(name)

    def table() -> None:
        rows = Table(box=None, header_style="bold")
        for col in ("JOB", "KIND", "REV", "NODE", "STATE", "EXIT", "CREATED", "COMMAND"):
            rows.add_column(col, overflow="fold" if col == "COMMAND" else "ellipsis")
        for t in found:
            exit_code = str(t.exit_code) if t.exit_code is not None else "-"
            command = shlex.join(t.command) if t.command else "-"
            rows.add_row(
                t.id, str(t.job), str(t.revision), t.node or "-", str(t.state), exit_code,
                ago(t.created_at), escape(command),
            )  # fmt: skip
        console.print(rows)

    show(output, lambda: found, table, [t.id for t in found] if quiet else None)


@app.command()
def scale(name: str, replicas: Annotated[int, typer.Argument(min=0)]) -> None:
    """Set the number of replicas (no new revision, no rollout)."""
    with connect() as client:
        service = client.scale_service(name, replicas)
    console.print(f"service {name} scaled to {service.spec.replicas}")


@app.command()
@change_flags(UPDATE)
def update(
    name: str,
    # The flags' values, given by @change_flags.
    changes: Changes = None,  # type: ignore[assignment]
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Redeploy even if nothing changes: a new revision of the same template, every "
            "task replaced by the update config (and the image's tag resolved again).",
        ),
    ] = False,
    override: OVERRIDE = False,
    detach: DETACH = False,
) -> None:
    """Change a service. A change of image, command, env, health check … makes a new revision
    and starts a deployment; without --detach, follows it live and exits 0 only if it succeeds."""
    publish_add, publish_rm = changes.get("publish_add"), changes.get("publish_rm")
    published = publish_add or publish_rm
    spec_changes = changes.to_spec(ports=not published)
    env_rm = changes.get("env_rm")
    if not spec_changes and not env_rm and not published and not force:
        raise ValidationError("nothing to change: give at least one flag (or --force)")
    with connect() as client:
        if published:
            if changes.get("publish"):
                raise ValidationError("--publish replaces every port: not with --publish-add/-rm")
            current = [p.to_wire() for p in client.get_service(name).spec.ports]
            added = parse_publish(
                publish_add, changes.get("tls_cert"), changes.get("tls_key"), "--publish-add"
            )
            spec_changes["ports"] = change_ports(current, added, publish_rm)
        service, changed, deployment = client.patch_service(
            name, spec_changes, env_rm, force=force, override=override
        )
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
    detach: DETACH = False,
) -> None:
    """Go back to the previous revision (or --to-revision N) with the rollback config."""
    with connect() as client:
        service, deployment = client.rollback_service(name, to_revision)
        console.print(
            f"service {name} rolling back to revision {service.revision}: deployment {deployment}"
        )
        if not detach:
            follow(client, name, deployment)


@app.command("rm")
def remove(names: Annotated[list[str], typer.Argument(help="Services to remove.")]) -> None:
    """Remove services; their tasks are drained and stopped."""
    with connect() as client:
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
    task: Annotated[
        str | None, typer.Option("--task", metavar="ID", help="Only this task (or job).")
    ] = None,
    job: Annotated[
        bool,
        typer.Option(
            "--job",
            metavar="",
            help="Only the service's newest job: a release's pre- or post-deploy job, or "
            "`warren run`'s (`warren service jobs NAME` lists them).",
        ),
    ] = False,
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
    with connect() as client:
        if not follow:
            entries = client.logs(name, lines, task, since, job)
            width = max((len(entry["task"]) for entry in entries), default=0)
            for entry in entries:
                _print_line(entry, width, timestamps)
            return
        with contextlib.suppress(KeyboardInterrupt):
            for entry in client.follow_logs(name, lines, task, since, job):
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
