"""Notifications, the pure part (``planning.notifications``): which milestones are due to whom,
the bodies (JSON, Slack), retry delays, and what logs may show of a URL."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_milestones import T0, E, started
from warren.domain import transitions
from warren.domain.deployments import Deployment, DeploymentKind, Reason
from warren.domain.notifications import Delivery, NotifyFormat
from warren.domain.specs import ServiceSpec
from warren.planning.notifications import (
    Receiver,
    RetryPolicy,
    body,
    due_receivers,
    iso_time,
    next_due,
    redact,
    retryable,
    service_receivers,
    summary,
    told_everything,
)

# ── who is told what ────────────────────────────────────────────────────────────────────────


def test_milestones_are_due_after_the_cursor_and_only_those_wanted() -> None:
    d = transitions.pause(started(), T0 + 1, Reason.MANUAL_PAUSE, "paused")
    d = transitions.resume(d, T0 + 2)
    everything = Receiver("http://a.example/hook")
    pauses = Receiver("http://b.example/hook", events=frozenset({E.PAUSED}))
    assert next_due(d, everything, 0).number == 1  # type: ignore[union-attr]
    assert next_due(d, everything, 2).event == E.RESUMED  # type: ignore[union-attr]
    assert next_due(d, everything, 3) is None
    assert next_due(d, pauses, 0).event == E.PAUSED  # type: ignore[union-attr]
    assert next_due(d, pauses, 2) is None  # the resume is not wanted
    told = Delivery(deployment=d.id, sent={everything.key: 3, pauses.key: 2})
    assert due_receivers(d, told, [everything, pauses]) == []
    assert not told_everything(d, told, [everything, pauses])  # still active
    ended = transitions.finish(d, T0 + 3, Reason.COMPLETE, "done")
    assert due_receivers(ended, told, [everything, pauses]) == [everything]
    all_told = Delivery(deployment=d.id, sent={everything.key: 4, pauses.key: 2})
    assert told_everything(ended, all_told, [pauses, everything])


def test_the_same_url_configured_twice_is_one_receiver_wanting_what_both_want() -> None:
    spec = ServiceSpec.model_validate(
        {
            "name": "web", "command": ["app"],
            "deploy": {"notify": [
                {"url": "http://hooks.example/a", "on": ["failed"]},
                {"url": "http://hooks.example/a", "on": ["succeeded"]},
                {"url": "http://hooks.example/a", "format": "slack", "on": ["paused"]},
            ]},
        }
    )  # fmt: skip
    server = [Receiver("http://hooks.example/all")]
    found = service_receivers(server, spec)
    assert [(r.url, r.format, r.events) for r in found] == [
        ("http://hooks.example/all", NotifyFormat.JSON, None),
        ("http://hooks.example/a", NotifyFormat.JSON, frozenset({E.FAILED, E.SUCCEEDED})),
        ("http://hooks.example/a", NotifyFormat.SLACK, frozenset({E.PAUSED})),
    ]
    assert found[1].source == "service web"
    # The server's receiver wants everything: the service asking for less changes nothing.
    only_failed = spec.deploy.model_copy(update={"notify": spec.deploy.notify[:1]})
    both = service_receivers(
        [Receiver("http://hooks.example/a")], spec.model_copy(update={"deploy": only_failed})
    )
    assert [r.events for r in both] == [None]
    assert service_receivers(server, None) == server  # a removed service: the server's only


# ── what is sent ────────────────────────────────────────────────────────────────────────────


def analysed() -> Deployment:
    """A canary judged twice, failed on the second window."""
    d = started(strategy="canary")
    d = d.decide(T0 + 10, Reason.ANALYSIS_PASSED, "window 1", measured={"successRate": 1.0})
    d = d.decide(T0 + 20, Reason.ANALYSIS_FAILED, "window 2", measured={"successRate": 0.5})
    return transitions.fail_and_revert(d, T0 + 20, Reason.ANALYSIS_FAILED, "success rate 50%", 1)


def test_the_json_body_says_what_happened_with_the_figures_of_the_time() -> None:
    d = analysed()
    sent = body(d, d.milestones[-1], NotifyFormat.JSON, ready=0, desired=3)
    assert sent == {
        "service": "web", "deployment": "web-2", "kind": "update", "strategy": "canary",
        "event": "failed", "phase": "failed", "reason": "AnalysisFailed",
        "fromRevision": 1, "toRevision": 2, "message": "success rate 50%",
        "time": "2027-01-15T08:00:20.000Z",
        "figures": {
            "readyTasks": 0, "desiredTasks": 3,
            "analysis": {"successRate": 0.5, "verdict": "AnalysisFailed"},
        },
    }  # fmt: skip
    json.dumps(sent)  # JSON as it is
    # The start came before any window: no analysis figures then.
    first = body(d, d.milestones[0], NotifyFormat.JSON, ready=None, desired=None)
    assert "figures" not in first and first["event"] == "started"


def test_the_slack_body_is_one_line_of_text() -> None:
    d = analysed()
    d = d.checked(
        milestones=(d.milestones[0], d.milestones[1].model_copy(update={"message": "a\nb"}))
    )
    sent = body(d, d.milestones[-1], NotifyFormat.SLACK, ready=0, desired=3)
    assert sent == {
        "text": "web: canary update web-2 (revision 1 → 2) failed — a b (0/3 tasks ready)"
    }
    rollback = started(id="web-3", kind=DeploymentKind.ROLLBACK, from_revision=2, to_revision=1)
    assert summary(rollback, rollback.milestones[0]) == (
        "web: rollback web-3 (revision 2 → 1) started — update: revision 1 → 2"
    )


def test_retries_double_up_to_a_cap_and_only_where_an_attempt_may_do_better() -> None:
    policy = RetryPolicy(attempts=6, first_delay=1.0, max_delay=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert [s for s in (None, 200, 400, 404, 408, 425, 429, 500, 503) if retryable(s)] == [
        None, 408, 425, 429, 500, 503,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"),
        ("http://user:secret@127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
        ("http://example.com", "http://example.com/"),
        ("http://[::1]:9000/?k=v", "http://[::1]:9000/…"),
    ],
)
def test_logs_show_a_receiver_by_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert Receiver(url).label == f"{shown} (of the server)"


def test_times_are_iso_8601_utc() -> None:
    assert iso_time(0.25) == "1970-01-01T00:00:00.250Z"
