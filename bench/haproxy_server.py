"""Warren's HAProxy data plane for the ingress benchmark: ``python -m bench.haproxy_server PORT
UPSTREAM1 UPSTREAM2`` starts an HAProxy (one thread) through ``warren.haproxy.HaproxyIngress``
and routes PORT to the two upstreams, 50/50 by weight, as ``bench.ingress_server`` does with
the built-in ingress; it then reads HAProxy's per-request log lines, as ``warren ingress`` does.
Prints ``ready`` and HAProxy's worker pid; stops HAProxy on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from pathlib import Path

from warren.haproxy import HaproxyIngress
from warren.ports import Endpoint, Route


async def serve(port: int, upstreams: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="warren-haproxy-bench-") as tmp:
        plane = HaproxyIngress(Path(tmp), shared_port=None, stop_after=2.0, threads=1)
        await plane.start()
        endpoints = tuple(Endpoint(a, f"up{i}", i + 1) for i, a in enumerate(upstreams))
        weights = tuple((i + 1, 100 // len(upstreams)) for i in range(len(upstreams)))
        await plane.update({"bench": Route("bench", (port,), None, endpoints, weights)})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        print(await plane.worker_pid(), flush=True)
        await stop.wait()
        await plane.close()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2:]))
