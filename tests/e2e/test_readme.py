"""Every command of the README's quick start, run as a new user would, against a real server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.etcd import EtcdMember
from tests.netns import Network
from tests.servers import ServerProcess, free_port, wait_for
from warren.client import Client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith(("source ", "warren server")):
                commands.append(line)
    return commands


def test_readme_shows_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text


def test_quick_start(server: ServerProcess, tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert commands[0].startswith("warren service create web")
    port = str(free_port())
    example = tmp_path / "web.yaml"
    example.write_text((ROOT / "examples" / "web.yaml").read_text().replace("18080", port))
    canary_port = str(free_port())
    canary = tmp_path / "canary.yaml"
    canary.write_text((ROOT / "examples" / "canary.yaml").read_text().replace("18081", canary_port))
    env = server.env()
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    client = server.client()
    for command in commands:
        command = command.replace("18080", port).replace("examples/web.yaml", str(example))
        command = command.replace("examples/canary.yaml", str(canary))
        if command.startswith("curl"):
            wait_for(
                lambda: len([t for t in client.list_tasks("web") if t.ready]) == 3,
                20,
                "3 ready tasks",
            )
            command = command.replace("curl -s", "curl -sf")
        result = subprocess.run(
            command, shell=True, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        if command.startswith("curl"):
            assert '"version": "v1"' in result.stdout
    assert not [t for t in client.list_tasks() if t.service == "web" and t.state.active]


# ── Running a cluster ────────────────────────────────────────────────────────────────────────

LONG_RUNNING = ("etcd ", "warren server ", "warren worker ")


def cluster_commands() -> list[tuple[int, str]]:
    """(machine 1-3, command) of the README's "Running a cluster", in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running a cluster", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        first, *lines = block.splitlines()
        found = re.fullmatch(r"# on 10\.0\.0\.(\d)", first.strip())
        assert found, f"a block of 'Running a cluster' must start with '# on 10.0.0.N': {first}"
        for line in lines:
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.append((int(found[1]), line))
    return commands


def test_running_a_cluster(hosts: Network, tmp_path: Path) -> None:
    """The README's commands, on three network namespaces standing for the three machines:
    their addresses in place of 10.0.0.N, a data dir of each machine's own."""
    machines = {n: hosts.add(f"h{n}") for n in (1, 2, 3)}
    envs = {
        n: {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "XDG_DATA_HOME": str(tmp_path / f"h{n}" / "data"),
            "WARREN_DATA_DIR": "",
        }
        for n in machines
    }
    etcds: list[EtcdMember] = []

    def local(n: int, command: str) -> str:
        for m, host in machines.items():
            command = command.replace(f"10.0.0.{m}", host.address)
        return command.replace("/var/lib/warren/etcd", str(tmp_path / f"h{n}" / "etcd"))

    def etcd_has_leader() -> bool:
        return all(m.ready() for m in etcds)

    outputs: dict[str, str] = {}
    for n, readme_command in cluster_commands():
        host, command = machines[n], local(n, readme_command)
        if command.startswith("export "):
            key, _, value = command.removeprefix("export ").partition("=")
            envs[n][key] = value
            continue
        if command.startswith(LONG_RUNNING):
            if command.startswith("warren"):
                wait_for(etcd_has_leader, 20, "etcd to elect a leader")
            host.popen(["sh", "-c", f"exec {command}"], tmp_path / f"h{n}.log", envs[n], tmp_path)
            if command.startswith("etcd "):
                etcds.append(
                    EtcdMember(
                        f"h{n}", 2379, 2380, tmp_path, tmp_path / "etcd.log", host=host.address
                    )
                )
            port = {"etcd": 2379, "warren server": 7070}.get(command[: command.find(" --")], 8000)
            wait_for(lambda: _listens(host.address, port), 20, command)  # noqa: B023
            continue
        command = command.replace("curl -s ", "curl -sf ")

        def succeeds() -> subprocess.CompletedProcess[str] | None:
            result = subprocess.run(
                [*host.wrapper, "sh", "-c", command],  # noqa: B023
                env={**os.environ, **envs[n]},  # noqa: B023
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "Traceback" not in result.stderr, result.stderr
            return result if result.returncode == 0 else None

        # As a user would: a command that needs what is still starting is tried again.
        result = wait_for(succeeds, 30, readme_command)
        outputs[readme_command] = result.stdout
    assert '"version": "v1"' in outputs["curl -s 10.0.0.3:18080/"]
    assert "listening on" in outputs["warren service logs web --tail 1"]
    assert outputs["warren cluster join-token -q > join.token"] == ""
    status = outputs["warren cluster status"]  # both managers, one of them leading
    managers = [line.split() for line in status.splitlines() if line.startswith(" n")]
    assert sorted(m[0] for m in managers) == ["n1", "n2"], status
    assert sum(m[-1] == "yes" for m in managers) == 1, status
    with Client(f"http://{machines[1].address}:7070", data_dir=tmp_path / "h1/data/warren") as c:
        tasks = [t for t in c.list_tasks("web") if t.wants_running and t.ready]
        nodes = {n.name: n for n, _ in c.list_nodes()}
    assert {t.node for t in tasks} == {"n1", "n2", "n3"}
    assert {t.revision for t in tasks} == {2} and len(tasks) == 6
    assert {name: n.status for name, n in nodes.items()} == dict.fromkeys(
        ["n1", "n2", "n3"], "ready"
    )


def _listens(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0
