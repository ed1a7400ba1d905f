"""Real etcd for tests: one member for the whole session, and 3-member clusters for failover.

``etcd_server`` (session) starts one ``etcd`` on free loopback ports (the kernel's ephemeral
range, far from 2379/2380) with a fresh data dir; ``etcd_prefix`` gives each test its own key
prefix on it, so that tests never see each other's keys. ``etcd_cluster`` (per test) starts three
members with ``--heartbeat-interval 50 --election-timeout 300`` (a new leader in ~0.4 s);
``EtcdMember.kill`` stops one, e.g. ``cluster.leader()``. ``etcd_tls_server`` (session) is one
member that serves clients over https only and asks each for a certificate of its CA
(``--client-cert-auth``); ``EtcdTlsFiles`` are its CA, and a client certificate and key to present
(made with ``trustme``). Every wait is bounded; every member is
SIGKILLed by PID at teardown and its data dir removed. When the ``etcd`` binary is missing the
fixtures skip, or fail under ``CI=true`` (install the Debian package ``etcd-server``).

Imports nothing of Warren's: readiness and the leader come from etcd's HTTP gateway
(``/v3/maintenance/status``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

__all__ = [
    "EtcdCluster",
    "EtcdMember",
    "EtcdTlsFiles",
    "etcd_cluster",
    "etcd_prefix",
    "etcd_server",
    "etcd_tls_server",
]

START_TIMEOUT = 15.0
"""Bound on a cluster's start: every member ready. One member: ~0.2 s here. Three: 0.3 to 2.3 s —
a new member first asks each peer whether the cluster exists, waiting up to 1 s for a peer that
is itself still starting (it accepts connections before it answers)."""

STOP_TIMEOUT = 5.0
"""Bound on a member's exit after SIGKILL."""


@dataclass(frozen=True)
class EtcdTlsFiles:
    """PEM files of one TLS etcd: the CA that signed everything, the member's certificate for
    127.0.0.1, and a client certificate (a manager's)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        """What this module's own readiness probes connect with."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


def make_tls_files(where: Path) -> EtcdTlsFiles:
    """A fresh CA, a server certificate for 127.0.0.1 and a client certificate, under ``where``."""
    ca = trustme.CA()
    files = EtcdTlsFiles(
        ca=where / "ca.pem",
        server_cert=where / "server.pem",
        server_key=where / "server-key.pem",
        client_cert=where / "client.pem",
        client_key=where / "client-key.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    for cert_path, key_path, name in [
        (files.server_cert, files.server_key, "127.0.0.1"),
        (files.client_cert, files.client_key, "warren-manager"),
    ]:
        issued = ca.issue_cert(name)
        cert_path.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key_path))
    return files


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    wrapper: tuple[str, ...] = ()
    """What the command runs under (``ip netns exec NS`` for a member on a host of its own)."""
    tls: EtcdTlsFiles | None = None
    """Clients over https only, each with a certificate of ``tls.ca``; peers stay on http."""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID and reap it (bounded): the member's sockets are closed on return."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)

    def status(self, timeout: float = 0.5) -> dict[str, str]:
        """{"member_id", "leader"} as this member sees them (decimal strings; leader "0": none)."""
        request = urllib.request.Request(
            f"{self.client_url}/v3/maintenance/status", data=b"{}", method="POST"
        )
        context = self.tls.client_context() if self.tls else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            body = json.loads(resp.read())
        return {"member_id": body["header"]["member_id"], "leader": body.get("leader", "0")}

    def ready(self) -> bool:
        """Serving clients and following a leader. A short timeout: etcd accepts connections
        before it serves, and a request sent then is never answered. (Not ``/health``: it runs
        a quorum read through raft that, just after the start, can hang for its 1 s timeout.)"""
        try:
            return self.status(timeout=0.1)["leader"] != "0"
        except (OSError, ValueError, KeyError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    root: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def leader(self, timeout: float = 5.0) -> EtcdMember:
        """The member every live member names as leader (bounded wait for an election)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                seen = {m.name: m.status() for m in self.members if m.alive}
                leaders = {s["leader"] for s in seen.values()}
                if len(leaders) == 1 and "0" not in leaders:
                    (leader_id,) = leaders
                    for m in self.members:
                        if m.name in seen and seen[m.name]["member_id"] == leader_id:
                            return m
            if time.monotonic() > deadline:
                pytest.fail(f"etcd: no agreed leader within {timeout:g}s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for m in self.members:
            m.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        message = "etcd is not installed (apt-get install etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_ports(count: int) -> list[int]:
    """Ports the kernel picks (32768+ here): held together so that they are all distinct."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def start_cluster(
    size: int,
    hosts: list[tuple[str, tuple[str, ...]]] | None = None,
    tls: EtcdTlsFiles | None = None,
) -> EtcdCluster:
    """Start ``size`` members and wait (bounded) until each is ready; stopped on failure.
    ``hosts``: (address, command wrapper) of each member — network namespaces, where every
    member listens on 12379/12380 of its own address; default: loopback, on free ports.
    ``tls``: clients over https with a client certificate (loopback members only)."""
    binary = _etcd_binary()
    root = Path(tempfile.mkdtemp(prefix="warren-etcd-"))
    ports = _free_ports(2 * size) if hosts is None else [12379, 12380] * size
    members = [
        EtcdMember(
            name=f"n{i + 1}",
            client_port=ports[2 * i],
            peer_port=ports[2 * i + 1],
            data_dir=root / f"n{i + 1}",
            log_path=root / f"n{i + 1}.log",
            tls=tls,
            **({"host": hosts[i][0], "wrapper": hosts[i][1]} if hosts else {}),
        )
        for i in range(size)
    ]
    cluster = EtcdCluster(members, root)
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    token = f"warren-test-{secrets.token_hex(4)}"
    try:
        for m in members:
            argv = [
                *m.wrapper,
                binary,
                "--name", m.name,
                "--data-dir", str(m.data_dir),
                "--listen-client-urls", m.client_url,
                "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url,
                "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--heartbeat-interval", "50",
                "--election-timeout", "300",
            ]  # fmt: skip
            if tls is not None:
                argv += [
                    "--client-cert-auth",
                    "--trusted-ca-file", str(tls.ca),
                    "--cert-file", str(tls.server_cert),
                    "--key-file", str(tls.server_key),
                ]  # fmt: skip
            with m.log_path.open("wb") as log:
                m.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(members)
        while pending:
            for m in list(pending):
                if not m.alive:
                    pytest.fail(f"etcd {m.name} exited at start:\n{m.log_tail()}")
                if m.ready():
                    pending.remove(m)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {m.name}\n{m.log_tail()}" for m in pending)
                pytest.fail(f"etcd not ready within {START_TIMEOUT:g}s:\n{tails}")
            if pending:
                time.sleep(0.02)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    """One etcd member for the whole session; tests keep apart through ``etcd_prefix``."""
    cluster = start_cluster(1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EtcdCluster, EtcdTlsFiles]]:
    """One etcd member for the whole session that serves clients over https only and asks each
    for a certificate of its CA; with the files a client needs. Tests keep apart by prefix."""
    files = make_tls_files(tmp_path_factory.mktemp("etcd-tls"))
    cluster = start_cluster(1, tls=files)
    try:
        yield cluster, files
    finally:
        cluster.stop()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix of this test's own, e.g. ``/test-3f9c2a1b``."""
    return f"/test-{secrets.token_hex(4)}"


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """Three members of a fresh cluster, for failover tests; all killed afterwards."""
    cluster = start_cluster(3)
    try:
        yield cluster
    finally:
        cluster.stop()
