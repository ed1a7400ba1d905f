"""Weight flip under load: how fast a 100/0 → 0/100 weight change reaches the traffic, and whether
any request still reaches the old revision once the change is acknowledged.

Two upstreams answer with their revision (nginx, ``{"version": "v1"}`` / ``"v2"``), behind the
proxy under test, under a steady closed-loop load (``bench.traffic``: 16 keep-alive connections,
each sending its next request as soon as the previous one is answered; every response logged with
the monotonic time it was sent and received, and the revision that answered). The proxy is pinned
to one core, the upstreams and the load to the other. 20 flips, alternately to v2 and to v1, 0.3 s
apart. Per flip:

(a) flip → first response from the new revision, received by the load generator;
(b) responses from the old revision to requests *sent* after the flip was acknowledged (goal 0);
(c) failed requests (goal 0).

The proxies:

- **Warren, in-process** (``bench.flip_server``): the ingress standalone; the flip is
  ``Ingress.update({service: Route(..., weights=...)})`` called inside its own event loop, "flip"
  is that call, "acknowledged" its return. Also from the ingress's own records: flip → the first
  request it received for the new revision, and → that response forwarded.
- **HAProxy**, the peer: the two servers in one backend, flipped by the Runtime API over the stats
  socket (``set weight be/s2 100; set weight be/s1 0``, one command line); "acknowledged" is the
  answer read back.
- **nginx** with a reload (the upstream block rewritten, SIGHUP to the master): no
  acknowledgement but the signal sent; the old workers finish their requests and close their
  keep-alive connections.
- **Warren end to end**: a real ``warren server``, a service of 2 demo-app tasks with
  ``strategy: blue-green, autoPromote: false``; each flip is a release whose green tasks are
  ready, then ``Client.promote_deployment`` (``warren deploy promote``): "flip" is the call,
  "acknowledged" its return; also promote → the ``Switched`` decision in the deployment's log.
  Failures are counted over the whole release (green started, switch, blue retired). 20 releases
  under the same load, then 20 under a paced 500 req/s (the server shares its event loop between
  the ingress and the controllers: the closed loop saturates it).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ingress import _nginx, _process, _wait_port
from bench.servers import free_port, running_server
from bench.traffic import TrafficLog, read_line, stop_process, traffic
from warren.client import Client
from warren.domain.specs import ServiceSpec

FLIPS = 20
SPACING_S = 0.3
CONNECTIONS = 16
WARMUP_S = 1.0
PROXY_CORE, LOAD_CORE = 0, 1


@dataclass
class Flip:
    new: str
    old: str
    flip: float
    """``time.monotonic()`` when the flip was asked for."""
    ack: float
    """... and when it was acknowledged."""
    end: float = 0.0
    """Where this flip's window of the log ends: the next flip (end to end: the release's end)."""
    inside: dict[str, Any] = field(default_factory=dict)
    """Warren in-process: the ingress's own figures; end to end: the Switched decision."""


# ── the figures ──────────────────────────────────────────────────────────────────────────────────


def judge(log: TrafficLog, flips: list[Flip]) -> list[dict[str, float]]:
    """(a), (b), (c) of every flip, from the load's log; windows from one flip to the next."""
    for i, f in enumerate(flips):
        f.end = f.end or (flips[i + 1].flip if i + 1 < len(flips) else log.received[-1])
    new_codes = {label: code for code, label in enumerate(log.labels)}
    result = []
    for f in flips:
        new, old = new_codes.get(f.new, -2), new_codes.get(f.old, -2)
        # End to end, the window starts with the release (green's start could fail requests).
        begin = f.inside.get("started", f.flip)
        # Responses received in the window, plus the late answers to requests sent in it.
        lo = bisect.bisect_left(log.received, begin - 1.0)
        hi = bisect.bisect_right(log.received, f.end + 6.0)
        first_new, stale, failed, requests = float("inf"), 0, 0, 0
        for i in range(lo, hi):
            sent, received, label = log.sent[i], log.received[i], log.label[i]
            if label == new and f.flip < received < first_new and sent < f.end:
                first_new = received
            if not begin <= sent < f.end:
                continue
            requests += 1
            if log.failed(i):
                failed += 1
            elif label == old and sent > f.ack and received < f.end:
                # Answered before the next flip, so routed before it: a stale route. (A request
                # sent just before the next flip and answered after it by the next flip's
                # target is right.)
                stale += 1
        row = {
            "first_new_ms": (first_new - f.flip) * 1000,
            "ack_ms": (f.ack - f.flip) * 1000,
            "old_after_ack": stale,
            "failed": failed,
            "requests": requests,
        }
        if "first_new_received" in f.inside:
            row["ingress_first_new_received_ms"] = (f.inside["first_new_received"] - f.flip) * 1e3
            row["ingress_first_new_done_ms"] = (f.inside["first_new_done"] - f.flip) * 1e3
            row["ingress_old_started_after_ack"] = f.inside["old_started_after_ack"]
        if "switched" in f.inside:
            row["switched_ms"] = (f.inside["switched"] - f.flip) * 1000
        result.append(row)
    return result


