"""What the process and docker drivers share on the agent's host: host ports handed to tasks.
(Their log files: ``logfiles.py``.)"""

from __future__ import annotations

import socket

from ...domain.errors import DriverError

__all__ = ["PortPool"]


class PortPool:
    """Free TCP ports of ``address``, each handed to one task at a time: the kernel picks a free
    one, and the pool makes sure two tasks starting together never get the same."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._taken: set[int] = set()

    def allocate(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((self.address, 0))
                port = int(sock.getsockname()[1])
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise DriverError("no free port to give the task")

    def take(self, port: int) -> None:
        """A port already in use by a task re-adopted after a restart."""
        self._taken.add(port)

    def release(self, port: int) -> None:
        self._taken.discard(port)
