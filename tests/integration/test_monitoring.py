"""What contrib/ gives an operator, checked against the real thing: the Prometheus alert rules
(``promtool check rules`` and their unit tests, ``promtool test rules``), one alert seen firing
in a real Prometheus that scrapes a real server, and the Grafana dashboard — a dashboard whose
every expression Prometheus accepts and whose every metric name a real scrape has, so that
neither the rules nor the dashboard can drift from ``api/metrics.py``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus import need, running_prometheus
from tests.servers import ServerProcess, free_port, wait_for, warren

pytestmark = pytest.mark.integration

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "alerts.yml"
RULES_TEST = CONTRIB / "prometheus" / "alerts_test.yml"
DASHBOARD = CONTRIB / "grafana" / "warren.json"

# Grafana's variables, as a query against Prometheus needs them filled in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h",
                     "$service": ".*"}  # fmt: skip


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool = need("promtool")
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TEST)]):
        done = subprocess.run(
            [promtool, *command], capture_output=True, text=True, timeout=60
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    names = {rule["alert"] for group in _rules()["groups"] for rule in group["rules"]}
    tested = {
        case["alertname"] for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    }  # fmt: skip
    assert names == tested, "every alert has its unit test"
    assert {
        "WarrenDeploymentPausedTooLong", "WarrenDeploymentFailed", "WarrenDeploymentRolledBack",
        "WarrenNodeDown", "WarrenAnalysisFailing",
    } <= names  # fmt: skip
    for group in _rules()["groups"]:
        for rule in group["rules"]:
            assert "for" in rule and rule["labels"]["severity"], rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "warren"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    titles = {p["title"] for p in panels}
    assert {"Services by phase", "Rollout progress", "Ready tasks vs desired", "Latency p95",
            "5xx ratio by revision", "Nodes"} <= titles  # fmt: skip


@pytest.fixture
def web(server: ServerProcess) -> int:
    """Service ``web`` (the demo app, 2 replicas) with one deployment that succeeded, and a
    few requests through the ingress: every metric family has its series. Its port."""
    port = free_port()
    created = warren(
        server, "service", "create", "web", "--command", "python -m warren.demo.app",
        "--env", "VERSION=v1", "--replicas", "2", "--publish", str(port),
        "--health-http", "/healthz", "--health-interval", "200ms", "--monitor", "0s",
        "--drain-timeout", "1s", "--stop-grace", "2s",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    updated = warren(server, "service", "update", "web", "--env", "VERSION=v2")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    for _ in range(5):
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    return port


def test_the_rules_and_the_dashboard_use_only_what_warren_exports(
    server: ServerProcess, web: int, tmp_path: Path
) -> None:
    exported = _exported(httpx.get(f"{server.addr}/metrics", timeout=5).text)
    expressions = _dashboard_expressions() + [
        rule["expr"] for group in _rules()["groups"] for rule in group["rules"]
    ]
    for expr in expressions:
        used = set(re.findall(r"\bwarren_[a-z0-9_]+", expr))
        assert used, f"no Warren metric in {expr!r}"
        assert used <= exported, f"not exported: {sorted(used - exported)} in {expr!r}"
    # Each expression is PromQL that Prometheus accepts (Grafana's variables filled in).
    with running_prometheus(tmp_path, [f"127.0.0.1:{server.api_port}"]) as prometheus:
        for expr in expressions:
            query = _filled(expr)
            answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
            assert answer.status_code == 200, f"{query!r}: {answer.text}"


def test_a_failed_release_fires_warren_deployment_failed_in_a_real_prometheus(
    server: ServerProcess, web: int, tmp_path: Path
) -> None:
    """alerts.yml as it is: WarrenDeploymentFailed and WarrenDeploymentRolledBack have
    ``for: 0s`` (the phase is sticky; a rollback is an event), so a 1 s scrape and evaluation
    interval needs no shortened copy of the rules."""
    with running_prometheus(
        tmp_path, [f"127.0.0.1:{server.api_port}"], rule_files=[RULES], interval="1s"
    ) as prometheus:
        loaded = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in loaded) == sum(
            len(g["rules"]) for g in _rules()["groups"]
        )
        # The rollback counter is there at 0 before the release fails: its increase is seen.
        wait_for(
            lambda: _query(prometheus, 'warren_deploy_rollback_total{service="web"}') == ["0"],
            30, "Prometheus to see the rollback counter at 0",
        )  # fmt: skip
        assert _firing(prometheus) == set()

        bad = warren(server, "service", "update", "web", "--env", "UNHEALTHY=1")
        assert bad.returncode == 1 and "rolled_back" in bad.stderr, bad.stdout + bad.stderr
        metrics = httpx.get(f"{server.addr}/metrics", timeout=5).text
        assert 'warren_deploy_phase{phase="failed",service="web"} 1.0' in metrics

        firing = wait_for(
            lambda: (f := _firing(prometheus)) >= {"WarrenDeploymentFailed",
                                                  "WarrenDeploymentRolledBack"} and f,
            60, "WarrenDeploymentFailed and WarrenDeploymentRolledBack to fire",
        )  # fmt: skip
        assert firing <= {"WarrenDeploymentFailed", "WarrenDeploymentRolledBack"}, firing
        alert = next(
            a for a in _alerts(prometheus) if a["labels"]["alertname"] == "WarrenDeploymentFailed"
        )
        assert alert["labels"]["service"] == "web" and alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"] == "The newest release of web failed"


def _rules() -> Any:
    return yaml.safe_load(RULES.read_text())


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), *\w+\)", variable["definition"])
        assert match, variable["definition"]
        found.append(match.group(1))
    return found


def _filled(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _exported(text: str) -> set[str]:
    """Every sample name of a scrape (``_total``, ``_bucket`` … included)."""
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def _query(prometheus: str, query: str) -> list[str]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
    return [r["value"][1] for r in answer.json()["data"]["result"]]


def _alerts(prometheus: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"])


def _firing(prometheus: str) -> set[str]:
    return {a["labels"]["alertname"] for a in _alerts(prometheus) if a["state"] == "firing"}
