"""The event stream of a real server (``GET /v1/events/stream``, server-sent events) and
``warren events``: a stream resumed with Last-Event-ID gets exactly the events it missed,
keep-alive pings come on a quiet stream, the client reconnects across a server restart, and the
command lists, filters and follows."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from typer.testing import CliRunner

from tests.servers import ServerProcess, wait_for
from warren.cli.main import app as cli
from warren.client import Client
from warren.domain.errors import AuthError
from warren.domain.events import Event
from warren.domain.specs import ServiceSpec
from warren.server import EmbeddedServer, ServerConfig

pytestmark = pytest.mark.integration


def idle(name: str) -> ServiceSpec:
    """A service of no task: creating it records one event, ``service.created``, and nothing
    follows from it."""
    return ServiceSpec.model_validate({"name": name, "command": ["true"], "replicas": 0})


def frames(
    server: ServerProcess,
    headers: dict[str, str],
    until: str,
    on_open: Callable[[], object] = lambda: None,
) -> list[tuple[int, str]]:
    """(id, service) of each event frame of a stream, up to the one of service ``until``;
    ``on_open`` is called once the stream is open."""
    token = (server.data_dir / "admin.token").read_text().strip()
    seen: list[tuple[int, str]] = []
    with (
        httpx.Client(base_url=server.addr, timeout=httpx.Timeout(10)) as http,
        connect_sse(
            http, "GET", "/v1/events/stream",
            headers={"Authorization": f"Bearer {token}", **headers},
        ) as source,
    ):  # fmt: skip
        assert source.response.status_code == 200
        on_open()
        for frame in source.iter_sse():
            if frame.data:
                seen.append((int(frame.id), json.loads(frame.data).get("service", "")))
                if seen[-1][1] == until:
                    return seen
    raise AssertionError(f"the stream ended before {until}: {seen}")


def test_a_stream_resumed_with_last_event_id_gets_exactly_the_events_it_missed(
    server: ServerProcess,
) -> None:
    client = server.client()
    client.create_service(idle("first"))
    first = frames(server, {"Last-Event-ID": "0"}, until="first")
    last_id = first[-1][0]
    for name in ("a", "b", "c"):  # missed: no stream is open
        client.create_service(idle(name))

    # The missed events come first, then a live one: created once the stream is open.
    resumed = frames(
        server,
        {"Last-Event-ID": str(last_id)},
        until="live",
        on_open=lambda: client.create_service(idle("live")),
    )
    assert [s for _, s in resumed] == ["a", "b", "c", "live"]
    ids = [i for i, _ in resumed]
    assert ids == sorted(set(ids)) and ids[0] > last_id
    # The ids are the store's revisions: the whole history, read again from the start, holds
    # exactly these after the one resumed from — none missing, none twice.
    everything = frames(server, {"Last-Event-ID": "0"}, until="live")
    assert [f for f in everything if f[0] > last_id] == resumed

    bad = httpx.get(
        f"{server.addr}/v1/events/stream",
        headers={"Authorization": f"Bearer {client.token}", "Last-Event-ID": "yesterday"},
    )
    assert bad.status_code == 400 and "Last-Event-ID" in bad.text
    with Client(server.addr, token="wrong") as stranger, pytest.raises(AuthError, match="invalid"):
        next(stranger.stream_events())


@pytest.fixture
def quick_pings(tmp_path: Path) -> Iterator[EmbeddedServer]:
    config = ServerConfig(
        data_dir=tmp_path / "m", api="127.0.0.1:0", http_port=0, worker=False, event_ping=0.2
    )
    with EmbeddedServer(config) as embedded:
        yield embedded


def test_a_quiet_stream_gets_keep_alive_pings_that_the_client_passes_over(
    quick_pings: EmbeddedServer,
) -> None:
    assert quick_pings.server is not None
    url = f"{quick_pings.server.api_url}/v1/events/stream"
    headers = {"Authorization": f"Bearer {quick_pings.server.token}"}
    seen: queue.Queue[Event] = queue.Queue()
    connected = threading.Event()

    def follow() -> None:
        with quick_pings.client() as client:
            for event in client.stream_events(on_connect=connected.set):
                if event.service == "end":
                    return
                seen.put(event)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert connected.wait(10)
    with quick_pings.client() as client:
        client.create_service(idle("before"))
        assert seen.get(timeout=10).service == "before"
        # Pings after an event: httpx-sse hands on a frame of no data for each of them.
        pings = []
        with httpx.stream("GET", url, headers=headers, timeout=5) as response:
            start = time.monotonic()
            for line in response.iter_lines():
                if line.startswith(": ping"):
                    pings.append(time.monotonic() - start)
                    if len(pings) == 3:
                        break
        gaps = [b - a for a, b in zip([0.0, *pings], pings, strict=False)]
        assert all(gap < 1.0 for gap in gaps), gaps  # every 0.2 s, not every 15 s
        client.create_service(idle("after"))
        assert seen.get(timeout=10).service == "after"
        client.create_service(idle("end"))
    follower.join(10)
    assert not follower.is_alive() and seen.empty()  # the pings were no events

    doc = httpx.get(f"{quick_pings.server.api_url}/openapi.json").json()
    stream = doc["paths"]["/v1/events/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "Last-Event-ID" in stream["description"]


def test_the_client_follows_the_stream_across_a_server_restart(server: ServerProcess) -> None:
    seen: queue.Queue[Event] = queue.Queue()
    connections: list[float] = []
    with server.client() as client:
        client.create_service(idle("early"))

    def follow() -> None:
        with server.client() as watcher:
            for event in watcher.stream_events(on_connect=lambda: connections.append(1)):
                seen.put(event)
                if event.service == "after":
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    wait_for(lambda: connections, 10, "the stream to open")
    with server.client() as client:
        client.create_service(idle("before"))
    assert seen.get(timeout=10).service == "before"

    # The open stream does not hold the stopping server up (it used to wait 5 s for it).
    started = time.monotonic()
    server.stop(signal.SIGTERM)
    assert time.monotonic() - started < 3.0
    server.start()
    with server.client() as client:
        client.create_service(idle("after"))
        kept = [e.service for e in client.list_events(limit=1000)]
    wait_for(lambda: len(connections) >= 2, 20, "the client to reconnect")
    # Everything written after "before", once: what the restarted server recorded, then "after".
    got = [seen.get(timeout=10).service]
    while got[-1] != "after":
        got.append(seen.get(timeout=10).service)
    assert got == kept[kept.index("before") + 1 :]
    follower.join(10)
    assert not follower.is_alive() and seen.empty()


def _lines(stream: subprocess.Popen[str], out: queue.Queue[str]) -> None:
    assert stream.stdout is not None
    for line in stream.stdout:
        out.put(line)


def test_warren_events_follows_as_json_lines_and_ends_quietly_on_ctrl_c(
    server: ServerProcess,
) -> None:
    follow = subprocess.Popen(
        [sys.executable, "-m", "warren", "events", "-o", "json", "--follow"],
        env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(follow, lines), daemon=True).start()
        # The kept events come first (the server's node.ready): the stream is open.
        first = json.loads(lines.get(timeout=20))
        assert first["kind"] == "node.ready"
        assert first["time"].endswith("+00:00") and "T" in first["time"]
        with server.client() as client:
            client.create_service(idle("web"))
        while (doc := json.loads(lines.get(timeout=20)))["kind"] != "service.created":
            pass
        assert doc["service"] == "web" and doc["message"] == "service web created"
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0
        assert follow.stderr is not None and follow.stderr.read() == ""
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait(5)


def test_warren_events_since_shows_the_last_minutes_only(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server.client() as client:
        client.create_service(idle("old"))
        (old,) = client.list_events("old")
        # The two must be apart by more than the call below takes to read the clock.
        wait_for(lambda: time.time() > old.time + 0.5, 5, "half a second")
        client.create_service(idle("new"))
        (new,) = client.list_events("new")
    # In this process, so that `--since` counts from the moment it is given (a new Python
    # would take a while to start): from between the two events.
    since = time.time() - (old.time + new.time) / 2
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["events", "--since", f"{since:.3f}s", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["service"] for line in result.stdout.splitlines()] == ["new"]

    table = CliRunner().invoke(cli, ["events", "--service", "old"])
    header, row = table.stdout.splitlines()
    assert header.split() == ["TIME", "LEVEL", "KIND", "SERVICE/TASK/NODE", "MESSAGE"]
    assert row.split()[2:] == ["info", "service.created", "old", "service", "old", "created"]


@pytest.mark.parametrize(
    ("flag", "value"), [("--since", "abc"), ("--output", "xml"), ("--limit", "0")]
)
def test_warren_events_refuses_a_bad_value_in_one_line_naming_the_flag(
    flag: str, value: str, tmp_path: Path
) -> None:
    env = {**os.environ, "WARREN_ADDR": "http://127.0.0.1:9", "WARREN_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "warren", "events", flag, value],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and flag in result.stderr, result.stderr
    assert result.stdout == ""
