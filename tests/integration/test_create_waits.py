"""``service create`` and ``apply`` follow a new service until its tasks have been ready for the
monitor period, as ``docker service create`` does, and exit 1 when they are not by the progress
deadline; ``--detach`` returns at once."""

from __future__ import annotations

import time
from pathlib import Path

from tests.servers import ServerProcess, warren

GOOD = "python -m warren.demo.app"
# Runs a moment, then fails: a start that looks fine until it is not.
CRASHES = "python -c 'import sys, time; time.sleep(0.3); sys.exit(3)'"


def test_create_returns_once_every_replica_is_ready(server: ServerProcess) -> None:
    created = warren(server, "service", "create", "web", "--command", GOOD, "-r", "3",
                     "--health-http", "/healthz", "--monitor", "1s")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "service web: 3/3 tasks ready" in created.stdout
    tasks = server.client().list_tasks("web")
    assert sum(t.ready for t in tasks) == 3


def test_create_whose_tasks_all_fail_exits_1_with_the_last_failure(
    server: ServerProcess,
) -> None:
    begun = time.monotonic()
    created = warren(server, "service", "create", "bad", "--command", CRASHES, "-r", "2",
                     "--monitor", "1s", "--healthy-deadline", "2s",
                     "--progress-deadline", "3s")  # fmt: skip
    assert created.returncode == 1, created.stdout + created.stderr
    assert "failed: exited with code 3" in created.stdout
    error = created.stderr.strip().splitlines()[-1]
    assert error.startswith("error: service bad: 0/2 tasks ready after the progress deadline (3s)")
    assert "last failure: task bad." in error and "exited with code 3" in error
    assert time.monotonic() - begun < 30
    # The service stays, as created: the command said what happened to it.
    assert server.client().get_service("bad").revision == 1


def test_detach_returns_at_once(server: ServerProcess) -> None:
    created = warren(server, "service", "create", "slow", "--command", "sleep 60",
                     "--health-tcp", "--detach")  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "service slow created (revision 1)"
    assert not any(t.ready for t in server.client().list_tasks("slow"))


def test_apply_follows_every_service_and_fails_if_one_does(
    server: ServerProcess, tmp_path: Path
) -> None:
    manifest = tmp_path / "both.yaml"
    manifest.write_text(
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: good}\n"
        f"spec:\n  command: {GOOD}\n  replicas: 2\n  healthCheck: {{http: {{path: /healthz}}}}\n"
        "  deploy: {updateConfig: {monitor: 1s, progressDeadline: 1m}}\n"
        "---\n"
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: bad}\n"
        f'spec:\n  command: "{CRASHES}"\n'
        "  deploy: {updateConfig: {monitor: 1s, healthyDeadline: 2s, progressDeadline: 3s}}\n"
    )
    applied = warren(server, "apply", "-f", str(manifest))
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert "service good: 2/2 tasks ready" in applied.stdout
    assert "error: service bad: 0/1 tasks ready" in applied.stderr
    # Applied again unchanged: nothing to follow.
    again = warren(server, "apply", "-f", str(manifest), "--detach")
    assert again.returncode == 0 and "service good unchanged" in again.stdout

    # An update through apply follows its deployment.
    manifest.write_text(manifest.read_text().split("---")[0].replace("replicas: 2", "replicas: 2\n"
                        "  env: {VERSION: v2}"))  # fmt: skip
    updated = warren(server, "apply", "-f", str(manifest))
    assert updated.returncode == 0, updated.stderr
    assert "service good updated (revision 2)" in updated.stdout
    assert "succeeded in" in updated.stdout
