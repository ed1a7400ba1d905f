"""One run of ``bench.ingress_cost``: ``python -m bench.ingress_cost_run REQUESTS RUNS`` prints
the build it ran and the CPU microseconds per request of its best run."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import uvloop

import warren.ingress as ingress_package
from warren.ingress import Ingress
from warren.ingress.downstream import _Client
from warren.ingress.upstream import _Upstream
from warren.ports import Endpoint, Route

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 04:10:43 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 17\r\nConnection: keep-alive\r\n\r\n"
    b'{"version": "v1"}'
)
PORT = 18080


class _Transport:
    """Takes what is written and does nothing with it."""

    def write(self, data: Any) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def measure(requests: int, runs: int) -> float:
    ingress = Ingress(host="127.0.0.1")
    await ingress.start()
    addresses = ["127.0.0.1:1", "127.0.0.1:2"]
    endpoints = tuple(Endpoint(a, f"up{i}", i + 1) for i, a in enumerate(addresses))
    await ingress.update({"bench": Route("bench", (PORT,), None, endpoints, ((1, 50), (2, 50)))})
    for address in addresses:
        conn = _Upstream(ingress, address)
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        ingress._pool.release(conn, True)
    client = _Client(ingress, PORT)
    client.connection_made(_Transport())  # type: ignore[arg-type]

    def serve(n: int) -> None:
        for _ in range(n):
            client.data_received(REQUEST)
            exchange = client._exchange
            assert exchange is not None and exchange.upstream is not None
            exchange.upstream.data_received(RESPONSE)

    serve(2000)  # warm: the pools, the counters, the caches
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        serve(requests)
        best = min(best, (time.process_time() - start) / requests)
    await ingress.close()
    return best * 1e6


def main() -> None:
    requests, runs = int(sys.argv[1]), int(sys.argv[2])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        cost = runner.run(measure(requests, runs))
    build = "compiled" if ingress_package.COMPILED else "python"
    print(f"{build}: {cost:.2f} us of CPU per request")


if __name__ == "__main__":
    main()
