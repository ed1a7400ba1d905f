"""Health probes run by the agent: ``http`` (GET, status in range), ``tcp`` (connect), ``exec``
(a command in the task's environment, exit status 0). Never the engine's HEALTHCHECK.

The http probe speaks just enough HTTP/1.1 over asyncio streams to read a status line: no
client library, no connection pool — one short connection per probe, as kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from ..domain.specs import HealthCheck, ServiceSpec
from ..domain.tasks import Task
from ..ports import ProbeResult
from .environment import task_environment

__all__ = ["NetworkProber"]


def _target(task: Task, port: int | None) -> tuple[str, int] | None:
    if not task.endpoint:
        return None
    host, _, default = task.endpoint.rpartition(":")
    return host, port or int(default)


class NetworkProber:
    async def probe(self, check: HealthCheck, task: Task, spec: ServiceSpec) -> ProbeResult:
        # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow the cancellation of
        # a task that awaits it (the supervisor's health watcher would then never stop).
        try:
            async with asyncio.timeout(check.timeout):
                return await self._probe(check, task, spec)
        except TimeoutError:
            return ProbeResult(False, f"{check.kind} probe timed out after {check.timeout:g}s")
        except OSError as exc:
            return ProbeResult(False, f"{check.kind} probe failed: {exc.strerror or exc}")
        except (ValueError, UnicodeError) as exc:  # a garbled answer is a failed probe
            return ProbeResult(False, f"{check.kind} probe failed: bad answer ({exc})")

    async def _probe(self, check: HealthCheck, task: Task, spec: ServiceSpec) -> ProbeResult:
        if check.http is not None:
            target = _target(task, check.http.port)
            if target is None:
                return ProbeResult(False, "task has no endpoint")
            return await _http(
                target, check.http.path, check.http.status_min, check.http.status_max
            )
        if check.tcp is not None:
            target = _target(task, check.tcp.port)
            if target is None:
                return ProbeResult(False, "task has no endpoint")
            _, writer = await asyncio.open_connection(*target)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return ProbeResult(True, "tcp connect ok")
        assert check.exec is not None
        return await _exec(list(check.exec.command), task, spec)


async def _http(target: tuple[str, int], path: str, lo: int, hi: int) -> ProbeResult:
    reader, writer = await asyncio.open_connection(*target)
    try:
        host = f"{target[0]}:{target[1]}"
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: warren-probe\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        try:
            line = await reader.readline()
        except ValueError:  # a first line longer than the stream's limit
            line = b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not (parts[1].isascii() and parts[1].isdigit()):
        return ProbeResult(False, f"GET {path}: not an HTTP answer")
    status = int(parts[1])
    if lo <= status <= hi:
        return ProbeResult(True, f"GET {path}: {status}")
    return ProbeResult(False, f"GET {path}: status {status}")


async def _exec(command: list[str], task: Task, spec: ServiceSpec) -> ProbeResult:
    port = int(task.endpoint.rpartition(":")[2]) if task.endpoint else None
    env = task_environment(task, spec, port)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # on timeout the whole group goes, grandchildren too
        )
    except FileNotFoundError:
        return ProbeResult(False, f"exec probe: command not found: {command[0]}")
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):  # reap it; the group is dead, pipes close
            async with asyncio.timeout(1.0):
                await proc.wait()
        raise
    last = out.decode("utf-8", "replace").strip().splitlines()[-1:] if out else []
    detail = f"exec exited with {proc.returncode}" + (f": {last[0][:200]}" if last else "")
    return ProbeResult(proc.returncode == 0, detail)
