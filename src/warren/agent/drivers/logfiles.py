"""Reading a task's log files (``logwriter.py`` writes them): the last lines across the rotated
files, since a time, and following the newest file through its rotations.

Files are opened newest first and told apart by inode, so a rotation in the middle of a read
never skips a file (at worst a file is seen under two names, and read once).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ...domain.logs import LogLine, parse_stamped
from .logwriter import rotated

__all__ = ["FOLLOW_POLL", "follow_log", "read_log", "read_log_now", "writer_active"]

FOLLOW_POLL = 0.25
"""How often a followed log is looked at for new lines (as ``tail -F`` does)."""
_BLOCK = 64 * 1024


async def read_log(path: Path, tail: int | None = None, since: str | None = None) -> list[LogLine]:
    """The last ``tail`` lines (all without it) of the lines read at ``since`` or later, across
    ``path`` and its rotated files; [] when there is none. Read in a thread: a --since far back
    may read every file kept (30 MiB: ~1 s)."""
    return await asyncio.to_thread(read_log_now, path, tail, since)


def read_log_now(path: Path, tail: int | None = None, since: str | None = None) -> list[LogLine]:
    """``read_log``, blocking."""
    files = _open_newest_first(path)
    try:
        return _read_back(files, tail, since)
    finally:
        for f, _ in files:
            f.close()


def writer_active(path: Path) -> bool:
    """Whether a log writer still writes ``path`` (it holds the lock of ``path.lock``)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def follow_log(
    path: Path,
    tail: int | None,
    since: str | None,
    ended: Callable[[], bool],
    poll: float = FOLLOW_POLL,
) -> AsyncIterator[list[LogLine]]:
    """First the last ``tail`` lines since ``since`` (one batch, maybe empty), then each batch of
    lines written after them, as they come, through rotations; it ends once ``ended()`` (nothing
    more will be written) and every line was read."""
    files = _open_newest_first(path)
    cursor = _Cursor.take(files, path)
    try:
        # In a thread: a --since far back may read every file kept (30 MiB: ~1 s).
        history = await asyncio.to_thread(_read_back, files, tail, since)
        for f, _ in files:
            if cursor is None or f is not cursor.file:
                f.close()
        files = []
        yield history
        while True:
            done = ended()  # before the read: whatever was written before it is read below
            if cursor is None:
                cursor = _Cursor.open(path)
            lines = cursor.read() if cursor else []
            if cursor is not None and not lines:
                cursor, lines = _after_rotation(cursor, path)
            if lines:
                yield lines
                continue
            if done:
                if cursor is not None and cursor.partial:
                    yield [parse_stamped(cursor.partial.decode("utf-8", "replace"))]
                return
            await asyncio.sleep(poll)
    finally:
        for f, _ in files:
            f.close()
        if cursor is not None:
            cursor.file.close()


# ── the last lines ───────────────────────────────────────────────────────────────────────────


def _open_newest_first(path: Path) -> list[tuple[BinaryIO, int]]:
    """``path``, ``path.1``, ``path.2`` … as they are now, each once, with its size then."""
    found: list[tuple[BinaryIO, int]] = []
    seen: set[int] = set()
    n = 0
    while True:
        try:
            f = open(rotated(str(path), n), "rb")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            if n > 0:
                break
            n += 1  # between a rotation's rename and the new file: .1 is the newest
            continue
        info = os.fstat(f.fileno())
        if info.st_ino in seen:
            f.close()
        else:
            seen.add(info.st_ino)
            found.append((f, info.st_size))
        n += 1
    return found


def _read_back(
    files: list[tuple[BinaryIO, int]], tail: int | None, since: str | None
) -> list[LogLine]:
    """From the newest line back: ``tail`` lines, or down to the first line before ``since``
    (a line with no time counts as older than any)."""
    found: list[LogLine] = []
    for f, size in files:
        for raw in _lines_backwards(f, size):
            line = parse_stamped(raw.decode("utf-8", "replace"))
            if since is not None and line.time < since:
                return found[::-1]
            found.append(line)
            if tail is not None and len(found) >= tail:
                return found[::-1]
    return found[::-1]


def _lines_backwards(f: BinaryIO, end: int) -> Iterator[bytes]:
    """The lines of ``f`` before ``end``, last first (a last line without its newline too)."""
    if end == 0:
        return
    f.seek(end - 1)
    if f.read(1) == b"\n":
        end -= 1  # the newline ends the last line: it starts none
    pos, rest = end, b""
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        pieces = (f.read(step) + rest).split(b"\n")
        rest = pieces[0]
        yield from reversed(pieces[1:])
    yield rest


# ── following ────────────────────────────────────────────────────────────────────────────────


class _Cursor:
    """Where a follow is in one file: the file, kept open (a rotation renames it, the open file
    stays the same), and the offset read to."""

    def __init__(self, file: BinaryIO, offset: int) -> None:
        self.file, self.offset = file, offset
        self.inode = os.fstat(file.fileno()).st_ino
        self.partial = b""

    @classmethod
    def take(cls, files: list[tuple[BinaryIO, int]], path: Path) -> _Cursor | None:
        """The newest of ``files`` if it is ``path`` now: followed from its end."""
        if not files:
            return None
        f, size = files[0]
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return cls(f, size)
        return None

    @classmethod
    def open(cls, path: Path) -> _Cursor | None:
        """``path`` from its start (it has just appeared, or was found rotated already)."""
        try:
            return cls(open(path, "rb"), 0)
        except FileNotFoundError:
            return None

    def read(self) -> list[LogLine]:
        """The whole lines written since the last read (a short local read: blocking is fine)."""
        self.file.seek(self.offset)
        data = self.file.read()
        if not data:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [parse_stamped(line.decode("utf-8", "replace")) for line in lines]


def _after_rotation(cursor: _Cursor, path: Path) -> tuple[_Cursor, list[LogLine]]:
    """At the end of the followed file: if it was rotated away, the lines of the files written
    after it (oldest first) and a cursor on the newest; else the same cursor and no line."""
    try:
        if os.stat(path).st_ino == cursor.inode:
            return cursor, []
    except FileNotFoundError:
        return cursor, []  # between the rename and the new file: next time
    lines = cursor.read()
    files = _open_newest_first(path)
    inodes = [os.fstat(f.fileno()).st_ino for f, _ in files]
    # The files newer than ours; ours gone too (the writer outran us by every file kept):
    # all of them.
    newer = files[: inodes.index(cursor.inode)] if cursor.inode in inodes else files
    for f, _ in files[len(newer) :]:
        f.close()
    if not newer:  # the new file went again before it could be opened: next time
        return cursor, lines
    if cursor.partial:
        lines.append(parse_stamped(cursor.partial.decode("utf-8", "replace")))
    cursor.file.close()
    *older, (newest, _) = newer[::-1]
    for f, _ in older:
        lines.extend(parse_stamped(raw.decode("utf-8", "replace")) for raw in _all_lines(f))
        f.close()
    fresh = _Cursor(newest, 0)
    return fresh, lines + fresh.read()


def _all_lines(f: BinaryIO) -> list[bytes]:
    f.seek(0)
    data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines
