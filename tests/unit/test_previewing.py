"""Plan before apply: the steps a change would take, and the settings refused at admission."""

from __future__ import annotations

from typing import Any

import pytest

from warren.domain.base import parse_model
from warren.domain.errors import ValidationError
from warren.domain.specs import ServiceSpec, patch_spec
from warren.planning.previewing import plan_rollout


def spec(**deploy: Any) -> ServiceSpec:
    return parse_model(
        ServiceSpec, {"name": "web", "command": ["app"], "replicas": 4, "deploy": deploy}
    )


def changed(s: ServiceSpec) -> ServiceSpec:
    return s.model_copy(update={"env": {"VERSION": "v2"}})


def test_rolling_plan() -> None:
    base = spec(updateConfig={"parallelism": 2, "monitor": "5s", "delay": "10s"})
    plan = plan_rollout(base, 1, changed(base))
    assert [s.tasks for s in plan.steps] == [{"old": 2, "new": 2}, {"old": 0, "new": 4}]
    assert [s.earliest_after for s in plan.steps] == [5.0, 20.0]
    assert (plan.peak_tasks, plan.earliest_finish, plan.to_revision) == (6, 20.0, 2)


def test_scale_only_is_no_rollout() -> None:
    base = spec()
    plan = plan_rollout(base, 3, base.model_copy(update={"replicas": 6}))
    assert plan.strategy == "none" and plan.to_revision is None and plan.peak_tasks == 6
    assert plan.steps[0].description == "scale to 6"
    assert plan.notes == ("no new revision: only replicas change",)


def test_settings_only_is_no_rollout() -> None:
    base = spec()
    new = patch_spec(base, {"deploy": {"strategy": "canary", "updateConfig": {"parallelism": 2}}})
    plan = plan_rollout(base, 3, new)
    assert plan.strategy == "none" and plan.to_revision is None and plan.peak_tasks == 4
    assert plan.steps[0].description == "the 4 task(s) keep running"
    assert plan.notes[0].startswith("no new revision: only rollout settings change")
    both = plan_rollout(base, 3, new.model_copy(update={"replicas": 5}))
    assert both.notes[0].startswith("no new revision: only replicas and rollout settings change")
    assert plan_rollout(base, 3, base).notes == ("nothing changes",)


def test_canary_plan() -> None:
    base = spec(
        strategy="canary",
        canary={
            "steps": [{"setWeight": 10}, {"pause": "30s"}, {"setWeight": 50}, {"pause": {}}],
            "analysis": {"interval": "10s", "successRate": 0.99},
        },
    )
    plan = plan_rollout(base, 1, changed(base))
    assert plan.steps[0].tasks == {"old": 4, "new": 2}  # enough canaries for 50%
    assert [s.weights.get("new") for s in plan.steps[1:5]] == [10, 10, 50, 50]
    assert plan.steps[2].earliest_after == 30.0 and plan.steps[4].earliest_after is None
    assert plan.steps[1].analysis == "every 10s: success rate >= 0.99, min 20 requests"
    assert plan.peak_tasks == 8 and plan.earliest_finish is None


@pytest.mark.parametrize(
    ("analysis", "text"),
    [
        ({"maxLatencyP99": "500ms"}, "every 10s: p99 <= 0.5s, min 20 requests"),
        (
            {"mode": "baseline", "minRequests": 50},
            "every 10s: no worse than stable, min 50 requests",
        ),
        ({}, "every 10s: min 20 requests"),
    ],
)
def test_canary_plan_names_only_the_checks_set(analysis: dict[str, Any], text: str) -> None:
    steps = [{"setWeight": 10}, {"pause": "30s"}]
    base = spec(strategy="canary", canary={"steps": steps, "analysis": analysis})
    assert plan_rollout(base, 1, changed(base)).steps[1].analysis == text


def test_blue_green_plan() -> None:
    base = spec(
        strategy="blue-green", blueGreen={"autoPromoteAfter": "20s", "scaleDownDelay": "1m"}
    )
    plan = plan_rollout(base, 1, changed(base))
    assert plan.peak_tasks == 8
    assert plan.earliest_finish == 80.0
    assert plan.steps[-2].weights == {"old": 0, "new": 100}


@pytest.mark.parametrize(
    ("deploy", "words"),
    [
        (
            {"updateConfig": {"healthyDeadline": "20m", "progressDeadline": "10m"}},
            "healthyDeadline is longer than progressDeadline",
        ),
        (
            {"strategy": "canary", "canary": {"steps": [{"setWeight": 10}, {"pause": "5s"}],
                                              "analysis": {"interval": "10s"}}},
            "would never be analysed",
        ),
        (
            {"strategy": "blue-green",
             "blueGreen": {"soak": "5s", "analysis": {"interval": "10s"}}},
            "no window would close",
        ),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_are_refused(deploy: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        spec(**deploy)


@pytest.mark.parametrize("canary", [None, {}, {"steps": []}, {"analysis": {"interval": "30s"}}])
def test_a_canary_without_steps_runs_the_judged_defaults(canary: dict[str, Any] | None) -> None:
    """Issue 12, item 11: a canary given no steps was promoted at once, untested. The default is
    10% → 50% → 100%, each weight held for one analysis window and judged (by the analysis
    given, else success rate >= 95% over at least 20 requests), and ``deploy plan`` says so."""
    deploy: dict[str, Any] = {"strategy": "canary"}
    if canary is not None:
        deploy["canary"] = canary
    base = spec(**deploy)
    plan = plan_rollout(base, 1, changed(base))
    weights = [s.weights.get("new") for s in plan.steps]
    assert weights == [0, 10, 10, 50, 50, 100], plan.steps
    interval = "30s" if canary and "analysis" in canary else "10s"
    assert plan.steps[1].analysis.startswith(f"every {interval}:"), plan.steps[1]
    if canary is None or "analysis" not in canary:
        assert plan.steps[1].analysis == ("every 10s: success rate >= 0.95, min 20 requests"), (
            plan.steps[1]
        )
    assert any("no canary steps given" in note for note in plan.notes), plan.notes


def test_a_good_canary_is_accepted() -> None:
    spec(
        strategy="canary",
        canary={"steps": [{"setWeight": 10}, {"pause": {}}], "analysis": {"interval": "10s"}},
    )
