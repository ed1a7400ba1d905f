"""Real container engines for tests: a private dockerd and a private Podman API service.

Session fixtures ``dockerd_engine`` and ``podman_engine`` each start one engine as root, on a unix
socket in a fresh directory under /tmp (short: socket paths are limited to 108 bytes), with its own
storage, so that the machine's own engines and images are never touched; they import the test
images (``tests.images.ensure_images``) and yield an ``Engine``. ``engine`` runs a test once per
engine. When a binary is missing the fixture skips, or fails under ``CI=true`` naming the apt
package to install.

- dockerd: ``dockerd --iptables=false --ip-masq=false --bridge=none`` (no ``docker0``) with its
  own ``--data-root``, ``--exec-root`` (its supervised containerd lives there too), ``--pidfile``
  and an empty ``--config-file``.
- Podman: ``podman system service --time=0 unix://SOCK`` with ``CONTAINERS_CONF`` and
  ``CONTAINERS_STORAGE_CONF`` pointing at files in that directory: runc, cgroupfs, the default
  nofile/nproc ulimits, ``init_path`` = ``tini-static`` (``Init: true`` bind-mounts the init into
  the container, so it must be static: the busybox image has no libc), CNI networks and libpod's
  tmp dir in that directory too.

Networking, as measured here (both engines, rootful):

- ``NetworkMode: host`` reaches the container on 127.0.0.1 with both, with nothing to set up and
  nothing left behind; the container must listen on the port the agent picks (``PORT``).
- A published port (``PortBindings`` 127.0.0.1:host → container port) needs a bridge network.
  With ``--bridge=none``, dockerd's default network has no bridge: the container starts and the
  port is silently not published. So each fixture creates a bridge network (``Engine.network``)
  with a unique interface name (``wr<hex>``) and a random free 10.2xx.x.0/24 subnet, deleted at
  teardown. dockerd then forwards through ``docker-proxy`` (no iptables); Podman through the CNI
  ``portmap`` plugin (iptables DNAT, and conmon holding the host port).

Teardown, each step bounded and by PID: remove every container through the API, delete the
network, SIGTERM the engine then SIGKILL, SIGKILL any process still naming the engine's directory
(containerd, shims, conmon, ``podman container cleanup``), unmount what is left under the
directory (dockerd leaves an nsfs mount of its ``netns/default``), delete the bridge if still
there, and undo what Podman leaves outside its directory when it was not there before: the
``/run/netns`` self-mount, ``/var/lib/cni/networks/<net>``, ``/var/lib/containers/cache`` (its
blob-info cache, always there for root), the CNI firewall's isolation rules naming our bridge
(kept after the network is deleted) and the CNI chains once nothing else uses them.

A session killed before its teardown (``kill -9`` of pytest) leaves its directory, with
``session.json``: the next session of the same kind revives that engine on the same storage and
stops it the usual way.

Imports nothing of Warren's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.images import api_request, ensure_images

__all__ = ["Engine", "dockerd_engine", "each_engine", "podman_engine"]

START_TIMEOUT = 30.0
"""Bound on an engine's start (dockerd answers /_ping in ~0.2 s here, Podman in ~0.3 s)."""

STATE_FILE = "session.json"
"""In each engine directory: the owning pytest (PID, start time), the engine's PID, the network
id, and what the machine had before — enough for a later session to clean up after a killed one."""

STOP_TIMEOUT = 15.0
"""Bound on SIGTERM → exit before SIGKILL (dockerd takes ~2.5 s, waiting for its containerd)."""


@dataclass(frozen=True)
class Engine:
    """A running engine: its name, API socket, and the environment a client or CLI needs."""

    name: str  # "dockerd" | "podman"
    socket: str  # path of the API's unix socket
    env: dict[str, str] = field(default_factory=dict)  # DOCKER_HOST, and CONTAINERS_* for podman
    network: str = ""  # a bridge network for published ports (see the module docstring)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def _require(binaries: dict[str, str]) -> None:
    """Skip (fail in CI) unless root and every binary is present; ``binaries``: name → package."""
    if os.geteuid() != 0:
        _unavailable("container engines are started rootful: run the tests as root")
    missing = {pkg for name, pkg in binaries.items() if not shutil.which(name)}
    if missing:
        _unavailable(f"missing binaries; apt-get install {' '.join(sorted(missing))}")


def _is_mount(path: str) -> bool:
    return path in _mounts()


def _mounts() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            points.append(point.encode().decode("unicode_escape"))  # "\040" → " "
    return points


def _pids_naming(text: str) -> list[int]:
    """PIDs of processes whose command line contains ``text`` (our engine directory)."""
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
    return found


