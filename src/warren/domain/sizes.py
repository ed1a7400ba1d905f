"""Memory sizes as users write them (``256Mi``, ``1G``, or a number of bytes).

Pure: the CLI checks ``--memory`` with it before it loads the spec's models.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

__all__ = ["LARGEST_MEMORY", "MEMORY_SCHEMA", "parse_memory"]

_MEMORY_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
}  # fmt: skip


LARGEST_MEMORY = 2**52
"""4 PiB: more than any node has, and a whole number a double holds exactly, near it too (a
client's JSON may read numbers as doubles: 2**60 + 23 and 2**60 are one double)."""
MEMORY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": LARGEST_MEMORY},
        # Six digits at most: 999999Gi is still under LARGEST_MEMORY.
        {"type": "string", "pattern": r"^[0-9]{1,6}(\.[0-9]{1,9})?([kKmMgG][iI]?[bB]?|[bB])?$"},
    ]
}
"""What ``parse_memory`` takes, as the OpenAPI document states it."""


def parse_memory(value: str | int) -> int:
    """``"256Mi"`` → 268435456 bytes; a bare number is bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _MEMORY_UNITS:
            raise ValueError(f"expected a size like 256Mi or 1G, got {value!r}")
        # Exact: a float of 400 digits is infinite, and int() of it raises.
        size = int(Fraction(match.group(1)) * _MEMORY_UNITS[unit])
    if not 0 <= size <= LARGEST_MEMORY:
        raise ValueError(f"memory must be 0 to 4Pi (2**52 bytes), got {value!r}")
    return size
