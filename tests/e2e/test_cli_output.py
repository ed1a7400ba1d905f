"""``-o json|yaml`` and ``-q`` on every listing and show command, against a real server: the
documents parse, hold every time as ISO-8601 UTC, say the same in JSON and YAML, and a bad format
exits 2 naming the help to read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.e2e.test_cli_errors import one_line_error, warren
from tests.e2e.test_cli_nodes import ok
from tests.servers import ServerProcess, wait_for

pytestmark = pytest.mark.integration

COMMANDS = (
    ("service", "ls"),
    ("service", "ps", "web"),
    ("service", "inspect", "web"),
    ("service", "revisions", "web"),
    ("deploy", "status", "web"),
    ("deploy", "history", "web"),
    ("deploy", "plan", "web", "--env", "VERSION=v3"),
    ("node", "ls"),
    ("node", "inspect", "sim-1"),
    ("cluster", "status"),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # One server for the module: every test only reads.
    data = tmp_path_factory.mktemp("output") / "data"
    server = ServerProcess(data, extra=["--simulate-nodes", "2", "--no-worker"]).start()
    try:
        env, client = server.env(), server.client()
        ok(warren("service", "create", "web", "--command", "app", "--driver", "fake", "-r", "2",
                  "-e", "VERSION=v1", env=env))  # fmt: skip
        ok(warren("service", "update", "web", "-e", "VERSION=v2", "--monitor", "0s", env=env))
        wait_for(lambda: client.deployment_status("web").done, 30, "the update to end")
        yield server
    finally:
        server.kill_everything()


def _times(doc: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _times(v, k)
    elif isinstance(doc, list):
        for v in doc:
            yield from _times(v, key)
    elif re.search(r"(At|Until|^time)$", key):
        yield key, doc


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_json_and_yaml_say_the_same_with_iso_times(
    server: ServerProcess, command: tuple[str, ...]
) -> None:
    env = server.env()
    as_json = json.loads(ok(warren(*command, "-o", "json", env=env)))
    assert as_json == yaml.safe_load(ok(warren(*command, "-o", "yaml", env=env)))
    for key, value in _times(as_json):
        assert isinstance(value, str), (key, value)
        assert datetime.fromisoformat(value).utcoffset().total_seconds() == 0, (key, value)


def test_the_documents_hold_what_a_script_needs(server: ServerProcess) -> None:
    env = server.env()
    [web] = json.loads(ok(warren("service", "ls", "-o", "json", env=env)))
    # A process service's command is its own field; version is the label.
    assert web["command"] == ["app"] and "image" not in web and web["version"] == "VERSION=v2"
    status = json.loads(ok(warren("deploy", "status", "web", "-o", "json", env=env)))
    assert status["command"] == ["app"] and status["phase"] == "succeeded"
    assert "image" not in status and status["version"] == "VERSION=v2"
    plan = json.loads(ok(warren("deploy", "plan", "web", "-e", "VERSION=v3", "-o", "json",
                                env=env)))  # fmt: skip
    assert (plan["fromRevision"], plan["toRevision"], plan["peakTasks"]) == (2, 3, 3)
    assert [s["earliestAfter"] for s in plan["steps"]] == [0.0, 0.0]
    assert plan["changes"] == [{"path": "env.VERSION", "old": "v2", "new": "v3", "newTasks": True}]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("service", "ls"), ["web"]),
        (("service", "revisions", "web"), ["2", "1"]),
        (("deploy", "history", "web"), ["web-1"]),
        (("node", "ls"), ["sim-1", "sim-2"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_quiet_lists_names_only(
    server: ServerProcess, command: tuple[str, ...], expected: list[str]
) -> None:
    assert ok(warren(*command, "-q", env=server.env())).split() == expected


def test_ps_quiet_lists_task_ids(server: ServerProcess) -> None:
    ids = ok(warren("service", "ps", "web", "-q", env=server.env())).split()
    assert ids and all(i.startswith("web.") for i in ids)


def test_a_bad_format_exits_2_naming_the_help(server: ServerProcess) -> None:
    result = warren("service", "ls", "-o", "xml", env=server.env())
    one_line_error(result, "--output", "'xml' is not one of", "warren service ls -h")
    assert result.returncode == 2


def test_watch_draws_the_tree_and_ends_with_the_release(server: ServerProcess) -> None:
    shown = ok(warren("deploy", "status", "web", "--watch", env=server.env()))
    assert "web  rolling  ✔ succeeded" in shown
    assert "revision 2  stable  2/2 ready" in shown