def _free_subnet() -> str:
    """A random 10.200-254.x.0/24 that no route of this machine overlaps."""
    routes = []
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            # Little-endian hex: "0000A8C0" is 192.168.0.0.
            dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
            if int(mask):
                routes.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    rng = random.SystemRandom()
    for _ in range(1000):
        net = ipaddress.IPv4Network(f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(route) for route in routes):
            return str(net)
    raise RuntimeError("no free 10.200-254.x.0/24 subnet")


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (None when gone): tells a PID reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].startswith(b"Z")


class _EngineProcess:
    """One engine process and everything it made; ``stop`` undoes all of it."""

    name = ""
    prefix = ""  # of its directory in /tmp
    binaries: dict[str, str] = {}

    def __init__(self, directory: Path | None = None) -> None:
        """A new engine directory, or (``directory``) one a dead session left behind."""
        if directory is None:
            # /tmp/wd-XXXXXXXX/api.sock: well under the 108-byte limit of a unix socket path.
            self.dir = Path(tempfile.mkdtemp(prefix=self.prefix, dir="/tmp"))
            me = os.getpid()
            self.state = {"owner": [me, _start_time(me)], "engine": 0, "id": secrets.token_hex(4)}
            self.state.update(self.host_state())
            self._save()
        else:
            self.dir = directory
            self.state = json.loads((directory / STATE_FILE).read_text())
        self.socket = str(self.dir / "api.sock")
        self.log_path = self.dir / "engine.log"
        self.network = f"warren-{self.state['id']}"
        self.bridge = f"wr{self.state['id']}"  # interface names: at most 15 bytes
        self.proc: subprocess.Popen[bytes] | None = None

    def host_state(self) -> dict[str, Any]:
        """What the machine looked like before the engine started (see ``cleanup_host``)."""
        return {}

    def _save(self) -> None:
        (self.dir / STATE_FILE).write_text(json.dumps(self.state))

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket}"}

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # ── start ──

    def start(self) -> Engine:
        self.start_process()
        self._wait_ready()
        self._create_network()
        return Engine(self.name, self.socket, self.env(), self.network)

    def start_process(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env()},
                # Its own directory as cwd: conmon writes files there (an "oom" marker).
                cwd=self.dir,
                start_new_session=True,  # a Ctrl-C of pytest must not reach it before teardown
            )
        self.state["engine"] = self.proc.pid
        self._save()

    def _answers(self) -> bool:
        with contextlib.suppress(OSError):
            return api_request(self.socket, "GET", "/_ping", timeout=2)[0] == 200
        return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT}s:\n{self.log_tail()}")

    def _create_network(self) -> None:
        body = {
            "Name": self.network,
            "Driver": "bridge",
            "Options": {"com.docker.network.bridge.name": self.bridge},
            # Our own subnet: left to choose, two engines (or two sessions) started together
            # pick the same one (dockerd 172.17.0.0/16, Podman 10.89.0.0/24) and their routes
            # clash.
            "IPAM": {"Driver": "default", "Config": [{"Subnet": _free_subnet()}]},
        }
        status, data = api_request(
            self.socket,
            "POST",
            "/networks/create",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        if status not in (200, 201):
            raise RuntimeError(f"{self.name}: network create: HTTP {status}: {data[:300]!r}")

    # ── stop ──

    def stop(self) -> list[str]:
        """Undo everything, each step bounded; return what could not be cleaned (leaks)."""
        leaks: list[str] = []
        if self._answers():
            with contextlib.suppress(Exception):
                self._remove_containers()
            with contextlib.suppress(Exception):
                api_request(self.socket, "DELETE", f"/networks/{self.network}", timeout=30)
        self._stop_process()
        stragglers = _pids_naming(str(self.dir))
        for pid in stragglers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leaks += [f"process {p}" for p in _wait_gone(stragglers, 5)]
        leaks += self._unmount_all()
        leaks += self._delete_bridge()
        self.cleanup_host()
        shutil.rmtree(self.dir, ignore_errors=True)
        return leaks

    def _remove_containers(self) -> None:
        status, data = api_request(self.socket, "GET", "/containers/json?all=1", timeout=30)
        for container in json.loads(data) if status == 200 else []:
            api_request(
                self.socket, "DELETE", f"/containers/{container['Id']}?force=1&v=1", timeout=30
            )

    def _stop_process(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            return
        # The engine of a dead session: not our child, so poll /proc instead of wait().
        pid = self._old_engine_pid()
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if not _wait_gone([pid], wait):
                return

    def _old_engine_pid(self) -> int | None:
        """The PID of a dead session's engine if it still runs (its command line names our
        directory: the PID was not reused)."""
        pid = int(self.state.get("engine") or 0)
        return pid if pid and pid in _pids_naming(str(self.dir)) else None

    def revive(self) -> None:
        """Make a dead session's engine answer again, so that its containers go through the API
        (dockerd reconnects to the running shims; Podman finds its conmons)."""
        if self._answers() or self._old_engine_pid() is not None:
            return
        with contextlib.suppress(Exception):
            self.start_process()
            self._wait_ready()

    def _unmount_all(self) -> list[str]:
        prefix = str(self.dir)
        leaks = []
        # Deepest first; a mount may be stacked more than once on the same point.
        for _ in range(3):
            points = sorted(
                {p for p in _mounts() if p == prefix or p.startswith(prefix + "/")}, reverse=True
            )
            for point in points:
                done = subprocess.run(["umount", point], capture_output=True, timeout=10)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)
        leaks += [f"mount {p}" for p in _mounts() if p.startswith(prefix + "/") or p == prefix]
        return leaks

    def _delete_bridge(self) -> list[str]:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            return []
        if shutil.which("ip"):
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, timeout=10)
        return (
            [f"interface {self.bridge}"] if Path(f"/sys/class/net/{self.bridge}").exists() else []
        )

    def cleanup_host(self) -> None:
        """Undo what the engine made outside its directory (Podman does)."""


