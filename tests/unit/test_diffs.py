"""The changes between two documents (``domain.diffs``) and between two specs, as ``deploy
plan`` and ``apply --dry-run`` show them."""

from __future__ import annotations

from typing import Any

import pytest

from warren.domain.diffs import Change, diff
from warren.domain.specs import ServiceSpec, patch_spec, spec_changes


def lines(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [str(c) for c in diff(old, new)]


def test_a_changed_and_an_added_key_are_one_line_each() -> None:
    old = {"env": {"VERSION": "v1"}}
    new = {"env": {"VERSION": "v2", "DEBUG": "1"}}
    assert lines(old, new) == ['~ env.VERSION: "v1" => "v2"', '+ env.DEBUG: "1"']


def test_removed_keys_come_last_and_nothing_changed_is_nothing() -> None:
    old = {"a": 1, "gone": {"x": True}, "b": "s"}
    new = {"b": "t", "a": 1}
    assert lines(old, new) == ['~ b: "s" => "t"', "- gone.x: true"]
    assert diff(old, old) == ()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A mapping added or removed whole: its leaves.
        ({}, {"hc": {"http": {"path": "/h"}, "retries": 3}},
         ['+ hc.http.path: "/h"', "+ hc.retries: 3"]),
        ({"labels": {}}, {"labels": {"tier": "front"}}, ['+ labels.tier: "front"']),
        ({"labels": {}}, {}, ["- labels: {}"]),
        # Lists as a whole: one step inserted is one line, not every later index.
        ({"steps": [{"setWeight": 10}, {"pause": {}}]},
         {"steps": [{"setWeight": 5}, {"setWeight": 10}, {"pause": {}}]},
         ['~ steps: [{"setWeight": 10}, {"pause": {}}] => '
          '[{"setWeight": 5}, {"setWeight": 10}, {"pause": {}}]']),
        # A value that changes type.
        ({"pause": "30s"}, {"pause": {}}, ['~ pause: "30s" => {}']),
        ({"n": 1}, {"n": "1"}, ['~ n: 1 => "1"']),
    ],
)  # fmt: skip
def test_shapes(old: dict[str, Any], new: dict[str, Any], expected: list[str]) -> None:
    assert lines(old, new) == expected


def test_a_change_goes_over_the_wire_and_back() -> None:
    change = Change("deploy.updateConfig.parallelism", 1, 2, new_tasks=False)
    wire = change.to_wire()
    assert wire == {
        "path": "deploy.updateConfig.parallelism",
        "old": 1,
        "new": 2,
        "newTasks": False,
    }
    assert Change.from_wire(wire) == change
    assert (Change("a", None, 1).sign, Change("a", 1, None).sign, change.sign) == ("+", "-", "~")


WEB = ServiceSpec.model_validate(
    {"name": "web", "command": ["python", "-m", "app"], "env": {"VERSION": "v1"}}
)


def test_spec_changes_mark_what_needs_new_tasks() -> None:
    new = patch_spec(
        WEB,
        {
            "env": {"VERSION": "v2", "DEBUG": "1"},
            "replicas": 3,
            "deploy": {"updateConfig": {"parallelism": 2}},
        },
    )
    shown = [(str(c), c.new_tasks) for c in spec_changes(WEB, new)]
    assert shown == [
        ("~ replicas: 1 => 3", False),
        ('~ env.VERSION: "v1" => "v2"', True),
        ('+ env.DEBUG: "1"', True),
        ("~ deploy.updateConfig.parallelism: 1 => 2", False),
    ]


def test_a_command_switched_to_an_image_is_one_removed_and_one_added() -> None:
    new = patch_spec(WEB, {"image": "nginx:1.27"})
    assert [str(c) for c in spec_changes(WEB, new)] == [
        '+ image: "nginx:1.27"',
        '- command: ["python", "-m", "app"]',
    ]


def test_the_cli_shows_an_unchanged_service_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from warren.cli.deploy import print_changes

    plan = {"strategy": "none", "fromRevision": 3, "toRevision": None, "changes": []}
    print_changes("web", plan)
    long = Change("command", ["python", "-m", "app"], ["python", "-m", "app", "--debug"] * 9)
    print_changes(
        "web", {**plan, "toRevision": 4, "strategy": "canary", "changes": [long.to_wire()]}
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '  service "web": unchanged (revision 3)'
    assert out[1] == '+/- service "web" (revision 3 → 4, a rollout)'
    assert out[2] == f"  {long}"  # one line however long, brackets and all
