"""The environment a task (and its exec probes) runs with."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..domain.specs import ServiceSpec
from ..domain.tasks import Task

__all__ = ["command_found", "task_environment"]

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


def command_found(spec: ServiceSpec, executable: str) -> bool:
    """Whether the process driver would find ``executable`` here, on the PATH its tasks get.
    A relative path with a slash is resolved in the driver's working directory, not known
    here: assumed found."""
    if "/" in executable:
        return not executable.startswith("/") or os.access(executable, os.X_OK)
    env = {k: os.environ[k] for k in ("PATH",) if k in os.environ}
    bindir = str(Path(sys.executable).parent)
    path = spec.env.get("PATH") or f"{bindir}:{env.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
    return shutil.which(executable, path=path) is not None
