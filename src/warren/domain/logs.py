"""A task's log lines and their times: the time each line was read from the task, kept with it,
so that the lines of several tasks interleave in the order they were written and ``--since``
can pick the recent ones.

A time is one fixed-width text, ISO-8601 in UTC with nanoseconds, as ``docker logs
--timestamps`` prints it: ``2024-05-01T12:00:00.123456789Z``. Fixed width makes the text order
the time order, so times are compared, merged and filtered as they are, never parsed back; a log
file stores each line as ``TIME TEXT`` (see ``agent/drivers/logwriter.py``). A line written
before Warren kept times has none: its time is ``""``, which sorts before every time.

Pure: no clock reads (``now`` comes in), no I/O.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from .durations import parse_duration
from .errors import ValidationError

__all__ = [
    "STAMP_LENGTH",
    "LogLine",
    "merge_by_time",
    "parse_since",
    "parse_stamped",
    "parse_time",
    "stamp",
    "stamp_of",
]

T = TypeVar("T")

STAMP_LENGTH = len("2024-05-01T12:00:00.123456789Z")
"""30: the width of every time."""

_NS = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d\d:\d\d)"
)


@dataclass(frozen=True, slots=True)
class LogLine:
    time: str
    """When the line was read from the task (a fixed-width UTC time); ``""``: not known."""
    text: str


def stamp(ns: int) -> str:
    """Nanoseconds since the epoch → ``2024-05-01T12:00:00.123456789Z``."""
    seconds, fraction = divmod(ns, _NS)
    whole = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{fraction:09d}Z"


def stamp_of(seconds: float) -> str:
    """Seconds since the epoch (a clock's ``now()``) → its time text."""
    return stamp(round(seconds * _NS))


def parse_time(text: str) -> str | None:
    """An RFC 3339 time (any fraction, ``Z`` or an offset, as engines and users write it) → its
    fixed-width UTC text; None when it is not one. Digits past nanoseconds are dropped."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        return None
    date, clock, fraction, zone = m.groups()
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        seconds = int(datetime.fromisoformat(f"{date}T{clock}{offset}").timestamp())
    except ValueError:  # month 13, hour 25 …
        return None
    return stamp(seconds * _NS + int((fraction or "").ljust(9, "0")))


def parse_since(value: str, now: float) -> str:
    """``--since``: a duration back from ``now`` (``10m``, ``1h30m``) or an RFC 3339 time
    (``2024-05-01T12:00:00Z``) → the time text lines are kept from (inclusive)."""
    found = parse_time(value)
    if found is not None:
        return found
    try:
        return stamp_of(now - parse_duration(value))
    except ValidationError:
        raise ValidationError(
            f"expected a duration like 10m or a time like 2024-05-01T12:00:00Z, got {value!r}",
            "since",
        ) from None


def parse_stamped(raw: str) -> LogLine:
    """One line of a log file, ``TIME TEXT`` → its LogLine; a line without a time (written
    before Warren kept them) is all text."""
    if (
        len(raw) >= STAMP_LENGTH
        and raw[STAMP_LENGTH - 1] == "Z"
        and raw[10] == "T"
        and raw[19] == "."
        and (len(raw) == STAMP_LENGTH or raw[STAMP_LENGTH] == " ")
    ):
        return LogLine(raw[:STAMP_LENGTH], raw[STAMP_LENGTH + 1 :])
    return LogLine("", raw)


def merge_by_time(streams: Sequence[Iterable[tuple[str, T]]]) -> list[T]:
    """Several streams of ``(time, item)``, each in the order it was written, merged into one
    in time order. Equal times keep the order of ``streams``; a line with no time (``""``), or
    one whose time went back (the clock was set back), goes with the line before it in its
    stream, so a stream's own order is never broken."""
    merged = heapq.merge(*map(_carried, streams), key=lambda pair: pair[0])
    return [item for _, item in merged]


def _carried(stream: Iterable[tuple[str, T]]) -> Iterator[tuple[str, T]]:
    last = ""
    for time, item in stream:
        last = max(last, time)
        yield last, item
