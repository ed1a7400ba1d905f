"""The notifier: POSTs every deployment's milestones (started, paused, succeeded, rolled_back …)
to the receivers that want them — the server's (``--notify``) and the service's
(``deploy.notify``) — and records in the store what each receiver was told.

Level-triggered, like every controller: its key is a deployment's notification record
(``/notifications/web/00000002``, created with the deployment), and a sync compares the
deployment's milestones with what the record says each receiver was told; a receiver with
something due gets a delivery of its own in the background, which sends its milestones in
order, each with retries (``planning.notifications.RetryPolicy``) and a timeout per request,
and records each one told (or given up on) before the next. The deployment controller never
waits for any of it: a receiver that is slow, down or answering 500 delays nobody's rollout.

At least once: a manager killed between a receiver's answer and the record of it tells that
milestone again, and nothing else, when it (or the next leader) starts. A receiver that never
answers 2xx is given up on after the last attempt: logged and recorded as an event
(``notification.failed``), naming the receiver by its scheme, host and port only — a Slack
URL's path is its secret.

The decisions (what is due, the body, the retry delays) are ``planning.notifications``'; this
module does the I/O: httpx, the store, the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from .. import __version__
from ..domain.deployments import Deployment, Milestone
from ..domain.errors import ConflictError
from ..domain.events import Level
from ..domain.notifications import Delivery
from ..domain.services import Service
from ..planning.notifications import (
    Receiver,
    RetryPolicy,
    body,
    due_receivers,
    next_due,
    retryable,
    service_receivers,
    told_everything,
)
from ..ports import Clock, Compare, Delete, KeyValue, Put
from ..store.cluster import DEPLOYMENTS, NOTIFICATIONS, ClusterStore, decode, encode, service_key
from ..store.informing import Informer
from .controlling import Controller
from .indexing import TaskIndex

__all__ = ["HttpFactory", "Notifier"]

log = logging.getLogger("warren.notify")

HttpFactory = Callable[[], httpx.AsyncClient]


def _default_http() -> httpx.AsyncClient:
    # No timeout of its own: RetryPolicy.timeout bounds each request, connection included.
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=None)


class Notifier(Controller):
    name = "notifier"

    def __init__(
        self,
        cluster: ClusterStore,
        services: Informer[Service],
        deployments: Informer[Deployment],
        deliveries: Informer[Delivery],
        index: TaskIndex,
        clock: Clock,
        receivers: Sequence[Receiver] = (),
        retry: RetryPolicy | None = None,
        http: HttpFactory | None = None,
    ) -> None:
        """``receivers``: the server's, told of every service's deployments; ``http`` makes
        the client the notifications go through (tests give one on a mock transport)."""
        super().__init__(clock)
        self.cluster = cluster
        self.services = services
        self.deployments = deployments
        self.deliveries = deliveries
        self.index = index
        self.receivers = tuple(receivers)
        self.retry = retry or RetryPolicy()
        self._make_http = http or _default_http
        self._http: httpx.AsyncClient | None = None
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        deployments.on_change(self._deployment_changed)
        deliveries.on_change(lambda key, old, new: self.queue.add(key))
        services.on_change(self._service_changed)

    # ── what to look at ──────────────────────────────────────────────────────────────────────

    def _deployment_changed(self, key: str, old: Deployment | None, new: Deployment | None) -> None:
        if old is None or new is None or old.milestones != new.milestones:
            self.queue.add(NOTIFICATIONS + key[len(DEPLOYMENTS) :])

    def _service_changed(self, key: str, old: Service | None, new: Service | None) -> None:
        """Its receivers may have changed: look at its deployments again."""
        if old is not None and new is not None and old.spec.deploy.notify == new.spec.deploy.notify:
            return
        service = (new or old).name  # type: ignore[union-attr]
        prefix = f"{NOTIFICATIONS}{service}/"
        for record in list(self.deliveries.items):
            if record.startswith(prefix):
                self.queue.add(record)

    def enqueue_all(self) -> None:
        for record in list(self.deliveries.items):
            self.queue.add(record)

    # ── the sync ─────────────────────────────────────────────────────────────────────────────

    async def sync(self, key: str) -> float | None:
        delivery, kv = self.deliveries.items.get(key), self.deliveries.kvs.get(key)
        if delivery is None or kv is None:
            return None
        d = self.deployments.items.get(DEPLOYMENTS + key[len(NOTIFICATIONS) :])
        if d is None:
            await self._forget(kv)  # the deployment was trimmed: nobody is told of it now
            return None
        receivers = self._receivers_of(d.service)
        if told_everything(d, delivery, receivers):
            if not any(k == key for k, _ in self._running):
                await self._forget(kv)
            return None
        for receiver in due_receivers(d, delivery, receivers):
            if (key, receiver.key) not in self._running:
                task = asyncio.get_running_loop().create_task(
                    self._deliver(key, receiver), name=f"notify {d.id}"
                )
                self._running[key, receiver.key] = task
        return None

    def _receivers_of(self, service: str) -> list[Receiver]:
        found = self.services.items.get(service_key(service))
        return service_receivers(self.receivers, found.spec if found is not None else None)

    async def _forget(self, kv: KeyValue) -> None:
        await self.cluster.raw.txn([Compare.unchanged(kv)], [Delete(kv.key)])

    # ── one receiver's delivery ──────────────────────────────────────────────────────────────

    async def _deliver(self, key: str, receiver: Receiver) -> None:
        """Tell ``receiver`` every milestone due, in order, recording each one told."""
        again = self.clock.now()
        try:
            record = self.deliveries.items.get(key)
            told = record.sent.get(receiver.key, 0) if record is not None else 0
            while record is not None:
                d = self.deployments.items.get(DEPLOYMENTS + key[len(NOTIFICATIONS) :])
                milestone = next_due(d, receiver, told) if d is not None else None
                if d is None or milestone is None:
                    break
                answered = await self._tell(d, milestone, receiver)
                if not await self._record(key, receiver.key, milestone.number):
                    break
                if answered:  # logged once recorded: what the log says was told stays told
                    log.info("%s %s: told %s", d.id, milestone.event, receiver.label)
                told = milestone.number
        except asyncio.CancelledError:
            raise
        except Exception:
            # The store unreachable, the leadership lost …: the next sync starts over from
            # the record.
            log.exception("notifications of %s: delivery to %s failed", key, receiver.label)
            again += 1.0
        finally:
            self._running.pop((key, receiver.key), None)
        self.queue.add_at(key, again)  # the record can go once everything is told

    async def _tell(self, d: Deployment, m: Milestone, receiver: Receiver) -> bool:
        """POST one milestone until a 2xx answer (True), a final one, or the last attempt."""
        ready, desired = self._tasks_of(d)
        payload = body(d, m, receiver.format, ready, desired)
        failed = 0
        while True:
            status, why = await self._post(receiver.url, payload)
            if status is not None and 200 <= status < 300:
                return True
            failed += 1
            if failed >= self.retry.attempts or not retryable(status):
                await self._give_up(d, m, receiver, failed, why)
                return False
            delay = self.retry.delay(failed)
            log.info(
                "%s %s: notifying %s failed (%s); attempt %d in %gs",
                d.id, m.event, receiver.label, why, failed + 1, delay,
            )  # fmt: skip
            await self.clock.sleep(delay)

    async def _give_up(
        self, d: Deployment, m: Milestone, receiver: Receiver, attempts: int, why: str
    ) -> None:
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        message = f"{d.id} {m.event}: notifying {receiver.label} failed after {tries}: {why}"
        log.warning("%s", message)
        await self.cluster.record("notification.failed", message, Level.WARNING, service=d.service)

    async def _post(self, url: str, payload: dict[str, Any]) -> tuple[int | None, str]:
        """(status, why it is no success) — status None: no answer. Never an exception's
        text, which may quote the URL."""
        if self._http is None:
            self._http = self._make_http()
        headers = {"User-Agent": f"warren/{__version__}"}
        try:
            async with asyncio.timeout(self.retry.timeout):
                response = await self._http.post(url, json=payload, headers=headers)
        except TimeoutError:
            return None, f"no answer within {self.retry.timeout:g}s"
        except httpx.ConnectError:
            return None, "connection refused or host unreachable"
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, f"HTTP {response.status_code}"

    async def _record(self, key: str, receiver: str, number: int) -> bool:
        """Record that ``receiver`` was told milestone ``number``; False if the record is gone
        (the deployment trimmed, the service removed)."""
        for _ in range(10):
            kv = await self.cluster.raw.get(key)
            if kv is None:
                return False
            delivery = decode(Delivery, kv)
            if delivery.sent.get(receiver, 0) >= number:
                return True
            told = delivery.model_copy(update={"sent": {**delivery.sent, receiver: number}})
            res = await self.cluster.raw.txn([Compare.unchanged(kv)], [Put(key, encode(told))])
            if res.succeeded:
                await self.deliveries.wait_for(res.revision)
                return True
        raise ConflictError(f"{key} kept changing")

    def _tasks_of(self, d: Deployment) -> tuple[int, int]:
        """Ready tasks of the deployment's revision, and the replicas wanted, as of now."""
        ready = sum(
            1
            for t in self.index.tasks(d.service)
            if t.revision == d.to_revision and t.ready and t.wants_running
        )
        service = self.services.items.get(service_key(d.service))
        return ready, service.spec.replicas if service is not None else d.replicas

    async def stop(self) -> None:
        await super().stop()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
