"""What the process and docker drivers share on the agent's host: host ports handed to tasks, and
the tail of a task's log file."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from ...domain.errors import DriverError

__all__ = ["FOLLOW_POLL", "PortPool", "follow_file", "tail_of"]

FOLLOW_POLL = 0.25
"""How often a followed log is looked at for new lines (as ``tail -f`` does)."""


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


def tail_of(path: Path, tail: int | None = None) -> list[str]:
    """The last ``tail`` lines of a log file (all of them without ``tail``); [] when missing."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            # The last lines are in the last (tail x 1 KiB) bytes unless lines are huge.
            f.seek(max(0, size - (tail or 1000) * 1024))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-tail:] if tail else lines


async def follow_file(path: Path) -> AsyncIterator[str]:
    """The lines appended to a log file from now on; a file not there yet is waited for."""
    _, offset = _read_from(path, None)
    partial = b""
    while True:
        data, offset = _read_from(path, offset)
        if data:
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace")
        else:
            await asyncio.sleep(FOLLOW_POLL)


def _read_from(path: Path, offset: int | None) -> tuple[bytes, int]:
    """What a log file holds past ``offset`` (None: nothing, just its end), and its new end. A
    short local read: blocking is fine."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            if offset is None:
                return b"", end
            if end < offset:
                offset = 0  # truncated or replaced: start over
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return b"", 0
    return data, offset + len(data)
