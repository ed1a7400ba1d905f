"""The demo web app: ``python -m warren.demo.app`` serves on ``$PORT``.

``GET /`` → 200 ``{"version": $VERSION, "task": $WARREN_TASK_ID}``; ``GET /healthz`` → 200.
Knobs, by environment variable:

- ``FAIL_RATE``: fraction of ``/`` answered with 500 (0.2 → one in five);
- ``LATENCY_MS``: added to every ``/`` answer;
- ``STARTUP_DELAY_S``: wait before listening;
- ``UNHEALTHY=1``: ``/healthz`` answers 503;
- ``CRASH_AFTER_S``: exit with status 1 after that many seconds.

Must not import anything of Warren's: it stands for any user application. Built on the standard
library only (asyncio streams), HTTP/1.1 with keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys

__all__ = ["main"]


class Settings:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = int(env.get("PORT", "8080"))
        self.host = env.get("HOST", "127.0.0.1")
        self.version = env.get("VERSION", "v1")
        self.task = env.get("WARREN_TASK_ID", "local")
        self.fail_rate = float(env.get("FAIL_RATE", "0") or 0)
        self.latency = float(env.get("LATENCY_MS", "0") or 0) / 1000
        self.startup_delay = float(env.get("STARTUP_DELAY_S", "0") or 0)
        self.unhealthy = env.get("UNHEALTHY", "") not in ("", "0", "false")
        self.crash_after = float(env.get("CRASH_AFTER_S", "0") or 0)


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'OK')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


async def _handle(
    settings: Settings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = [*lines[0].split(" "), "", "", ""][:3]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            conn = headers.get("connection", "").lower()
            keep_alive = conn != "close" and (version == "HTTP/1.1" or conn == "keep-alive")
            path = target.split("?", 1)[0]
            if path == "/healthz":
                status = 503 if settings.unhealthy else 200
                body = json.dumps({"status": "unhealthy" if settings.unhealthy else "ok"})
            elif path == "/":
                if settings.latency:
                    await asyncio.sleep(settings.latency)
                if settings.fail_rate and random.random() < settings.fail_rate:
                    status, body = 500, json.dumps({"error": "injected failure"})
                else:
                    status = 200
                    body = json.dumps({"version": settings.version, "task": settings.task})
            else:
                # Who answered, too: a path routed to the wrong service shows.
                error = {"error": f"no route {path}", "version": settings.version}
                status, body = 404, json.dumps({**error, "task": settings.task})
            if method == "HEAD":
                writer.write(_response(status, b"", keep_alive))
            else:
                writer.write(_response(status, body.encode(), keep_alive))
            await writer.drain()
            if not keep_alive:
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(settings: Settings) -> None:
    if settings.startup_delay:
        await asyncio.sleep(settings.startup_delay)
    server = await asyncio.start_server(
        lambda r, w: _handle(settings, r, w), settings.host, settings.port, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.crash_after:
        loop.call_later(settings.crash_after, lambda: os._exit(1))
    print(
        f"demo app {settings.version} ({settings.task}) listening on "
        f"{settings.host}:{settings.port}",
        flush=True,
    )
    async with server:
        await stop.wait()
    print("demo app: stopping", flush=True)


def main() -> None:
    try:
        settings = Settings(dict(os.environ))
    except ValueError as exc:
        print(f"demo app: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
