"""A real Prometheus for tests: ``prometheus`` (Debian's package, which ships ``promtool`` too)
on a free loopback port, scraping the given targets, with rule files if any; stopped by PID.
Missing, it skips the test — except under CI=true, where .ci/run installs it and a missing one
is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, wait_for


def need(tool: str) -> str:
    """The path of ``tool`` (``prometheus``, ``promtool``); else skip, or fail under CI."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (apt install prometheus)")
        pytest.skip(f"{tool} is not installed")
    return path


@contextmanager
def running_prometheus(
    workdir: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    interval: str = "500ms",
) -> Iterator[str]:
    """Its URL, once it has scraped ``targets`` (``host:port``, each ``/metrics``) and found
    them up; ``interval`` is both the scrape and the rule evaluation interval."""
    binary = need("prometheus")
    port = free_port()
    config = workdir / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    rules = "".join(f"  - '{path}'\n" for path in rule_files)
    config.write_text(
        f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
        + (f"rule_files:\n{rules}" if rules else "")
        + "scrape_configs:\n"
        "  - job_name: warren\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n"
    )
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 30, "Prometheus to scrape the server")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _up(url: str) -> bool:
    try:
        answer = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=2).json()
    except httpx.HTTPError:
        return False
    result = answer.get("data", {}).get("result", [])
    return bool(result) and all(r["value"][1] == "1" for r in result)
