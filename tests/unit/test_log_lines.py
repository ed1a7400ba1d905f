"""Log lines and their times: the fixed-width time text, --since, lines merged by time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren.domain.errors import ValidationError
from warren.domain.logs import (
    STAMP_LENGTH,
    LogLine,
    merge_by_time,
    parse_since,
    parse_stamped,
    parse_time,
    stamp,
    stamp_of,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def test_a_time_is_docker_s_fixed_width_utc_text() -> None:
    assert stamp(1_714_564_800_123_456_789) == "2024-05-01T12:00:00.123456789Z"
    assert stamp_of(NOW) == "2024-05-01T12:00:00.000000000Z"
    assert len(stamp(0)) == STAMP_LENGTH


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_the_text_order_is_the_time_order(a: int, b: int) -> None:
    assert (stamp(a) < stamp(b)) == (a < b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000000000Z"),
        ("2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00.500000000Z"),
        ("2024-05-01T14:00:00.123456789+02:00", "2024-05-01T12:00:00.123456789Z"),
        ("2024-05-01 12:00:00.1234567891234z", "2024-05-01T12:00:00.123456789Z"),
        ("2024-13-01T12:00:00Z", None),
        ("2024-05-01T12:00:00", None),  # no zone: which one?
        ("abc", None),
    ],
)
def test_rfc3339_times_as_engines_and_users_write_them(text: str, expected: str | None) -> None:
    assert parse_time(text) == expected


def test_since_is_a_duration_back_from_now_or_a_time() -> None:
    assert parse_since("10m", NOW) == "2024-05-01T11:50:00.000000000Z"
    assert parse_since("1h30m", NOW) == "2024-05-01T10:30:00.000000000Z"
    assert parse_since("2024-05-01T11:00:00Z", NOW) == "2024-05-01T11:00:00.000000000Z"


@pytest.mark.parametrize("bad", ["abc", "-5m", "10 minutes", "", "2024-05-01"])
def test_a_bad_since_names_the_flag_and_the_forms(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_since(bad, NOW)
    assert info.value.field == "since"
    assert "10m" in info.value.reason and "2024-05-01T12:00:00Z" in info.value.reason


def test_a_stored_line_is_its_time_then_its_text() -> None:
    time = "2024-05-01T12:00:00.123456789Z"
    assert parse_stamped(f"{time} hello world") == LogLine(time, "hello world")
    assert parse_stamped(f"{time} ") == LogLine(time, "")
    assert parse_stamped(time) == LogLine(time, "")
    # Written before Warren kept times (or a line that only looks alike): all text.
    assert parse_stamped("hello") == LogLine("", "hello")
    assert parse_stamped(f"{time}x") == LogLine("", f"{time}x")


def test_lines_merge_by_time_and_keep_each_stream_s_order() -> None:
    a = [("2024-01-01T00:00:01.000000000Z", "a1"), ("2024-01-01T00:00:03.000000000Z", "a3")]
    b = [("2024-01-01T00:00:02.000000000Z", "b2"), ("2024-01-01T00:00:03.000000000Z", "b3")]
    assert merge_by_time([a, b]) == ["a1", "b2", "a3", "b3"]
    # No time: with the line before it. A clock set back: never before its predecessor.
    c = [("", "c0"), ("2024-01-01T00:00:02.500000000Z", "c2"), ("", "c2+"),
         ("2024-01-01T00:00:00.000000000Z", "c-back")]  # fmt: skip
    assert merge_by_time([a, c]) == ["c0", "a1", "c2", "c2+", "c-back", "a3"]


@given(st.lists(st.lists(st.integers(0, 50)), max_size=4))
def test_a_merge_keeps_every_item_and_each_stream_s_order(times: list[list[int]]) -> None:
    streams = [
        [(stamp(t) if t % 7 else "", (i, n)) for n, t in enumerate(ts)]
        for i, ts in enumerate(times)
    ]
    merged = merge_by_time(streams)
    assert sorted(merged) == sorted(item for s in streams for _, item in s)
    for i, stream in enumerate(streams):
        assert [item for item in merged if item[0] == i] == [item for _, item in stream]
