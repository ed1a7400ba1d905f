"""Durations as users write them (``500ms``, ``10s``, ``5m``, ``1h30m``) and as Warren shows them.

Pure. Internally every duration is a float number of seconds.
"""

from __future__ import annotations

import re
from fractions import Fraction

from .errors import ValidationError

__all__ = ["format_duration", "parse_duration"]

# Exact arithmetic, rounded to a float once: "1m1.096s" is 61.096, not 60 + 1.096 =
# 61.096000000000004, so that a formatted duration always parses back to the same float.
_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SINGLE = re.compile(r"(\d{1,12})(ms|s|m|h)")
LONGEST = 100 * 365 * 86400
"""A hundred years: no wait, deadline or interval means more, and a float holds it exactly."""


def parse_duration(value: str | float | int, field: str | None = None) -> float:
    """``"1m30s"`` → 90.0; a bare number is seconds. Negative or malformed → ValidationError."""
    if isinstance(value, bool):
        raise ValidationError(f"expected a duration like 500ms, 10s or 5m, got {value!r}", field)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        single = _SINGLE.fullmatch(text)
        if single:
            # The common case ("500ms", "10s"): integer arithmetic, correctly rounded once.
            mul = _UNITS[single.group(2)]
            seconds = int(single.group(1)) * mul.numerator / mul.denominator
        else:
            try:
                seconds = float(text)
            except ValueError:
                seconds = _parse_parts(text, value, field)
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValidationError(f"duration must be finite and >= 0, got {value!r}", field)
    if seconds > LONGEST:
        raise ValidationError(f"duration must be at most 100 years, got {value!r}", field)
    return seconds


def _parse_parts(text: str, value: object, field: str | None) -> float:
    pos, total = 0, Fraction(0)
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += Fraction(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValidationError(f"expected a duration like 500ms, 10s or 5m, got {value!r}", field)
    if total > LONGEST:  # before float(): a long enough one does not fit in a float
        raise ValidationError(f"duration must be at most 100 years, got {value!r}", field)
    return float(total)


def format_duration(seconds: float) -> str:
    """90.0 → ``"1m30s"``; 0.5 → ``"500ms"``; 0 → ``"0s"``. Millisecond precision; never an
    exponent, so the result always parses again."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    whole, ms = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if ms:
        parts.append(f"{secs}.{ms:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    return "".join(parts)
