"""``warren cluster …``: what it takes for other machines to join."""

from __future__ import annotations

from typing import Annotated

import typer

from ..client import Client
from .output import console

__all__ = ["app"]

app = typer.Typer(help="Join remote workers to the cluster.", no_args_is_help=True)


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
    with Client() as client:
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
