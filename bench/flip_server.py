"""A standalone Warren ingress whose weights the flip benchmark flips:
``python -m bench.flip_server PORT UPSTREAM1 UPSTREAM2`` routes PORT to two upstreams (revisions
1 and 2, 100/0), on uvloop, and reads commands on stdin, one per line:

- ``flip R``: give revision R weight 100 and the other 0, inside the ingress's own event loop;
  ``measure`` ms later, answer one JSON line: when ``update`` was called and when it returned
  (``time.monotonic()``), and from the ingress's own per-revision records (``recent``: when each
  request finished, and how long it took) the first request of revision R after the flip (when
  the ingress received it, when its response was forwarded) and how many requests the ingress
  started for the other revision after ``update`` returned.
- ``quit``.

Prints ``ready`` once it listens.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvloop

from warren.ingress import Ingress
from warren.ports import Endpoint, Route

SERVICE = "flip"
MEASURE_S = 0.15


def _route(port: int, endpoints: tuple[Endpoint, ...], winner: int) -> Route:
    weights = tuple((e.revision, 100 if e.revision == winner else 0) for e in endpoints)
    return Route(SERVICE, (port,), None, endpoints, weights)


def _figures(ingress: Ingress, new: int, old: int, flip: float, ack: float) -> dict[str, Any]:
    # The ingress's own records of the last requests (``revision_stats()`` copies the counters
    # only): private, read here for the measurement and nothing else.
    stats = ingress._counters.revisions
    figures: dict[str, Any] = {"flip": flip, "ack": ack}
    fresh = stats.get((SERVICE, new))
    after = [(at - latency, at) for at, latency, _ in fresh.recent if at >= flip] if fresh else []
    if after:
        figures["first_new_received"] = min(start for start, _ in after)
        figures["first_new_done"] = min(done for _, done in after)
    stale = stats.get((SERVICE, old))
    figures["old_started_after_ack"] = (
        sum(1 for at, latency, _ in stale.recent if at - latency >= ack) if stale else 0
    )
    return figures


async def serve(port: int, upstreams: list[str]) -> None:
    ingress = Ingress(host="127.0.0.1")
    await ingress.start()
    endpoints = tuple(Endpoint(a, f"up{i}", i + 1) for i, a in enumerate(upstreams))
    await ingress.update({SERVICE: _route(port, endpoints, 1)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := (await reader.readline()).decode().split():
        if line[0] != "flip":
            break
        new = int(line[1])
        old = 2 if new == 1 else 1
        route = {SERVICE: _route(port, endpoints, new)}
        flip = time.monotonic()
        await ingress.update(route)
        ack = time.monotonic()
        await asyncio.sleep(MEASURE_S)
        print(json.dumps(_figures(ingress, new, old, flip, ack)), flush=True)
    await ingress.close()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2:]))
