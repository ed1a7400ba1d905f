"""The seed's Python API: ``Deployer(manager)`` over the HTTP client and in process, running the
seed's complete example (create, update to a new image, watch the status, roll back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import ServerProcess, wait_for
from warren.client import Client
from warren.deploy import Deployer
from warren.domain.deployments import Phase
from warren.domain.errors import ValidationError
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import DesiredState
from warren.server import EmbeddedServer, ServerConfig
from warren.types import DeploymentManager, ServiceManager

pytestmark = pytest.mark.integration


def seed_example(manager: ServiceManager) -> None:
    assert isinstance(manager, ServiceManager) and isinstance(manager, DeploymentManager)
    service = manager.create_service(
        ServiceSpec.model_validate(
            {
                "name": "web",
                "image": "nginx:1.20",
                "driver": "fake",  # no engine needed for the example
                "replicas": 5,
                "deploy": {"updateConfig": {"parallelism": 2, "delay": "0s", "monitor": "0s"}},
            }
        )
    )
    deployer = Deployer(manager)
    wait_for(lambda: deployer.get_deployment_status(service.name).ready_tasks == 5, 20, "5 ready")

    status = deployer.update_service(service.name, "nginx:1.21", strategy="rolling")
    assert status.deployment_id is not None and status.image == "nginx:1.21"
    done = wait_for(
        lambda: (s := deployer.get_deployment_status("web")).phase == Phase.SUCCEEDED and s,
        30,
        "the update",
    )
    assert (done.ready_tasks, done.desired_tasks, done.total_tasks) == (5, 5, 5)
    assert done.tasks == {"running": 5}
    assert done.batches == 3 and done.step == 3

    rolled = deployer.rollback_deployment("web")
    assert rolled.kind == "rollback" and rolled.image == "nginx:1.20"
    wait_for(
        lambda: deployer.get_deployment_status("web").phase == Phase.SUCCEEDED,
        30,
        "the rollback",
    )
    images = {t.revision for t in manager.list_tasks_by_service("web") if t.state.active}
    assert images == {1}
    with pytest.raises(ValidationError, match="strategy"):
        deployer.update_service("web", "nginx:1.22", strategy="big-bang")

    task = next(t for t in manager.list_tasks_by_service("web") if t.state.active)
    stopped = manager.update_task(task.model_copy(update={"desired_state": DesiredState.SHUTDOWN}))
    assert stopped.desired_state == "shutdown"
    manager.delete_service("web")
    assert all(s.name != "web" for s in manager.list_services())


def test_deployer_over_http(server: ServerProcess) -> None:
    with Client(server.addr, data_dir=server.data_dir) as client:
        seed_example(client)


def test_deployer_in_process(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", api="127.0.0.1:0", http_port=0)
    with EmbeddedServer(config) as embedded:
        seed_example(embedded.manager)
        with embedded.client() as client:
            assert client.health()


def test_the_docs_complete_example_runs(server: ServerProcess) -> None:
    import os
    import re
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[2] / "docs" / "python-api.md").read_text()
    example = re.findall(r"## Complete example.*?```python\n(.*?)```", text, re.S)[0]
    example = example.replace('"delay": "10s"', '"delay": "0s", "monitor": "0s"')  # fast
    result = subprocess.run(
        [sys.executable, "-c", example],
        env={**os.environ, **server.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Deployment succeeded!" in result.stdout
