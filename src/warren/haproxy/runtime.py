"""HAProxy's Runtime API: one command per connection on its stats socket, the answer read to the
end. What Warren reads of it: the servers of every backend (``show servers state``), their
counters (``show stat``), a map's entries (``show map``)."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..domain.errors import UnavailableError, WarrenError

__all__ = ["Refused", "RuntimeApi", "ServerState"]

TIMEOUT = 5.0
_DONE = ("", "New server registered.", "Server deleted.")
"""What a command that did what it was asked answers."""


class Refused(WarrenError):
    """HAProxy refused a command; ``message`` is its answer."""


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    address: str
    """``host:port``."""
    weight: int
    maintenance: bool


class RuntimeApi:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def call(self, command: str, timeout: float = TIMEOUT) -> str:
        """The answer to one command (its text, as HAProxy wrote it). UnavailableError when
        nothing answers on the socket."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(str(self.path))
                try:
                    writer.write(command.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise UnavailableError(f"HAProxy does not answer on {self.path}: {_why(exc)}") from None
        return answer.decode(errors="replace")

    async def do(self, command: str) -> None:
        """Run a command that changes something; Refused with HAProxy's words when it
        refuses."""
        answer = (await self.call(command)).strip()
        if answer not in _DONE:
            raise Refused(f"HAProxy refused '{command}': {answer.splitlines()[0]}")

    async def servers(self) -> list[ServerState]:
        text = await self.call("show servers state")
        found = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 19 or line.startswith("#"):
                continue
            found.append(
                ServerState(
                    backend=fields[1],
                    name=fields[3],
                    address=f"{fields[4]}:{fields[18]}",
                    weight=int(fields[7]),
                    maintenance=bool(int(fields[6]) & 0x01),
                )
            )
        return found

    async def stat(self) -> list[dict[str, str]]:
        """``show stat``: a row per frontend, backend and server."""
        text = await self.call("show stat")
        return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))

    async def map_entries(self, path: Path) -> dict[str, str]:
        text = await self.call(f"show map {path}")
        found = {}
        for line in text.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0].startswith("0x"):
                found[parts[1]] = parts[2]
        return found

    async def worker_pid(self) -> int:
        """The pid of the worker that answers (a reload replaces it)."""
        for line in (await self.call("show info")).splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        raise UnavailableError(f"HAProxy on {self.path} did not say its pid")


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return getattr(exc, "strerror", None) or str(exc)