class _Dockerd(_EngineProcess):
    name = "dockerd"
    prefix = "wd-"
    binaries = {
        "dockerd": "docker.io",
        "containerd": "containerd",
        "docker-proxy": "docker.io",
        "docker-init": "docker.io",
        "runc": "runc",
    }

    def command(self) -> list[str]:
        (self.dir / "daemon.json").write_text("{}\n")  # never read /etc/docker/daemon.json
        ns = f"warren-{self.bridge}"
        return [
            "dockerd",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "-H", f"unix://{self.socket}",
            "--config-file", str(self.dir / "daemon.json"),
            "--data-root", str(self.dir / "data"),
            "--exec-root", str(self.dir / "x"),
            "--pidfile", str(self.dir / "dockerd.pid"),
            # Only matters if a system containerd runs (then dockerd uses it, not its own):
            # keep our containers out of the namespace a system dockerd would use.
            "--containerd-namespace", ns,
            "--containerd-plugins-namespace", f"{ns}-plugins",
        ]  # fmt: skip


class _Podman(_EngineProcess):
    name = "podman"
    prefix = "wp-"
    binaries = {
        "podman": "podman",
        "conmon": "conmon",
        "runc": "runc",
        "tini-static": "tini",
        "iptables": "iptables",
    }

    def host_state(self) -> dict[str, Any]:
        paths = ("/run/netns", "/var/lib/cni", "/var/lib/containers", "/var/lib/containers/cache")
        return {
            "host_paths": {p: os.path.lexists(p) for p in paths},
            "netns_was_mount": _is_mount("/run/netns"),
            "cni_chains_before": _has_cni_chains(),
        }

    def env(self) -> dict[str, str]:
        conf = self.dir / "containers.conf"
        storage = self.dir / "storage.conf"
        if not conf.exists():
            (self.dir / "net").mkdir(exist_ok=True)
            conf.write_text(
                "[containers]\n"
                'default_ulimits = ["nofile=8192:8192", "nproc=8192:8192"]\n'
                "[engine]\n"
                'init_path = "/usr/bin/tini-static"\n'
                'runtime = "runc"\n'  # crun fails on this cgroup layout
                'cgroup_manager = "cgroupfs"\n'  # no systemd here
                'events_logger = "file"\n'
                f'tmp_dir = "{self.dir / "tmp"}"\n'
                f'volume_path = "{self.dir / "root" / "volumes"}"\n'
                "[network]\n"
                'network_backend = "cni"\n'
                f'network_config_dir = "{self.dir / "net"}"\n'
            )
            storage.write_text(
                "[storage]\n"
                'driver = "overlay"\n'
                f'graphroot = "{self.dir / "root"}"\n'
                f'runroot = "{self.dir / "run"}"\n'
            )
        return {
            **super().env(),
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
        }

    def command(self) -> list[str]:
        return ["podman", "system", "service", "--time=0", f"unix://{self.socket}"]

    def cleanup_host(self) -> None:
        before = self.state["host_paths"]
        shutil.rmtree(f"/var/lib/cni/networks/{self.network}", ignore_errors=True)
        if not before["/var/lib/containers/cache"]:
            # Podman's blob-info cache, which it always keeps there for root.
            shutil.rmtree("/var/lib/containers/cache", ignore_errors=True)
        if not before["/var/lib/containers"]:
            with contextlib.suppress(OSError):
                os.rmdir("/var/lib/containers")  # only if empty
        for path in ("/var/lib/cni/networks", "/var/lib/cni/results", "/var/lib/cni"):
            if not before["/var/lib/cni"]:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
        # Podman (like `ip netns`) bind-mounts /run/netns on itself; undo only if we caused it
        # and no namespace of anyone else's is in it.
        netns = "/run/netns"
        with contextlib.suppress(OSError):
            if not self.state["netns_was_mount"] and _is_mount(netns) and not os.listdir(netns):
                subprocess.run(["umount", netns], capture_output=True, timeout=10)
            if not before[netns] and not os.listdir(netns) and not _is_mount(netns):
                os.rmdir(netns)
        _iptables_cleanup(self.bridge, remove_chains=not self.state["cni_chains_before"])


