"""Health probes: the NetworkProber against the real demo app and raw sockets, and the fake's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from warren.agent.drivers import FakeDriver
from warren.agent.probing import NetworkProber
from warren.clocks import FakeClock
from warren.domain.specs import ExecCheck, HealthCheck, HttpCheck, ServiceSpec, TcpCheck
from warren.domain.tasks import Task

WAIT = 5.0
"""Upper bound of every wait in these tests."""


# ── helpers ──────────────────────────────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_task(endpoint: str | None, task_id: str = "web.1.a") -> Task:
    return Task(
        id=task_id,
        service="web",
        revision=1,
        slot=1,
        created_at=0,
        updated_at=0,
        endpoint=endpoint,
    )


SPEC = ServiceSpec(name="web", command=["app"], env={"GREETING": "hi"})


def http(path: str = "/healthz", timeout: float = 1.0, **kw: int) -> HealthCheck:
    return HealthCheck(http=HttpCheck(path=path, **kw), timeout=timeout)


def tcp(timeout: float = 1.0, port: int | None = None) -> HealthCheck:
    return HealthCheck(tcp=TcpCheck(port=port), timeout=timeout)


def exec_(*command: str, timeout: float = 2.0) -> HealthCheck:
    return HealthCheck(exec=ExecCheck(command=command), timeout=timeout)


def run_demo_app(**env: str) -> Iterator[str]:
    """The demo app as a real process on a free port: yields its ``host:port``, kills it after."""
    port = free_port()
    full_env = {**os.environ, **env, "PORT": str(port), "WARREN_TASK_ID": "web.1.a"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "warren.demo.app"],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            assert proc.poll() is None, f"the demo app exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the demo app did not listen on {port} within {WAIT}s")
                time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    yield from run_demo_app()


@pytest.fixture(scope="module")
def sick_demo() -> Iterator[str]:
    yield from run_demo_app(UNHEALTHY="1")


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    return free_port()


@pytest.fixture
async def silent() -> AsyncIterator[str]:
    """A server that accepts connections and never answers: ``host:port``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the prober gives up and closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)


async def probe(check: HealthCheck, task: Task, spec: ServiceSpec = SPEC) -> tuple[bool, str]:
    result = await asyncio.wait_for(NetworkProber().probe(check, task, spec), WAIT)
    return result.ok, result.detail


# ── http ─────────────────────────────────────────────────────────────────────────────────────────


async def test_http_probe_ok_on_healthz(demo: str) -> None:
    assert await probe(http("/healthz"), make_task(demo)) == (True, "GET /healthz: 200")


async def test_http_probe_fails_when_the_app_is_unhealthy(sick_demo: str) -> None:
    assert await probe(http("/healthz"), make_task(sick_demo)) == (
        False,
        "GET /healthz: status 503",
    )


async def test_http_probe_status_range_is_respected(demo: str) -> None:
    ok, detail = await probe(http("/no-such-page"), make_task(demo))
    assert (ok, detail) == (False, "GET /no-such-page: status 404")
    ok, _ = await probe(http("/no-such-page", status_min=404, status_max=404), make_task(demo))
    assert ok


async def test_http_probe_port_overrides_the_endpoint_port(demo: str, closed_port: int) -> None:
    demo_port = int(demo.rpartition(":")[2])
    task = make_task(f"127.0.0.1:{closed_port}")
    assert (await probe(http(port=demo_port), task))[0] is True
    assert (await probe(http(), task))[0] is False


async def test_http_probe_to_a_closed_port_fails_with_a_clear_detail(closed_port: int) -> None:
    t0 = time.monotonic()
    ok, detail = await probe(http(), make_task(f"127.0.0.1:{closed_port}"))
    assert not ok
    assert detail.startswith("http probe failed: ")
    assert str(closed_port) in detail
    assert time.monotonic() - t0 < 1.0  # refused at once, not a timeout


async def test_http_probe_times_out_on_a_server_that_never_answers(silent: str) -> None:
    t0 = time.monotonic()
    ok, detail = await probe(http(timeout=0.3), make_task(silent))
    elapsed = time.monotonic() - t0
    assert (ok, detail) == (False, "http probe timed out after 0.3s")
    assert 0.3 <= elapsed < 1.3


async def test_http_probe_of_a_server_that_closes_without_answering() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # read it all, so the close is a FIN, not a RST
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        ok, detail = await probe(http(), make_task(f"127.0.0.1:{port}"))
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)
    assert (ok, detail) == (False, "GET /healthz: not an HTTP answer")


@pytest.mark.parametrize(
    "answer",
    [b"A" * 70_000, "HTTP/1.1 ²00 OK\r\n\r\n".encode("latin-1")],
    ids=["endless-line", "odd-digits"],
)
async def test_http_probe_of_a_garbage_answer_fails_instead_of_raising(answer: bytes) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        ok, detail = await probe(http(), make_task(f"127.0.0.1:{port}"))
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)
    assert not ok
    assert "GET /healthz" in detail


async def test_network_probes_need_an_endpoint() -> None:
    assert await probe(http(), make_task(None)) == (False, "task has no endpoint")
    assert await probe(tcp(), make_task(None)) == (False, "task has no endpoint")


# ── tcp ──────────────────────────────────────────────────────────────────────────────────────────


