"""``warren service revisions NAME`` against a real server: one row per revision, newest first,
with its command, its env changes, and the CURRENT and STABLE markers; ``-o json``, ``-q``, and
an unknown service."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from tests.servers import ServerProcess, pid_alive, wait_for, warren
from warren.domain.deployments import Phase

COMMAND = "python -m warren.demo.app"


def test_revisions_show_env_changes_and_which_is_current_and_stable(
    server: ServerProcess,
) -> None:
    client = server.client()
    created = warren(
        server, "service", "create", "web", "--command", COMMAND, "--env", "VERSION=v1"
    )
    assert created.returncode == 0, created.stderr
    added = warren(server, "service", "update", "web", "--env", "DEBUG=1", "--detach")
    assert added.returncode == 0, added.stderr
    wait_for(
        lambda: client.deployment_status("web").phase == Phase.SUCCEEDED, 30, "revision 2 to serve"
    )
    # Revision 3's task must stay healthy for a minute before it counts: its release is still
    # under way while we look, so revision 2 is the stable one and 3 the current one.
    changed = warren(
        server, "service", "update", "web", "--env", "VERSION=v2", "--monitor", "60s", "--detach"
    )
    assert changed.returncode == 0, changed.stderr

    table = warren(server, "service", "revisions", "web")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["REVISION", "CREATED", "COMMAND", "ENV", "CHANGE"]
    assert [r.split()[0] for r in rows] == ["3", "2", "1"]
    assert "CURRENT" in rows[0] and "STABLE" not in rows[0] and "~VERSION=v1→v2" in rows[0]
    assert "STABLE" in rows[1] and "CURRENT" not in rows[1] and "+DEBUG=1" in rows[1]
    assert "+VERSION=v1" in rows[2] and "CURRENT" not in rows[2] and "STABLE" not in rows[2]
    assert all(COMMAND in r for r in rows)

    answer = warren(server, "service", "revisions", "web", "-o", "json")
    assert answer.returncode == 0, answer.stderr
    listed = json.loads(answer.stdout)
    assert [r["number"] for r in listed] == [3, 2, 1]
    times = [datetime.fromisoformat(r["createdAt"]) for r in listed]
    assert all(t.tzinfo is not None for t in times) and times == sorted(times, reverse=True)
    newest = listed[0]
    assert newest["image"] is None and newest["command"] == COMMAND.split()
    assert newest["env"] == {"VERSION": "v2", "DEBUG": "1"}
    assert newest["envChanges"] == [{"key": "VERSION", "old": "v1", "new": "v2"}]
    assert listed[1]["envChanges"] == [{"key": "DEBUG", "old": None, "new": "1"}]
    assert listed[2]["envChanges"] == [{"key": "VERSION", "old": None, "new": "v1"}]
    assert [(r["current"], r["stable"]) for r in listed] == [
        (True, False),
        (False, True),
        (False, False),
    ]

    quiet = warren(server, "service", "revisions", "web", "-q")
    assert quiet.returncode == 0 and quiet.stdout.split() == ["3", "2", "1"]


def test_revisions_of_an_unknown_service_is_one_line_and_status_1(server: ServerProcess) -> None:
    inspect = warren(server, "service", "inspect", "nope")
    revisions = warren(server, "service", "revisions", "nope")
    assert (revisions.returncode, revisions.stdout) == (1, "")
    assert revisions.stderr == inspect.stderr == "error: service 'nope' not found\n"


def test_a_settings_only_update_keeps_every_task_running(server: ServerProcess) -> None:
    """``--parallelism 2`` is a rollout setting, not part of the template: the same tasks (ids
    and processes) keep serving, no deployment starts, and the next rollout uses it."""
    client = server.client()
    created = warren(
        server, "service", "create", "web", "--command", COMMAND, "--replicas", "2"
    )  # waits until the tasks are ready
    assert created.returncode == 0, created.stderr

    def running() -> dict[str, str | None]:
        return {t.id: t.runtime_id for t in client.list_tasks("web") if t.wants_running}

    before = running()
    assert len(before) == 2 and all(before.values())
    updated = warren(server, "service", "update", "web", "--parallelism", "2")
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout == "service web updated (revision 1, no new tasks)\n"
    assert client.get_service("web").spec.deploy.update_config.parallelism == 2
    assert client.list_deployments("web") == []
    assert running() == before
    assert all(pid_alive(int(pid or 0)) for pid in before.values())

    changed = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--detach")
    assert changed.returncode == 0, changed.stderr
    (deployment,) = client.list_deployments("web")
    assert deployment.to_revision == 2 and deployment.config.parallelism == 2


def test_apply_dry_run_and_deploy_plan_show_the_changes_and_do_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    client = server.client()
    for name in ("web", "api"):
        created = warren(server, "service", "create", name, "--command", COMMAND, "--detach")
        assert created.returncode == 0, created.stderr
    file = tmp_path / "services.yaml"
    file.write_text(
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: web}\n"
        f"spec:\n  command: {COMMAND}\n  env: {{VERSION: v2, DEBUG: '1'}}\n"
        "  deploy: {updateConfig: {parallelism: 2}}\n"
        "---\napiVersion: warren.io/v1\nkind: Service\nmetadata: {name: api}\n"
        f"spec:\n  command: {COMMAND}\n  replicas: 2\n"
        "---\napiVersion: warren.io/v1\nkind: Service\nmetadata: {name: shop}\n"
        f"spec:\n  command: {COMMAND}\n"
    )
    dry = warren(server, "apply", "--dry-run", "-f", str(file))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == (
        '+/- service "web" (revision 1 → 2, a rollout)\n'
        '  + env.VERSION: "v2"\n'
        '  + env.DEBUG: "1"\n'
        "  ~ deploy.updateConfig.parallelism: 1 => 2   (settings only: no new tasks)\n"
        '~ service "api" (revision 1, no new tasks)\n'
        "  ~ replicas: 1 => 2   (scale only)\n"
        '+ service "shop" (created)\n'
    )
    assert [s.name for s in client.list_services()] == ["api", "web"]  # nothing done
    assert client.get_service("web").revision == 1 and client.list_deployments("web") == []
    assert client.get_service("api").spec.replicas == 1

    plan = warren(server, "deploy", "plan", "web", "--env", "VERSION=v2", "--parallelism", "2")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith(
        '+/- service "web" (revision 1 → 2, a rollout)\n'
        '  + env.VERSION: "v2"\n'
        "  ~ deploy.updateConfig.parallelism: 1 => 2   (settings only: no new tasks)\n\n"
        "rolling: revision 1 → 2\n"
    ), plan.stdout
    settings = warren(server, "deploy", "plan", "web", "--strategy", "canary")
    assert settings.stdout.startswith(
        '~ service "web" (revision 1, no new tasks)\n'
        '  ~ deploy.strategy: "rolling" => "canary"   (settings only: no new tasks)\n'
    ), settings.stdout
    assert "note: no new revision: only rollout settings change" in settings.stdout
