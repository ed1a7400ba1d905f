"""The ingress against HAProxy, side by side in one run: the same two weighted upstreams (nginx
answering a fixed 17-byte body), the same load (wrk, keep-alive), each proxy pinned to one core
with the upstreams and wrk on the other. Reported per proxy: requests/s, requests per CPU-second
of the proxy process (the per-core figure that does not depend on who else runs), the CPU time
per request, p50/p99.

Fair by construction:

- the proxies run at once, pinned to core 0 (those not being measured are idle), and are
  measured in rotating order, ``--rounds`` times (3 by default): a load that comes and goes on
  the machine falls on all of them; the figures reported are the medians over the rounds;
- the same wrk command for each (1 thread, 50 connections, 8 s, after a 1 s warm-up), and the
  same upstreams: with 2 cores, wrk and both nginx share core 1;
- the same work: HAProxy with ``nbthread 1``, keep-alive and connection reuse on both sides,
  weights 50/50, and the X-Forwarded-For/-Proto/-Host headers Warren adds; Warren's ingress on
  uvloop with the garbage-collector settings of ``warren server`` (``bench.ingress_server``).
  The goal's ratio is against that HAProxy; a second HAProxy without the X-Forwarded-* headers
  (``haproxy-plain``, its default) is measured in the same rounds, for reference.

``--tls``: the same with each proxy terminating TLS (HAProxy ``bind ... ssl``, the ingress on a
port with ``tls``), wrk over HTTPS on the same keep-alive connections.

Goal: at least 0.8x HAProxy's requests per CPU-second, p99 at most 2x HAProxy's.
Needs ``wrk``, ``haproxy`` and ``nginx`` (Debian packages of those names).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.servers import free_port
from warren.ingress import COMPILED

TICK = os.sysconf("SC_CLK_TCK")
SECONDS = 8
CONNECTIONS = 50
ROUNDS = 3
PROXIES = ["warren", "warren-python", "haproxy", "haproxy-plain", "warren-haproxy"]
"""``warren``: the ingress as ``make`` built it (compiled by mypyc where a C compiler is);
``warren-python``: the same from its source (``WARREN_PURE=1``); ``warren-haproxy``: Warren's
HAProxy data plane (``--data-plane haproxy``, ``bench.haproxy_server``): an HAProxy it
configured, one thread, and the Python process that reads its per-request log lines — the
CPU of both is counted."""
PROXY_CORE = 0
LOAD_CORE = 1
"""wrk and the upstreams. On a single-core machine nothing is pinned."""


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far. (The kernel samples the split between
    the two at each clock tick; their sum is the process's exact run time.)"""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


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
def _process(
    args: list[str],
    port: int,
    core: int | None,
    env: dict[str, str] | None = None,
    says_ready: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """A process that listens on ``port``, pinned to ``core`` (None: not pinned), stopped on
    leaving. ``says_ready``: wait for its "ready" line too (an ingress worker: the port answers
    already when another worker serves it)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (read on failure, closed with the process)
    environ = os.environ | (env or {})
    out = subprocess.PIPE if says_ready else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=out, stderr=log, env=environ)
    try:
        if core is not None:
            _pin(proc.pid, core)
        try:
            if says_ready:
                assert proc.stdout is not None
                readable, _, _ = select.select([proc.stdout], [], [], 20)
                if not readable or proc.stdout.readline().strip() != b"ready":
                    raise SystemExit("not ready")
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
        log.close()


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


def _haproxy(
    tmp: Path, port: int, upstreams: list[int], forwarded: bool = True, pem: Path | None = None
) -> list[str]:
    """HAProxy; with ``pem`` (certificate and key), terminating TLS as Warren's ingress does."""
    conf = tmp / f"haproxy-{port}.cfg"
    servers = "\n".join(f"  server s{i} 127.0.0.1:{p} weight 50" for i, p in enumerate(upstreams))
    # The X-Forwarded-* headers: the same request rewriting as Warren's ingress does.
    headers = (
        f"""  option forwardfor
  http-request set-header X-Forwarded-Proto {"https" if pem else "http"}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
"""
        if forwarded
        else ""
    )
    tls = f" ssl crt {pem} ssl-min-ver TLSv1.2" if pem else ""
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 4096
  stats socket {tmp}/haproxy-{port}.sock mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port}{tls}
{headers}  default_backend be
backend be
  balance roundrobin
{servers}
"""
    )
    return ["haproxy", "-f", str(conf), "-db"]


def _wrk(url: str) -> dict[str, Any]:
    args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url]
    out = _run_wrk(args, SECONDS + 30)
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


def _run_wrk(args: list[str], timeout: float) -> str:
    """wrk's output; wrk runs on the load core and is never left behind."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        _pin(proc.pid, LOAD_CORE)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def _measure(pids: list[int], url: str) -> dict[str, Any]:
    """wrk against ``url``; the CPU time of the proxy's processes ``pids`` meanwhile."""
    _run_wrk(["wrk", "-t1", f"-c{CONNECTIONS}", "-d1s", url], 30)
    user0, sys0 = map(sum, zip(*(cpu_times(pid) for pid in pids), strict=True))
    result = _wrk(url)
    user1, sys1 = map(sum, zip(*(cpu_times(pid) for pid in pids), strict=True))
    n = max(result["requests"], 1)
    result["cpu_s"] = (user1 - user0) + (sys1 - sys0)
    result["per_cpu_second"] = result["requests"] / max(result["cpu_s"], 1e-9)
    result["user_us"] = (user1 - user0) / n * 1e6
    result["sys_us"] = (sys1 - sys0) / n * 1e6
    return result


