"""A standalone Warren ingress for the ingress benchmark: ``python -m bench.ingress_server PORT
UPSTREAM1 UPSTREAM2`` routes PORT to two upstreams, 50/50 by weight, on uvloop, with the
garbage-collector settings of ``warren server`` (the process the ingress runs in). With
``TLS_CERT`` and ``TLS_KEY`` in its environment, PORT terminates TLS; with ``REUSE_PORT=1``,
it binds PORT with SO_REUSEPORT, as an ingress worker does (several serve one port)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import uvloop

from warren.cli.main import _tune_gc
from warren.ingress import Ingress
from warren.ports import Endpoint, Route


async def serve(port: int, upstreams: list[str]) -> None:
    ingress = Ingress(host="127.0.0.1", reuse_port=os.environ.get("REUSE_PORT") == "1")
    await ingress.start()
    endpoints = tuple(Endpoint(a, f"up{i}", i + 1) for i, a in enumerate(upstreams))
    weights = tuple((i + 1, 100 // len(upstreams)) for i in range(len(upstreams)))
    cert, key = os.environ.get("TLS_CERT"), os.environ.get("TLS_KEY")
    tls = ((port, cert, key),) if cert and key else ()
    await ingress.update(
        {
            "bench": Route(
                "bench",
                (port,),
                None,
                endpoints,
                weights if os.environ.get("WEIGHTS", "1") == "1" else (),
                tls=tls,
            )
        }
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _tune_gc()
    print("ready", flush=True)
    await stop.wait()
    await ingress.close()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(int(sys.argv[1]), sys.argv[2:]))
