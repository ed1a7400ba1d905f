"""HTTP to the managers, for the processes of a node: ``warren worker`` (its assignments,
reports and heartbeats) and ``warren ingress`` (the routing stream). One manager at a time,
the next one when it stops answering. Managers served over https are verified with the CA
bundle given (``--manager-ca``), or by the one certificate given (``--manager-cert``: the
server's own, for the ingress process it supervises).

Must not import the API, the agent or the control plane: an ingress process loads only what it
uses.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from . import __version__
from .client import api_error, unverified
from .domain.errors import UnavailableError, ValidationError

__all__ = ["STREAM_IDLE", "ManagerLink"]

STREAM_IDLE = 6.0
"""A stream quiet this long is dead (the manager pings every 2 s)."""


class ManagerLink:
    """HTTP to the managers, one at a time: a call that cannot reach the current one, or that
    it answers with a 5xx (a manager cut off from the store answers 503), moves to the next,
    until each was tried once."""

    def __init__(
        self, managers: Sequence[str], timeout: float, verify: ssl.SSLContext | bool = True
    ) -> None:
        """``verify``: how to verify managers served over https (``client.verifying``)."""
        if not managers:
            raise ValidationError("give at least one manager URL", "--manager")
        self.managers = [
            m.rstrip("/") if "://" in m else f"http://{m.rstrip('/')}" for m in managers
        ]
        self.current = 0
        self.token = ""
        self._timeout = httpx.Timeout(timeout)
        """For calls; streams wait up to STREAM_IDLE for their next line (pings come sooner)."""
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, read=STREAM_IDLE),
            headers={"User-Agent": f"warren-worker/{__version__}"},
            verify=verify,
        )

    @property
    def url(self) -> str:
        return self.managers[self.current]

    def _next(self) -> None:
        self.current = (self.current + 1) % len(self.managers)

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        problems = []
        for _ in self.managers:
            url = self.url
            try:
                response = await self._http.request(
                    method,
                    url + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token or self.token}"},
                    timeout=self._timeout,
                )
            except httpx.HTTPError as exc:
                problems.append(_problem(url, exc))
                self._next()
                continue
            error = api_error(response)
            if response.status_code >= 500:
                problems.append(f"{url}: {error.message if error else response.status_code}")
                self._next()
                continue
            if error is not None:
                raise error
            return response.json()
        raise UnavailableError(f"no manager answers ({'; '.join(problems)})")

    async def lines(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """The NDJSON stream at ``path`` of the current manager (the next one if it cannot be
        reached); ends, or raises UnavailableError, when the stream breaks."""
        url = self.url
        try:
            async with self._http.stream(
                "GET", url + path, headers={"Authorization": f"Bearer {self.token}"}
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = api_error(response)
                    if response.status_code >= 500:
                        self._next()
                        raise UnavailableError(f"{url}: {error or response.status_code}")
                    raise error or UnavailableError(f"{url} answered {response.status_code}")
                async for line in response.aiter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            self._next()
            raise UnavailableError(_problem(url, exc)) from None

    async def close(self) -> None:
        await self._http.aclose()


def _problem(url: str, exc: httpx.HTTPError) -> str:
    why = unverified(exc)
    if why is not None:
        return f"cannot verify the server's certificate at {url}: {why}"
    return f"{url}: {_reason(exc)}"


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    return str(exc) or type(exc).__name__
