"""``warren cluster …``: who leads, and what it takes for other machines to join."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ..domain.errors import ValidationError
from .connect import connect
from .output import OUTPUT, Format, console, group, show

__all__ = ["app"]

app = group("The cluster's managers and leader; join remote workers to it.")


@app.command()
def status(output: OUTPUT = Format.TABLE) -> None:
    """The store, the managers and which one leads, how many nodes are ready, and what the
    ingress could not do (a port, host or path two services claim)."""
    with connect() as client:
        info = client.info()
        nodes = [node for node, _ in client.list_nodes()]
    ready = sum(n.status == "ready" for n in nodes)
    doc = {
        "version": info.get("version"),
        "store": info.get("store"),
        "leader": info.get("leaderName"),
        "managers": info.get("managers", []),
        "nodes": {"ready": ready, "down": len(nodes) - ready},
        "ingressProblems": info.get("ingressProblems", {}),
    }
    show(output, lambda: doc, lambda: _print_status(info, ready, len(nodes) - ready))


def _print_status(info: dict[str, Any], ready: int, down: int) -> None:
    console.print(f"store     {info.get('store')}", highlight=False, markup=False)
    leader = info.get("leaderName") or "none (an election is under way)"
    console.print(f"leader    {leader}", highlight=False, markup=False)
    console.print(f"nodes     {ready} ready, {down} down", highlight=False, markup=False)
    # What the ingress could not do: a port or host (and path) two services claim, a port it
    # cannot listen on.
    for port, problem in sorted(info.get("ingressProblems", {}).items()):
        console.print(f"ingress   port {port}: {problem}", highlight=False, markup=False)
    table = Table(box=None, header_style="bold")
    for column in ("MANAGER", "API", "LEADER"):
        table.add_column(column)
    for manager in info.get("managers", []):
        table.add_row(manager["name"], manager["api"], "yes" if manager["leader"] else "")
    console.print()
    console.print(table)


@app.command("admin-token")
def admin_token(
    rotate: Annotated[
        bool,
        typer.Option("--rotate", metavar="", help="Replace the admin token (required)."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", metavar="", help="Print the new token only.")
    ] = False,
) -> None:
    """Replace the cluster's admin token: the old one stops working on every manager, and
    each rewrites the admin.token of its data dir. The new token is printed once."""
    if not rotate:
        raise ValidationError("give --rotate: it replaces the admin token", "--rotate")
    with connect() as client:
        token = client.rotate_admin_token()
    if quiet:
        print(token)
        return
    console.print(
        f"New admin token: {token}\n"
        "Every manager's admin.token holds it now; update WARREN_TOKEN where it is set.",
        highlight=False,
        markup=False,
    )


@app.command("join-token")
def join_token(
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate", metavar="", help="Replace the token; nodes that joined keep working."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", metavar="", help="Print the token only.")
    ] = False,
) -> None:
    """The token a remote worker joins with: `warren worker --manager URL --token TOKEN`.
    It lets a worker register its node, follow its tasks and report their state — nothing
    else."""
    with connect() as client:
        token = client.join_token(rotate)
        addr = client.addr
    if quiet:
        print(token)
        return
    console.print(
        f"{'New join' if rotate else 'Join'} token: {token}\n\n"
        f"On each worker machine:\n"
        f"  warren worker --manager {addr} --token {token} --advertise ADDRESS",
        highlight=False,
        markup=False,
    )
