"""``warren store backup|restore``: a copy of the sqlite store, taken while the server runs, and
put back while it is stopped."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from ..domain.errors import ConflictError, UnavailableError, ValidationError
from ..paths import default_data_dir
from .connect import connect
from .output import console, group

__all__ = ["app"]

app = group(
    "Back up the store while the server runs, restore it while it is stopped (the sqlite "
    "store; etcd has its own snapshots)."
)


@app.command()
def backup(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the backup.")],
) -> None:
    """Copy the whole store, consistently, into FILE (written whole or not at all)."""
    with connect() as client:
        body, revision = client.backup_store()
    staged = file.with_name(f".{file.name}.partial")
    try:
        staged.write_bytes(body)
        os.chmod(staged, 0o600)  # it holds the cluster's secrets
        staged.replace(file)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise ValidationError(f"cannot write {file}: {exc.strerror or exc}", "FILE") from None
    console.print(f"store at revision {revision} backed up to {file} ({len(body) // 1024} KiB)")


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A backup `store backup` wrote.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="The server's data directory (default: $WARREN_DATA_DIR, else "
            "~/.local/share/warren).",
        ),
    ] = None,
) -> None:
    """Make FILE the store of the server's data directory. The server must be stopped; the
    store there now is kept beside it (state.db.before-restore-TIME). Started again, the server
    carries on from the backup: its workers re-adopt the tasks they still run."""
    from ..server import lock_data_dir
    from ..store.sqlite import restore_backup

    data = data_dir or default_data_dir()
    if not file.is_file():
        raise ValidationError(f"no such file: {file}", "FILE")
    if not data.is_dir():
        raise ValidationError(f"no such data directory: {data}", "--data-dir")
    try:
        lock = lock_data_dir(data)
    except UnavailableError as exc:
        raise ConflictError(
            f"a warren process is using {data}: stop it before restoring its store"
        ) from exc
    try:
        revision, kept = restore_backup(file, data / "state.db", time.time())
    finally:
        os.close(lock)
    console.print(f"store of {data} restored from {file} (revision {revision})")
    if kept is not None:
        console.print(f"the store it replaced: {kept}")
