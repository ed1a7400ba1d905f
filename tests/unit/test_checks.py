"""External checks: placeholders, conditions, how they combine with the ingress's verdict, how
the canary planner asks for webhooks and acts on their answers, and Prometheus answers read."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.unit.test_rolling import T0, deployment, task
from warren.control.checking import _one_number
from warren.domain.deployments import Phase, Reason
from warren.domain.errors import ValidationError
from warren.domain.specs import Analysis, CanaryConfig, ServiceSpec
from warren.domain.tasks import Task
from warren.planning.analysis import Outcome, Sample, Verdict
from warren.planning.checks import (
    Check,
    CheckResult,
    combine,
    evaluate,
    hook_checks,
    render,
    window_checks,
)
from warren.planning.rollouts import RolloutView
from warren.planning.strategies.canary import next_step

HOOKS = [
    {"name": "gate", "type": "pre-rollout", "url": "http://127.0.0.1:9/gate"},
    {"name": "smoke", "type": "rollout", "url": "http://127.0.0.1:9/smoke"},
    {"name": "ok", "type": "pre-promotion", "url": "http://127.0.0.1:9/ok"},
]
METRIC = {
    "name": "errors",
    "prometheus": {
        "address": "http://127.0.0.1:9090",
        "query": 'rate(x{service="{{service}}",revision="{{ revision }}"}[{{interval}}])',
    },
    "successCondition": "result < 0.05",
}


def analysis(**extra: Any) -> Analysis:
    return Analysis.model_validate(
        {"interval": "10s", "minRequests": 0, "webhooks": HOOKS, "metrics": [METRIC], **extra}
    )


def test_placeholders_are_filled_in() -> None:
    d = deployment()
    (metric,) = [c for c in window_checks(d, analysis(), 5.0) if c.stage == "metric"]
    assert metric.query == 'rate(x{service="web",revision="2"}[10s])'
    assert render("{{stable}}/{{interval}}", d, 0.4) == "1/1s"


def test_a_check_is_the_same_check_whatever_its_payload() -> None:
    d = deployment()
    first = hook_checks(d, analysis(), "pre-rollout")
    later = hook_checks(
        d.model_copy(update={"weights": ((1, 90), (2, 10))}), analysis(), "pre-rollout"
    )
    assert (
        [c.key for c in first] == [c.key for c in later] == [("web-2", "pre-rollout", 0.0, "gate")]
    )
    assert later[0].payload["weights"] == {"1": 90, "2": 10}
    assert {c.stage for c in window_checks(d, analysis(), 7.0)} == {"rollout", "metric"}
    assert all(c.round == 7.0 for c in window_checks(d, analysis(), 7.0))


@pytest.mark.parametrize(
    ("condition", "value", "outcome"),
    [
        ("result < 0.05", 0.01, Outcome.PASS),
        ("result < 0.05", 0.05, Outcome.FAIL),
        ("<= 0.05", 0.05, Outcome.PASS),
        ("result >= 100", 99.0, Outcome.FAIL),
        ("result != 0", 1.0, Outcome.PASS),
        ("result < 0.05", None, Outcome.INCONCLUSIVE),
        ("result < 0.05", math.nan, Outcome.INCONCLUSIVE),
    ],
)
def test_conditions(condition: str, value: float | None, outcome: Outcome) -> None:
    check = Check("web-2", "metric", 0.0, "errors", condition=condition)
    result = evaluate(check, value)
    assert result.outcome == outcome
    assert result.reason.startswith("metric errors")


@pytest.mark.parametrize("bad", ["result < abc", "import os", "result = 1", "", "< 1 or 1"])
def test_a_condition_that_is_not_a_comparison_is_refused(bad: str) -> None:
    doc = {**METRIC, "successCondition": bad}
    with pytest.raises((ValidationError, ValueError)):
        Analysis.model_validate({"metrics": [doc]})


def test_a_webhook_needs_an_http_url_and_unique_names() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Analysis.model_validate({"webhooks": [{**HOOKS[0], "url": "file:///etc/passwd"}]})
    with pytest.raises(ValueError, match="same name"):
        Analysis.model_validate({"webhooks": [HOOKS[0], HOOKS[0]]})


def _result(outcome: Outcome, name: str = "x") -> CheckResult:
    return CheckResult(f"metric {name}", outcome, f"metric {name}: {outcome}")


@pytest.mark.parametrize(
    ("ingress", "checks", "expected"),
    [
        (Outcome.PASS, [], Outcome.PASS),
        (Outcome.PASS, [Outcome.PASS, Outcome.PASS], Outcome.PASS),
        (Outcome.PASS, [Outcome.INCONCLUSIVE, Outcome.PASS], Outcome.INCONCLUSIVE),
        (Outcome.PASS, [Outcome.INCONCLUSIVE, Outcome.FAIL], Outcome.FAIL),
        (Outcome.FAIL, [Outcome.PASS], Outcome.FAIL),
        (Outcome.INCONCLUSIVE, [Outcome.FAIL], Outcome.FAIL),
        (Outcome.INCONCLUSIVE, [Outcome.PASS], Outcome.INCONCLUSIVE),
    ],
)
def test_any_failure_fails_a_window_and_nothing_passes_silently(
    ingress: Outcome, checks: list[Outcome], expected: Outcome
) -> None:
    results = [_result(o, str(i)) for i, o in enumerate(checks)]
    verdict = combine(Verdict(ingress, "ingress"), results)
    assert verdict.outcome == expected
    if results:
        assert set(verdict.measured["checks"]) == {r.label for r in results}


# --- the canary planner with checks ------------------------------------------------------


def canary_view(
    d: Any, checks: dict[Any, CheckResult] | None = None, tasks: list[Task] | None = None
) -> RolloutView:
    config = CanaryConfig.model_validate(
        {"steps": [{"setWeight": 20}, {"pause": "30s"}], "analysis": analysis().model_dump()}
    )
    return RolloutView(
        deployment=d,
        replicas=2,
        tasks=tasks if tasks is not None else [task(1, 1), task(2, 1), task(1, 2, ready=True)],
        now=T0 + 5,
        canary=config,
        samples={2: Sample(50, 0), 1: Sample(200, 0)},
        checks=checks or {},
    )


def started() -> Any:
    return deployment(2, strategy="canary", target_slots=(1,), weights=((1, 100), (2, 0)))


def test_the_first_weight_waits_for_the_pre_rollout_webhooks() -> None:
    step = next_step(canary_view(started()))
    assert [c.key for c in step.checks] == [("web-2", "pre-rollout", 0.0, "gate")]
    assert step.deployment.weights == ((1, 100), (2, 0))


def test_passing_pre_rollout_webhooks_let_the_weight_move_once() -> None:
    (gate,) = hook_checks(started(), analysis(), "pre-rollout")
    passed = {gate.key: CheckResult(gate.label, Outcome.PASS, "pre-rollout webhook gate: HTTP 200")}
    step = next_step(canary_view(started(), passed))
    assert step.deployment.weights == ((1, 80), (2, 20))
    assert step.deployment.hooks_done == ("pre-rollout",)
    assert any(x.reason == Reason.WEBHOOKS_PASSED for x in step.deployment.decisions)


def test_a_failing_pre_rollout_webhook_fails_the_canary_before_any_traffic() -> None:
    (gate,) = hook_checks(started(), analysis(), "pre-rollout")
    failed = {gate.key: CheckResult(gate.label, Outcome.FAIL, "pre-rollout webhook gate: HTTP 500")}
    step = next_step(canary_view(started(), failed))
    d = step.deployment
    assert d.phase == Phase.FAILED and d.weights == ((1, 100), (2, 0))
    assert step.revert_to == 1 and "HTTP 500" in d.message


def test_a_closing_window_waits_for_its_checks_then_judges_them_with_the_ingress() -> None:
    d = started().model_copy(
        update={"weights": ((1, 80), (2, 20)), "canary_step": 1, "analysis_at": T0 - 20,
                "hooks_done": ("pre-rollout",)}
    )  # fmt: skip
    step = next_step(canary_view(d))
    assert {c.stage for c in step.checks} == {"rollout", "metric"}
    assert step.deployment.analysis_at == T0 - 20  # the window stays open until they answer
    answers = {c.key: _result(Outcome.PASS, c.name) for c in step.checks}
    answers[next(c.key for c in step.checks if c.stage == "metric")] = CheckResult(
        "metric errors", Outcome.FAIL, "metric errors = 0.2 fails `result < 0.05`", 0.2
    )
    failed = next_step(canary_view(d, answers))
    assert failed.deployment.phase == Phase.FAILED
    assert "metric errors = 0.2 fails" in failed.deployment.message
    assert failed.deployment.decisions[-2].measured["checks"]["metric errors"] == 0.2


# --- Prometheus answers ------------------------------------------------------------------


def _vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1.0, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "value", "problem"),
    [
        (_vector("0.25"), 0.25, ""),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, 3.0, ""),
        (_vector(), None, "no series"),
        (_vector("1", "2"), None, "2 series"),
        (_vector("NaN"), None, "NaN"),
        ({"status": "error", "error": "parse error at char 3"}, None, "parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, None, "matrix"),
        ([], None, "refused"),
    ],
)
def test_prometheus_answers(body: Any, value: float | None, problem: str) -> None:
    got, why = _one_number(body)
    assert got == value and problem in why


def test_a_service_spec_takes_checks_from_yaml() -> None:
    spec = ServiceSpec.model_validate(
        {
            "name": "web", "command": "app",
            "deploy": {"strategy": "canary", "canary": {
                "steps": [{"setWeight": 10}, {"pause": "20s"}],
                "analysis": {"webhooks": HOOKS, "metrics": [METRIC]},
                "stickySessions": True,
            }},
        }
    )  # fmt: skip
    assert spec.deploy.canary is not None and spec.deploy.canary.analysis is not None
    assert [w.type for w in spec.deploy.canary.analysis.webhooks] == [
        "pre-rollout", "rollout", "pre-promotion",
    ]  # fmt: skip
