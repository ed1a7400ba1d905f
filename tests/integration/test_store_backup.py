"""``warren store backup`` while the server runs and ``warren store restore`` while it is stopped,
as an operator runs them: a service removed after the backup is back once the backup is
restored, and its revisions and deployments with it; a restore refuses while the server runs,
and a file that is not a backup is refused in one line."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.servers import ServerProcess, wait_for, warren


def test_a_backup_restored_brings_the_store_back(server: ServerProcess, tmp_path: Path) -> None:
    created = warren(
        server, "service", "create", "web", "--command", "python -m warren.demo.app",
        "--env", "VERSION=v1", "--health-http", "/healthz", "--health-interval", "200ms",
        "--health-retries", "25",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    updated = warren(server, "service", "update", "web", "--env", "VERSION=v2")
    assert updated.returncode == 0, updated.stderr
    backup = tmp_path / "warren.db"
    taken = warren(server, "store", "backup", str(backup))
    assert taken.returncode == 0, taken.stderr
    assert f"backed up to {backup}" in taken.stdout
    assert backup.stat().st_mode & 0o777 == 0o600

    refused = warren(server, "store", "restore", str(backup))
    assert refused.returncode == 1
    assert "stop it before restoring its store" in refused.stderr

    assert warren(server, "service", "rm", "web").returncode == 0
    client = server.client()
    wait_for(lambda: not client.list_services(), 30, "web removed")
    server.stop()

    not_one = tmp_path / "other.db"
    sqlite3.connect(not_one).execute("CREATE TABLE t (x)").connection.commit()
    wrong = warren(server, "store", "restore", str(not_one))
    assert (wrong.returncode, wrong.stderr.count("\n")) == (1, 1), wrong.stderr
    assert "is a SQLite file, but not a Warren store" in wrong.stderr

    restored = warren(server, "store", "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert "restored from" in restored.stdout and "state.db.before-restore-" in restored.stdout
    server.start()
    client = server.client()
    service = client.get_service("web")
    assert (service.revision, service.spec.env["VERSION"]) == (2, "v2")
    assert [d.to_revision for d in client.list_deployments("web")][-1] == 2
    wait_for(lambda: any(t.ready for t in client.list_tasks("web")), 30, "web serving again")


def test_the_memory_store_says_it_has_nothing_to_back_up(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    light = server_factory(extra=["--no-worker", "--store", "memory", "--ingress", "embedded"])
    light.start()
    answer = warren(light, "store", "backup", str(tmp_path / "x.db"))
    assert answer.returncode == 1
    assert answer.stderr == "error: the memory store keeps nothing to back up\n"
    assert not (tmp_path / "x.db").exists()