_CNI_STATIC_CHAINS = {
    "CNI-ADMIN", "CNI-FORWARD", "CNI-ISOLATION-STAGE-1", "CNI-ISOLATION-STAGE-2",
    "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK",
}  # fmt: skip


def _iptables_rules() -> dict[str, list[str]]:
    """``iptables-save`` lines by table: chain declarations (``:X``) and rules (``-A …``)."""
    if not shutil.which("iptables-save"):
        return {}
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=10).stdout
    tables: dict[str, list[str]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith((":", "-A ")):
            tables.setdefault(table, []).append(line)
    return tables


def _has_cni_chains() -> bool:
    return any(line.startswith(":CNI-") for lines in _iptables_rules().values() for line in lines)


def _iptables_cleanup(bridge: str, remove_chains: bool) -> None:
    """Remove the CNI firewall rules naming our bridge (the CNI ``firewall`` plugin leaves its
    isolation rules behind when a network is deleted); then, if there were no CNI chains before
    and no other network or container uses them now, the CNI chains themselves."""

    def delete(table: str, rule: str) -> None:
        args = ["iptables", "-t", table, "-D", *shlex.split(rule)[1:]]
        subprocess.run(args, capture_output=True, timeout=10)

    for table, lines in _iptables_rules().items():
        for rule in lines:
            if rule.startswith("-A ") and re.search(rf"\s[!]?\s?-[io] {bridge}\b", rule):
                delete(table, rule)
    if not remove_chains:
        return
    tables = _iptables_rules()
    in_use = False
    for lines in tables.values():
        for line in lines:
            chain = line[1:].split()[0] if line.startswith(":") else line.split()[1]
            if chain.startswith("CNI-") and (
                chain not in _CNI_STATIC_CHAINS or re.search(r"\s-[iosd] ", line)
            ):
                in_use = True  # a container's chain or rule, or another network's bridge
    if in_use:
        return
    for table, lines in tables.items():
        for rule in lines:
            if (
                rule.startswith("-A ")
                and not rule.split()[1].startswith("CNI-")
                and "-j CNI-" in rule
            ):
                delete(table, rule)
        chains = [line[1:].split()[0] for line in lines if line.startswith(":CNI-")]
        for flag in ("-F", "-X"):
            for chain in chains:
                subprocess.run(
                    ["iptables", "-t", table, flag, chain], capture_output=True, timeout=10
                )


def _reap_stale(kind: type[_EngineProcess]) -> list[str]:
    """Clean up after sessions of this kind that died without their teardown (pytest killed):
    revive their engine, then stop it the usual way. Sessions still alive are left alone."""
    leaks = []
    for directory in Path("/tmp").glob(f"{kind.prefix}*"):
        try:
            state = json.loads((directory / STATE_FILE).read_text())
            pid, started = state["owner"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if started is not None and _start_time(pid) == started:
            continue
        process = kind(directory)
        process.revive()
        leaks += process.stop()
    return leaks


def _run(kind: type[_EngineProcess]) -> Iterator[Engine]:
    _require(kind.binaries)
    if stale := _reap_stale(kind):
        print(f"{kind.name}: a dead session left behind: {', '.join(stale)}")
    process = kind()
    try:
        engine = process.start()
        ensure_images(engine.socket)
    except BaseException as exc:
        leaks = process.stop()
        message = f"{kind.name} did not start: {exc}" + (f" (left: {leaks})" if leaks else "")
        raise RuntimeError(message) from exc
    try:
        yield engine
    finally:
        leaks = process.stop()
        if leaks:
            raise AssertionError(f"{kind.name} left behind: {', '.join(leaks)}")


@pytest.fixture(scope="session")
def dockerd_engine() -> Iterator[Engine]:
    yield from _run(_Dockerd)


@pytest.fixture(scope="session")
def podman_engine() -> Iterator[Engine]:
    yield from _run(_Podman)


@pytest.fixture(params=["dockerd", "podman"], name="engine")
def each_engine(request: pytest.FixtureRequest) -> Engine:
    """The test runs once per engine (each started once per session)."""
    result: Engine = request.getfixturevalue(f"{request.param}_engine")
    return result
