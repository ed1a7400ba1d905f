"""A strategy plugin, installed as a third-party package is (its module and its dist-info with an
entry point in ``warren.strategies``, on the path), runs a release of the demo app: the server
registers it as it starts, ``deploy plan`` previews it, and an update under it replaces every
task in one batch. The CLI takes its name where the package is installed; where it is not, the
name is refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.servers import ServerProcess, wait_for
from warren.domain.deployments import Phase

SITE = Path(__file__).resolve().parents[1] / "plugins" / "site"
"""Where the test plugin is installed: ``warren_all_at_once`` and its dist-info."""
WITH_PLUGIN = {
    "PYTHONPATH": os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)
}
COMMAND = "python -m warren.demo.app"


def _cli(
    server: ServerProcess, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warren", *args],
        env={**server.env(), **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_plugin_strategy_releases_every_task_in_one_batch(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(environ=WITH_PLUGIN).start()
    created = _cli(
        server, WITH_PLUGIN, "service", "create", "web", "--command", COMMAND, "--replicas", "3",
        "--strategy", "all-at-once", "--parallelism", "1", "--monitor", "1s",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    plan = _cli(server, WITH_PLUGIN, "deploy", "plan", "web", "--env", "VERSION=v2")
    assert plan.returncode == 0, plan.stderr
    assert "slots 1-3" in plan.stdout or "slots 1, 2, 3" in plan.stdout, plan.stdout

    updated = _cli(server, WITH_PLUGIN, "service", "update", "web", "--env", "VERSION=v2")
    assert updated.returncode == 0, updated.stderr + updated.stdout
    client = server.client()
    status = client.deployment_status("web")
    assert status.phase == Phase.SUCCEEDED and status.revision == 2
    batches = [d for d in status.decisions if d.reason == "BatchStarted"]
    assert len(batches) == 1 and "slots 1, 2, 3" in batches[0].message, batches
    wait_for(
        lambda: sorted(t.revision for t in client.list_tasks("web") if t.ready) == [2, 2, 2],
        30, "3 tasks of revision 2",
    )  # fmt: skip


def test_the_cli_takes_an_installed_plugins_name_and_refuses_it_without(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(environ=WITH_PLUGIN).start()
    spec = tmp_path / "web.yaml"
    spec.write_text(
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: web}\n"
        f"spec: {{command: {COMMAND!r}, deploy: {{strategy: all-at-once}}}}\n"
    )
    applied = _cli(server, WITH_PLUGIN, "apply", "-f", str(spec), "--detach")
    assert applied.returncode == 0, applied.stderr
    # Read as JSON: the plugin is not installed where the tests run.
    stored = server.client().request("GET", "/v1/services/web")
    assert stored["spec"]["deploy"]["strategy"] == "all-at-once"

    missing = _cli(server, {}, "apply", "-f", str(spec), "--dry-run")
    assert missing.returncode == 2
    assert "unknown strategy 'all-at-once'" in missing.stderr, missing.stderr