def summary(rows: list[dict[str, float]], log: TrafficLog, seconds: float) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    out: dict[str, Any] = {
        "flips": len(rows),
        "first_new_ms": med("first_new_ms"),
        "first_new_range_ms": (
            min(r["first_new_ms"] for r in rows),
            max(r["first_new_ms"] for r in rows),
        ),
        "ack_ms": med("ack_ms"),
        "old_after_ack": sum(r["old_after_ack"] for r in rows),
        "flips_with_old_after_ack": sum(1 for r in rows if r["old_after_ack"]),
        "failed": sum(1 for i in range(len(log)) if log.failed(i)),
        "requests": len(log),
        "rate": len(log) / seconds,
    }
    latencies = sorted(log.received[i] - log.sent[i] for i in range(len(log)))
    out["p50_ms"] = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
    for key in ("ingress_first_new_received_ms", "ingress_first_new_done_ms", "switched_ms"):
        if rows and key in rows[0]:
            out[key] = med(key)
    if rows and "ingress_old_started_after_ack" in rows[0]:
        out["ingress_old_started_after_ack"] = sum(r["ingress_old_started_after_ack"] for r in rows)
    return out


# ── the proxies ──────────────────────────────────────────────────────────────────────────────────


def _pinned(core: int) -> Callable[[], None]:
    def pin() -> None:
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {core})

    return pin


@contextlib.contextmanager
def _upstreams(tmp: Path) -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        for i, port in enumerate(ports):
            stack.enter_context(_process(_nginx(tmp, port, f"v{i + 1}"), port, LOAD_CORE))
        yield ports


def _run_flips(
    port: int, flips: int, spacing: float, flip: Callable[[int], Flip]
) -> dict[str, Any]:
    """The load on ``port``; ``flip(new)`` ``flips`` times, ``spacing`` apart."""
    with traffic(port, CONNECTIONS, core=LOAD_CORE) as load:
        time.sleep(WARMUP_S)
        start = time.monotonic()
        done: list[Flip] = []
        for i in range(flips):
            f = flip(2 if i % 2 == 0 else 1)
            done.append(f)
            time.sleep(max(0.0, f.flip + spacing - time.monotonic()))
        seconds = time.monotonic() - start
        log = load.stop()
    _trim(log, start)
    rows = judge(log, done)
    return {**summary(rows, log, seconds), "rows": rows}


def _trim(log: TrafficLog, start: float) -> None:
    """Keep only the requests received from ``start`` on (not the warm-up)."""
    first = bisect.bisect_left(log.received, start)
    del log.sent[:first], log.received[:first], log.status[:first], log.label[:first]


def warren_inprocess(tmp: Path, flips: int) -> dict[str, Any]:
    with _upstreams(tmp) as ups:
        port = free_port()
        args = [sys.executable, "-m", "bench.flip_server", str(port)]
        args += [f"127.0.0.1:{p}" for p in ups]
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            preexec_fn=_pinned(PROXY_CORE),
        )  # fmt: skip
        assert proc.stdin is not None
        stdin = proc.stdin
        try:
            if read_line(proc, 20) != "ready":
                raise SystemExit("bench.flip_server did not start")

            def flip(new: int) -> Flip:
                stdin.write(f"flip {new}\n".encode())
                inside = json.loads(read_line(proc, 10))
                return Flip(f"v{new}", f"v{3 - new}", inside["flip"], inside["ack"], inside=inside)

            return _run_flips(port, flips, SPACING_S, flip)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()
            stop_process(proc)


def _haproxy_config(tmp: Path, port: int, ups: list[int]) -> list[str]:
    conf = tmp / "haproxy-flip.cfg"
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
  server s1 127.0.0.1:{ups[0]} weight 100
  server s2 127.0.0.1:{ups[1]} weight 0
