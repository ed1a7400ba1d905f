"""``warren service update NAME --force`` against a real server: an unchanged spec redeployed — a
new revision with the same template, every task replaced through a deployment that follows the
update config — and without --force, still "nothing changed"."""

from __future__ import annotations

from tests.servers import ServerProcess, wait_for, warren
from warren.domain.deployments import Phase

COMMAND = "python -m warren.demo.app"


def test_update_force_replaces_every_task_with_the_same_template(server: ServerProcess) -> None:
    client = server.client()
    created = warren(
        server, "service", "create", "web", "--command", COMMAND, "--replicas", "2",
        "--env", "VERSION=v1", "--health-http", "/healthz", "--health-interval", "200ms",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    wait_for(lambda: len([t for t in client.list_tasks("web") if t.ready]) == 2, 30, "2 ready")
    before = {t.id for t in client.list_tasks("web") if t.ready}

    unchanged = warren(server, "service", "update", "web", "--env", "VERSION=v1")
    assert unchanged.returncode == 0 and "nothing changed" in unchanged.stdout

    forced = warren(server, "service", "update", "web", "--force")
    assert forced.returncode == 0, forced.stderr + forced.stdout
    assert "revision 2" in forced.stdout, forced.stdout
    status = client.deployment_status("web")
    assert status.revision == 2 and status.phase == Phase.SUCCEEDED, status
    ready = [t for t in client.list_tasks("web") if t.ready]
    assert len(ready) == 2 and {t.revision for t in ready} == {2}
    assert not before & {t.id for t in ready}
    revisions = {r.number: r for r in client.list_revisions("web")}
    assert revisions[2].spec == revisions[1].spec
    assert revisions[2].change == "update --force"
