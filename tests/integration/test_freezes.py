"""Deployment windows and freezes against a real server, with the demo app, as a user runs them:
``warren deploy freeze`` refuses a release in one line that says until when, while a rollback
and a change of replicas still run; ``--override`` goes anyway and says so in the release's
decision log; outside the service's windows a release is told when the next one opens."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.servers import ServerProcess, wait_for, warren
from warren.domain.deployments import Phase

COMMAND = "python -m warren.demo.app"


def _ready(server: ServerProcess, revision: int, count: int = 1) -> None:
    client = server.client()

    def done() -> bool:
        ready = [t for t in client.list_tasks("web") if t.ready and t.revision == revision]
        return len(ready) == count and client.deployment_status("web").phase == Phase.SUCCEEDED

    wait_for(done, 60, f"{count} task(s) of revision {revision} ready")


def test_a_freeze_holds_releases_but_not_rollbacks_and_override_goes_anyway(
    server: ServerProcess,
) -> None:
    created = warren(
        server, "service", "create", "web", "--command", COMMAND, "--env", "VERSION=v1",
        "--health-http", "/healthz", "--health-interval", "200ms", "--health-retries", "25",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert warren(server, "service", "update", "web", "--env", "VERSION=v2").returncode == 0
    _ready(server, 2)

    frozen = warren(server, "deploy", "freeze", "--until", "2h", "--reason", "year-end close")
    assert frozen.returncode == 0, frozen.stderr
    assert "releases of every service frozen until" in frozen.stdout
    listed = json.loads(warren(server, "deploy", "freezes", "-o", "json").stdout)
    assert [f["reason"] for f in listed] == ["year-end close"]
    assert listed[0]["until"].endswith("+00:00")  # ISO-8601 UTC, as every time of -o json

    refused = warren(server, "service", "update", "web", "--env", "VERSION=v3")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "frozen until" in refused.stderr and "(year-end close)" in refused.stderr
    assert server.client().get_service("web").revision == 2  # nothing written
    plan = warren(server, "deploy", "plan", "web", "--env", "VERSION=v3")
    assert "frozen until" in plan.stdout, plan.stdout

    scaled = warren(server, "service", "scale", "web", "2")
    assert scaled.returncode == 0, scaled.stderr
    rolled = warren(server, "service", "rollback", "web")
    assert rolled.returncode == 0, rolled.stderr + rolled.stdout
    _ready(server, 1, count=2)

    forced = warren(server, "service", "update", "web", "--env", "VERSION=v3", "--override")
    assert forced.returncode == 0, forced.stderr + forced.stdout
    _ready(server, 3, count=2)
    deployment = server.client().deployment_status("web")
    logged = [d for d in deployment.decisions if d.reason == "Overridden"]
    assert logged and "started with --override: releases of every service are frozen" in (
        logged[0].message
    )

    assert warren(server, "deploy", "unfreeze").returncode == 0
    assert json.loads(warren(server, "deploy", "freezes", "-o", "json").stdout) == []
    again = warren(server, "service", "update", "web", "--env", "VERSION=v4")
    assert again.returncode == 0, again.stderr
    gone = warren(server, "deploy", "unfreeze")
    assert gone.returncode == 1 and "no freeze of every service" in gone.stderr


def test_outside_its_windows_a_release_waits_and_is_told_when_the_next_opens(
    server: ServerProcess,
) -> None:
    created = warren(server, "service", "create", "web", "--command", COMMAND, "-d")
    assert created.returncode == 0, created.stderr
    client = server.client()
    # A window of one minute, a day from now: closed now, whatever the time.
    soon = datetime.now(UTC) + timedelta(days=1)
    window = {
        "days": [soon.strftime("%a").lower()],
        "start": soon.strftime("%H:%M"),
        "end": (soon + timedelta(minutes=1)).strftime("%H:%M"),
        "timezone": "UTC",
    }
    client.patch_service("web", {"deploy": {"windows": [window]}})  # settings: no release

    refused = warren(server, "service", "update", "web", "--env", "VERSION=v2")
    assert refused.returncode == 1
    assert "outside the deployment windows of web" in refused.stderr
    assert f"the next opens at {soon.strftime('%Y-%m-%dT%H:%M')}:00Z" in refused.stderr
    went = warren(server, "service", "update", "web", "--env", "VERSION=v2", "--override", "-d")
    assert went.returncode == 0, went.stderr
    assert client.get_service("web").revision == 2