"""
    )
    return ["haproxy", "-f", str(conf), "-db"]


def haproxy(tmp: Path, flips: int) -> dict[str, Any]:
    with _upstreams(tmp) as ups:
        port = free_port()
        with _pinned_process(_haproxy_config(tmp, port, ups), port, PROXY_CORE):

            def flip(new: int) -> Flip:
                old = 3 - new
                # The new server up first: both at 0 for an instant would be a 503.
                command = f"set weight be/s{new} 100; set weight be/s{old} 0\n".encode()
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(str(tmp / "haproxy.sock"))
                    t0 = time.monotonic()
                    s.sendall(command)
                    answer = b""
                    while chunk := s.recv(4096):
                        answer += chunk
                    t1 = time.monotonic()
                if answer.strip():
                    raise SystemExit(f"haproxy: {command!r} → {answer.decode()!r}")
                return Flip(f"v{new}", f"v{old}", t0, t1)

            return _run_flips(port, flips, SPACING_S, flip)


def _nginx_proxy_config(tmp: Path, port: int, upstream: int) -> Path:
    conf = tmp / "nginx-proxy.conf"
    conf.write_text(
        f"""daemon off; master_process on; worker_processes 1; pid {tmp}/nginx-proxy.pid;
error_log /dev/null crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {tmp}/pbody; proxy_temp_path {tmp}/pproxy;
  fastcgi_temp_path {tmp}/pfcgi; uwsgi_temp_path {tmp}/puwsgi; scgi_temp_path {tmp}/pscgi;
  upstream be {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://be;
    proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""
    )
    return conf


def nginx_reload(tmp: Path, flips: int) -> dict[str, Any]:
    with _upstreams(tmp) as ups:
        port = free_port()
        conf = _nginx_proxy_config(tmp, port, ups[0])
        with _pinned_process(["nginx", "-c", str(conf)], port, PROXY_CORE) as proc:

            def flip(new: int) -> Flip:
                _nginx_proxy_config(tmp, port, ups[new - 1])
                t0 = time.monotonic()
                proc.send_signal(signal.SIGHUP)
                return Flip(f"v{new}", f"v{3 - new}", t0, time.monotonic())

            return _run_flips(port, flips, 1.0, flip)


