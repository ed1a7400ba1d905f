"""Canary analysis: judge one window of a revision's traffic. Pure (standard-library math).

Two modes:

- **threshold** — the canary's own figures against fixed limits: success rate ≥ ``successRate``,
  p95 ≤ ``maxLatencyP95``, p99 ≤ ``maxLatencyP99``.
- **baseline** — the canary against the stable revision over the same window, so that a noisy
  environment (the stable one failing too) does not fail a good canary: it fails only when it is
  *significantly* worse — errors by a one-sided two-proportion test (Fisher's exact test when a
  count is small), latency by a one-sided Mann-Whitney U test — and worse by more than the
  tolerated margin.

Fewer than ``minRequests`` requests is never a silent pass: the verdict is *inconclusive*.

Worked example (baseline mode, significance 0.05): stable 4/200 errors (2%), canary 3/100 (3%):
one-sided p ≈ 0.43 (Fisher's exact test: few errors) — not significant, pass. Canary 12/100
(12%): p ≈ 0.0001 and +10 points > the 1-point margin — fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..domain.specs import Analysis

__all__ = [
    "Comparison",
    "Outcome",
    "Sample",
    "Verdict",
    "compare",
    "figures",
    "fisher_greater",
    "judge",
    "mann_whitney_greater",
    "percentile",
    "two_proportion_greater",
]


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Sample:
    """One revision's traffic over one window."""

    requests: int
    errors: int
    latencies: Sequence[float] = ()
    """Seconds, one per request (all of them, or a uniform sample)."""

    @property
    def success_rate(self) -> float:
        return 1.0 - self.errors / self.requests if self.requests else 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1): the smallest value with at least q of the values at
    or below it. 100 values, q = 0.95 → the 95th smallest."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def two_proportion_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value that proportion 1 (x1/n1) is greater than proportion 2 (x2/n2): the
    pooled two-proportion z-test, or Fisher's exact test when an expected count is below 5."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    expected = (n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled))
    if min(expected) < 5:
        return fisher_greater(x1, n1, x2, n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return 1.0 - _phi((x1 / n1 - x2 / n2) / se)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(x1: int, n1: int, x2: int, n2: int) -> float:
    """Fisher's exact test, one-sided: P(X >= x1) for X the number of "errors" in group 1 under
    the hypergeometric law with the margins fixed."""
    total_errors = x1 + x2
    total = n1 + n2
    low, high = max(0, total_errors - n2), min(total_errors, n1)
    denominator = _log_comb(total, total_errors)
    p = 0.0
    for k in range(x1, high + 1):
        if k < low:
            continue
        p += math.exp(_log_comb(n1, k) + _log_comb(n2, total_errors - k) - denominator)
    return min(1.0, p)


def mann_whitney_greater(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p-value that values of ``a`` tend to be larger than those of ``b`` (the
    Mann-Whitney U test, normal approximation with a tie correction and continuity
    correction)."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    combined = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(combined)
    tie_term = 0.0
    i = 0
    while i < len(combined):
        j = i
        while j + 1 < len(combined) and combined[j + 1][0] == combined[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = rank
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, group) in zip(ranks, combined, strict=True) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    z = (u1 - mean - 0.5) / math.sqrt(var)
    return 1.0 - _phi(z)


def judge(analysis: Analysis, canary: Sample, baseline: Sample | None = None) -> Verdict:
    """The verdict on one window of the canary's traffic (and the stable's, in baseline mode)."""
    measured = figures(canary, (0.95, 0.99))
    if canary.requests < analysis.min_requests:
        return Verdict(
            Outcome.INCONCLUSIVE,
            f"{canary.requests} requests, fewer than minRequests {analysis.min_requests}",
            measured,
        )
    if analysis.mode == "baseline":
        return _against_baseline(analysis, canary, baseline, measured)
    if analysis.success_rate is not None and canary.success_rate < analysis.success_rate:
        return Verdict(
            Outcome.FAIL,
            f"success rate {canary.success_rate:.2%} < {analysis.success_rate:.2%} "
            f"({canary.errors} of {canary.requests} failed)",
            measured,
        )
    for key, limit in (("p95", analysis.max_latency_p95), ("p99", analysis.max_latency_p99)):
        if limit is not None and key in measured and measured[key] > limit:
            return Verdict(
                Outcome.FAIL, f"{key} latency {measured[key] * 1000:.0f}ms > {limit * 1000:.0f}ms",
                measured,
            )  # fmt: skip
    return Verdict(Outcome.PASS, f"success rate {canary.success_rate:.2%}", measured)


def _against_baseline(
    analysis: Analysis, canary: Sample, baseline: Sample | None, measured: dict[str, Any]
) -> Verdict:
    if baseline is None or baseline.requests < analysis.min_requests:
        n = baseline.requests if baseline else 0
        return Verdict(
            Outcome.INCONCLUSIVE,
            f"the stable revision had {n} requests, fewer than minRequests {analysis.min_requests}",
            measured,
        )
    measured["baselineSuccessRate"] = round(baseline.success_rate, 4)
    p_errors = two_proportion_greater(
        canary.errors, canary.requests, baseline.errors, baseline.requests
    )
    increase = (1 - canary.success_rate) - (1 - baseline.success_rate)
    measured["errorRateIncrease"] = round(increase, 4)
    measured["errorsP"] = round(p_errors, 5)
    if p_errors < analysis.significance and increase > analysis.max_error_rate_increase:
        return Verdict(
            Outcome.FAIL,
            f"error rate {1 - canary.success_rate:.2%} vs stable {1 - baseline.success_rate:.2%} "
            f"(+{increase:.2%}, p={p_errors:.4f} < {analysis.significance})",
            measured,
        )
    if canary.latencies and baseline.latencies:
        p_latency = mann_whitney_greater(canary.latencies, baseline.latencies)
        ratio = _median(canary.latencies) / max(_median(baseline.latencies), 1e-9)
        measured["latencyP"] = round(p_latency, 5)
        measured["medianLatencyRatio"] = round(ratio, 3)
        if p_latency < analysis.significance and ratio > 1 + analysis.max_latency_increase:
            return Verdict(
                Outcome.FAIL,
                f"slower than stable: median x{ratio:.2f} (p={p_latency:.4f} < "
                f"{analysis.significance})",
                measured,
            )
    return Verdict(Outcome.PASS, "no significant difference from the stable revision", measured)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# ── A/B tests ────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two revisions' traffic side by side, and which one is better, if either significantly
    is: ``winner`` ``"a"``, ``"b"`` or None, with ``confidence`` 1 - p."""

    winner: str | None
    confidence: float
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)


def figures(sample: Sample, quantiles: Sequence[float] = (0.5, 0.95)) -> dict[str, Any]:
    """One revision's traffic as a decision logs it: requests, errors, success rate and the
    latency percentiles ``quantiles`` (``p50``, ``p95`` …), in seconds."""
    shown: dict[str, Any] = {
        "requests": sample.requests,
        "errors": sample.errors,
        "successRate": round(sample.success_rate, 4),
    }
    if sample.latencies:
        for q in quantiles:
            shown[f"p{round(q * 100)}"] = round(percentile(sample.latencies, q), 4)
    return shown


def compare(a: Sample, b: Sample, min_requests: int, significance: float) -> Comparison:
    """Which of ``a`` and ``b`` is better, both ways: the error rates first (one-sided
    two-proportion tests, Fisher's exact test for small counts), then — neither being
    significantly better at errors — the latencies (one-sided Mann-Whitney U tests). A
    difference counts when its p-value is below ``significance``; fewer than
    ``min_requests`` requests of either, or no difference that counts: no winner.

    Worked example (significance 0.05): A 30/1000 errors (3%), B 12/1000 (1.2%): p ≈ 0.002
    that A's rate is higher → B wins with confidence 99.8%."""
    measured: dict[str, Any] = {"a": figures(a), "b": figures(b)}
    if min(a.requests, b.requests) < min_requests:
        why = f"{a.requests} and {b.requests} requests, fewer than minRequests {min_requests}"
        return Comparison(None, 0.0, why, measured)
    rate_a, rate_b = 1 - a.success_rate, 1 - b.success_rate
    b_fewer = two_proportion_greater(a.errors, a.requests, b.errors, b.requests)
    a_fewer = two_proportion_greater(b.errors, b.requests, a.errors, a.requests)
    measured["errorsP"] = round(min(a_fewer, b_fewer), 5)
    errors = f"error rate {rate_a:.2%} vs {rate_b:.2%}"
    if b_fewer < significance:
        return Comparison("b", 1 - b_fewer, f"{errors}, p={b_fewer:.4f}", measured)
    if a_fewer < significance:
        return Comparison("a", 1 - a_fewer, f"{errors}, p={a_fewer:.4f}", measured)
    if a.latencies and b.latencies:
        b_faster = mann_whitney_greater(a.latencies, b.latencies)
        a_faster = mann_whitney_greater(b.latencies, a.latencies)
        measured["latencyP"] = round(min(a_faster, b_faster), 5)
        medians = (
            f"median latency {_median(a.latencies) * 1000:.1f}ms vs "
            f"{_median(b.latencies) * 1000:.1f}ms"
        )
        if b_faster < significance:
            return Comparison("b", 1 - b_faster, f"{medians}, p={b_faster:.4f}", measured)
        if a_faster < significance:
            return Comparison("a", 1 - a_faster, f"{medians}, p={a_faster:.4f}", measured)
    return Comparison(None, 0.0, f"no significant difference ({errors})", measured)
