"""The process driver: each task is a child process in its own process group.

- env: the service's env plus ``PORT`` (a free port allocated here), ``WARREN_TASK_ID``,
  ``WARREN_SERVICE``, ``WARREN_REVISION``; the server's interpreter directory first on ``PATH``,
  so ``python -m …`` runs with the same Python as Warren;
- stdout and stderr go through a pipe to the task's log writer (``logwriter.py``, a small process
  of its own that outlives a restart of the server as the task does), which writes each line to
  ``LOG_DIR/TASK_ID.log`` with the time it read it, and rotates the file (``LogRotation``);
- stop: SIGTERM to the process group, up to the grace period, then SIGKILL to the group;
- a record per task (pid, its start time in /proc, port) under ``STATE_DIR``: after a restart of
  the server, ``recover`` re-adopts the processes that still run (same pid *and* same start time,
  so a recycled pid is never mistaken for our task) instead of starting them twice.

Exits are noticed through a pidfd (``os.pidfd_open``) registered with the event loop: no polling,
and it works for adopted processes that are not our children.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ...domain.errors import DriverError
from ...domain.logs import LogLine
from ...domain.specs import ServiceSpec
from ...domain.tasks import Task
from ...ports import Clock, ExitStatus, RecoveredTask, TaskHandle
from ...processes import start_ticks
from ..environment import task_environment
from . import logwriter
from .local import PortPool
from .logfiles import follow_log, read_log, writer_active

__all__ = ["LogRotation", "ProcessDriver"]

log = logging.getLogger("warren.agent")


@dataclass(frozen=True)
class LogRotation:
    """How much of a task's output is kept (``--log-max-size``, ``--log-max-files``): files of
    at most ``max_size`` bytes, ``max_files`` of them — 30 MiB a task by default."""

    max_size: int = 10 * 2**20
    max_files: int = 3


@dataclass
class _Proc:
    task_id: str
    pid: int
    handle: TaskHandle
    port: int
    exited: asyncio.Future[ExitStatus]
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None


WRITER_DRAIN_POLLS = 200
"""How long (in 10 ms polls) the logs of a task that has ended wait for its writer to finish."""


class ProcessDriver:
    name = "process"

    def __init__(
        self,
        state_dir: Path,
        log_dir: Path,
        clock: Clock,
        address: str = "127.0.0.1",
        workdir: Path | None = None,
        rotation: LogRotation = LogRotation(),
    ) -> None:
        self._clock = clock
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.address = address
        self.workdir = workdir
        self.rotation = rotation
        self._procs: dict[str, _Proc] = {}
        self._writers: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
        """Log writers started here that still run: their Popen and pidfd, to reap them."""
        self._ports = PortPool(address)
        state_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)

    # ── start ────────────────────────────────────────────────────────────────────────────────

    async def start(self, task: Task, spec: ServiceSpec) -> TaskHandle:
        if not spec.command:
            raise DriverError("the process driver needs a command")
        port = self._ports.allocate()
        # A crash between the fork and the record would leave a process nobody knows: this
        # marker lets ``recover`` find it (by its WARREN_TASK_ID) and stop it.
        starting = self._starting_path(task.id)
        starting.touch()
        try:
            output = self._start_writer(task.id)
        except OSError as exc:
            self._ports.release(port)
            starting.unlink(missing_ok=True)
            raise DriverError(f"cannot start the log writer of {task.id}: {exc}") from exc
        try:
            # Blocking on purpose: each fork (the writer's, the task's) takes about a
            # millisecond on an idle machine.
            popen = subprocess.Popen(  # noqa: ASYNC220
                list(spec.command),
                env=task_environment(task, spec, port, self.address),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop reaches children too
                cwd=self.workdir,
                close_fds=True,
            )
        except OSError as exc:
            self._ports.release(port)
            starting.unlink(missing_ok=True)
            if isinstance(exc, FileNotFoundError):
                raise DriverError(f"command not found: {spec.command[0]}") from None
            if isinstance(exc, PermissionError):
                raise DriverError(f"permission denied running {spec.command[0]}") from None
            raise DriverError(f"cannot start {spec.command[0]}: {exc}") from exc
        finally:
            os.close(output)  # the task's copy is the only one: its end is the writer's
        ticks = start_ticks(popen.pid)
        loop = asyncio.get_running_loop()
        handle = TaskHandle(
            runtime_id=str(popen.pid),
            endpoint=f"{self.address}:{port}",
            started_at=self._clock.now(),
        )
        self._write_record(task.id, popen.pid, ticks, port, handle)
        starting.unlink(missing_ok=True)
        proc = _Proc(task.id, popen.pid, handle, port, loop.create_future(), popen=popen)
        self._procs[task.id] = proc
        self._watch_exit(proc)
        return handle

    def _start_writer(self, task_id: str) -> int:
        """Start the log writer of ``task_id``; the pipe's end the task writes to."""
        path = self.log_dir / f"{task_id}.log"
        path.touch()  # there before start returns: a follow finds it
        # Locked here, before the writer runs, and handed down: from now until the writer ends,
        # every reader sees that lines may still come.
        lock = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            read_end, write_end = os.pipe()
        except OSError:
            os.close(lock)
            raise
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            writer = subprocess.Popen(
                [
                    sys.executable, "-I", "-S", logwriter.__file__, str(path),
                    str(self.rotation.max_size), str(self.rotation.max_files), str(lock),
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(lock,),
                start_new_session=True,  # stopping the task's group leaves it to read the rest
                env={},
            )  # fmt: skip
        except OSError:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
            os.close(lock)
        self._reap_when_done(writer)
        return write_end

    def _reap_when_done(self, writer: subprocess.Popen[bytes]) -> None:
        try:
            pidfd = os.pidfd_open(writer.pid)
        except ProcessLookupError:
            writer.wait()
            return
        self._writers[writer.pid] = (writer, pidfd)
        asyncio.get_running_loop().add_reader(pidfd, self._writer_ended, writer.pid)

    def _writer_ended(self, pid: int) -> None:
        writer, pidfd = self._writers.pop(pid)
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        writer.wait()

    def _record_path(self, task_id: str) -> Path:
        return self.state_dir / f"{task_id}.json"

    def _starting_path(self, task_id: str) -> Path:
        return self.state_dir / f"{task_id}.starting"

    def _write_record(
        self, task_id: str, pid: int, ticks: int | None, port: int, handle: TaskHandle
    ) -> None:
        record = {
            "task_id": task_id,
            "pid": pid,
            "start_ticks": ticks,
            "port": port,
            "endpoint": handle.endpoint,
            "started_at": handle.started_at,
        }
        path = self._record_path(task_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    # ── exit ─────────────────────────────────────────────────────────────────────────────────

    def _watch_exit(self, proc: _Proc) -> None:
        loop = asyncio.get_running_loop()
        try:
            proc.pidfd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            self._exited(proc)
            return
        loop.add_reader(proc.pidfd, self._exited, proc)

    def _exited(self, proc: _Proc) -> None:
        if proc.pidfd is not None:
            asyncio.get_running_loop().remove_reader(proc.pidfd)
            os.close(proc.pidfd)
            proc.pidfd = None
        status: ExitStatus
        if proc.popen is not None:
            code = proc.popen.wait()
            if code < 0:
                status = ExitStatus(128 - code, f"killed by signal {signal.Signals(-code).name}")
            else:
                status = ExitStatus(code, f"exited with code {code}")
        else:
            status = ExitStatus(None, "exited (adopted after a restart: exit code unknown)")
        if not proc.exited.done():
            proc.exited.set_result(status)

    async def wait(self, task_id: str) -> ExitStatus:
        proc = self._procs.get(task_id)
        if proc is None:
            raise DriverError(f"task {task_id} is not running here")
        return await asyncio.shield(proc.exited)

    async def stop(self, task_id: str, grace: float) -> ExitStatus:
        proc = self._procs.get(task_id)
        if proc is None:
            return ExitStatus(None, "not running")
        if not proc.exited.done():
            _killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(proc.exited)
            except TimeoutError:
                log.info("task %s ignored SIGTERM for %.1fs; killing it", task_id, grace)
                _killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await asyncio.shield(proc.exited)
        # Whatever the main process left behind in its group goes too.
        _killpg(proc.pid, signal.SIGKILL)
        if not proc.exited.done():
            raise DriverError(f"task {task_id} (pid {proc.pid}) did not die after SIGKILL")
        return proc.exited.result()

    # ── restart ──────────────────────────────────────────────────────────────────────────────

    async def recover(self) -> list[RecoveredTask]:
        found: list[RecoveredTask] = []
        loop = asyncio.get_running_loop()
        for marker in sorted(self.state_dir.glob("*.starting")):
            task_id = marker.name.removesuffix(".starting")
            if not self._record_path(task_id).exists():
                for pid in _pids_of_task(task_id):
                    log.warning("stopping %s (pid %d): started but never recorded", task_id, pid)
                    _killpg(pid, signal.SIGKILL)
            marker.unlink(missing_ok=True)
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                task_id, pid, port = record["task_id"], int(record["pid"]), int(record["port"])
                handle = TaskHandle(str(pid), record["endpoint"], float(record["started_at"]))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable task record %s", path)
                continue
            if task_id in self._procs:
                proc = self._procs[task_id]
                found.append(RecoveredTask(task_id, proc.handle, not proc.exited.done()))
                continue
            alive = record.get("start_ticks") is not None and start_ticks(pid) == record.get(
                "start_ticks"
            )
            if alive:
                self._ports.take(port)
                proc = _Proc(task_id, pid, handle, port, loop.create_future())
                self._procs[task_id] = proc
                self._watch_exit(proc)
            found.append(RecoveredTask(task_id, handle, alive))
        return found

    async def forget(self, task_id: str) -> None:
        proc = self._procs.pop(task_id, None)
        if proc is not None:
            self._ports.release(proc.port)
            if proc.pidfd is not None:
                asyncio.get_running_loop().remove_reader(proc.pidfd)
                os.close(proc.pidfd)
        with contextlib.suppress(FileNotFoundError):
            self._record_path(task_id).unlink()

    async def logs(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> list[LogLine]:
        path = self.log_dir / f"{task_id}.log"
        proc = self._procs.get(task_id)
        if proc is None or proc.exited.done():
            # The writer drains the pipe after its task has ended: the last lines of a task
            # that just ended are written a moment after its exit is known — and after the
            # task is forgotten here, if it ended at once (a job). Wait for them.
            for _ in range(WRITER_DRAIN_POLLS):
                if not writer_active(path):
                    break
                await asyncio.sleep(0.01)
        return await read_log(path, tail, since)

    def follow(
        self, task_id: str, tail: int | None = None, since: str | None = None
    ) -> AsyncIterator[list[LogLine]]:
        path = self.log_dir / f"{task_id}.log"

        def ended() -> bool:
            # The writer outlives its task. A task started before Warren had writers (adopted
            # after an upgrade) writes its file itself: its output ends with it.
            proc = self._procs.get(task_id)
            alive = proc is not None and not proc.exited.done()
            return not writer_active(path) and not alive

        return follow_log(path, tail, since, ended)

    def close(self) -> None:
        """Stop watching (the processes and their log writers keep running: a restarted server
        adopts the processes)."""
        for _, pidfd in self._writers.values():
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(pidfd)
            os.close(pidfd)
        self._writers.clear()
        for proc in self._procs.values():
            if proc.pidfd is not None:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(proc.pidfd)
                os.close(proc.pidfd)
                proc.pidfd = None


def _pids_of_task(task_id: str) -> list[int]:
    """Processes whose environment says they are ``task_id`` (a unique id)."""
    marker = f"WARREN_TASK_ID={task_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
