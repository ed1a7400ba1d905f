"""Every command of the README's quick start, run as a new user would, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, wait_for

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
