"""The control plane: the informers and controllers of one manager, started and stopped
together. Everything it touches comes in through ports (store, clock, data plane).

With several managers on one store, only the leader writes: every manager runs the informers
(the API's view, the agents' assignments) and the routing controller (its own ingress), while
the controllers that write to the store run between ``lead`` and ``follow`` (see
``control.leading``). A single manager simply leads from ``start`` on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ..domain.deployments import Deployment
from ..domain.nodes import Heartbeat, Node
from ..domain.notifications import Delivery
from ..domain.requests import OperatorRequest
from ..domain.services import Revision, Service
from ..domain.tasks import Task
from ..planning.notifications import Receiver, RetryPolicy
from ..ports import Clock, DataPlane, MetricSource
from ..store.cluster import (
    DEPLOYMENTS,
    HEARTBEATS,
    NODES,
    NOTIFICATIONS,
    REQUESTS,
    REVISIONS,
    SERVICES,
    TASKS,
    ClusterStore,
    revision_key,
    service_key,
)
from ..store.informing import Informer
from .checking import CheckRunner
from .controlling import Controller
from .deploying import DeploymentController
from .indexing import DeploymentIndex, TaskIndex
from .measuring import DeployMetrics
from .nodes import NodeWatcher
from .notifying import HttpFactory, Notifier
from .reconciling import Reconciler
from .routing import RoutingController

__all__ = ["ControlPlane"]


class ControlPlane:
    def __init__(
        self,
        cluster: ClusterStore,
        clock: Clock,
        dataplane: DataPlane | None,
        metrics: MetricSource | None = None,
        receivers: Sequence[Receiver] = (),
        notify_retry: RetryPolicy | None = None,
        notify_http: HttpFactory | None = None,
    ) -> None:
        """``receivers``: told of every service's deployments (``warren server --notify``);
        ``notify_http``: the HTTP client they are told through (tests: a mock transport)."""
        store = cluster.raw
        self.services = Informer(store, SERVICES, Service)
        self.revisions = Informer(store, REVISIONS, Revision)
        self.tasks = Informer(store, TASKS, Task)
        self.nodes = Informer(store, NODES, Node)
        self.heartbeats = Informer(store, HEARTBEATS, Heartbeat)
        self.deployments = Informer(store, DEPLOYMENTS, Deployment)
        self.requests = Informer(store, REQUESTS, OperatorRequest)
        self.deliveries = Informer(store, NOTIFICATIONS, Delivery)
        self.index = TaskIndex(self.tasks, self.revisions)
        self.latest = DeploymentIndex(self.deployments)
        self.reconciler = Reconciler(
            cluster,
            self.services,
            self.tasks,
            self.nodes,
            self.revisions,
            self.index,
            self.latest,
            clock,
        )
        self.deployments.on_change(self.reconciler.deployment_changed)
        self.deployer = DeploymentController(
            cluster,
            self.services,
            self.tasks,
            self.deployments,
            self.revisions,
            self.latest,
            self.index,
            clock,
            metrics,
            nodes=self.nodes,
            requests=self.requests,
        )
        self.metrics = DeployMetrics(self.deployments)
        self.notifier = Notifier(
            cluster,
            self.services,
            self.deployments,
            self.deliveries,
            self.index,
            clock,
            receivers,
            notify_retry,
            notify_http,
        )
        self.node_watcher = NodeWatcher(cluster, self.nodes, set(), clock)
        self.heartbeats.on_change(
            lambda key, old, new: self.node_watcher.heartbeat_changed(
                key[len(HEARTBEATS) :], new is not None
            )
        )
        self.controllers: list[Controller] = [
            self.reconciler, self.deployer, self.node_watcher, self.notifier,
        ]  # fmt: skip
        self.routing: RoutingController | None = None
        if dataplane is not None:
            self.routing = RoutingController(
                self.services,
                self.tasks,
                self.nodes,
                self.index,
                dataplane,
                clock,
                self.latest,
                self.revisions,
            )
            self.deployments.on_change(self.routing.deployment_changed)
            self.controllers.append(self.routing)
        self._informers: list[Informer[Any]] = [
            self.revisions, self.deployments, self.deliveries, self.requests, self.services,
            self.nodes, self.heartbeats, self.tasks,
        ]  # fmt: skip

        self.leads = False

    def unknown_revision(self, service: str, number: int) -> str:
        """Why ``service`` revision ``number`` does not exist here, or "" if it does: traffic
        of what does not exist is judged by nobody and only takes memory. (A revision reaches
        the cache long before any of its tasks is ready to get a request.)"""
        if service_key(service) not in self.services.items:
            return f"no service {service}"
        if revision_key(service, number) not in self.revisions.items:
            return f"service {service} has no revision {number}"
        return ""

    @property
    def writers(self) -> list[Controller]:
        """The controllers that write to the store: only the leader runs them."""
        return [c for c in self.controllers if c is not self.routing]

    async def start(self, lead: bool = True) -> None:
        """Fill the caches and start routing; then lead at once, or (``lead=False``) wait for
        ``lead``."""
        for informer in self._informers:
            await informer.start()
        for name in (k[len(HEARTBEATS) :] for k in self.heartbeats.items):
            self.node_watcher.heartbeats.add(name)
        if self.routing is not None:
            self.routing.enqueue_all()
            # The routing table is whole before anyone reads it: an ingress that follows the
            # routing stream takes a snapshot as the truth, and one taken from a server just
            # started must not miss a service it serves.
            await self.routing.drain_queue()
            self.routing.start()
        if lead:
            await self.lead()

    async def lead(self) -> None:
        """Start the writing controllers. Each resyncs everything from the caches: the rollouts
        continue from their stored state, wherever the previous leader left them."""
        if self.leads:
            return
        self.leads = True
        self.node_watcher.enqueue_all()
        self.reconciler.enqueue_all()
        self.deployer.enqueue_all()
        self.notifier.enqueue_all()
        for controller in self.writers:
            controller.start()

    async def follow(self) -> None:
        """Stop the writing controllers at once (leadership lost, or handed over); their syncs
        in flight are cancelled — a fenced store refuses what they would still write."""
        if not self.leads:
            return
        self.leads = False
        for controller in self.writers:
            await controller.stop()
        # The deployer's stop cancelled its webhook checks and closed their client: the next
        # term starts with a fresh one (answers go to the queue of the deployment's service).
        deployer = self.deployer
        deployer.checks = CheckRunner(lambda d: deployer.queue.add(d.rsplit("-", 1)[0]))

    async def settle(self) -> None:
        """Run every queued sync now (tests drive the control plane this way)."""
        for controller in self.controllers:
            await controller.drain_queue()

    async def stop(self) -> None:
        for controller in self.controllers:
            await controller.stop()
        for informer in self._informers:
            with contextlib.suppress(asyncio.CancelledError):
                await informer.close()
