"""A whole Warren cluster on network namespaces (tests/netns.py), for the multi-node tests and
the failover benchmark: 3 etcd members (on m1, m2 and e3), managers ``warren server --store
etcd://…`` (m1, m2) and workers ``warren worker`` (w1, w2, w3), each host with its own address.

The managers run no tasks (``--no-worker``): the workers do, and each worker's ingress serves
every service's published ports, routing to the tasks of every node. Every process is killed by
PID at teardown (the worker's tasks too: everything in a worker's namespace; and every
node's ingress, a process of its own that outlives the server or worker that started it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster, start_cluster
from tests.netns import Host, Network
from tests.servers import ingress_processes, wait_for
from warren.client import Client

__all__ = [
    "API_PORT",
    "HEARTBEAT_TTL",
    "HTTP_PORT",
    "Cluster",
    "Member",
    "cluster",
    "warren_cluster",
]

API_PORT = 7070
HTTP_PORT = 8000
HEARTBEAT_TTL = 3.0
"""The workers' lease (unless a cluster is made with another): a dead or cut-off worker's tasks
are replaced this long after."""
LEADER_TTL = 2.0


@dataclass
class Member:
    """A manager or a worker: one warren process on its host."""

    host: Host
    data_dir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    runs_tasks: bool = True

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def api(self) -> str:
        return f"http://{self.address}:{API_PORT}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def start(self) -> Member:
        self.proc = self.host.popen([sys.executable, "-m", "warren", *self.argv], self.log_path)
        return self

    def kill(self) -> None:
        """SIGKILL the warren process (its tasks, if any, keep running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def crash(self) -> None:
        """The machine dies: every process of the host, the tasks and the ingress included."""
        self.host.kill_all()

    def kill_ingress(self) -> None:
        """SIGKILL the node's ingress process (it outlives the warren process that started it)."""
        for pid in ingress_processes(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Cluster:
    network: Network
    etcd: EtcdCluster
    root: Path
    managers: dict[str, Member] = field(default_factory=dict)
    workers: dict[str, Member] = field(default_factory=dict)
    join_token: str = ""
    heartbeat_ttl: float = HEARTBEAT_TTL
    """The lease of every node that runs tasks."""

    @property
    def store_url(self) -> str:
        return "etcd://" + ",".join(self.etcd.endpoints)

    def client(self, manager: str | None = None) -> Client:
        """A client of ``manager`` (default: one that answers)."""
        names = [manager] if manager else list(self.managers)
        for name in names:
            m = self.managers[name]
            if m.proc is not None and m.proc.poll() is None:
                return Client(m.api, data_dir=m.data_dir, timeout=10)
        raise AssertionError("no manager is running")

    def leader(self) -> Member:
        def find() -> Member | None:
            for m in self.managers.values():
                if m.proc is None or m.proc.poll() is not None:
                    continue
                with contextlib.suppress(Exception), self.client(m.name) as c:
                    if c.info()["leader"]:
                        return m
            return None

        return wait_for(find, 15, "a leader")

    def start_manager(self, name: str, tasks: bool = False) -> Member:
        """A manager; ``tasks``: one that runs tasks too (on a lease of ``heartbeat_ttl``)."""
        host = self.network[name]
        data = self.root / name
        runs = (
            ["--advertise", host.address, "--heartbeat-ttl", f"{self.heartbeat_ttl:g}s"]
            if tasks
            else ["--no-worker"]
        )
        m = Member(
            host,
            data,
            [
                "server", "--store", self.store_url, "--node-name", name, *runs,
                "--data-dir", str(data), "--api", f"{host.address}:{API_PORT}",
                "--ingress-host", host.address, "--http-port", str(HTTP_PORT),
                "--leader-ttl", f"{LEADER_TTL:g}s",
            ],
            runs_tasks=tasks,
        ).start()  # fmt: skip
        self.managers[name] = m

        def up() -> bool:
            with Client(m.api, data_dir=data, timeout=2) as c:
                return bool(c.health() and c.info())

        try:
            wait_for(up, 20, f"manager {name}")
        except AssertionError:
            raise AssertionError(f"manager {name} did not start:\n{m.log()}") from None
        return m

    def start_worker(self, name: str) -> Member:
        host = self.network[name]
        data = self.root / name
        managers = ",".join(m.api for m in self.managers.values())
        w = Member(
            host,
            data,
            [
                "worker", "--manager", managers, "--token", self.join_token,
                "--node-name", name, "--advertise", host.address, "--data-dir", str(data),
                "--http-port", str(HTTP_PORT), "--heartbeat-ttl", f"{self.heartbeat_ttl:g}s",
            ],
        ).start()  # fmt: skip
        self.workers[name] = w
        return w

    def wait_ready(self, *workers: str, timeout: float = 20) -> None:
        names = set(workers or self.workers)

        def ready() -> bool:
            with self.client() as c:
                nodes = {n.name: n for n, _ in c.list_nodes()}
            return all(n in nodes and nodes[n].status == "ready" for n in names)

        try:
            wait_for(ready, timeout, f"nodes {sorted(names)} ready")
        except AssertionError:
            members = {**self.managers, **self.workers}
            logs = "\n".join(f"--- {w}\n{members[w].log()}" for w in names)
            raise AssertionError(f"nodes not ready:\n{logs}") from None

    def logs(self) -> str:
        return "\n".join(
            f"--- {m.name}\n{m.log()}" for m in [*self.managers.values(), *self.workers.values()]
        )

    def stop(self) -> None:
        for w in self.workers.values():
            w.crash()
        for m in self.managers.values():
            m.kill()
            m.kill_ingress()
            if m.runs_tasks:
                m.crash()
        self.etcd.stop()


@contextlib.contextmanager
def warren_cluster(
    network: Network,
    root: Path,
    managers: int = 2,
    workers: int = 3,
    heartbeat_ttl: float = HEARTBEAT_TTL,
) -> Iterator[Cluster]:
    """Hosts m1…, e3 (the third etcd member when there are only two managers) and w1…; etcd on
    the first three of them, the managers, then the workers, joined with the cluster's token,
    each on a lease of ``heartbeat_ttl``."""
    manager_names = [f"m{i + 1}" for i in range(managers)]
    etcd_names = [*manager_names, "e3"][:3]
    for name in dict.fromkeys([*manager_names, *etcd_names]):
        network.add(name)
    worker_names = [f"w{i + 1}" for i in range(workers)]
    for name in worker_names:
        network.add(name)
    etcd = start_cluster(3, [(network[n].address, network[n].wrapper) for n in etcd_names])
    cluster = Cluster(network, etcd, root, heartbeat_ttl=heartbeat_ttl)
    try:
        for name in manager_names:
            cluster.start_manager(name)
        cluster.leader()
        with cluster.client() as c:
            cluster.join_token = c.join_token()
        for name in worker_names:
            cluster.start_worker(name)
        cluster.wait_ready()
        yield cluster
    except BaseException:
        print(cluster.logs(), file=sys.stderr)
        raise
    finally:
        cluster.stop()


@pytest.fixture
def cluster(hosts: Network, tmp_path: Path) -> Iterator[Cluster]:
    with warren_cluster(hosts, tmp_path) as c:
        yield c
