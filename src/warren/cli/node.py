"""``warren node …``: ls, inspect, drain, activate, rm."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from ..client import Client
from ..domain.errors import ValidationError
from ..domain.nodes import NodeStatus, NodeSummary
from .output import ago, console

__all__ = ["app"]

app = typer.Typer(
    help="List and inspect nodes; drain them for maintenance, activate them, forget dead ones.",
    no_args_is_help=True,
)


def _memory(size: int) -> str:
    """17179869184 → ``16 GiB``; 536870912 → ``512 MiB``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


@app.command("ls")
def list_nodes() -> None:
    """List nodes: status, availability, resources and tasks; a draining node's progress
    below."""
    with Client() as client:
        summaries = client.node_summaries()
    table = Table(box=None, header_style="bold")
    for col in (
        "NAME", "STATUS", "AVAILABILITY", "ADDRESS", "DRIVERS", "CPUS", "MEMORY", "TASKS",
        "UPDATED",
    ):  # fmt: skip
        table.add_column(col)
    notes = []
    for s in sorted(summaries, key=lambda s: s.node.name):
        n = s.node
        status = f"[red]{n.status}[/red]" if n.status == NodeStatus.DOWN else str(n.status)
        availability = str(n.availability)
        if n.draining:  # one the node made on its way out ends when it is back
            availability = f"[yellow]{n.availability}{' (shutdown)' if n.leaving else ''}[/yellow]"
        table.add_row(
            n.name, status, availability, n.address, ",".join(n.drivers), f"{n.cpus:g}",
            _memory(n.memory), str(s.tasks), ago(n.updated_at),
        )  # fmt: skip
        if s.drain is not None:
            notes.append(f"{n.name}: {s.drain.summary()}")
    console.print(table)
    if notes:
        console.print("\n" + "\n".join(notes), markup=False)


def _time(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def _document(s: NodeSummary) -> dict[str, Any]:
    doc = s.node.to_wire()
    doc["registeredAt"] = _time(s.node.registered_at)
    doc["updatedAt"] = _time(s.node.updated_at)
    if s.drain is not None:
        doc["drain"] = {"message": s.drain.summary(), **s.drain.to_wire()}
    doc["tasks"] = [
        {
            "id": t.id, "service": t.service, "revision": t.revision, "state": str(t.state),
            "desiredState": str(t.desired_state), "ready": t.ready,
            **({"endpoint": t.endpoint} if t.endpoint else {}),
            **({"message": t.message} if t.message else {}),
        }
        for t in s.task_list or ()
    ]  # fmt: skip
    return doc


@app.command()
def inspect(
    name: str,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml | json")] = "yaml",
) -> None:
    """Show a node: its record, its tasks, and while it drains how far that has come."""
    if output not in ("yaml", "json"):
        raise ValidationError(f"expected yaml or json, got {output!r}", "--output")
    with Client() as client:
        summary = client.get_node(name)
    doc = _document(summary)
    if output == "json":
        console.print_json(json.dumps(doc))
    else:
        console.print(yaml.safe_dump(doc, sort_keys=False).rstrip(), markup=False)


@app.command()
def drain(name: str) -> None:
    """Take a node out of scheduling: no new tasks, and its tasks move to other nodes without
    dropping requests (each replacement is ready before the old task is drained and stopped).
    Returns at once; `warren node inspect NAME` shows the progress."""
    with Client() as client:
        summary = client.drain_node(name)
    if summary.tasks:
        what = "its task moves" if summary.tasks == 1 else f"its {summary.tasks} tasks move"
        console.print(
            f"node {name} drained: no new tasks; {what} to other nodes "
            f"(`warren node inspect {name}` shows how far)",
            markup=False,
        )
    else:
        console.print(f"node {name} drained: no new tasks (it runs none)", markup=False)


@app.command()
def activate(name: str) -> None:
    """Let a node take new tasks again (tasks that moved away are not moved back)."""
    with Client() as client:
        client.activate_node(name)
    console.print(f"node {name} active: it takes new tasks again", markup=False)


@app.command("rm")
def remove(name: str) -> None:
    """Forget a node that is down for good (its machine is gone): its tasks, already replaced
    on other nodes, end as stopped, and its token stops working (to come back, it must join
    again). A node that is ready cannot be removed."""
    with Client() as client:
        ended = client.remove_node(name)
    tasks = f"; {len(ended)} task(s) it had ended" if ended else ""
    console.print(f"node {name} removed{tasks}", markup=False)
