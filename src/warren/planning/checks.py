"""External checks of a release: webhooks and provider metrics (Prometheus). Pure.

A planner that reaches a point where such checks decide — a canary's analysis window closing,
the first weight, promotion — asks for them by returning them in ``Step.checks``; the
deployment controller runs them (``control/checking.py``) and syncs again, and the planner finds
their results in ``RolloutView.checks`` and decides. A check is identified by its deployment,
stage, round (the analysis window it belongs to) and name, so that it runs once however often
the planner asks; a manager that restarts before the answer runs it again (webhooks should be
idempotent, as in Flagger and Argo Rollouts).

Outcomes: a webhook passes on a 2xx answer and fails on anything else or a timeout; a metric
passes when its value meets ``successCondition``, fails when it does not, and is inconclusive
when there is no value (empty result, NaN, provider unreachable) — never a silent pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..domain.deployments import Deployment
from ..domain.specs import Analysis, MetricCheck, parse_condition
from .analysis import Outcome, Verdict

__all__ = [
    "Check",
    "CheckKey",
    "CheckResult",
    "combine",
    "evaluate",
    "gather",
    "hook_checks",
    "render",
    "window_checks",
]

CheckKey = tuple[str, str, float, str]
"""(deployment id, stage, round, name)."""


@dataclass(frozen=True, slots=True)
class Check:
    deployment: str
    stage: str
    """``pre-rollout``, ``rollout``, ``pre-promotion``, ``post-rollout`` (webhooks) or
    ``metric``."""
    round: float
    """The start of the analysis window a ``rollout`` webhook or a metric belongs to; 0 else."""
    name: str
    url: str = field(default="", compare=False)
    """The webhook's URL, or the Prometheus server's address."""
    query: str = field(default="", compare=False)
    """A metric's PromQL, placeholders filled in."""
    condition: str = field(default="", compare=False)
    timeout: float = field(default=5.0, compare=False)
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """A webhook's JSON body."""

    @property
    def key(self) -> CheckKey:
        return (self.deployment, self.stage, self.round, self.name)

    @property
    def label(self) -> str:
        kind = "metric" if self.stage == "metric" else f"{self.stage} webhook"
        return f"{kind} {self.name}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    label: str
    """``metric errors``, ``pre-promotion webhook smoke``."""
    outcome: Outcome
    reason: str
    """One line: ``pre-promotion webhook smoke: HTTP 503``, ``metric errors = 0.012 (result <
    0.05)``."""
    value: float | None = None


def render(text: str, d: Deployment, interval: float) -> str:
    """Fill in ``{{service}}``, ``{{revision}}`` (the new one), ``{{stable}}`` and
    ``{{interval}}`` (whole seconds, PromQL style: ``10s``)."""
    values = {
        "service": d.service,
        "revision": str(d.to_revision),
        "stable": str(d.from_revision or ""),
        "interval": f"{max(1, round(interval))}s",
    }
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value).replace("{{ " + name + " }}", value)
    return text


def _payload(d: Deployment, stage: str, name: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "type": stage,
        "service": d.service,
        "deployment": d.id,
        "strategy": str(d.strategy),
        "fromRevision": d.from_revision,
        "toRevision": d.to_revision,
        "phase": str(d.phase),
        "weights": {str(rev): w for rev, w in d.weights},
        "metadata": dict(metadata),
    }


def hook_checks(
    d: Deployment, analysis: Analysis | None, stage: str, round: float = 0.0
) -> tuple[Check, ...]:
    """The webhooks of one stage; ``round``: the analysis window of a ``rollout`` webhook."""
    if analysis is None:
        return ()
    return tuple(
        Check(
            d.id,
            stage,
            round,
            w.name,
            url=w.url,
            timeout=w.timeout,
            payload=_payload(d, stage, w.name, w.metadata),
        )
        for w in analysis.webhooks
        if w.type == stage
    )


def window_checks(d: Deployment, analysis: Analysis, round: float) -> tuple[Check, ...]:
    """What one analysis window needs besides the ingress's figures: the ``rollout`` webhooks
    and the provider metrics."""
    metrics = tuple(_metric_check(d, analysis, m, round) for m in analysis.metrics)
    return hook_checks(d, analysis, "rollout", round) + metrics


def _metric_check(d: Deployment, analysis: Analysis, m: MetricCheck, round: float) -> Check:
    return Check(
        d.id, "metric", round, m.name, url=m.prometheus.address,
        query=render(m.prometheus.query, d, analysis.interval), condition=m.success_condition,
        timeout=min(analysis.interval, 10.0),
    )  # fmt: skip


def gather(
    results: Mapping[CheckKey, CheckResult], checks: Sequence[Check]
) -> tuple[CheckResult, ...] | None:
    """The results of ``checks``, in order; None while any is still unanswered."""
    found = tuple(results.get(c.key) for c in checks)
    if any(r is None for r in found):
        return None
    return found  # type: ignore[return-value]


_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def evaluate(check: Check, value: float | None, problem: str = "") -> CheckResult:
    """A metric's value against its success condition."""
    if value is None or math.isnan(value):
        why = problem or "no value (an empty result or NaN)"
        return CheckResult(check.label, Outcome.INCONCLUSIVE, f"{check.label}: {why}")
    op, limit = parse_condition(check.condition)
    outcome = Outcome.PASS if _COMPARE[op](value, limit) else Outcome.FAIL
    verb = "meets" if outcome == Outcome.PASS else "fails"
    return CheckResult(
        check.label, outcome, f"{check.label} = {value:g} {verb} `{check.condition}`", value
    )


def combine(verdict: Verdict, results: Iterable[CheckResult]) -> Verdict:
    """One window's verdict from the ingress's figures and the external checks: any failure
    fails it, else anything inconclusive makes it inconclusive, else it passes."""
    results = tuple(results)
    if not results:
        return verdict
    measured = dict(verdict.measured)
    measured["checks"] = {r.label: _shown(r) for r in results}
    for outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE):
        if verdict.outcome == outcome:
            return Verdict(outcome, verdict.reason, measured)
        bad = [r for r in results if r.outcome == outcome]
        if bad:
            return Verdict(outcome, "; ".join(r.reason for r in bad), measured)
    passed = "; ".join(r.reason for r in results)
    return Verdict(Outcome.PASS, f"{verdict.reason}; {passed}", measured)


def _shown(r: CheckResult) -> Any:
    return r.value if r.value is not None else str(r.outcome)
