"""``warren node ls | inspect | drain | activate | rm`` against a real server with simulated nodes,
as a user types them; errors are one line and exit 1."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
import yaml

from tests.e2e.test_cli_errors import one_line_error, warren
from tests.servers import ServerProcess, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def sim_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(extra=["--simulate-nodes", "3", "--no-worker"]).start()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_node_commands(sim_server: ServerProcess) -> None:
    env = sim_server.env()
    client = sim_server.client()
    listing = ok(warren("node", "ls", env=env))
    header = listing.splitlines()[0].split()
    assert header == [
        "NAME", "STATUS", "AVAILABILITY", "ADDRESS", "DRIVERS", "CPUS", "MEMORY", "TASKS",
        "UPDATED",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:] if line.strip()}
    assert set(rows) == {"sim-1", "sim-2", "sim-3"}
    assert rows["sim-1"][1:5] == ["ready", "active", "127.0.0.1", "fake"]
    assert rows["sim-1"][6:8] == ["256", "GiB"]

    ok(warren("service", "create", "web", "--command", "app", "--driver", "fake",
              "--replicas", "3", env=env))  # fmt: skip
    wait_for(lambda: sum(t.ready for t in client.list_tasks("web")) == 3, 20, "3 ready tasks")

    doc = yaml.safe_load(ok(warren("node", "inspect", "sim-1", env=env)))
    assert doc["name"] == "sim-1" and doc["availability"] == "active"
    assert [t["service"] for t in doc["tasks"]] == ["web"]
    assert "drain" not in doc
    as_json = json.loads(ok(warren("node", "inspect", "sim-1", "-o", "json", env=env)))
    assert as_json == doc

    out = ok(warren("node", "drain", "sim-1", env=env))
    assert out.strip() == (
        "node sim-1 drained: no new tasks; its task moves to other nodes "
        "(`warren node inspect sim-1` shows how far)"
    )
    wait_for(
        lambda: "sim-1: drained: no tasks left" in ok(warren("node", "ls", env=env)),
        20,
        "the drain to finish",
    )
    listing = ok(warren("node", "ls", env=env))
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:] if line.strip()}
    assert rows["sim-1"][2] == "drain" and rows["sim-1"][8] == "0"
    doc = yaml.safe_load(ok(warren("node", "inspect", "sim-1", env=env)))
    assert doc["availability"] == "drain" and doc["tasks"] == []
    assert doc["drain"]["message"] == "drained: no tasks left"
    assert sum(t.ready and t.wants_running for t in client.list_tasks("web")) == 3

    out = ok(warren("node", "activate", "sim-1", env=env))
    assert out.strip() == "node sim-1 active: it takes new tasks again"
    assert yaml.safe_load(ok(warren("node", "inspect", "sim-1", env=env)))["availability"] == (
        "active"
    )

    # Nowhere to go: the tasks stay, and ls and inspect say why.
    for name in ("sim-1", "sim-2"):
        ok(warren("node", "drain", name, env=env))
    wait_for(lambda: client.get_node("sim-3").tasks == 3, 20, "every task on sim-3")
    ok(warren("node", "drain", "sim-3", env=env))
    why = "sim-3: draining: 3 tasks cannot move: no node is ready (all down or drained)"
    wait_for(lambda: why in ok(warren("node", "ls", env=env)), 20, "the drain to be stuck")
    doc = yaml.safe_load(ok(warren("node", "inspect", "sim-3", env=env)))
    assert doc["drain"]["stuck"] == 3 and len(doc["tasks"]) == 3


def test_node_errors(sim_server: ServerProcess) -> None:
    env = sim_server.env()
    for command in ("inspect", "drain", "activate", "rm"):
        result = warren("node", command, "nope", env=env)
        one_line_error(result, "node 'nope' not found")
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
    one_line_error(warren("node", "inspect", "sim-1", "-o", "xml", env=env), "--output")
    one_line_error(warren("node", "drain", env=env), "Missing argument 'name'")
    one_line_error(warren("node", "ls", env={**env, "WARREN_TOKEN": "wrong"}), "invalid token")
    one_line_error(
        warren("node", "rm", "sim-1", env=env), "node sim-1 is ready: only a node that is down"
    )
