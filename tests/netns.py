"""Several "hosts" on one machine, for multi-node tests: network namespaces on one bridge.

``hosts`` (per test) makes a namespace per host, each with its own address (10.213.N.11, .12 …)
on an ``eth0`` whose other end is plugged into a bridge; the bridge sits in a namespace of its
own (the "switch") so that the machine's firewall never sees the traffic between hosts. The
test process reaches every host too, from 10.213.N.1. ``Host.cut()`` pulls a host's cable
(``ip link set … down`` on its switch port) and ``Host.restore()`` plugs it back.

``Host.popen`` starts a command inside the host (``ip netns exec``, which execs it: the PID is
the command's own). Every process started that way is SIGKILLed at teardown, by PID, before the
namespaces are deleted. Needs root and iproute2: skipped without them, failed under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["Host", "Network", "hosts"]


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)


@dataclass
class Host:
    name: str
    """The host's name (a node's name), e.g. ``w1``."""
    netns: str
    address: str
    port: str
    """Its cable's end on the switch."""
    switch: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def wrapper(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.netns)

    def popen(
        self,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*self.wrapper, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.wrapper, *argv], capture_output=True, text=True, timeout=timeout
        )

    def cut(self) -> None:
        _ip("-n", self.switch, "link", "set", self.port, "down")

    def restore(self) -> None:
        _ip("-n", self.switch, "link", "set", self.port, "up")

    def kill_all(self) -> None:
        """SIGKILL what was started here, then every process left in the namespace (the tasks
        a warren process started, say): the machine dies."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        out = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, timeout=5
        ).stdout
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@dataclass
class Network:
    tag: str
    subnet: int
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"wsw-{self.tag}"

    @property
    def gateway(self) -> str:
        """The test process's own address on the network."""
        return f"10.213.{self.subnet}.1"

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def add(self, name: str) -> Host:
        index = len(self.hosts) + 1
        host = Host(
            name=name,
            netns=f"wh-{self.tag}-{name}",
            address=f"10.213.{self.subnet}.{10 + index}",
            port=f"wp{self.tag}{index}",
            switch=self.switch,
        )
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _ip("link", "set", host.port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    def start(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        uplink = f"wu{self.tag}"
        _ip("link", "add", uplink, "type", "veth", "peer", "name", "up0", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{self.gateway}/24", "dev", uplink)
        _ip("link", "set", uplink, "up")

    def close(self) -> None:
        for host in self.hosts.values():
            host.kill_all()
        for host in self.hosts.values():
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", f"wu{self.tag}", check=False)
        _ip("netns", "del", self.switch, check=False)


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def hosts() -> Iterator[Network]:
    """An empty network: ``hosts.add("m1")`` makes a host on it."""
    if shutil.which("ip") is None:
        _unavailable("iproute2 is not installed (apt-get install iproute2)")
    if os.geteuid() != 0:
        _unavailable("network namespaces need root")
    network = Network(tag=secrets.token_hex(2), subnet=secrets.randbelow(200) + 20)
    try:
        network.start()
    except subprocess.CalledProcessError as exc:
        network.close()
        _unavailable(f"cannot make network namespaces: {exc.stderr.decode().strip()}")
    try:
        yield network
    finally:
        network.close()
