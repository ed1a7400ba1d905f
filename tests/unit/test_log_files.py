"""A process task's log files: the writer's lines, times and rotation; reading the last lines
across the rotated files; following them through rotations."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

from warren.agent.drivers.logfiles import follow_log, read_log_now, writer_active
from warren.agent.drivers.logwriter import MAX_LINE, LogFile, copy
from warren.domain.logs import LogLine, stamp

WAIT = 5.0


def clock(start: int = 1_714_564_800 * 10**9) -> itertools.count[int]:
    """Nanoseconds, one more second at each read."""
    return itertools.count(start, 10**9)


def written(path: Path, lines: list[str], max_size: int = 10**6, max_files: int = 3) -> None:
    """``lines`` through the writer, each read at a time of its own (one second apart)."""
    source = path.with_name("source")
    out = LogFile(str(path), max_size, max_files)
    times = clock()
    for line in lines:
        source.write_bytes(line.encode() + b"\n")
        fd = os.open(source, os.O_RDONLY)
        try:
            copy(fd, out, lambda: next(times))
        finally:
            os.close(fd)
    out.close()


def texts(lines: list[LogLine]) -> list[str]:
    return [x.text for x in lines]


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob(f"{path.name}*") if not p.name.endswith(".lock"))


def test_each_line_is_stored_with_the_time_it_was_read(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    written(path, ["hello", "", "world"])
    assert path.read_text().splitlines() == [
        "2024-05-01T12:00:00.000000000Z hello",
        "2024-05-01T12:00:01.000000000Z ",
        "2024-05-01T12:00:02.000000000Z world",
    ]
    assert read_log_now(path) == [
        LogLine("2024-05-01T12:00:00.000000000Z", "hello"),
        LogLine("2024-05-01T12:00:01.000000000Z", ""),
        LogLine("2024-05-01T12:00:02.000000000Z", "world"),
    ]


def test_a_long_line_is_cut_and_a_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    source, path = tmp_path / "source", tmp_path / "t.log"
    source.write_bytes(b"x" * (MAX_LINE + 10) + b"\nunfinished")
    out = LogFile(str(path), 10**6, 3)
    fd = os.open(source, os.O_RDONLY)
    copy(fd, out, lambda: 0)
    os.close(fd)
    out.close()
    assert [len(t) for t in texts(read_log_now(path))] == [MAX_LINE, 10, len("unfinished")]


def test_files_rotate_at_the_cap_and_the_oldest_go(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    lines = [f"line {n:04d}" for n in range(200)]  # 41 bytes each with its time

    written(path, lines, max_size=410, max_files=3)

    assert [p.name for p in files_of(path)] == ["t.log", "t.log.1", "t.log.2"]
    assert all(p.stat().st_size <= 410 for p in files_of(path))
    kept = texts(read_log_now(path))
    assert kept == lines[-len(kept) :] and 20 < len(kept) <= 30  # two full files and the newest


def test_one_file_kept_is_cut_to_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    written(path, [f"line {n:04d}" for n in range(25)], max_size=410, max_files=1)
    assert files_of(path) == [path]
    assert texts(read_log_now(path)) == [f"line {n:04d}" for n in range(20, 25)]


def test_tail_and_since_read_across_the_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    lines = [f"line {n:04d}" for n in range(25)]
    written(path, lines, max_size=410, max_files=3)  # .2: 0-9, .1: 10-19, newest: 20-24

    assert texts(read_log_now(path, tail=12)) == lines[-12:]
    assert texts(read_log_now(path, tail=1000)) == lines
    since = stamp((1_714_564_800 + 8) * 10**9)  # line 8's time
    assert texts(read_log_now(path, since=since)) == lines[8:]
    assert texts(read_log_now(path, tail=3, since=since)) == lines[-3:]
    assert read_log_now(tmp_path / "none.log") == []


def test_lines_written_before_times_were_kept_are_all_text(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    path.write_text("old one\nold two\n\n")
    assert read_log_now(path) == [LogLine("", "old one"), LogLine("", "old two"), LogLine("", "")]
    # No time: older than any --since.
    assert read_log_now(path, since=stamp(0)) == []


async def test_a_follow_goes_through_rotations_and_misses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    out = LogFile(str(path), 410, 5)
    times = clock()
    lines = [f"line {n:04d}" for n in range(60)]

    def write(batch: list[str]) -> None:
        out.write([f"{stamp(next(times))} {t}\n".encode() for t in batch])

    write(lines[:5])
    done = False
    follow = follow_log(path, 2, None, lambda: done, poll=0.001)
    seen = texts(await asyncio.wait_for(anext(follow), WAIT))
    assert seen == lines[3:5]
    write(lines[5:40])  # three rotations before the follow looks again
    seen += texts(await asyncio.wait_for(anext(follow), WAIT))
    write(lines[40:])
    done = True
    async with asyncio.timeout(WAIT):
        seen += [x.text async for batch in follow for x in batch]
    assert seen == lines[3:]
    out.close()


async def test_a_follow_ends_once_no_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    written(path, ["only"])
    assert not writer_active(path)
    follow = follow_log(path, None, None, lambda: not writer_active(path), poll=0.001)
    async with asyncio.timeout(WAIT):
        assert [x.text async for batch in follow for x in batch] == ["only"]
