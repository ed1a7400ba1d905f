"""Pre-deploy jobs and ``warren run`` against a real server, with the demo app, as a user runs
them: a migration runs once, with the new revision's env, before any of its tasks starts; a
migration that fails leaves the old revision serving every request, and its output is there
to read (``service logs --job``); ``warren run`` prints a command's output and exits with its
code; ``deploy plan`` shows the job."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import httpx

from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.domain.deployments import Phase

SERVICE = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: web}
spec:
  command: ["python", "-m", "warren.demo.app"]
  replicas: 2
  env: {VERSION: VERSION_HERE}
  ports: [{published: PORT}]
  healthCheck: {http: {path: /healthz}, interval: 200ms, retries: 25}
  deploy:
    updateConfig: {monitor: 0s}
    preDeploy:
      command: ["sh", "-c", "echo migrating to $VERSION; echo $VERSION $(date +%s.%N) >> LOG; EXIT"]
      timeout: 30s
"""


def _manifest(tmp_path: Path, port: int, version: str, exit_code: int) -> Path:
    path = tmp_path / f"web-{version}.yaml"
    text = SERVICE.replace("PORT", str(port)).replace("VERSION_HERE", version)
    text = text.replace("LOG", str(tmp_path / "migrations")).replace("EXIT", f"exit {exit_code}")
    path.write_text(text)
    return path


class _Load:
    """GET / in a loop through the ingress: the versions that answered, and every failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                try:
                    answer = http.get(f"http://127.0.0.1:{self.port}/")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    self.failures.append(str(answer.status_code))
                else:
                    self.versions[answer.json()["version"]] += 1


def test_a_migration_runs_once_before_the_new_tasks_and_a_failing_one_replaces_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()
    client = server.client()
    created = warren(server, "apply", "-f", str(_manifest(tmp_path, port, "v1", 0)))
    assert created.returncode == 0, created.stderr + created.stdout
    log = tmp_path / "migrations"
    assert log.read_text().split()[0] == "v1"  # a new service's first release runs it too

    v2 = str(_manifest(tmp_path, port, "v2", 0))
    plan = json.loads(warren(server, "deploy", "plan", "web", "-f", v2, "-o", "json").stdout)
    first = plan["steps"][0]
    assert first["description"].startswith("pre-deploy job `sh -c")
    assert "before any task of revision 2 starts" in first["description"]
    assert first["tasks"] == {"old": 2}

    with _Load(port) as load:
        updated = warren(server, "apply", "-f", v2)
        assert updated.returncode == 0, updated.stderr + updated.stdout
        wait_for(lambda: load.versions["v2"] > 5, 20, "v2 answering")
    assert load.failures == []
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [r[0] for r in runs] == ["v1", "v2"]  # once per release, with the new env
    new_tasks = [t for t in client.list_tasks("web") if t.revision == 2]
    assert len(new_tasks) == 2
    assert all(t.created_at > float(runs[1][1]) for t in new_tasks)
    jobs = client.list_jobs("web")
    assert [(j.id, j.revision, j.exit_code) for j in jobs][-1] == ("web.pre-deploy.2", 2, 0)

    serving = {t.id for t in client.list_tasks("web") if t.ready}
    with _Load(port) as load:
        failed = warren(server, "apply", "-f", str(_manifest(tmp_path, port, "v3", 3)))
        assert failed.returncode == 1
        assert "pre-deploy job web.pre-deploy.3 exited 3" in failed.stderr, failed.stderr
        status = client.deployment_status("web")
        assert status.phase == Phase.FAILED and status.revision == 2
    assert load.failures == []
    assert set(load.versions) == {"v2"}
    assert {t.id for t in client.list_tasks("web") if t.ready} == serving
    assert not any(t.revision == 3 for t in client.list_tasks("web"))

    logs = warren(server, "service", "logs", "web", "--job")
    assert logs.returncode == 0, logs.stderr
    assert "web.pre-deploy.3 | migrating to v3" in logs.stdout, logs.stdout


FAILING = """
apiVersion: warren.io/v1
kind: Service
metadata: {name: db}
spec:
  command: ["python", "-m", "warren.demo.app"]
  healthCheck: {http: {path: /healthz}, interval: 200ms, retries: 25}
  deploy:
    preDeploy: {command: "sh -c 'echo no database; exit 2'", timeout: 30s}
"""


def test_a_new_service_whose_migration_fails_starts_no_task(
    server: ServerProcess, tmp_path: Path
) -> None:
    manifest = tmp_path / "db.yaml"
    manifest.write_text(FAILING)
    created = warren(server, "apply", "-f", str(manifest))
    assert created.returncode == 1
    assert "deployment db-1 failed: pre-deploy job db.pre-deploy.1 exited 2" in created.stderr
    assert server.client().list_tasks("db") == []


def test_warren_run_prints_the_output_and_exits_with_the_code(server: ServerProcess) -> None:
    created = warren(
        server, "service", "create", "web", "--command", "python -m warren.demo.app",
        "--env", "VERSION=v7", "--health-http", "/healthz", "--health-interval", "200ms",
        "--health-retries", "25",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    ran = warren(server, "run", "web", "--", "sh", "-c", 'echo "hello from $VERSION"; exit 5')
    assert ran.returncode == 5, ran.stderr
    assert ran.stdout == "hello from v7\n"
    assert "job web.run." in ran.stderr
    late = warren(server, "run", "web", "--timeout", "1s", "--", "sleep", "30")
    assert late.returncode != 0 and "did not finish within 1s" in late.stderr, late.stderr
    missing = warren(server, "run", "nope", "--", "true")
    assert (missing.returncode, missing.stderr) == (1, "error: service 'nope' not found\n")
    listed = warren(server, "service", "jobs", "web", "-q")
    assert len(listed.stdout.split()) == 2
