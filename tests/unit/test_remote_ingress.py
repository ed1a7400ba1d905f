"""``RemoteIngress``, the data plane of a server whose ingress runs as worker processes: a
drain reaches every worker, and the counters are their sum (each worker's admin socket, here
served in this process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warren.ingress.admin import AdminServer, stats_to_wire
from warren.ingress.supervising import RemoteIngress, admin_path
from warren.ports import LATENCY_BUCKETS, RouteStats


def stats(requests: int, errors: int, in_bucket: int) -> RouteStats:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[in_bucket] = requests
    return RouteStats(requests, errors, 0, counts, requests * 0.01)


class Worker:
    def __init__(self, requests: int, problems: dict[str, str]) -> None:
        self.requests = requests
        self.problems = problems
        self.drained: list[tuple[str, float]] = []

    def handlers(self) -> dict[str, Any]:
        return {"drain": self.drain, "stats": self.stats}

    async def drain(self, request: dict[str, Any]) -> dict[str, Any]:
        self.drained.append((request["address"], request["timeout"]))
        return {"left": 1}

    async def stats(self, _: dict[str, Any]) -> dict[str, Any]:
        wire = stats_to_wire(stats(self.requests, 1, 2))
        return {
            "services": {"web": wire},
            "revisions": [["web", 2, wire]],
            "problems": self.problems,
            "sharedPort": 8000,
        }


async def test_drains_reach_every_worker_and_counters_add_up(tmp_path: Path) -> None:
    workers = [Worker(10, {"8080": "taken"}), Worker(5, {"8081": "taken too"})]
    servers = [AdminServer(admin_path(tmp_path, i), w.handlers()) for i, w in enumerate(workers)]
    for server in servers:
        await server.start()
    try:
        remote = RemoteIngress(tmp_path, workers=2)
        assert await remote.drain("127.0.0.1:9000", 1.5) == 2  # one left on each
        assert [w.drained for w in workers] == [[("127.0.0.1:9000", 1.5)]] * 2
        await remote.refresh()
        web = remote.stats()["web"]
        assert (web.requests, web.errors_5xx) == (15, 2)
        assert web.latency_counts[2] == 15 and abs(web.latency_sum - 0.15) < 1e-9
        assert remote.revision_stats()[("web", 2)].requests == 15
        assert remote.problems == {8080: "taken", 8081: "taken too"}
        # A worker that does not answer (being started again) counts for nothing.
        await servers[1].close()
        await remote.refresh()
        assert remote.stats()["web"].requests == 10
        assert await remote.drain("127.0.0.1:9000", 0.1) == 1
    finally:
        for server in servers:
            await server.close()
