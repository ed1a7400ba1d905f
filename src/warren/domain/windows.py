"""Deployment windows and freezes: when a release may start.

A service's ``deploy.windows`` are the times of the week its releases may start (none: any
time); a freeze — of one service, or of every service — refuses them until a given time, with
a reason. Both hold releases only: a rollback (asked for, automatic, or a fast-track back to the
stable revision) always runs, and so does a change that starts no release (replicas, rollout
settings). ``--override`` goes anyway, and says so in the release's decision log.

Pure: times are Unix seconds, the clock is the caller's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field, field_validator

from .base import Model

__all__ = ["DAYS", "DeployWindow", "Freeze", "next_opening", "release_refusal"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""The days of the week as a window names them, Monday first (``date.weekday()``)."""
_DAY_RANGE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?$")
_DAY_PATTERN = _DAY_RANGE.pattern
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


def _zones(schema: dict[str, Any]) -> None:
    """The schema states every time zone this machine knows (its database, or the
    ``tzdata`` package's)."""
    schema["enum"] = sorted(available_timezones() | {"UTC"})


def _day_names(value: Any) -> Any:
    """``[mon-fri, sun]`` → ``(mon, tue, wed, thu, fri, sun)``; a range may wrap (``fri-mon``)."""
    if not isinstance(value, list | tuple):
        return value
    found: set[int] = set()
    for item in value:
        m = _DAY_RANGE.match(str(item).strip().lower())
        if m is None:
            raise ValueError(f"{item!r} is not a day or a range of days (mon … sun, mon-fri)")
        first = DAYS.index(m.group(1))
        last = DAYS.index(m.group(2) or m.group(1))
        found.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return tuple(DAYS[d] for d in sorted(found))


class DeployWindow(Model):
    """Releases may start on ``days`` from ``start`` to ``end`` (``HH:MM``, in ``timezone``).
    An ``end`` at or before ``start`` runs past midnight into the next day."""

    days: tuple[str, ...] = Field(
        DAYS,
        min_length=1,
        json_schema_extra={"items": {"type": "string", "pattern": _DAY_RANGE.pattern}},
    )
    start: str = Field("00:00", pattern=_CLOCK)
    end: str = Field("24:00", pattern=_CLOCK)
    timezone: str = Field("UTC", json_schema_extra=_zones)

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> Any:
        return _day_names(v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a time zone (e.g. UTC, Europe/Berlin)") from None
        return v

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(DAYS.index(d) for d in self.days)

    def opens(self, on: date) -> tuple[datetime, datetime]:
        """The window that starts on ``on`` (a local date): its start and end, aware."""
        zone = ZoneInfo(self.timezone)
        begin = datetime.combine(on, _clock(self.start), zone)
        finish = datetime.combine(on, time(0), zone) + _since_midnight(self.end)
        if finish <= begin:
            finish += timedelta(days=1)
        return begin, finish

    def describe(self) -> str:
        return f"{_days_text(self.days)} {self.start}-{self.end} {self.timezone}"


class Freeze(Model):
    """No release of ``service`` (None: of any service) starts before ``until``."""

    service: str | None = None
    until: float
    reason: str = Field(min_length=1, max_length=500)
    created_at: float = 0.0

    def holds(self, service: str, now: float) -> bool:
        return now < self.until and self.service in (None, service)


def _clock(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    return time(0) if hours == 24 else time(hours, minutes)


def _since_midnight(text: str) -> timedelta:
    hours, minutes = (int(p) for p in text.split(":"))
    return timedelta(hours=hours, minutes=minutes)


def _days_text(days: tuple[str, ...]) -> str:
    if days == DAYS:
        return "every day"
    if days == DAYS[:5]:
        return "mon-fri"
    return ",".join(days)


def next_opening(windows: Iterable[DeployWindow], now: float) -> float | None:
    """``now`` when a window is open; else when the next one opens (within a week); None for no
    windows at all (releases may start any time)."""
    windows = list(windows)
    if not windows:
        return None
    at = datetime.fromtimestamp(now, UTC)
    soonest: datetime | None = None
    for window in windows:
        local = at.astimezone(ZoneInfo(window.timezone)).date()
        for offset in range(-1, 8):  # yesterday's window may run past midnight
            day = local + timedelta(days=offset)
            if day.weekday() not in window.weekdays:
                continue
            begin, finish = window.opens(day)
            if begin <= at < finish:
                return now
            if begin > at and (soonest is None or begin < soonest):
                soonest = begin
    return soonest.timestamp() if soonest is not None else None


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def release_refusal(
    service: str, windows: Iterable[DeployWindow], freezes: Iterable[Freeze], now: float
) -> str | None:
    """Why a release of ``service`` may not start at ``now`` — one line that says when it may
    — or None when it may."""
    holding = [f for f in freezes if f.holds(service, now)]
    if holding:
        last = max(holding, key=lambda f: f.until)
        scope = f"service {service}" if last.service else "every service"
        return (
            f"releases of {scope} are frozen until {_utc(last.until)} ({last.reason}); "
            "a rollback still runs, --override goes anyway"
        )
    windows = list(windows)
    opening = next_opening(windows, now)
    if opening is None or opening == now:
        return None
    spans = "; ".join(w.describe() for w in windows)
    return (
        f"outside the deployment windows of {service} ({spans}): the next opens at "
        f"{_utc(opening)}; --override goes anyway"
    )
