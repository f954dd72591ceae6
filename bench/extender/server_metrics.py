"""The extender's own view of a run: its latency histogram and counters, before and after, from /metrics.

gunicorn's workers share their metrics (prometheus_client multiprocess mode), so one scrape sees all of
them. Quantiles come from the histogram's buckets, interpolated linearly inside the bucket that holds
them (as PromQL's ``histogram_quantile``), so each comes with that bucket: the precision the server
can give. The client-side figures (``bench.extender.load``) are exact and are the headline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from apolloctl.launch import Service

HISTOGRAM = "apollo_extender_request_seconds"
VERBS = ("filter", "prioritize")
_COUNTERS = (
    "apollo_extender_request_errors_total",
    "apollo_extender_fallbacks_total",
    "apollo_extender_policy_lookups_total",
    "apollo_extender_filtered_nodes_total",
    "apollo_extender_scheduling_results_total",
)
Json = dict[str, Any]


@dataclass
class Scrape:
    """Histogram buckets per verb and the counters worth reporting, summed over the workers."""

    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # verb -> le -> cumulative count
    sums: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)  # "name{k=v,...}" -> value


def parse_metrics(text: str) -> Scrape:
    out = Scrape()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            verb = s.labels.get("verb", "")
            if s.name == f"{HISTOGRAM}_bucket":
                out.buckets.setdefault(verb, {})[float(s.labels["le"])] = s.value
            elif s.name == f"{HISTOGRAM}_sum":
                out.sums[verb] = s.value
            elif s.name in _COUNTERS:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out.counters[f"{s.name.removeprefix('apollo_extender_')}{{{labels}}}"] = s.value
    return out


def scrape(service: Service) -> Scrape:
    status, body, _ = service.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"extender /metrics answered {status}: {body[:200]!r}")
    return parse_metrics(body.decode())


@dataclass
class Delta:
    """What the extender did between two scrapes."""

    buckets: dict[str, list[tuple[float, float]]]  # verb -> [(le, cumulative count)] ascending
    sums: dict[str, float]
    counters: dict[str, float]

    def counter(self, prefix: str) -> float:
        """Sum of the counters whose key starts with `prefix` (e.g. "policy_lookups_total{outcome=hit")."""
        return sum(v for k, v in self.counters.items() if k.startswith(prefix))


def metrics_delta(before: Scrape, after: Scrape) -> Delta:
    buckets = {
        verb: sorted(
            (le, count - before.buckets.get(verb, {}).get(le, 0.0)) for le, count in after.buckets.get(verb, {}).items()
        )
        for verb in VERBS
    }
    sums = {verb: after.sums.get(verb, 0.0) - before.sums.get(verb, 0.0) for verb in VERBS}
    counters = {
        name: value - before.counters.get(name, 0.0)
        for name, value in sorted(after.counters.items())
        if value - before.counters.get(name, 0.0)
    }
    return Delta(buckets, sums, counters)


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> tuple[float, tuple[float, float]]:
    """histogram_quantile(): linear inside the bucket holding the q-th request; also returns that bucket."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan, (math.nan, math.nan)
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):  # beyond the largest finite bound: all we know is "more than lower"
                return lower, (lower, le)
            if count == below:
                return le, (lower, le)
            return lower + (le - lower) * (rank - below) / (count - below), (lower, le)
        lower, below = le, count
    return lower, (lower, math.inf)


def ms(seconds: float) -> float | None:
    """Milliseconds, rounded; None for NaN and for the +Inf bucket (no upper bound)."""
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return round(seconds * 1000, 3)


def server_latency(delta: Delta, verb: str) -> Json:
    buckets = delta.buckets[verb]
    count = buckets[-1][1] if buckets else 0.0
    p50, b50 = bucket_quantile(buckets, 0.50)
    p99, b99 = bucket_quantile(buckets, 0.99)
    return {
        "count": int(count),
        "p50_ms": ms(p50),
        "p99_ms": ms(p99),
        "mean_ms": ms(delta.sums[verb] / count) if count else None,
        "p50_bucket_ms": [ms(b50[0]), ms(b50[1])],
        "p99_bucket_ms": [ms(b99[0]), ms(b99[1])],
    }


def bracket_by_client(server_side: Json, client_side: Json) -> None:
    """Narrow each server quantile with the client's: no request takes longer in the server than at the client.

    With the bucket that holds it, that brackets the true value tighter than the bucket alone; an
    interpolation above the client figure is lowered to it and flagged.
    """
    for verb in VERBS:
        for q in ("p50", "p99"):
            lo, hi = server_side[verb][f"{q}_bucket_ms"]
            top = client_side[verb][f"{q}_ms"] if hi is None else min(hi, client_side[verb][f"{q}_ms"])
            server_side[verb][f"{q}_range_ms"] = [lo, max(lo, top) if lo is not None else top]
            value = server_side[verb][f"{q}_ms"]
            if value is not None and value > top:
                server_side[verb][f"{q}_ms"] = top
                server_side[verb][f"{q}_capped_by_client"] = True
