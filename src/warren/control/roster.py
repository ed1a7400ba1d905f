"""The managers of a cluster on a shared store (etcd): each keeps ``/managers/NAME`` (its API's
URL) bound to a lease of its own, and reads the others' — so that each sends its ingress's
traffic to every other manager (``warren.reporting``), and whoever leads next judges a canary
with the traffic every ingress saw, the previous leader's own included.

Must not import anything of Warren's but ``domain``, ``ports`` and ``store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from ..domain.errors import NotFoundError, WarrenError
from ..ports import Clock, StateStore

__all__ = ["MANAGERS", "Roster"]

log = logging.getLogger("warren.control")

MANAGERS = "/managers/"
TTL = 10.0
"""A manager that stops without a word (kill -9) leaves the roster this long after."""
READ_EVERY = 1.0
"""A new manager is known to the others this long after it starts, at the most."""


class Roster:
    def __init__(self, store: StateStore, name: str, api: str, clock: Clock) -> None:
        self.store = store
        self.name = name
        self.api = api
        self.clock = clock
        self.others: dict[str, str] = {}
        """The other managers' API URLs, by name (read every ``READ_EVERY`` seconds)."""
        self._lease = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._announce()
        await self._read()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep()), loop.create_task(self._follow())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(WarrenError, TimeoutError):
            async with asyncio.timeout(1.0):  # else the lease ends by itself
                await self.store.revoke(self._lease)

    async def _announce(self) -> None:
        self._lease = await self.store.grant(TTL)
        body = json.dumps({"api": self.api}).encode()
        await self.store.put(f"{MANAGERS}{self.name}", body, lease=self._lease)

    async def _keep(self) -> None:
        while True:
            await self.clock.sleep(TTL / 3)
            try:
                try:
                    await self.store.keepalive(self._lease)
                except NotFoundError:  # expired while the store was away: again
                    await self._announce()
            except WarrenError as exc:
                log.debug("roster: cannot renew this manager's entry: %s", exc)

    async def _read(self) -> None:
        kvs, _ = await self.store.range(MANAGERS)
        others = {}
        for kv in kvs:
            name = kv.key.removeprefix(MANAGERS)
            with contextlib.suppress(ValueError, TypeError, KeyError):
                if name != self.name:
                    others[name] = str(json.loads(kv.value)["api"])
        self.others = others

    async def _follow(self) -> None:
        while True:
            await self.clock.sleep(READ_EVERY)
            try:
                await self._read()
            except WarrenError as exc:
                log.debug("roster: cannot read the managers: %s", exc)
