"""``warren service rollback`` checks that its target can run before it starts
(``planning.runnable``), against a real server: a revision whose command is gone from the only
node that could run it is refused in one line, and nothing changes."""

from __future__ import annotations

from pathlib import Path

from tests.servers import ServerProcess, wait_for, warren
from warren.domain.deployments import Phase


def test_a_rollback_to_a_command_that_is_gone_is_refused_in_one_line(
    server: ServerProcess, tmp_path: Path
) -> None:
    client = server.client()
    app = tmp_path / "app.sh"
    app.write_text("#!/bin/sh\nexec python -m warren.demo.app\n")
    app.chmod(0o755)
    created = warren(server, "service", "create", "web", "--command", str(app))
    assert created.returncode == 0, created.stderr
    updated = warren(server, "service", "update", "web", "--command", "python -m warren.demo.app")
    assert updated.returncode == 0, updated.stderr + updated.stdout
    wait_for(lambda: client.deployment_status("web").phase == Phase.SUCCEEDED, 30, "revision 2")
    deployments = len(client.list_deployments("web"))

    app.unlink()
    refused = warren(server, "service", "rollback", "web")
    assert refused.returncode != 0
    node = client.list_tasks("web")[0].node
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot roll back to revision 1: {app} is not found on node {node}"
    ], refused.stderr
    assert client.get_service("web").revision == 2
    assert len(client.list_deployments("web")) == deployments
