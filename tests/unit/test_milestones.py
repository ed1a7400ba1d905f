"""Deployments record their milestones (start, each change of phase, resume, promotion) — what
notifications are made of — and a spec's ``deploy.notify``: validated at admission in one line,
and not part of the template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from warren.cli.documents import load_services
from warren.domain import transitions
from warren.domain.deployments import Deployment, DeploymentKind, Phase, Reason, RolloutConfig
from warren.domain.errors import ValidationError
from warren.domain.notifications import DeploymentEvent, NotifyFormat
from warren.domain.specs import service_from_document

T0 = 1_800_000_000.0
E = DeploymentEvent


def started(**fields: Any) -> Deployment:
    base: dict[str, Any] = {
        "id": "web-2", "service": "web", "from_revision": 1, "to_revision": 2, "replicas": 3,
        "config": RolloutConfig(), "started_at": T0, "updated_at": T0, "progress_at": T0,
    }  # fmt: skip
    d = Deployment(**{**base, **fields})
    return transitions.start(d, T0, Reason.NEW_REVISION, "update: revision 1 → 2")


def events(d: Deployment) -> list[DeploymentEvent]:
    return [m.event for m in d.milestones]


# ── milestones ──────────────────────────────────────────────────────────────────────────────


def test_a_deployment_records_its_start_and_each_change_of_phase_in_order() -> None:
    d = started()
    d = transitions.pause(d, T0 + 1, Reason.MANUAL_PAUSE, "paused by the operator")
    d = d.decide(T0 + 2, Reason.BATCH_STARTED, "batch 2")  # progress: no milestone
    d = transitions.resume(d, T0 + 3)
    d = transitions.finish(d, T0 + 4, Reason.COMPLETE, "rolled out 3 tasks")
    assert events(d) == [E.STARTED, E.PAUSED, E.RESUMED, E.SUCCEEDED]
    assert [m.number for m in d.milestones] == [1, 2, 3, 4]
    assert [m.phase for m in d.milestones] == [
        Phase.PROGRESSING, Phase.PAUSED, Phase.PROGRESSING, Phase.SUCCEEDED,
    ]  # fmt: skip
    last = d.milestones[-1]
    assert (last.time, last.reason, last.message) == (
        T0 + 4,
        "RolloutComplete",
        "rolled out 3 tasks",
    )
    assert last.decision == d.decision_count


def test_a_failed_release_that_rolls_back_is_rolling_back_then_rolled_back() -> None:
    d = transitions.roll_back(started(), T0 + 1, Reason.HEALTH_CHECK_FAILED, "unhealthy", "x")
    rollback = started(id="web-3", kind=DeploymentKind.ROLLBACK, from_revision=2, to_revision=1)
    linked = transitions.link_rollback(d, T0 + 2, rollback)  # was rolling back already
    ended = transitions.end_rollback(linked, T0 + 3, rollback.checked(phase=Phase.SUCCEEDED))
    assert events(ended) == [E.STARTED, E.ROLLING_BACK, E.ROLLED_BACK]


@pytest.mark.parametrize(
    ("move", "expected"),
    [
        (lambda d: transitions.roll_back(d, T0, Reason.ABORTED, "aborted", "x"), E.ABORTED),
        (lambda d: transitions.fail(d, T0, Reason.ABORTED, "aborted"), E.ABORTED),
        (lambda d: transitions.fail(d, T0, Reason.ANALYSIS_FAILED, "bad"), E.FAILED),
        (lambda d: transitions.await_promotion(d, T0, "waiting"), E.AWAITING_PROMOTION),
        (lambda d: transitions.promote(d, T0, True, "promote"), E.PROMOTED),
        (lambda d: transitions.supersede(d, T0, started(id="web-3")), E.SUPERSEDED),
        (lambda d: transitions.fail_and_revert(d, T0, Reason.ANALYSIS_FAILED, "bad", 1), E.FAILED),
        (
            lambda d: transitions.link_rollback(
                d, T0, started(id="web-3", kind=DeploymentKind.ROLLBACK, to_revision=1)
            ),
            E.ROLLING_BACK,
        ),
    ],
)
def test_each_transition_is_the_milestone_it_names(move: Any, expected: DeploymentEvent) -> None:
    assert events(move(started()))[-1] == expected


@pytest.mark.parametrize(
    ("rollback_ended", "expected"),
    [(Phase.SUCCEEDED, E.ROLLED_BACK), (Phase.SUPERSEDED, E.SUPERSEDED), (Phase.FAILED, E.FAILED)],
)
def test_a_release_ends_as_its_rollback_did(rollback_ended: Phase, expected: E) -> None:
    d = transitions.roll_back(started(), T0 + 1, Reason.TASK_FAILED, "bad", "x")
    rollback = started(id="web-3", kind=DeploymentKind.ROLLBACK).checked(phase=rollback_ended)
    assert events(transitions.end_rollback(d, T0 + 2, rollback))[-1] == expected


# ── the spec ────────────────────────────────────────────────────────────────────────────────


def document(notify: Any) -> dict[str, Any]:
    return {
        "apiVersion": "warren.io/v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"command": ["app"], "deploy": {"notify": notify}},
    }  # fmt: skip


def test_notify_is_read_from_yaml_with_every_event_when_on_is_left_out() -> None:
    spec = service_from_document(
        document(
            [
                {"url": "https://hooks.example/x"},
                {"url": "http://h/y", "on": ["paused"], "format": "slack"},
            ]
        )
    )
    first, second = spec.deploy.notify
    assert (first.on, first.format) == (None, NotifyFormat.JSON)
    assert (second.on, second.format) == ((E.PAUSED,), NotifyFormat.SLACK)


@pytest.mark.parametrize(
    ("notify", "problem"),
    [
        (
            [{"url": "http://h/x", "on": ["started", "sucess"]}],
            "spec.deploy.notify.0.on: unknown event 'sucess': expected one of started, paused, "
            "resumed, awaiting_promotion, promoted, succeeded, failed, rolling_back, "
            "rolled_back, aborted, superseded",
        ),
        (
            [{"url": "http://h/x", "on": []}],
            "spec.deploy.notify.0.on: name at least one event, or leave `on` out for every event",
        ),
        ([{"url": "ftp://h/x"}], "spec.deploy.notify.0.url: 'ftp://h/x' is not an http:// or "
                                 "https:// URL"),
        ([{"url": "http://h/x", "format": "teams"}],
         "spec.deploy.notify.0.format: Input should be 'json' or 'slack'"),
        ([{"url": "http://h/x", "events": ["paused"]}],
         "spec.deploy.notify.0.events: unknown field"),
    ],
)  # fmt: skip
def test_a_bad_receiver_is_refused_with_one_line(notify: Any, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        service_from_document(document(notify))
    assert str(caught.value) == problem
    assert "\n" not in str(caught.value)


def test_who_is_notified_is_not_part_of_the_template() -> None:
    """Changing the receivers starts no deployment; a rollback keeps the current ones."""
    old = service_from_document(document([]))
    new = service_from_document(document([{"url": "http://h/x"}]))
    assert old.same_template(new)
    back = old.keeping_settings_of(new.model_copy(update={"replicas": 5}))
    assert back.deploy == new.deploy and back.replicas == 5


def test_a_bare_on_key_in_a_yaml_file_is_read_as_on(tmp_path: Path) -> None:
    """YAML 1.1, which PyYAML reads, takes a bare ``on:`` key for the boolean true."""
    path = tmp_path / "web.yaml"
    path.write_text(
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: web}\n"
        "spec:\n  command: [app]\n  deploy:\n    notify:\n"
        "      - url: http://hooks.example/x\n        on: [failed, rolled_back]\n"
        "      - {url: http://hooks.example/y, on: [sucess]}\n"
    )
    with pytest.raises(ValidationError) as caught:
        load_services(path)
    assert str(caught.value).endswith("spec.deploy.notify.1.on: unknown event 'sucess': expected "
                                      "one of started, paused, resumed, awaiting_promotion, "
                                      "promoted, succeeded, failed, rolling_back, rolled_back, "
                                      "aborted, superseded")  # fmt: skip
    path.write_text(path.read_text().replace("sucess", "paused"))
    [spec] = load_services(path)
    assert [n.on for n in spec.deploy.notify] == [(E.FAILED, E.ROLLED_BACK), (E.PAUSED,)]
