"""Bad input of every kind gives one clear line on stderr and a non-zero exit — never a
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration


def warren(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warren", *args],
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    err = result.stderr.strip()
    for needle in needles:
        assert needle in err, err


def test_no_server_says_so() -> None:
    env = {**os.environ, "WARREN_ADDR": f"http://127.0.0.1:{free_port()}", "WARREN_TOKEN": "x"}
    result = warren("service", "ls", env=env)
    one_line_error(result, "cannot reach the Warren server", "is `warren server` running?")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_flags_name_the_flag() -> None:
    result = warren("service", "create", "web", "--command", "x", "--health-interval", "5x")
    one_line_error(result, "--health-interval", "expected a duration")
    result = warren("service", "create", "web", "--command", "x", "--replicas", "-1")
    one_line_error(result, "--replicas")
    result = warren("service", "create", "web", "--command", "x", "--health-start-period", "9s")
    one_line_error(result, "--health-start-period: needs --health-http, --health-tcp or --health")


def test_usage_errors_are_one_line() -> None:
    for args, needle in (
        (("service", "logs", "web", "--tail", "0"), "--tail"),
        (("service", "logs", "web", "--since", "abc"), "--since"),
        (("server", "--log-max-size", "10"), "--log-max-size"),
        (("worker", "--manager", "m", "--token", "t", "--log-max-files", "0"), "--log-max-files"),
        (("service", "create", "web", "--bogus"), "--bogus"),
        (("nosuch",), "nosuch"),
    ):
        result = warren(*args)
        one_line_error(result, needle, "-h`)")
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_health_check_flags_reach_the_spec(server: ServerProcess) -> None:
    env = server.env()
    created = warren(
        "service", "create", "slow", "--command", "sleep 60", "--health-tcp",
        "--health-start-period", "30s", "--health-retries", "2", "--detach", env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    check = server.client().get_service("slow").spec.health_check
    assert check is not None and (check.start_period, check.retries) == (30.0, 2)


def test_errors_from_the_server(server: ServerProcess, tmp_path: Path) -> None:
    env = server.env()
    one_line_error(warren("service", "inspect", "nosuch", env=env), "service 'nosuch' not found")
    one_line_error(warren("service", "create", "web", env=env), "--image IMAGE or --command CMD")
    one_line_error(
        warren("service", "create", "web", "--image", "a", "--driver", "process", env=env),
        "the process driver needs a command",
    )
    one_line_error(
        warren("service", "create", "web", "--image", "a", "--pull", "sometimes", env=env),
        "pullPolicy",
    )
    one_line_error(
        warren("service", "create", "Web!", "--command", "x", env=env), "name:", "lowercase"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {command: [x], replicas: -3}\n"
    )
    one_line_error(warren("apply", "-f", str(bad), env=env), "spec.replicas")
    bad.write_text("apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: web\n")
    one_line_error(warren("apply", "-f", str(bad), env=env), "line")
    one_line_error(warren("apply", "-f", str(tmp_path / "missing.yaml"), env=env), "cannot read")
    assert (
        warren("service", "create", "web", "--command", "sleep 60", "-d", env=env).returncode == 0
    )
    one_line_error(warren("service", "create", "web", "--command", "x", env=env), "already exists")
    one_line_error(warren("service", "update", "web", env=env), "nothing to change")
    one_line_error(
        warren("service", "update", "web", "--env-rm", "NOPE", "--detach", env=env),
        "NOPE is not set",
    )
    wrong = {**env, "WARREN_TOKEN": "wrong"}
    one_line_error(warren("service", "ls", env=wrong), "invalid token")
    assert warren("service", "rm", "web", env=env).returncode == 0


def test_deploy_plan_takes_the_update_flags(server: ServerProcess) -> None:
    env = server.env()
    created = warren("service", "create", "planned", "--command", "sleep 60", "-r", "4", "-d",
                     env=env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    plan = warren(
        "deploy", "plan", "planned", "--env", "V=2", "--parallelism", "2", "--delay", "3s",
        env={**env, "COLUMNS": "150"},
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "batch 1/2: slots 1-2" in plan.stdout and "batch 2/2: slots 3-4" in plan.stdout
    assert "earliest finish: +13s" in plan.stdout, plan.stdout  # 2 monitors of 5s, a 3s delay
    one_line_error(warren("deploy", "plan", "planned", "--parallelism", "-1", env=env), "--para")
    assert warren("service", "rm", "planned", env=env).returncode == 0


def test_a_port_taken_is_refused_when_written(server: ServerProcess) -> None:
    env = server.env()
    port = str(free_port())
    taken = warren("service", "create", "web", "--command", "sleep 60", "-p", port, "-d", env=env)
    assert taken.returncode == 0, taken.stderr
    again = warren("service", "create", "api", "--command", "sleep 60", "-p", port, env=env)
    one_line_error(again, f"port {port} is published by service web")
    own = warren("service", "create", "api", "--command", "x", "-p", str(server.api_port), env=env)
    one_line_error(own, f"port {server.api_port} is Warren's API (--api)")
    assert [s.name for s in server.client().list_services()] == ["web"]
