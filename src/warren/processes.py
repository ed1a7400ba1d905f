"""Processes that outlive the one that started them — a task of the process driver, the ingress
of ``warren ingress`` — are recorded by pid *and* start time, so that a restarted server adopts
the process it recorded and never a stranger that got its pid since.

Must not import anything of Warren's.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["start_ticks"]


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot; None
    when it does not run (gone, or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        state, ticks = fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None
    return None if state in (b"Z", b"X") else ticks
