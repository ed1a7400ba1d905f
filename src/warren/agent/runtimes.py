"""The drivers (with their probers) of one node, as ``warren server`` and ``warren worker``
build them: process and fake always, docker when an engine socket is there."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from ..ports import Clock, Driver, Prober
from .drivers import FakeDriver, ProcessDriver
from .drivers.docker import ContainerProber, DockerDriver, find_engine_socket
from .probing import NetworkProber

__all__ = ["Runtimes", "close_runtimes", "local_runtimes"]

log = logging.getLogger("warren.agent")

Runtimes = dict[str, tuple[Driver, Prober]]


def local_runtimes(
    data_dir: Path,
    node: str,
    clock: Clock,
    address: str = "127.0.0.1",
    docker_network: str | None = None,
) -> Runtimes:
    """``address``: the node's address, where tasks listen and the ingress reaches them."""
    drivers: Runtimes = {}
    process = ProcessDriver(data_dir / "agent" / "tasks", data_dir / "logs", clock, address)
    drivers["process"] = (process, NetworkProber())
    fake = FakeDriver(clock, address)
    drivers["fake"] = (fake, fake)
    engine = find_engine_socket()
    if engine is not None:
        # Advertised as soon as a socket is there: an engine that is down or refuses us fails
        # each task with that reason, in `warren service ps`.
        docker = DockerDriver(
            engine, node, data_dir / "logs", clock, address=address, network=docker_network
        )
        drivers["docker"] = (docker, ContainerProber(docker, NetworkProber()))
    else:
        log.info("no container engine socket found: the docker driver is off")
    return drivers


async def close_runtimes(drivers: Mapping[str, tuple[Driver, Prober]]) -> None:
    """Stop watching (the tasks keep running: a restarted agent adopts them)."""
    for driver, _ in drivers.values():
        if isinstance(driver, ProcessDriver):
            driver.close()
        elif isinstance(driver, DockerDriver):
            await driver.close()
