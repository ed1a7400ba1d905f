"""The docker driver: one container per task, through the Docker Engine API (v1.41) over a unix
socket — Docker's, or Podman's compatible service.

- the image is pulled per ``pullPolicy`` (``if-not-present`` by default); an image that cannot be
  found fails the task at once ("image not found"), which fails the deployment cleanly instead
  of retrying for ever;
- the container gets the service's env plus ``PORT`` (the container port) and ``WARREN_*``, the
  labels ``warren.task``, ``warren.service``, ``warren.revision`` and ``warren.node`` — a
  restarted agent finds its containers by them, adopts the running ones and removes strays —,
  its container port published on a host port the agent allocates (the task's endpoint, where
  the ingress sends traffic), CPU and memory limits, ``Init: true``, ``nofile`` and ``nproc``
  ulimits, and no engine restart policy: restarts are Warren's;
- stop: the service's stop signal, ``stopGrace``, then SIGKILL (the engine's own stop);
- the exit code and an OOM kill go into the task's status; the logs are kept in the agent's log
  directory when the container is removed.

Health probes run from the agent against the endpoint (or ``exec`` in the container), never
the engine's HEALTHCHECK (Podman runs it only under systemd).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import resource
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from ...domain.errors import DriverError
from ...domain.logs import LogLine, parse_time, stamp_of
from ...domain.specs import HealthCheck, ServiceSpec
from ...domain.tasks import Task
from ...ports import Clock, ExitStatus, Prober, ProbeResult, RecoveredTask, TaskHandle
from .local import PortPool
from .logfiles import follow_log, read_log

__all__ = ["API_VERSION", "ContainerProber", "DockerDriver"]

log = logging.getLogger("warren.agent")

API_VERSION = "v1.41"
ULIMIT = 8192
"""``nofile`` and ``nproc`` for every container — engines' defaults differ (Podman's break
some images), so both are always sent —, capped by this agent's own hard limits: an engine
started like the agent cannot give more (runc: "error setting rlimit ... not permitted")."""
DEFAULT_PORT = 8080
"""The container port when the service publishes none with a ``target``."""
CALL_TIMEOUT = 60.0
"""Bound of every engine call but ``wait`` (a pull of a large image can take a while)."""
WAIT_SLICE = 10.0
"""Longest a task's end can go unseen if it fell between a look and the wait that follows."""
ENGINE_RETRY = 1.0
"""How often an engine that went away is tried again while a task waits on it."""
_LABEL = "warren.task"
_NO_CONNECTION = 900
"""aiodocker's status for "could not talk to the engine at all" (socket missing, refused)."""


@dataclass
class _Container:
    task_id: str
    id: str
    handle: TaskHandle
    port: int | None


