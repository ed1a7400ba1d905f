"""The live view of a release: the revisions with their role and weight, each task with its
state, readiness and age, and what the release waits for with the time left — drawn from the
records alone, at a given time."""

from __future__ import annotations

import io

from rich.console import Console

from warren.cli.live import follow_again, rollout_tree
from warren.domain.deployments import Deployment, DeploymentStatus, Phase, RolloutConfig
from warren.domain.specs import ServiceSpec
from warren.domain.tasks import Task, TaskState

NOW = 1_000_000.0


def _task(slot: int, revision: int, ready: bool, state: TaskState = TaskState.RUNNING) -> Task:
    return Task(
        id=f"web.{slot}.r{revision}", service="web", revision=revision, slot=slot, state=state,
        ready=ready, created_at=NOW - 30 * revision, updated_at=NOW,
    )  # fmt: skip


def _draw(**deployment: object) -> str:
    spec = ServiceSpec.model_validate({
        "name": "web", "command": ["app"], "replicas": 2,
        "deploy": {"strategy": "canary", "canary": {
            "steps": [{"setWeight": 50}, {"pause": "1m"}],
            "analysis": {"interval": "20s", "successRate": 0.9}}},
    })  # fmt: skip
    d = Deployment(id="web-1", service="web", strategy="canary", from_revision=1, to_revision=2,
                   replicas=2, config=RolloutConfig(), started_at=NOW - 75, updated_at=NOW,
                   progress_at=NOW, weights=((2, 50), (1, 50)), step=2,
                   **deployment)  # type: ignore[arg-type]  # fmt: skip
    status = DeploymentStatus(
        service_id="web", service_name="web", version="VERSION=v2", strategy="canary",
        revision=2, desired_tasks=2, ready_tasks=1, total_tasks=3, tasks={"running": 3},
        deployment_id="web-1", phase=d.phase, moves_by="step", weights={"2": 50, "1": 50},
    )  # fmt: skip
    tasks = [_task(1, 1, True), _task(2, 1, True), _task(1, 2, False, TaskState.STARTING),
             _task(2, 0, False, TaskState.STOPPED)]  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(rollout_tree(status, d, spec, tasks, NOW))
    return out.getvalue()


def test_a_canary_in_its_pause_shows_both_revisions_and_the_time_left() -> None:
    shown = _draw(pause_until=NOW + 42, analysis_at=NOW - 5)
    lines = [line.rstrip() for line in shown.splitlines()]
    assert lines[0] == "web  canary  ⟳ progressing"
    assert "deployment web-1 (update 1 → 2), step 2, 1m15s" in lines[1]
    assert "pause: 42s left, analysis window: 15s left" in lines[2]
    assert "revision 2  canary  50%  0/1 ready" in lines[3]
    assert "web.1.r2  starting  not ready  1m" in lines[4]
    assert "revision 1  stable  50%  2/2 ready" in lines[5]
    assert "web.1.r1  running  ready  30s" in lines[6]
    assert "r0" not in shown  # a stopped task is history, not part of the view


def test_a_release_waiting_for_a_person_says_what_to_type() -> None:
    assert "awaiting promotion: `warren deploy promote web`" in _draw(
        phase=Phase.AWAITING_PROMOTION
    )
    paused = _draw(phase=Phase.PAUSED, message="analysis: too few requests")
    assert "paused: analysis: too few requests — `warren deploy resume web`" in paused


def test_ctrl_c_says_how_to_follow_again() -> None:
    assert follow_again("web") == (
        "stopped watching; the release goes on — follow it again with "
        "`warren deploy status web --watch`"
    )
