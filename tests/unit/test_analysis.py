"""Canary analysis on synthetic samples of known outcome: thresholds, too few requests, and the
baseline comparison that does not fail a good canary in a noisy environment."""

from __future__ import annotations

import random

import pytest

from warren.domain.specs import Analysis
from warren.planning.analysis import (
    Outcome,
    Sample,
    fisher_greater,
    judge,
    mann_whitney_greater,
    percentile,
    two_proportion_greater,
)


def latencies(mean: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0001, rng.gauss(mean, mean / 10)) for _ in range(n)]


def test_percentile_nearest_rank() -> None:
    values = [i / 100 for i in range(1, 101)]
    assert percentile(values, 0.95) == 0.95
    assert percentile(values, 0.99) == 0.99
    assert percentile([], 0.95) == 0.0


def test_fisher_known_value() -> None:
    # 2 of 10 against 0 of 10: P = C(10,2)C(10,0)/C(20,2) = 45/190.
    assert fisher_greater(2, 10, 0, 10) == pytest.approx(45 / 190)


def test_two_proportions() -> None:
    assert two_proportion_greater(3, 100, 4, 200) > 0.3
    assert two_proportion_greater(12, 100, 4, 200) < 0.001
    assert two_proportion_greater(0, 0, 1, 10) == 1.0


def test_mann_whitney() -> None:
    stable = latencies(0.1, 60, 1)
    assert mann_whitney_greater(latencies(0.1, 60, 2), stable) > 0.01
    assert mann_whitney_greater(latencies(0.15, 60, 3), stable) < 0.001
    assert mann_whitney_greater([0.1] * 10, [0.1] * 10) > 0.4  # all ties


THRESHOLDS = Analysis(success_rate=0.99, max_latency_p95=0.5, min_requests=50)


@pytest.mark.parametrize(
    ("sample", "outcome", "words"),
    [
        (Sample(40, 0), Outcome.INCONCLUSIVE, "40 requests, fewer than minRequests 50"),
        (Sample(100, 0, latencies(0.1, 100, 4)), Outcome.PASS, "success rate 100.00%"),
        (Sample(100, 20), Outcome.FAIL, "success rate 80.00% < 99.00% (20 of 100 failed)"),
        (Sample(100, 0, [0.9] * 100), Outcome.FAIL, "p95 latency 900ms > 500ms"),
    ],
)
def test_thresholds(sample: Sample, outcome: Outcome, words: str) -> None:
    verdict = judge(THRESHOLDS, sample)
    assert verdict.outcome == outcome
    assert words in verdict.reason
    assert verdict.measured["requests"] == sample.requests


BASELINE = Analysis(mode="baseline", min_requests=50)


def test_a_noisy_environment_does_not_fail_a_good_canary() -> None:
    stable = Sample(400, 20, latencies(0.1, 400, 5))  # the environment fails 5% anyway
    canary = Sample(100, 6, latencies(0.1, 100, 6))  # 6%: no worse
    assert judge(THRESHOLDS, canary).outcome == Outcome.FAIL  # thresholds alone would fail it
    verdict = judge(BASELINE, canary, stable)
    assert verdict.outcome == Outcome.PASS, verdict.reason


def test_a_worse_canary_fails_against_the_baseline() -> None:
    stable = Sample(400, 20, latencies(0.1, 400, 7))
    verdict = judge(BASELINE, Sample(100, 25, latencies(0.1, 100, 8)), stable)
    assert verdict.outcome == Outcome.FAIL and "error rate 25.00% vs stable 5.00%" in verdict.reason
    slow = judge(BASELINE, Sample(100, 5, latencies(0.2, 100, 9)), stable)
    assert slow.outcome == Outcome.FAIL and "slower than stable" in slow.reason


def test_baseline_needs_stable_traffic_too() -> None:
    verdict = judge(BASELINE, Sample(100, 0), Sample(10, 0))
    assert verdict.outcome == Outcome.INCONCLUSIVE
    assert "stable revision had 10 requests" in verdict.reason