class DockerDriver:
    name = "docker"

    def __init__(
        self,
        socket_path: str,
        node: str,
        log_dir: Path,
        clock: Clock,
        address: str = "127.0.0.1",
        network: str | None = None,
    ) -> None:
        """``network``: the engine network containers join (its bridge carries the published
        ports); None: the engine's default (Docker's ``bridge``, Podman's ``podman``)."""
        self.socket_path = socket_path
        self.network = network
        self.node = node
        self.log_dir = log_dir
        self.address = address
        self._clock = clock
        self._ports = PortPool(address)
        self._containers: dict[str, _Container] = {}
        self._docker: aiodocker.Docker | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(
                url=f"unix://{self.socket_path}", api_version=API_VERSION
            )
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def ping(self) -> str:
        """The engine's name and version (a clear error when the socket is not usable)."""
        async with self._engine_call("reach the container engine"):
            info = await self.docker.version()
        return f"{info.get('Platform', {}).get('Name') or 'engine'} {info.get('Version', '?')}"

    # ── start ────────────────────────────────────────────────────────────────────────────────

    async def start(self, task: Task, spec: ServiceSpec) -> TaskHandle:
        if not spec.image:
            raise DriverError("the docker driver needs an image")
        await self._ensure_image(spec.image, spec.pull_policy)
        target = _container_port(spec)
        port = self._ports.allocate() if target is not None else None
        name = _container_name(task.id)
        # A container of this task left by a crash between create and record: it goes first.
        with contextlib.suppress(aiodocker.DockerError):
            await self.docker.containers.container(name).delete(force=True)
        try:
            async with self._engine_call(f"create the container of {task.id}"):
                container = await self.docker.containers.create(
                    self._config(task, spec, target, port), name=name
                )
            try:
                async with self._engine_call(f"start the container of {task.id}"):
                    await container.start()
                info = await self._inspect(container.id)
            except DriverError:
                with contextlib.suppress(Exception):
                    await container.delete(force=True)
                raise
        except DriverError:
            if port is not None:
                self._ports.release(port)
            raise
        handle = self._handle(container.id, port, info, await self._digest(spec.image, info))
        self._containers[task.id] = _Container(task.id, container.id, handle, port)
        state = info.get("State", {})
        if not state.get("Running") and state.get("Status") == "exited":
            log.info("container of %s exited at once (code %s)", task.id, state.get("ExitCode"))
        return handle

    async def _ensure_image(self, image: str, policy: str) -> None:
        present = await self._image_present(image)
        if present and policy != "always":
            return
        if policy == "never":
            raise DriverError(f"image not found: {image} (pull policy never, not on this node)")
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                answer = await self.docker.images.pull(image)
        except (aiodocker.DockerError, TimeoutError, aiohttp.ClientError) as exc:
            if present:  # ``always`` but the registry is away: the local copy will do
                log.warning("pull of %s failed (%s); using the local image", image, exc)
                return
            raise DriverError(f"image not found: {image}: {_engine_message(exc)}") from None
        errors = [a["error"] for a in answer or () if isinstance(a, dict) and a.get("error")]
        if errors and not present:
            raise DriverError(f"image not found: {image}: {errors[-1]}")

    async def _digest(self, image: str, info: dict[str, Any]) -> str | None:
        """The image the container runs, by a reference that cannot move: ``image`` itself if
        it is one already (a pinned revision's), else the image's repo digest, else its ID
        (an image built or imported here has no repo digest). None if the engine will not
        say: the task runs all the same, its revision is pinned by a later one."""
        if "@" in image or image.startswith("sha256:"):
            return image
        image_id = str(info.get("Image") or "")
        if not image_id:
            return None
        try:
            async with self._engine_call(f"look up the image of {image}"):
                found = await self.docker.images.inspect(image_id)
        except DriverError as exc:
            log.warning("no digest for %s: %s", image, exc.message)
            return None
        return _pinned(image, found.get("RepoDigests") or (), str(found.get("Id") or image_id))

    async def _image_present(self, image: str) -> bool:
        try:
            async with self._engine_call(f"look up the image {image}"):
                await self.docker.images.inspect(image)
        except DriverError as exc:
            if exc.message.endswith("(404)"):
                return False
            raise
        return True

    def _config(
        self, task: Task, spec: ServiceSpec, target: int | None, port: int | None
    ) -> dict[str, Any]:
        env = {
            **spec.env,
            "WARREN_TASK_ID": task.id,
            "WARREN_SERVICE": task.service,
            "WARREN_REVISION": str(task.revision),
        }
        if target is not None:
            env["PORT"] = str(target)
        host: dict[str, Any] = {
            "Init": True,
            "RestartPolicy": {"Name": "no"},
            "Ulimits": [
                _ulimit("nofile", resource.RLIMIT_NOFILE),
                _ulimit("nproc", resource.RLIMIT_NPROC),
            ],
        }
        if self.network:
            host["NetworkMode"] = self.network
        if spec.resources.cpus:
            host["NanoCpus"] = int(spec.resources.cpus * 1e9)
        if spec.resources.memory:
            host["Memory"] = spec.resources.memory
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {
                _LABEL: task.id,
                "warren.service": task.service,
                "warren.revision": str(task.revision),
                "warren.node": self.node,
            },
            "StopSignal": spec.stop_signal,
            "StopTimeout": max(1, round(spec.stop_grace)),
            "HostConfig": host,
        }
        if spec.command:
            config["Cmd"] = list(spec.command)
        if target is not None and port is not None:
            config["ExposedPorts"] = {f"{target}/tcp": {}}
            host["PortBindings"] = {
                f"{target}/tcp": [{"HostIp": self.address, "HostPort": str(port)}]
            }
        return config

    # ── run and stop ─────────────────────────────────────────────────────────────────────────

    async def wait(self, task_id: str) -> ExitStatus:
        """Until the container ends. An engine that goes away (restarted, upgraded) is waited
        for: its containers may still run (Podman's do), and whether they do is then asked
        again."""
        known = self._containers.get(task_id)
        if known is None:
            raise DriverError(f"task {task_id} is not running here")
        container = self.docker.containers.container(known.id)
        lost = False
        while True:
            try:
                if await self._wait_slice(container):
                    break
                continue
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    return ExitStatus(None, "the container was removed outside Warren")
                if exc.status != _NO_CONNECTION:
                    raise DriverError(f"waiting for {task_id}: {_engine_message(exc)}") from None
                if not lost:
                    log.warning("%s: lost the container engine; waiting for it", task_id)
                    lost = True
                await asyncio.sleep(ENGINE_RETRY)
            except aiohttp.ClientError as exc:
                if not lost:
                    log.warning("%s: lost the container engine (%s); waiting for it", task_id, exc)
                    lost = True
                await asyncio.sleep(ENGINE_RETRY)
        return await self._exit_status(known.id, stopped=False)

    async def _wait_slice(self, container: DockerContainer) -> bool:
        """Whether the container has ended, waiting up to WAIT_SLICE for it. ``next-exit``: a
        plain wait costs Podman a poll of the container's state per waiter (20 waiting tasks
        took a whole core here), ``next-exit`` costs nothing — but misses an exit that came
        before it, hence the look first and the bounded slice."""
        state = (await container.show()).get("State", {})
        if not state.get("Running") and state.get("Status") != "created":
            return True
        try:
            async with asyncio.timeout(WAIT_SLICE):
                await container.wait(timeout=None, condition="next-exit")
        except TimeoutError:
            return False
        return True

    async def _exit_status(self, container_id: str, stopped: bool) -> ExitStatus:
        try:
            info = await self._inspect(container_id)
        except DriverError:
            return ExitStatus(None, "the container is gone")
        state = info.get("State", {})
        code = state.get("ExitCode")
        memory = (info.get("HostConfig") or {}).get("Memory") or 0
        # Podman never sets OOMKilled: there, a SIGKILL (137) nobody asked for, under a memory
        # limit, is the kernel's OOM killer.
        oom = bool(state.get("OOMKilled")) or (not stopped and code == 137 and memory > 0)
        if oom:
            reason = f"killed: out of memory (limit {memory // 2**20} MiB)"
        else:
            reason = state.get("Error") or f"exited with code {code}"
        return ExitStatus(int(code) if code is not None else None, reason, oom)

    async def stop(self, task_id: str, grace: float) -> ExitStatus:
        known = self._containers.get(task_id)
        if known is None:
            return ExitStatus(None, "not running")
        container = self.docker.containers.container(known.id)
        try:
            async with asyncio.timeout(grace + CALL_TIMEOUT):
                await container.stop(t=math.ceil(grace))
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return ExitStatus(None, "the container is gone")
            if exc.status != 304:  # 304: already stopped
                raise DriverError(f"stopping {task_id}: {_engine_message(exc)}") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DriverError(f"stopping {task_id}: the engine did not answer ({exc})") from None
        return await self._exit_status(known.id, stopped=True)

    async def follow(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> AsyncIterator[list[LogLine]]:
        known = self._containers.get(task_id)
        if known is None:  # removed: its logs were kept in the file, and nothing more comes
            async for batch in follow_log(self._log_path(task_id), tail, since, lambda: True):
                yield batch
            return
        cut = stamp_of(self._clock.now())
        history = await self.logs(task_id, tail, since)
        yield history
        after = _AfterHistory(history, since)
        container = self.docker.containers.container(known.id)
        partial = ""
        try:
            async for chunk in container.log(
                stdout=True, stderr=True, follow=True, timestamps=True,
                since=_whole_seconds(after.last or cut), timeout=None,
            ):  # fmt: skip
                *lines, partial = (partial + chunk).split("\n")
                batch = after.take([_engine_line(x) for x in lines])
                if batch:
                    yield batch
        except (aiodocker.DockerError, aiohttp.ClientError):
            pass  # the container went (or the engine): nothing more will come
        rest = after.take([_engine_line(partial)] if partial else []) + after.rest()
        if rest:
            yield rest

    async def exec_in(self, task_id: str, command: list[str]) -> tuple[int | None, str]:
        """Run ``command`` in the task's container: (exit code, output)."""
        known = self._containers.get(task_id)
        if known is None:
            raise DriverError(f"task {task_id} has no container here")
        container = self.docker.containers.container(known.id)
        async with self._engine_call(f"run {command[0]} in the container of {task_id}"):
            execution = await container.exec(command, stdout=True, stderr=True)
            output = []
            async with execution.start(detach=False) as stream:
                while (message := await stream.read_out()) is not None:
                    output.append(message.data.decode("utf-8", "replace"))
            code = (await execution.inspect()).get("ExitCode")
        return code, "".join(output)

    # ── restart ──────────────────────────────────────────────────────────────────────────────

    async def recover(self) -> list[RecoveredTask]:
        """This node's containers, by label: running ones are adopted (their endpoint as it was
        published), ended ones reported so that the agent records how they ended."""
        async with self._engine_call("list this node's containers"):
            containers = await self.docker.containers.list(
                all=True, filters={"label": [f"warren.node={self.node}"]}
            )
        found = []
        for c in containers:
            info = await self._inspect(c.id)
            task_id = info.get("Config", {}).get("Labels", {}).get(_LABEL)
            if not task_id:
                continue
            port = _published_port(info)
            if port is not None:
                self._ports.take(port)
            asked = str(info.get("Config", {}).get("Image") or "")
            handle = self._handle(c.id, port, info, await self._digest(asked, info))
            self._containers[task_id] = _Container(task_id, c.id, handle, port)
            found.append(RecoveredTask(task_id, handle, bool(info.get("State", {}).get("Running"))))
        return found

    async def forget(self, task_id: str) -> None:
        """Keep the logs in the log directory, then remove the container."""
        known = self._containers.pop(task_id, None)
        if known is None:
            return
        if known.port is not None:
            self._ports.release(known.port)
        container = self.docker.containers.container(known.id)
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(CALL_TIMEOUT):
                chunks = await container.log(stdout=True, stderr=True, timestamps=True)
            lines = map(_engine_line, "".join(chunks).splitlines())
            # As a process's log writer writes its file: "TIME TEXT" (a line with no time as
            # it is).
            with open(self._log_path(task_id), "a") as out:  # noqa: ASYNC230
                out.write(
                    "".join(f"{x.time} {x.text}\n" if x.time else f"{x.text}\n" for x in lines)
                )
        with contextlib.suppress(aiodocker.DockerError, aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(CALL_TIMEOUT):
                await container.delete(force=True)

    async def logs(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        known = self._containers.get(task_id)
        if known is None:
            return await read_log(self._log_path(task_id), tail, since)
        container = self.docker.containers.container(known.id)
        # With ``since``, the engine picks by whole seconds and its ``tail`` would count the
        # lines before the cut: both are applied here, on the lines' own times.
        params: dict[str, Any] = {"tail": "all" if since or not tail else tail}
        if since:
            params["since"] = _whole_seconds(since)
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                chunks = await container.log(stdout=True, stderr=True, timestamps=True, **params)
        except (aiodocker.DockerError, aiohttp.ClientError, TimeoutError):
            return await read_log(self._log_path(task_id), tail, since)
        lines = [_engine_line(x) for x in "".join(chunks).splitlines()]
        if since:
            lines = [x for x in lines if x.time >= since]
        return lines[-tail:] if tail else lines

    def _log_path(self, task_id: str) -> Path:
        return self.log_dir / f"{task_id}.log"

    def _handle(
        self, container_id: str, port: int | None, info: dict[str, Any], digest: str | None = None
    ) -> TaskHandle:
        """The same handle for a container whether just started or adopted after a restart:
        its start time is the engine's."""
        started = _timestamp(info.get("State", {}).get("StartedAt", ""))
        return TaskHandle(
            runtime_id=container_id,
            endpoint=f"{self.address}:{port}" if port is not None else None,
            started_at=started if started is not None else self._clock.now(),
            image_digest=digest,
        )

    # ── engine calls ─────────────────────────────────────────────────────────────────────────

    async def _inspect(self, container_id: str) -> dict[str, Any]:
        async with self._engine_call("inspect a container"):
            container = DockerContainer(self.docker, id=container_id)
            return dict(await container.show())

    @contextlib.asynccontextmanager
    async def _engine_call(self, what: str) -> AsyncIterator[None]:
        """One bounded engine call; every failure becomes one clear DriverError."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                yield
        except aiodocker.DockerError as exc:
            if exc.status == _NO_CONNECTION:
                problem = _socket_problem(self.socket_path, exc)
                raise DriverError(f"cannot {what}: {problem}") from None
            raise DriverError(f"cannot {what}: {_engine_message(exc)} ({exc.status})") from None
        except TimeoutError:
            raise DriverError(f"cannot {what}: the engine did not answer") from None
        except aiohttp.ClientConnectorError as exc:
            raise DriverError(f"cannot {what}: {_socket_problem(self.socket_path, exc)}") from None
        except aiohttp.ClientError as exc:
            raise DriverError(f"cannot {what}: {exc}") from None


def _ulimit(name: str, which: int) -> dict[str, Any]:
    hard = resource.getrlimit(which)[1]
    value = ULIMIT if hard == resource.RLIM_INFINITY else min(ULIMIT, hard)
    return {"Name": name, "Soft": value, "Hard": value}


def _container_name(task_id: str) -> str:
    return "warren-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", task_id)


def _container_port(spec: ServiceSpec) -> int | None:
    """The port the container listens on: the first port's ``target``, else 8080 when the
    service publishes a port or has an http/tcp health check; None when nothing reaches it."""
    for p in spec.ports:
        return p.target or DEFAULT_PORT
    check = spec.health_check
    if check is not None and (check.http is not None or check.tcp is not None):
        return DEFAULT_PORT
    return None


def _pinned(image: str, repo_digests: Sequence[str], image_id: str) -> str:
    """``image`` as a reference that cannot move: the repo digest of its own repository
    (``nginx:1.27`` → ``docker.io/library/nginx@sha256:…``), else any repo digest of the
    image, else its ID (``sha256:…``), which names the image on this engine only."""
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    for entry in repo_digests:
        name = entry.split("@", 1)[0]
        if name == repository or name.endswith("/" + repository):
            return entry
    return repo_digests[0] if repo_digests else image_id


def _timestamp(text: str) -> float | None:
    """An engine's RFC 3339 time (nanoseconds, ``Z`` or an offset) → seconds since the epoch."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text or "")
    if m is None or m.group(1).startswith("0001"):
        return None
    fraction = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}{fraction}{zone}").timestamp()


class _AfterHistory:
    """The lines of a follow's stream that come after its history. The stream starts at the
    whole second of the history's last line (the engine's ``since`` is whole seconds), and an
    engine may give times in whole seconds too (Podman's compatible API before 5.8): of the
    lines with the last line's time, those up to the history's own last ones are passed over —
    found by their text, since a count would need all the lines of that time."""

    def __init__(self, history: list[LogLine], since: str | None) -> None:
        self.last = next((x.time for x in reversed(history) if x.time), "")
        self.ending = [x.text for x in history if x.time == self.last] if self.last else []
        self.since = since
        self.held: list[LogLine] = []
        """Lines of the last line's time, until the history's ending is found among them."""

    def take(self, lines: list[LogLine]) -> list[LogLine]:
        out: list[LogLine] = []
        for line in lines:
            if not self.ending:
                if self.since is None or line.time >= self.since:
                    out.append(line)
            elif line.time == self.last:
                self.held.append(line)
                if [x.text for x in self.held[-len(self.ending) :]] == self.ending:
                    self.ending, self.held = [], []
            elif line.time > self.last:  # past it, the ending not found: keep all
                out += [*self.held, line]
                self.ending, self.held = [], []
        return out

    def rest(self) -> list[LogLine]:
        held, self.held = self.held, []
        return held


def _engine_line(raw: str) -> LogLine:
    """A line the engine gave with ``timestamps``: ``TIME TEXT``, TIME in RFC 3339 (Docker's
    with 9 digits, Podman's as it likes) → its LogLine, the time made fixed-width UTC."""
    head, _, text = raw.partition(" ")
    time = parse_time(head)
    return LogLine(time, text) if time is not None else LogLine("", raw)


def _whole_seconds(time: str) -> int:
    """A ``domain.logs`` time → the engine's ``since``: whole seconds since the epoch, down."""
    return int(datetime.fromisoformat(time[:19] + "+00:00").timestamp())


def _published_port(info: dict[str, Any]) -> int | None:
    bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
    for entries in bindings.values():
        for entry in entries or ():
            if str(entry.get("HostPort", "")).isdigit():
                return int(entry["HostPort"])
    return None


def _engine_message(exc: BaseException) -> str:
    if isinstance(exc, aiodocker.DockerError):
        message = exc.message
        if isinstance(message, dict):
            message = message.get("message", str(message))
        return str(message).strip()
    return str(exc) or type(exc).__name__


def _socket_problem(path: str, exc: BaseException) -> str:
    if not Path(path).exists():
        return f"no engine socket at {path} (is Docker or `podman system service` running?)"
    if isinstance(exc.__cause__ or exc, PermissionError) or "Permission denied" in str(exc):
        return f"permission denied on {path} (join the docker group, or run as root)"
    return f"the engine at {path} does not answer ({exc})"


class ContainerProber:
    """Health probes of containers: ``http`` and ``tcp`` from the agent to the published port
    (as for processes), ``exec`` inside the container."""

    def __init__(self, driver: DockerDriver, network: Prober) -> None:
        self.driver = driver
        self.network = network

    async def probe(self, check: HealthCheck, task: Task, spec: ServiceSpec) -> ProbeResult:
        if check.exec is None:
            return await self.network.probe(check, task, spec)
        try:
            async with asyncio.timeout(check.timeout):
                code, output = await self.driver.exec_in(task.id, list(check.exec.command))
        except TimeoutError:
            return ProbeResult(False, f"exec probe timed out after {check.timeout:g}s")
        except DriverError as exc:
            return ProbeResult(False, f"exec probe: {exc.message}")
        last = output.strip().splitlines()[-1:]
        detail = f"exec exited with {code}" + (f": {last[0][:200]}" if last else "")
        return ProbeResult(code == 0, detail)