@contextlib.contextmanager
def _pinned_process(args: list[str], port: int, core: int) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` on ``core`` from the start (its children too: nginx's workers), listening on
    ``port``."""
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pinned(core)
    )
    try:
        _wait_port(port)
        yield proc
    finally:
        stop_process(proc)


# ── Warren end to end ────────────────────────────────────────────────────────────────────────────


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def _wall_to_monotonic() -> float:
    """What to subtract from a ``time.time()`` of this machine to get ``time.monotonic()``."""
    return min((time.time() - time.monotonic() for _ in range(5)), key=abs)


def warren_end_to_end(flips: int, rate: float = 0.0, data_plane: str = "builtin") -> dict[str, Any]:
    with running_server("--data-plane", data_plane) as (client, _server, _data):
        port = free_port()
        spec = ServiceSpec.model_validate(
            {
                "name": "flip",
                "command": [sys.executable, "-m", "warren.demo.app"],
                "replicas": 2,
                "env": {"VERSION": "v1"},
                "ports": [{"published": port}],
                "healthCheck": {"http": {"path": "/healthz"}, "interval": "250ms"},
                "stopGrace": "2s",
                "drainTimeout": "2s",
                "deploy": {
                    "strategy": "blue-green",
                    "blueGreen": {"autoPromote": False, "scaleDownDelay": "0s"},
                },
            }
        )
        client.create_service(spec)
        _wait(lambda: _ready(client, "flip", 2), 60, "the first tasks")
        offset = _wall_to_monotonic()
        with traffic(port, CONNECTIONS, rate) as load:
            time.sleep(WARMUP_S)
            start = time.monotonic()
            done: list[Flip] = []
            for i in range(flips):
                done.append(_release(client, f"v{2 if i % 2 == 0 else 1}", offset))
            seconds = time.monotonic() - start
            log = load.stop()
    _trim(log, start)
    rows = judge(log, done)
    return {**summary(rows, log, seconds), "rows": rows}


def _ready(client: Client, name: str, n: int) -> bool:
    return len([t for t in client.list_tasks(name) if t.ready and t.wants_running]) >= n


def _release(client: Client, new: str, offset: float) -> Flip:
    """One blue/green release to ``new``: green ready, promote (the flip), blue retired."""
    started = time.monotonic()
    _, _, deployment_id = client.patch_service("flip", {"env": {"VERSION": new}})
    assert deployment_id is not None
    d = _wait(
        lambda: (x := client.get_deployment("flip", deployment_id)).phase != "progressing" and x,
        30,
        f"green ({deployment_id}) to be ready",
    )
    if d.phase != "awaiting_promotion":
        raise SystemExit(f"release {deployment_id} {d.phase}: {d.message}")
    t0 = time.monotonic()
    client.promote_deployment("flip")
    t1 = time.monotonic()
    d = _wait(
        lambda: (x := client.get_deployment("flip", deployment_id)).phase.terminal and x,
        30,
        "the release to end",
    )
    if d.phase != "succeeded":
        raise SystemExit(f"release {deployment_id} {d.phase}: {d.message}")
    switched = [x.time for x in d.decisions if x.reason == "Switched"]
    f = Flip(new, "v1" if new == "v2" else "v2", t0, t1, end=time.monotonic())
    f.inside["switched"] = switched[0] - offset
    # The window of this flip starts with the release (green's start can fail requests too).
    f.inside["started"] = started
    return f


# ── report ───────────────────────────────────────────────────────────────────────────────────────


E2E_LIGHT_RATE = 500.0


def run(flips: int, e2e_flips: int) -> dict[str, dict[str, Any]]:
    missing = [tool for tool in ("haproxy", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"the flip benchmark needs {', '.join(missing)}")
    tmp = Path(tempfile.mkdtemp(prefix="warren-flip-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        results["warren"] = warren_inprocess(tmp, flips)
        results["haproxy"] = haproxy(tmp, flips)
        results["nginx"] = nginx_reload(tmp, flips)
        if e2e_flips:
            results["warren-e2e"] = warren_end_to_end(e2e_flips)
            results["warren-e2e-light"] = warren_end_to_end(e2e_flips, E2E_LIGHT_RATE)
            results["haproxy-e2e-light"] = warren_end_to_end(
                e2e_flips, E2E_LIGHT_RATE, data_plane="haproxy"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def _line(name: str, r: dict[str, Any]) -> str:
    lo, hi = r["first_new_range_ms"]
    return (
        f"  {name:12} (a) {r['first_new_ms']:7.3f} ms [{lo:.3f}-{hi:.3f}]  "
        f"(b) {r['old_after_ack']} in {r['flips_with_old_after_ack']}/{r['flips']} flips  "
        f"(c) {r['failed']} of {r['requests']}  ack {r['ack_ms']:.3f} ms  "
        f"load {r['rate']:.0f} req/s, p50 {r['p50_ms']:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench flip")
    parser.add_argument("--flips", type=int, default=FLIPS)
    parser.add_argument("--e2e-flips", type=int, default=FLIPS)
    parser.add_argument("--json", action="store_true", help="also print every flip")
    args, _ = parser.parse_known_args([a for a in sys.argv[1:] if a != "flip"])
    results = run(args.flips, args.e2e_flips)
    print(
        f"flip: weights 100/0 → 0/100 under a closed-loop load ({CONNECTIONS} keep-alive "
        f"connections), medians of {args.flips} flips; (a) flip → first new-revision response, "
        "(b) old-revision answers to requests sent after the ack (goal 0), (c) failed (goal 0)"
    )
    w = results["warren"]
    print(_line("warren", w))
    print(
        f"  {'':12} inside the ingress: flip → first new-revision request received "
        f"{w['ingress_first_new_received_ms']:.3f} ms, → its response forwarded "
        f"{w['ingress_first_new_done_ms']:.3f} ms; old-revision requests started after the ack: "
        f"{w['ingress_old_started_after_ack']}"
    )
    h = results["haproxy"]
    print(_line("haproxy", h))
    print(_line("nginx reload", results["nginx"]))
    if "warren-e2e" in results:
        print(
            f"  warren end to end: blue/green promote via the API, {args.e2e_flips} releases of 2 "
            "demo-app tasks, under the same load, then under a paced "
            f"{E2E_LIGHT_RATE:.0f} req/s; promote call → Switched decision "
            f"{results['warren-e2e']['switched_ms']:.1f} / "
            f"{results['warren-e2e-light']['switched_ms']:.1f} ms"
        )
        print(_line("e2e", results["warren-e2e"]))
        print(_line(f"e2e {E2E_LIGHT_RATE:.0f}/s", results["warren-e2e-light"]))
        print(
            "  the same releases on Warren's HAProxy data plane (--data-plane haproxy; each "
            "release's preview route reloads it), paced: promote call → Switched "
            f"{results['haproxy-e2e-light']['switched_ms']:.1f} ms"
        )
        print(_line(f"hx {E2E_LIGHT_RATE:.0f}/s", results["haproxy-e2e-light"]))
    print(
        f"  (a) Warren in-process ÷ HAProxy: {w['first_new_ms'] / h['first_new_ms']:.2f}x "
        "(goal: Warren < 1 ms, 0 old after the ack, 0 failed)"
    )
    if args.json:
        print(json.dumps({k: v["rows"] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
