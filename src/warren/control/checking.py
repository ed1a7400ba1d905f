"""Runs the external checks planners ask for (``planning/checks.py``): webhook calls and
Prometheus queries, each bounded by its timeout, in the background — a slow webhook never holds
up the deployment controller's other services. When a deployment's check answers, the
controller is told to sync that service again, and the planner finds the answer in its view.

Answers are kept per deployment until the deployment is forgotten (it ended, or another took
its place). They are a cache of I/O, not rollout progress: what a planner decides from them is
in the deployment's stored record, and a restarted manager simply asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping

import httpx

from ..planning.analysis import Outcome
from ..planning.checks import Check, CheckKey, CheckResult, evaluate

__all__ = ["CheckRunner"]

log = logging.getLogger("warren.control")

_BODY_SHOWN = 200


class CheckRunner:
    def __init__(self, on_answer: Callable[[str], None]) -> None:
        """``on_answer(deployment_id)`` is called whenever one of its checks has answered."""
        self._on_answer = on_answer
        self._results: dict[str, dict[CheckKey, CheckResult]] = {}
        self._running: dict[CheckKey, asyncio.Task[None]] = {}
        self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False)

    def results(self, deployment_id: str) -> Mapping[CheckKey, CheckResult]:
        return self._results.get(deployment_id, {})

    def ensure(self, checks: Iterable[Check]) -> None:
        """Start every check that has neither answered nor is running."""
        for check in checks:
            key = check.key
            if key in self._running or key in self._results.get(check.deployment, {}):
                continue
            task = asyncio.get_running_loop().create_task(self._run(check), name=check.label)
            self._running[key] = task

    def forget(self, deployment_id: str) -> None:
        self._results.pop(deployment_id, None)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.aclose()

    async def _run(self, check: Check) -> None:
        try:
            if check.stage == "metric":
                result = await self._query(check)
            else:
                result = await self._call(check)
            log.info("deployment %s: %s", check.deployment, result.reason)
            self._results.setdefault(check.deployment, {})[check.key] = result
        finally:
            self._running.pop(check.key, None)
        self._on_answer(check.deployment)

    async def _call(self, check: Check) -> CheckResult:
        """A webhook: POST the JSON payload; 2xx passes, anything else fails."""
        try:
            async with asyncio.timeout(check.timeout):
                response = await self._http.post(check.url, json=dict(check.payload))
        except TimeoutError:
            return CheckResult(
                check.label, Outcome.FAIL, f"{check.label}: no answer within {check.timeout:g}s"
            )
        except httpx.HTTPError as exc:
            return CheckResult(check.label, Outcome.FAIL, f"{check.label}: {_describe(exc)}")
        if 200 <= response.status_code < 300:
            status = f"{check.label}: HTTP {response.status_code}"
            return CheckResult(check.label, Outcome.PASS, status)
        body = response.text.strip().replace("\n", " ")[:_BODY_SHOWN]
        return CheckResult(
            check.label, Outcome.FAIL,
            f"{check.label}: HTTP {response.status_code}" + (f" {body}" if body else ""),
        )  # fmt: skip

    async def _query(self, check: Check) -> CheckResult:
        """A Prometheus instant query (``/api/v1/query``) that must return one number."""
        url = check.url.rstrip("/") + "/api/v1/query"
        try:
            async with asyncio.timeout(check.timeout):
                response = await self._http.get(url, params={"query": check.query})
            body = response.json()
        except TimeoutError:
            return evaluate(check, None, f"Prometheus gave no answer within {check.timeout:g}s")
        except (httpx.HTTPError, ValueError) as exc:
            return evaluate(check, None, f"Prometheus at {check.url}: {_describe(exc)}")
        value, problem = _one_number(body)
        return evaluate(check, value, problem)


def _one_number(body: object) -> tuple[float | None, str]:
    """The single number of a Prometheus query answer, or why there is none."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "") if isinstance(body, dict) else ""
        return None, f"Prometheus refused the query: {error or body!r}"[:_BODY_SHOWN]
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result") or []
    try:
        if kind == "scalar":
            return float(result[1]), ""
        if kind == "vector":
            if not result:
                return None, "the query returned no series (no data yet?)"
            if len(result) > 1:
                return None, f"the query returned {len(result)} series, not one number (sum them)"
            value = float(result[0]["value"][1])
            return (None, "the query's value is NaN") if math.isnan(value) else (value, "")
    except (TypeError, ValueError, IndexError, KeyError):
        pass
    return None, f"the query returned a {kind}, not one number"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, ValueError):
        return "the answer is not JSON"
    return str(exc) or type(exc).__name__
