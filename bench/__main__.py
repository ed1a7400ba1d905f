"""Run every benchmark and print its figures: ``python -m bench [NAME ...]``."""

from __future__ import annotations

import sys

from bench import (
    canary_fail,
    cli,
    containers,
    crash_rounds,
    failover,
    flip,
    ingress,
    ingress_cost,
    ingress_workers,
    rolling,
    scale,
)

BENCHMARKS = {
    "scale": scale.main,
    "rolling": rolling.main,
    "ingress": ingress.main,
    "ingress-workers": ingress_workers.main,
    "ingress-cost": ingress_cost.main,
    "flip": flip.main,
    "canary-fail": canary_fail.main,
    "containers": containers.main,
    "failover": failover.main,
    "crash-rounds": crash_rounds.main,
    "cli": cli.main,
}


def main() -> None:
    names = [a for a in sys.argv[1:] if not a.startswith("-")][:1] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    for name in names:
        BENCHMARKS[name]()


main()
