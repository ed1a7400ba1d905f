"""Deployment windows and freezes (``domain.windows``): when a release may start, and the one
line that says when it may when it may not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from warren.domain.base import parse_model
from warren.domain.errors import ValidationError
from warren.domain.windows import DeployWindow, Freeze, next_opening, release_refusal


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


OFFICE = DeployWindow(days=("mon-fri",), start="09:00", end="16:00", timezone="Europe/Berlin")


def test_days_are_named_and_ranges_spelled_out() -> None:
    assert OFFICE.days == ("mon", "tue", "wed", "thu", "fri")
    assert DeployWindow(days=["fri-mon"]).days == ("mon", "fri", "sat", "sun")
    assert DeployWindow().days == ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.mark.parametrize(
    ("field", "value"),
    [("days", ["funday"]), ("days", []), ("start", "9:00"), ("end", "25:00"),
     ("timezone", "Mars/Olympus")],
)  # fmt: skip
def test_a_bad_window_is_one_line_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_model(DeployWindow, {field: value})
    assert info.value.field == field


def test_a_window_is_open_in_its_own_time_zone() -> None:
    # Monday 2026-12-07: 09:00 in Berlin (winter, UTC+1) is 08:00 UTC.
    assert next_opening([OFFICE], at("2026-12-07T08:30:00")) == at("2026-12-07T08:30:00")
    assert next_opening([OFFICE], at("2026-12-07T07:30:00")) == at("2026-12-07T08:00:00")
    # Friday after 16:00 Berlin: the next opens on Monday.
    assert next_opening([OFFICE], at("2026-12-11T15:30:00")) == at("2026-12-14T08:00:00")
    assert next_opening([], at("2026-12-11T15:30:00")) is None


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    night = DeployWindow(days=("sat",), start="22:00", end="02:00")
    assert next_opening([night], at("2026-12-13T01:00:00")) == at("2026-12-13T01:00:00")  # Sun
    assert next_opening([night], at("2026-12-13T03:00:00")) == at("2026-12-19T22:00:00")


def test_a_freeze_holds_releases_of_its_service_or_of_every_one_until_its_end() -> None:
    now = at("2026-12-07T10:00:00")
    web = Freeze(service="web", until=at("2026-12-08T00:00:00"), reason="black friday")
    said = release_refusal("web", [], [web], now)
    assert said is not None
    assert "frozen until 2026-12-08T00:00:00Z (black friday)" in said
    assert "--override" in said
    assert release_refusal("api", [], [web], now) is None
    assert release_refusal("web", [], [web], at("2026-12-08T00:00:00")) is None
    everything = Freeze(until=at("2026-12-09T00:00:00"), reason="audit")
    assert "every service" in (release_refusal("api", [], [everything], now) or "")


def test_outside_its_windows_a_release_is_told_when_the_next_opens() -> None:
    said = release_refusal("web", [OFFICE], [], at("2026-12-11T15:30:00"))
    assert said == (
        "outside the deployment windows of web (mon-fri 09:00-16:00 Europe/Berlin): the next "
        "opens at 2026-12-14T08:00:00Z; --override goes anyway"
    )
    assert release_refusal("web", [OFFICE], [], at("2026-12-11T10:00:00")) is None
