"""The ingress against HAProxy, side by side in one run: the same two weighted upstreams (nginx
answering a fixed 30-byte body), the same load (wrk, keep-alive), each proxy pinned to one core
with the upstreams and wrk on the other. Reported per proxy: requests/s, requests per CPU-second
of the proxy process (the per-core figure that does not depend on who else runs), p50/p99.

Goal: at least 0.8x HAProxy's requests per CPU-second, p99 at most 2x HAProxy's.
Needs ``wrk``, ``haproxy`` and ``nginx`` (Debian packages of those names).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.servers import free_port

TICK = os.sysconf("SC_CLK_TCK")
SECONDS = 8
CONNECTIONS = 50


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def _pin(pid: int, core: int) -> None:
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {core})


@contextlib.contextmanager
def _process(args: list[str], port: int, core: int) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (read on failure, closed with the process)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _pin(proc.pid, core)
        try:
            _wait_port(port)
        except SystemExit:
            log.seek(0)
            raise SystemExit(f"{args[0]} did not start: {log.read().decode()[-500:]}") from None
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _nginx(tmp: Path, port: int, name: str) -> list[str]:
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(
        f"""daemon off; master_process off; worker_processes 1; pid {tmp}/nginx-{port}.pid;
error_log /dev/null crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {tmp}/body-{port}; proxy_temp_path {tmp}/proxy-{port};
  fastcgi_temp_path {tmp}/fcgi-{port}; uwsgi_temp_path {tmp}/uwsgi-{port};
  scgi_temp_path {tmp}/scgi-{port};
  server {{ listen 127.0.0.1:{port}; location / {{ default_type application/json;
    return 200 '{{"version": "{name}"}}'; }} }} }}
"""
    )
    return ["nginx", "-c", str(conf)]


def _haproxy(tmp: Path, port: int, upstreams: list[int]) -> list[str]:
    conf = tmp / "haproxy.cfg"
    servers = "\n".join(f"  server s{i} 127.0.0.1:{p} weight 50" for i, p in enumerate(upstreams))
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 4096
  stats socket {tmp}/haproxy.sock mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance roundrobin
{servers}
"""
    )
    return ["haproxy", "-f", str(conf), "-db"]


def _wrk(port: int) -> dict[str, float]:
    args = [
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{SECONDS}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    _pin(proc.pid, 1)
    out, _ = proc.communicate(timeout=SECONDS + 30)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def latency(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return {
        "requests": requests,
        "rps": requests / SECONDS,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def _measure(proc: subprocess.Popen[bytes], port: int) -> dict[str, Any]:
    _wrk_warmup(port)
    before = cpu_seconds(proc.pid)
    result: dict[str, Any] = _wrk(port)
    result["cpu_s"] = cpu_seconds(proc.pid) - before
    result["per_cpu_second"] = result["requests"] / max(result["cpu_s"], 1e-9)
    return result


def _wrk_warmup(port: int) -> None:
    subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", "-d1s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def compare() -> dict[str, dict[str, Any]]:
    missing = [tool for tool in ("wrk", "haproxy", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"ingress benchmark needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
        )
    tmp = Path(tempfile.mkdtemp(prefix="warren-ingress-bench-"))
    ups = [free_port(), free_port()]
    results: dict[str, dict[str, Any]] = {}
    try:
        with contextlib.ExitStack() as stack:
            for i, port in enumerate(ups):
                stack.enter_context(_process(_nginx(tmp, port, f"v{i + 1}"), port, 1))
            port = free_port()
            with _process(_haproxy(tmp, port, ups), port, 0) as proc:
                results["haproxy"] = _measure(proc, port)
            port = free_port()
            args = [sys.executable, "-m", "bench.ingress_server", str(port)]
            args += [f"127.0.0.1:{p}" for p in ups]
            with _process(args, port, 0) as proc:
                results["warren"] = _measure(proc, port)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    r = compare()
    w, h = r["warren"], r["haproxy"]
    print(
        f"ingress vs HAProxy (1 core each, wrk -c{CONNECTIONS}, {SECONDS}s, "
        "2 weighted nginx upstreams)"
    )
    for name, x in (("warren", w), ("haproxy", h)):
        print(
            f"  {name:8} {x['rps']:8.0f} req/s, {x['per_cpu_second']:8.0f} req per CPU-second, "
            f"p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms, "
            f"errors {x['errors']} {x['socket_errors']}"
        )
    print(
        f"  ratio: {w['per_cpu_second'] / h['per_cpu_second']:.2f}x HAProxy per core "
        "(goal >= 0.8), "
        f"p99 {w['p99_ms'] / h['p99_ms']:.2f}x (goal <= 2)"
    )


if __name__ == "__main__":
    main()
