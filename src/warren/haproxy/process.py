"""One HAProxy, as ``warren ingress --data-plane haproxy`` runs it: started in master-worker mode
(``-W``) in a session of its own, so that neither the ingress's nor the server's end reaches it;
recorded by pid and start time (``haproxy.json``) and adopted by the next ``warren ingress``;
reloaded by SIGUSR2 to its master (a new worker takes the listening sockets over, the old one
finishes its requests: nothing refused); stopped softly (SIGUSR1: the workers finish what they
have in flight).

A configuration is checked (``haproxy -c``) before it is used: a refused one leaves the running
HAProxy as it was, and the reason is one line of HAProxy's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

from ..domain.errors import UnavailableError, ValidationError
from ..processes import start_ticks
from .config import Files
from .runtime import RuntimeApi

__all__ = ["Haproxy", "find_haproxy", "stop_recorded"]

log = logging.getLogger("warren.ingress")

READY_TIMEOUT = 10.0
"""How long a starting or reloading HAProxy may take to serve."""
POLL = 0.02


def find_haproxy() -> str:
    """HAProxy's executable on PATH, or one clear error."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        raise UnavailableError(
            "the haproxy data plane needs HAProxy 2.6 or later: install it (apt install haproxy) "
            "or use the built-in ingress (--data-plane builtin)"
        )
    return found


class Haproxy:
    def __init__(self, files: Files, binary: str) -> None:
        self.files = files
        self.binary = binary
        self.runtime = RuntimeApi(files.runtime)
        self.pid: int | None = None
        """The master's pid, once started or adopted."""
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def record(self) -> Path:
        return self.files.dir / "haproxy.json"

    @property
    def log_file(self) -> Path:
        return self.files.dir / "haproxy.log"

    def adopt(self) -> bool:
        """Take the HAProxy recorded in the directory, if it still runs."""
        try:
            body = json.loads(self.record.read_text())
            pid, ticks = int(body["pid"]), int(body["startTicks"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if start_ticks(pid) != ticks:
            return False
        self.pid = pid
        return True

    async def check(self, text: str) -> None:
        """Write ``text`` as the configuration file if HAProxy accepts it; else ValidationError
        with its first complaint, and the file is left as it was."""
        candidate = self.files.config.with_suffix(".new")
        candidate.write_text(text)
        process = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-q", "-f", str(candidate),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise ValidationError(f"HAProxy refused its configuration: {_first_alert(out)}")
        os.replace(candidate, self.files.config)

    async def start(self) -> None:
        """Start HAProxy on the configuration file, and wait until it serves."""
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with contextlib.suppress(FileNotFoundError):
            self.files.runtime.unlink()
        # Blocking on purpose: open and fork take well under a millisecond.
        with open(self.log_file, "ab") as out:  # noqa: ASYNC230
            popen = subprocess.Popen(  # noqa: ASYNC220
                [self.binary, "-W", "-f", str(self.files.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid, self._popen = popen.pid, popen
        ticks = start_ticks(popen.pid)
        self.record.write_text(json.dumps({"pid": popen.pid, "startTicks": ticks}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if popen.poll() is not None:
                break
            with contextlib.suppress(UnavailableError):
                await self.runtime.worker_pid()
                log.info("ingress: HAProxy started (pid %d)", popen.pid)
                return
            await asyncio.sleep(POLL)
        if popen.poll() is None:
            popen.kill()
        popen.wait()
        raise UnavailableError(f"HAProxy did not start: {self._said(offset)}")

    async def reload(self) -> None:
        """Have the master load the configuration file again; return once a new worker serves
        it (the old one finishes its requests and exits)."""
        assert self.pid is not None
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        old = await self.runtime.worker_pid()
        os.kill(self.pid, signal.SIGUSR2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            with contextlib.suppress(UnavailableError):
                if await self.runtime.worker_pid() != old:
                    return
            await asyncio.sleep(POLL)
        raise UnavailableError(f"HAProxy did not reload: {self._said(offset)}")

    async def stop(self, grace: float) -> None:
        """Stop softly: no more connections accepted, those in flight finish (up to ``grace``
        seconds), then it is killed."""
        pid = self.pid
        if pid is None or not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
        if await self._gone(grace):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await self._gone(5.0)

    def note_port(self, port: int | None) -> None:
        """Record the shared port it serves (the one picked when asked for any)."""
        with contextlib.suppress(OSError, ValueError):
            body = json.loads(self.record.read_text())
            body["sharedPort"] = port
            self.record.write_text(json.dumps(body))

    def recorded_port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            port = json.loads(self.record.read_text()).get("sharedPort")
            return None if port is None else int(port)
        return None

    def alive(self) -> bool:
        if self.pid is None:
            return False
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            ticks = int(json.loads(self.record.read_text())["startTicks"])
            return start_ticks(self.pid) == ticks
        return False

    async def _gone(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._popen is not None:
                self._popen.poll()  # ours: reap it, or it stays a zombie (and looks alive)
            if not self.alive():
                return True
            await asyncio.sleep(0.05)
        return False

    def _said(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return _first_alert(f.read()) or f"see {self.log_file}"
        except OSError:
            return f"see {self.log_file}"


def _first_alert(output: bytes) -> str:
    """HAProxy's first complaint ("[ALERT] … : config : …"), without its prefix."""
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    alerts = [line for line in lines if "[ALERT]" in line] or lines
    if not alerts:
        return "it said nothing"
    return alerts[0].split(" : ", 1)[-1].strip()


async def stop_recorded(directory: Path, grace: float) -> None:
    """Stop softly the HAProxy recorded in ``directory``, if one runs (the data plane is no
    longer HAProxy)."""
    haproxy = Haproxy(Files(directory), "haproxy")
    if haproxy.adopt():
        log.info("ingress: stopping HAProxy (pid %s): no longer the data plane", haproxy.pid)
        await haproxy.stop(grace)
