"""A node's ingress traffic, sent to the managers: every ``PUSH`` seconds, the requests it
answered since the last time, per service and revision (their age, latency and outcome) — so
that the leader's analysis (``control.traffic``) judges a canary on every node's traffic. A
worker sends to every manager it knows, a manager to every other manager (``control.roster``):
one that takes over has everyone's history already. When no destination took it, the next
send tries again (the ingress keeps its last ``RECENT_KEPT`` requests per revision); what a
manager took but dropped (a service or revision it does not know) is not sent again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from .client import unverified
from .control.traffic import KEEP

__all__ = ["PUSH", "TrafficReporter", "TrafficSource"]

log = logging.getLogger("warren.reporting")

PUSH = 0.5


class TrafficSource(Protocol):
    def samples_since(self, since: float) -> list[tuple[str, int, list[tuple[float, float, bool]]]]:
        """(service, revision, requests answered after the monotonic time ``since``), as
        ``Ingress.samples_since``."""
        ...


class TrafficReporter:
    def __init__(
        self,
        ingress: TrafficSource,
        destinations: Callable[[], list[str]],
        token: Callable[[], Awaitable[str]],
        every: float = PUSH,
        worker: int = 0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``destinations()``: the API URLs to send to (none: nobody to send to — this node
        leads, or no leader is known); ``token()``: this node's token; ``every``: seconds
        between sends; ``worker``: which of the node's ingress workers this is (each reports
        its own traffic); ``verify``: how to verify managers served over https
        (``client.verifying``)."""
        self.ingress = ingress
        self.worker = worker
        self.every = every
        self.destinations = destinations
        self.token = token
        self._http = httpx.AsyncClient(timeout=2.0, verify=verify)
        self._since = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.failed_sends = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="traffic")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._http.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.send()
            except Exception:  # never let one bad round end the reports
                log.exception("traffic report failed")

    async def send(self) -> bool:
        """Send what is new; whether there was nothing to send or it was received."""
        batches = self.ingress.samples_since(self._since)
        if not batches:
            return True
        urls = self.destinations()
        newest = max(samples[-1][0] for _, _, samples in batches)
        if not urls:
            self._since = newest  # the leader reads this ingress itself, or nobody judges
            return True
        now = time.monotonic()
        body = {
            "worker": self.worker,
            "batches": [
                {
                    "service": service,
                    "revision": revision,
                    # Older than the managers keep (a long outage): not worth sending.
                    "samples": [
                        [round(now - at, 4), round(lat, 6), bool(f)]
                        for at, lat, f in s
                        if now - at < KEEP
                    ],
                }
                for service, revision, s in batches
            ],
        }
        headers = {"Authorization": f"Bearer {await self.token()}"}
        sent = await asyncio.gather(*(self._post(url, body, headers) for url in urls))
        if any(sent):
            self._since = newest
        return any(sent)

    async def _post(self, url: str, body: object, headers: dict[str, str]) -> bool:
        try:
            response = await self._http.post(f"{url}/v1/worker/traffic", json=body, headers=headers)
        except httpx.HTTPError as exc:
            why = unverified(exc)
            if why is not None:
                return self._failed(f"cannot verify the server's certificate at {url}: {why}")
            return self._failed(f"{url}: {exc!r}")
        if response.status_code >= 300:
            return self._failed(f"{url} answered {response.status_code}: {response.text[:200]}")
        # Received, even with batches dropped (of a service removed meanwhile): not sent again.
        if response.status_code == 200 and log.isEnabledFor(logging.DEBUG):
            with contextlib.suppress(ValueError, AttributeError):
                for dropped in response.json().get("dropped", []):
                    log.debug("%s dropped traffic of %s", url, dropped)
        return True

    def _failed(self, why: str) -> bool:
        self.failed_sends += 1
        if self.failed_sends in (1, 10) or self.failed_sends % 100 == 0:
            log.warning(
                "traffic report to the leader failed (%d so far): %s", self.failed_sends, why
            )
        return False
