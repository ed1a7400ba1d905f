"""Where a node's container engine is: its unix socket, found without loading the docker driver
(whose libraries, aiodocker and aiohttp, come with the ``docker`` extra only). Imports nothing of
Warren's."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENGINE_SOCKETS", "find_engine_socket"]

ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")


def find_engine_socket(environ: dict[str, str] | None = None) -> str | None:
    """The engine's unix socket: ``DOCKER_HOST`` (``unix://PATH``), else Docker's, else
    Podman's (system, then the user's). None when there is none."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST", "")
    if host:
        return host.removeprefix("unix://") if host.startswith(("unix://", "/")) else None
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    candidates = [*ENGINE_SOCKETS, *([f"{runtime_dir}/podman/podman.sock"] if runtime_dir else [])]
    return next((path for path in candidates if Path(path).exists()), None)
