"""``warren node …``: ls, inspect, drain, activate, rm."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from .connect import connect
from .output import OUTPUT, QUIET, Format, ago, console, group, show

if TYPE_CHECKING:
    from ..domain.nodes import NodeSummary

__all__ = ["app"]

app = group("List and inspect nodes; drain them for maintenance, activate them, forget dead ones.")


def _memory(size: int) -> str:
    """17179869184 → ``16 GiB``; 536870912 → ``512 MiB``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


@app.command("ls")
def list_nodes(output: OUTPUT = Format.TABLE, quiet: QUIET = False) -> None:
    """List nodes: status, availability, resources and tasks; a draining node's progress
    below."""
    with connect() as client:
        summaries = sorted(client.node_summaries(), key=lambda s: s.node.name)
    show(
        output,
        lambda: [_document(s) for s in summaries],
        lambda: _print_nodes(summaries),
        [s.node.name for s in summaries] if quiet else None,
    )


def _print_nodes(summaries: list[NodeSummary]) -> None:
    from ..domain.nodes import NodeStatus

    table = Table(box=None, header_style="bold")
    for col in (
        "NAME", "STATUS", "AVAILABILITY", "ADDRESS", "DRIVERS", "CPUS", "MEMORY", "TASKS",
        "UPDATED",
    ):  # fmt: skip
        table.add_column(col)
    notes = []
    for s in summaries:
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


def _document(s: NodeSummary) -> dict[str, Any]:
    """The node's record, its drain, and its tasks (a listing: how many)."""
    doc = s.node.to_wire()
    if s.drain is not None:
        doc["drain"] = {"message": s.drain.summary(), **s.drain.to_wire()}
    if s.task_list is None:
        doc["tasks"] = s.tasks
        return doc
    doc["tasks"] = [
        {
            "id": t.id, "service": t.service, "revision": t.revision, "state": str(t.state),
            "desiredState": str(t.desired_state), "ready": t.ready,
            **({"endpoint": t.endpoint} if t.endpoint else {}),
            **({"message": t.message} if t.message else {}),
        }
        for t in s.task_list
    ]  # fmt: skip
    return doc


@app.command()
def inspect(name: str, output: OUTPUT = Format.YAML) -> None:
    """Show a node: its record, its tasks, and while it drains how far that has come."""
    with connect() as client:
        summary = client.get_node(name)
    # For people (table), the YAML itself.
    show(Format.YAML if output is Format.TABLE else output, lambda: _document(summary), print)


@app.command()
def drain(name: str) -> None:
    """Take a node out of scheduling: no new tasks, and its tasks move to other nodes without
    dropping requests (each replacement is ready before the old task is drained and stopped).
    Returns at once; `warren node inspect NAME` shows the progress."""
    with connect() as client:
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
    with connect() as client:
        client.activate_node(name)
    console.print(f"node {name} active: it takes new tasks again", markup=False)


@app.command("rm")
def remove(name: str) -> None:
    """Forget a node that is down for good (its machine is gone): its tasks, already replaced
    on other nodes, end as stopped, and its token stops working (to come back, it must join
    again). A node that is ready cannot be removed."""
    with connect() as client:
        ended = client.remove_node(name)
    tasks = f"; {len(ended)} task(s) it had ended" if ended else ""
    console.print(f"node {name} removed{tasks}", markup=False)
