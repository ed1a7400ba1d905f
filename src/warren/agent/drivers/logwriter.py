"""The log writer of a process task: a small process of its own that reads the task's output from
a pipe and writes it to the task's log file, each line prefixed with the time it was read, and
rotates the file at a size cap, keeping a number of files.

    python -I -S logwriter.py LOG_PATH MAX_SIZE MAX_FILES LOCK_FD   (the task's output on stdin)

Why a process, not the agent: a task outlives a restart of its server (the agent adopts it
again), and so must whatever reads its output — a pipe whose reader died would kill the task
with SIGPIPE at its next line. The writer is in a session of its own, so stopping the task's
process group leaves it to read what the task wrote last; it ends when the pipe does (the task
and all its children gone). It holds an exclusive ``flock`` on ``LOG_PATH.lock`` (taken by the
agent before it starts the writer, passed down as ``LOCK_FD``) while it lives: a reader that can
take the lock knows no line will come any more.

A file holds lines ``TIME TEXT\\n``, TIME as ``warren.domain.logs`` defines it (30 bytes, cheap
to write: the date part is formatted once a second). ``LOG_PATH`` is the newest file,
``LOG_PATH.1`` the one before, up to ``LOG_PATH.(MAX_FILES-1)``: like docker's json-file
``max-size``/``max-file``. A file goes over MAX_SIZE only by a line longer than the cap.

Standard library only, and no import of Warren's: it runs with ``-I -S`` (no site-packages),
which starts in ~10 ms and needs ~4 MiB of its own (10 MiB resident, most of it shared).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable

__all__ = ["MAX_LINE", "LogFile", "Stamper", "copy", "main", "rotated"]

MAX_LINE = 16 * 1024
"""A line longer than this is cut into several (as docker does), so that the writer's memory
stays bounded whatever the task prints."""
_READ = 64 * 1024


def rotated(path: str, n: int) -> str:
    """The n-th older file of ``path`` (0: ``path`` itself)."""
    return f"{path}.{n}" if n else path


class Stamper:
    """``2024-05-01T12:00:00.123456789Z `` for a time in nanoseconds; the date and the seconds
    are formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, ns: int) -> bytes:
        second, fraction = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return self._prefix + b"%09dZ " % fraction


class LogFile:
    """The newest file of a task's log, appended to, rotated when the next line would pass the
    cap."""

    def __init__(self, path: str, max_size: int, max_files: int) -> None:
        self.path, self.max_size, self.max_files = path, max_size, max_files
        self._fd = self._open()
        self.size = os.fstat(self._fd).st_size

    def _open(self, truncate: bool = False) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        return os.open(self.path, flags | os.O_CLOEXEC, 0o644)

    def write(self, lines: list[bytes]) -> None:
        """Whole lines (each ending in ``\\n``): one write per file they go to."""
        batch: list[bytes] = []
        pending = 0
        for line in lines:
            if self.size + pending + len(line) > self.max_size and self.size + pending > 0:
                self._append(b"".join(batch))
                self.rotate()
                batch, pending = [], 0
            batch.append(line)
            pending += len(line)
        self._append(b"".join(batch))

    def _append(self, data: bytes) -> None:
        if data:
            os.write(self._fd, data)
            self.size += len(data)

    def rotate(self) -> None:
        os.close(self._fd)
        if self.max_files > 1:
            # .1 → .2 … the oldest is replaced; then the newest becomes .1.
            for n in range(self.max_files - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(rotated(self.path, n - 1), rotated(self.path, n))
            self._fd = self._open()
        else:
            self._fd = self._open(truncate=True)
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)


def copy(source: int, out: LogFile, now: Callable[[], int] = time.time_ns) -> None:
    """Read ``source`` to its end; every line goes to ``out`` with the time it was read
    (``now()``: nanoseconds since the epoch)."""
    stamper = Stamper()
    partial = b""
    while True:
        try:
            chunk = os.read(source, _READ)
        except InterruptedError:  # pragma: no cover - PEP 475 retries already
            continue
        if not chunk:
            break
        prefix = stamper(now())
        *lines, partial = (partial + chunk).split(b"\n")
        if len(partial) > MAX_LINE:
            lines.append(partial)
            partial = b""
        _write(out, [prefix + piece + b"\n" for line in lines for piece in _cut(line)])
    if partial:
        _write(out, [stamper(now()) + partial + b"\n"])


def _cut(line: bytes) -> list[bytes]:
    if len(line) <= MAX_LINE:
        return [line]
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)]


def _write(out: LogFile, lines: list[bytes]) -> None:
    if not lines:
        return
    try:
        out.write(lines)
    except OSError as exc:
        # A full disk (say): these lines are lost, the next ones are tried again. Never stop
        # reading: the task would block on a full pipe.
        print(f"warren log writer: {out.path}: {exc}", file=sys.stderr)


def main(argv: list[str]) -> int:
    path, max_size, max_files, lock_fd = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    # The task's group and the terminal's signals are not for us: we end with the pipe.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    out = LogFile(path, max_size, max_files)
    try:
        copy(0, out)
    finally:
        out.close()
        _remove_lock(path + ".lock", lock_fd)
    return 0


def _remove_lock(lock_path: str, lock_fd: int) -> None:
    """The lock file goes before the lock does (at exit): a reader that finds no lock file knows
    no line will come either. Only if it is still ours — a task started again under the same
    id (its start cut short by a restart) has a writer and a lock file of its own."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(lock_path).st_ino == os.fstat(lock_fd).st_ino:
            os.unlink(lock_path)
    os.close(lock_fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
