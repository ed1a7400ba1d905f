"""How the CLI shows things: rich tables, relative times, one-line errors."""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.markup import escape

from ..domain.advice import advise
from ..domain.specs import ServiceSpec

__all__ = ["advise_on", "ago", "console", "err_console", "fail", "warn"]

# Piped output (a file, grep, a test) is not cut to 80 columns: tables keep whole ids.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)


def ago(when: float | None, now: float | None = None) -> str:
    """12.3 seconds ago → ``12s``; 4000 → ``1h6m``."""
    if not when:
        return "-"
    seconds = max(0, int((now or time.time()) - when))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def fail(message: str) -> None:
    # Escaped: a message may hold brackets (a URL, a user's value) that are not markup.
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, soft_wrap=True)


def advise_on(spec: ServiceSpec) -> None:
    """Warn of the release practices ``spec`` departs from (``domain.advice``): on stderr, so
    that a script reading stdout is not disturbed."""
    for sentence in advise(spec):
        warn(f"service {spec.name}: {sentence}")
