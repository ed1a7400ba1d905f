"""``warren run SERVICE -- COMMAND``: a one-off command as a job of a service's current
revision — its image or command, env and placement — with its output printed as it comes and
its exit code as the command's."""

from __future__ import annotations

import contextlib
import shlex
import sys
from typing import Annotated

import typer

from .connect import connect
from .flags import POSITIVE_DURATION
from .output import DETACH, err_console

__all__ = ["run"]


def run(
    name: Annotated[str, typer.Argument(help="The service whose current revision runs it.")],
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="-- COMMAND [ARG...]",
            help="The command, after `--` so that its own options are not read as warren's.",
        ),
    ],
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            parser=POSITIVE_DURATION,
            metavar="DUR",
            help="Stop it if it is still running after this long (10m); default: never.",
        ),
    ] = None,
    detach: DETACH = False,
) -> None:
    """Run a command once as a job of a service's current revision, with its env (a migration
    by hand, a report, a console command), print its output as it comes, and exit with its
    exit code. Ctrl-C stops it."""
    with connect() as client:
        job = client.run_job(name, command, timeout)
        if detach:
            print(job.id)
            return
        err_console.print(
            f"job {job.id}: {shlex.join(command)} (revision {job.revision})", soft_wrap=True
        )
        try:
            for entry in client.follow_logs(name, None, job.id):
                if entry.get("event") == "ended":
                    break
                if entry.get("event"):
                    continue  # "started": said above
                print(entry["line"], flush=True)
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                client.update_task(job.model_copy(update={"desired_state": "shutdown"}))
            err_console.print(f"job {job.id} stopped")
            raise typer.Exit(130) from None
        ended = client.get_task(job.id)
        code = ended.exit_code if ended.exit_code is not None else 1
        if code != 0:
            how = f"{ended.state}, {ended.message}" if ended.message else str(ended.state)
            err_console.print(f"job {job.id} {how}", soft_wrap=True)
        sys.stdout.flush()
        raise typer.Exit(code)
