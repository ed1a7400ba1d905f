"""The drivers (with their probers) of one node, as ``warren server`` and ``warren worker``
build them: process and fake always, docker when an engine socket is there. The docker driver's
module is imported only then: its libraries come with the ``docker`` extra, which a core install
has not."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from ..domain.errors import MissingExtraError
from ..extras import DOCKER, needs_extra
from ..ports import Clock, Driver, Prober
from .drivers import FakeDriver, LogRotation, ProcessDriver
from .drivers.engine import find_engine_socket
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
    rotation: LogRotation = LogRotation(),
) -> Runtimes:
    """``address``: the node's address, where tasks listen and the ingress reaches them.
    ``rotation``: how much of a process task's output is kept.
    ``docker_network`` asks for containers: without the docker extra that is MissingExtraError;
    without it, an engine found but no extra only leaves the docker driver off (and says so)."""
    drivers: Runtimes = {}
    process = ProcessDriver(
        data_dir / "agent" / "tasks", data_dir / "logs", clock, address, rotation=rotation
    )
    drivers["process"] = (process, NetworkProber())
    fake = FakeDriver(clock, address)
    drivers["fake"] = (fake, fake)
    engine = find_engine_socket()
    if engine is None:
        log.info("no container engine socket found: the docker driver is off")
        return drivers
    try:
        with needs_extra(DOCKER):
            from .drivers.docker import ContainerProber, DockerDriver
    except MissingExtraError as exc:
        if docker_network is not None:
            raise
        log.warning("a container engine is at %s, but %s; the docker driver is off", engine, exc)
        return drivers
    # Advertised as soon as a socket is there: an engine that is down or refuses us fails each
    # task with that reason, in `warren service ps`.
    docker = DockerDriver(
        engine, node, data_dir / "logs", clock, address=address, network=docker_network
    )
    drivers["docker"] = (docker, ContainerProber(docker, NetworkProber()))
    return drivers


async def close_runtimes(drivers: Mapping[str, tuple[Driver, Prober]]) -> None:
    """Stop watching (the tasks keep running: a restarted agent adopts them)."""
    for name, (driver, _) in drivers.items():
        if isinstance(driver, ProcessDriver):
            driver.close()
        elif name == "docker":
            from .drivers.docker import DockerDriver  # loaded already: the driver is here

            if isinstance(driver, DockerDriver):
                await driver.close()