async def test_tcp_probe_ok(demo: str) -> None:
    assert await probe(tcp(), make_task(demo)) == (True, "tcp connect ok")


async def test_tcp_probe_fails_on_a_closed_port(closed_port: int) -> None:
    ok, detail = await probe(tcp(), make_task(f"127.0.0.1:{closed_port}"))
    assert not ok
    assert detail.startswith("tcp probe failed: ")
    assert str(closed_port) in detail


async def test_tcp_probe_port_overrides_the_endpoint_port(demo: str, closed_port: int) -> None:
    demo_port = int(demo.rpartition(":")[2])
    ok, _ = await probe(tcp(port=demo_port), make_task(f"127.0.0.1:{closed_port}"))
    assert ok


# ── exec ─────────────────────────────────────────────────────────────────────────────────────────


async def test_exec_probe_ok() -> None:
    assert await probe(exec_("true"), make_task(None)) == (True, "exec exited with 0")


async def test_exec_probe_fails_with_the_exit_status() -> None:
    assert await probe(exec_("false"), make_task(None)) == (False, "exec exited with 1")


async def test_exec_probe_detail_has_the_last_output_line() -> None:
    check = exec_("sh", "-c", "echo first; echo 'database unreachable' >&2; exit 2")
    assert await probe(check, make_task(None)) == (
        False,
        "exec exited with 2: database unreachable",
    )


async def test_exec_probe_command_not_found() -> None:
    ok, detail = await probe(exec_("warren-no-such-probe", "--x"), make_task(None))
    assert (ok, detail) == (False, "exec probe: command not found: warren-no-such-probe")


async def test_exec_probe_runs_in_the_task_environment() -> None:
    task = make_task("127.0.0.1:4321", task_id="web.1.zz")
    check = exec_(
        "sh",
        "-c",
        'test "$PORT" = 4321 && test "$WARREN_TASK_ID" = web.1.zz && test "$GREETING" = hi',
    )
    assert (await probe(check, task))[0] is True


def unique_seconds(whole: int) -> str:
    """A sleep length no other process has on its command line: ``30.1234567``."""
    return f"{whole}.{os.getpid()}{time.monotonic_ns() % 1000:03d}"


def running_with(arg: str) -> list[int]:
    """Pids of live (not zombie) processes with ``arg`` as one of their arguments."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if arg.encode() in argv and stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_exec_probe_times_out_and_kills_the_command() -> None:
    seconds = unique_seconds(30)
    check = exec_("sleep", seconds, timeout=0.3)
    t0 = time.monotonic()
    try:
        ok, detail = await probe(check, make_task(None))
        elapsed = time.monotonic() - t0
    finally:
        leftovers = running_with(seconds)
        kill_all(leftovers)
    assert (ok, detail) == (False, "exec probe timed out after 0.3s")
    assert elapsed < 1.3
    assert leftovers == []


async def test_exec_probe_timeout_holds_when_the_command_leaves_a_child_behind() -> None:
    seconds = unique_seconds(4)
    check = exec_("sh", "-c", f"sleep {seconds}; true", timeout=0.3)
    t0 = time.monotonic()
    try:
        # Bounded from outside too: with the bug, the probe would take the whole 4 s.
        result = await asyncio.wait_for(NetworkProber().probe(check, make_task(None), SPEC), 1.5)
    except TimeoutError:
        result = None
    finally:
        elapsed = time.monotonic() - t0
        leftovers = running_with(seconds)
        kill_all(leftovers)
    assert result is not None, f"the probe was still running after {elapsed:.1f}s"
    assert (result.ok, result.detail) == (False, "exec probe timed out after 0.3s")
    assert elapsed < 1.3
    assert leftovers == [], "the probe's child outlived the probe"


# ── the fake driver's own probe ──────────────────────────────────────────────────────────────────


def fake_spec(**env: str) -> ServiceSpec:
    return ServiceSpec(name="web", command=["fake"], driver="fake", env=env)


async def test_fake_probe_ok_once_started() -> None:
    driver = FakeDriver(FakeClock())
    task, spec = make_task(None), fake_spec()
    assert (await driver.probe(http(), task, spec)).ok is False  # not started yet
    await driver.start(task, spec)
    assert (await driver.probe(http(), task, spec)).ok is True
    await driver.stop(task.id, 0)
    result = await driver.probe(http(), task, spec)
    assert (result.ok, result.detail) == (False, "not running")


async def test_fake_probe_unhealthy() -> None:
    driver = FakeDriver(FakeClock())
    task, spec = make_task(None), fake_spec(FAKE_UNHEALTHY="1")
    await driver.start(task, spec)
    result = await driver.probe(tcp(), task, spec)
    assert not result.ok
    assert "FAKE_UNHEALTHY" in result.detail
    await driver.stop(task.id, 0)


async def test_fake_probe_ready_after() -> None:
    clock = FakeClock()
    driver = FakeDriver(clock)
    task, spec = make_task(None), fake_spec(FAKE_READY_AFTER="3s")
    await driver.start(task, spec)

    result = await driver.probe(http(), task, spec)
    assert not result.ok
    assert "FAKE_READY_AFTER" in result.detail
    clock.advance(2.9)
    assert (await driver.probe(http(), task, spec)).ok is False
    clock.advance(0.1)
    assert (await driver.probe(http(), task, spec)).ok is True
    await driver.stop(task.id, 0)
