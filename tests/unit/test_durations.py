"""Durations: parse_duration / format_duration tables and round-trip properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from warren.domain.durations import format_duration, parse_duration
from warren.domain.errors import ValidationError

# Whole milliseconds up to ~28 hours: the precision users write.
millis = st.integers(min_value=0, max_value=100_000_000)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1h0m1s", 3601.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("0ms", 0.0),
        ("2.5", 2.5),
        ("  10s  ", 10.0),
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
    ],
)
def test_parse_good(text: str | float, seconds: float) -> None:
    result = parse_duration(text)
    assert isinstance(result, float)
    assert result == seconds


@pytest.mark.parametrize(
    "value",
    [
        "5x",
        "-1s",
        "",
        "   ",
        "s",
        "ms",
        "10 s",
        "1h30",
        "5m-1s",
        "1s 2s",
        "nan",
        "inf",
        True,
        False,
        float("nan"),
        float("inf"),
        -1,
        -0.5,
        # Longer than a float holds (an API body answered 500), or than any deadline means.
        "9" * 400 + "m",
        "9" * 400 + ".5m",
        "1" + "0" * 400,
        "679027728743166582747m622075748.29h",
        1e300,
    ],
)
def test_parse_bad(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration(value)  # type: ignore[arg-type]
    assert "duration" in str(info.value)
    assert repr(value) in str(info.value)  # the message quotes what the user wrote


def test_parse_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration("5x", "spec.stopGrace")
    assert info.value.field == "spec.stopGrace"
    assert str(info.value).startswith("spec.stopGrace: expected a duration")
    assert info.value.reason.startswith("expected a duration")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.001, "1ms"),
        (0.25, "250ms"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (10, "10s"),
        (59.999, "59.999s"),
        (61.5, "1m1.5s"),
        (90, "1m30s"),
        (3600, "1h"),
        (3661, "1h1m1s"),
        (5400, "1h30m"),
        (86400, "24h"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=300, deadline=None)
@given(millis)
def test_format_then_parse_round_trips_millisecond_values(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10_000_000))
def test_format_then_parse_is_exact_for_whole_seconds(secs: int) -> None:
    assert parse_duration(format_duration(secs)) == secs


@settings(max_examples=300, deadline=None)
@given(millis)
def test_parsed_values_are_fixed_points(ms: int) -> None:
    # What a user wrote, once parsed, shows and re-parses to the very same float: the stored
    # spec keeps "9ms" as text (base._to_text relies on this).
    seconds = parse_duration(format_duration(ms / 1000))
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=300, deadline=None)
@given(millis)
@example(9)
def test_format_then_parse_round_trips_exactly(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False))
@example(60.00001)
def test_format_output_always_parses(seconds: float) -> None:
    assert math.isclose(
        parse_duration(format_duration(seconds)), seconds, rel_tol=1e-6, abs_tol=1e-3
    )
