"""The environment a task (and its exec probes) runs with."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..domain.specs import ServiceSpec
from ..domain.tasks import Task

__all__ = ["task_environment"]

# Only these of the server's environment reach a task (never a token or other secrets).
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "VIRTUAL_ENV")


def task_environment(
    task: Task, spec: ServiceSpec, port: int | None, host: str | None = None
) -> dict[str, str]:
    """The service's env, ``PORT`` (and ``HOST``, the node's address to listen on, unless the
    service sets its own) and the ``WARREN_*`` variables; the server's interpreter directory
    first on PATH, so that ``python -m …`` runs with the Python Warren runs with."""
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
    if host is not None:
        env["HOST"] = host
    env.update(spec.env)
    env.update(
        WARREN_TASK_ID=task.id, WARREN_SERVICE=task.service, WARREN_REVISION=str(task.revision)
    )
    if port is not None:
        env["PORT"] = str(port)
    return env