def _certificate(tmp: Path) -> tuple[Path, Path, Path]:
    """A certificate for 127.0.0.1 (trustme, a dev dependency): its chain, its key, and both in
    one file (HAProxy's ``crt``)."""
    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1")
    chain, key, pem = tmp / "chain.pem", tmp / "key.pem", tmp / "both.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    pem.write_bytes(chain.read_bytes() + key.read_bytes())
    return chain, key, pem


def compare(rounds: int = ROUNDS, tls: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every round's figures, per proxy; with ``tls``, each terminating TLS (wrk over HTTPS,
    keep-alive: the cost of encrypting each request and response, not of handshakes)."""
    missing = [tool for tool in ("wrk", "haproxy", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"ingress benchmark needs {', '.join(missing)} (apt-get install {' '.join(missing)})"
        )
    tmp = Path(tempfile.mkdtemp(prefix="warren-ingress-bench-"))
    ups = [free_port(), free_port()]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in PROXIES}
    scheme, pem, env_tls = "http", None, {}
    if tls:
        chain, key, pem = _certificate(tmp)
        scheme, env_tls = "https", {"TLS_CERT": str(chain), "TLS_KEY": str(key)}
    try:
        with contextlib.ExitStack() as stack:
            for i, port in enumerate(ups):
                stack.enter_context(_process(_nginx(tmp, port, f"v{i + 1}"), port, LOAD_CORE))
            proxies: dict[str, tuple[list[int], int]] = {}
            for name, forwarded in (("haproxy", True), ("haproxy-plain", False)):
                port = free_port()
                args = _haproxy(tmp, port, ups, forwarded, pem)
                proxies[name] = ([stack.enter_context(_process(args, port, PROXY_CORE)).pid], port)
            for name, pure in (("warren", ""), ("warren-python", "1")):
                port = free_port()
                args = [sys.executable, "-m", "bench.ingress_server", str(port)]
                args += [f"127.0.0.1:{p}" for p in ups]
                env = {"WARREN_PURE": pure} | env_tls
                proc = stack.enter_context(_process(args, port, PROXY_CORE, env))
                proxies[name] = ([proc.pid], port)
            if not tls:  # (the HAProxy data plane does not terminate TLS)
                port = free_port()
                args = [sys.executable, "-m", "bench.haproxy_server", str(port)]
                args += [f"127.0.0.1:{p}" for p in ups]
                proc = stack.enter_context(_process(args, port, PROXY_CORE, says_ready=True))
                assert proc.stdout is not None
                worker = int(proc.stdout.readline())
                _pin(worker, PROXY_CORE)
                proxies["warren-haproxy"] = ([proc.pid, worker], port)
            for i in range(rounds):
                # Rotate who goes first: a drift in the machine's load falls on all.
                order = PROXIES[i % len(PROXIES) :] + PROXIES[: i % len(PROXIES)]
                for name in [n for n in order if n in proxies]:
                    pids, port = proxies[name]
                    results[name].append(_measure(pids, f"{scheme}://127.0.0.1:{port}/"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("rps", "per_cpu_second", "p50_ms", "p99_ms")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def _rounds_argument() -> int:
    """``python -m bench ingress --rounds 5``."""
    argv = sys.argv[1:]
    if "--rounds" in argv:
        return int(argv[argv.index("--rounds") + 1])
    return ROUNDS


def main() -> None:
    rounds = _rounds_argument()
    tls = "--tls" in sys.argv[1:]
    load_before = os.getloadavg()[0]
    r = compare(rounds, tls)
    build = "compiled by mypyc" if COMPILED else "not compiled: as Python, as warren-python"
    print(
        f"ingress ({build}{', TLS' if tls else ''}) vs HAProxy (1 core each, "
        f"wrk -t1 -c{CONNECTIONS}, {SECONDS}s, "
        f"2 weighted nginx upstreams, {rounds} rotating rounds; machine load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )
    for name in [n for n in PROXIES if r[n]]:
        for x in r[name]:
            print(
                f"  {name:13} {x['rps']:8.0f} req/s, {x['per_cpu_second']:8.0f} req per CPU-second"
                f" ({x['user_us'] + x['sys_us']:.1f} us: user {x['user_us']:.1f}, "
                f"sys {x['sys_us']:.1f}), p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms, "
                f"errors {x['errors']} {x['socket_errors']}"
            )
    m_all = {name: medians(r[name]) for name in PROXIES if r[name]}
    w, h = m_all["warren"], m_all["haproxy"]
    for name, m in m_all.items():
        print(
            f"  median {name:13} {m['rps']:8.0f} req/s, {m['per_cpu_second']:8.0f} req per "
            f"CPU-second ({1e6 / m['per_cpu_second']:.1f} us per request), "
            f"p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms"
        )
    per_round = [
        a["per_cpu_second"] / b["per_cpu_second"]
        for a, b in zip(r["warren"], r["haproxy"], strict=True)
    ]
    plain = m_all["haproxy-plain"]["per_cpu_second"]
    python = m_all["warren-python"]["per_cpu_second"]
    print(
        f"  ratio: {w['per_cpu_second'] / h['per_cpu_second']:.2f}x HAProxy per core "
        f"(goal >= 0.8; per round {', '.join(f'{x:.2f}' for x in per_round)}; "
        f"{w['per_cpu_second'] / plain:.2f}x haproxy-plain), "
        f"p99 {w['p99_ms'] / h['p99_ms']:.2f}x (goal <= 2); "
        f"as Python {python / h['per_cpu_second']:.2f}x, compiled/Python "
        f"{w['per_cpu_second'] / python:.2f}x"
    )
    if "warren-haproxy" in m_all:
        d = m_all["warren-haproxy"]
        print(
            f"  Warren's HAProxy data plane: {d['per_cpu_second'] / h['per_cpu_second']:.2f}x "
            f"HAProxy per core (its log lines read included), "
            f"{d['per_cpu_second'] / w['per_cpu_second']:.2f}x the built-in ingress; "
            f"p99 {d['p99_ms'] / h['p99_ms']:.2f}x HAProxy's"
        )


if __name__ == "__main__":
    main()
