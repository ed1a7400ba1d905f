"""Durations as users write them (``500ms``, ``10s``, ``5m``, ``1h30m``) and as Warren shows them.

Pure. Internally every duration is a float number of seconds.
"""

from __future__ import annotations

import re

from .errors import ValidationError

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: str | float | int, field: str | None = None) -> float:
    """``"1m30s"`` → 90.0; a bare number is seconds. Negative or malformed → ValidationError."""
    if isinstance(value, bool):
        raise ValidationError(f"expected a duration like 500ms, 10s or 5m, got {value!r}", field)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValidationError(
                    f"expected a duration like 500ms, 10s or 5m, got {value!r}", field
                ) from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValidationError(f"duration must be finite and >= 0, got {value!r}", field)
    return seconds


def format_duration(seconds: float) -> str:
    """90.0 → ``"1m30s"``; 0.5 → ``"500ms"``; 0 → ``"0s"``. Round-trips through parse_duration."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    frac = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs or frac:
        parts.append(f"{secs + frac:g}s" if frac else f"{secs}s")
    return "".join(parts)
