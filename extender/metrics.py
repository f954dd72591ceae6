"""Prometheus metrics of the extender, on an injectable registry (one per app, so tests are isolated)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


@dataclass
class ExtenderMetrics:
    registry: CollectorRegistry
    request_seconds: Histogram
    request_errors: Counter
    fallbacks: Counter
    snapshot_age: Gauge
    snapshot_generation: Gauge
    snapshot_refresh_errors: Counter
    policy_lookups: Counter
    filtered_nodes: Counter
    placements: Gauge
    results_reported: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ExtenderMetrics:
        r = registry or CollectorRegistry()
        return cls(
            registry=r,
            request_seconds=Histogram(
                "apollo_extender_request_seconds",
                "Server-side time per verb",
                ["verb"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            request_errors=Counter(
                "apollo_extender_request_errors_total", "Requests answered with an error", ["verb", "kind"], registry=r
            ),
            fallbacks=Counter(
                "apollo_extender_fallbacks_total",
                "Requests answered fail-open (all nodes pass, neutral scores)",
                ["verb", "reason"],
                registry=r,
            ),
            snapshot_age=Gauge(
                "apollo_extender_snapshot_age_seconds",
                "Age of the held APOLLO snapshot (oldest worker)",
                registry=r,
                multiprocess_mode="max",
            ),
            snapshot_generation=Gauge(
                "apollo_extender_snapshot_generation",
                "Generation of the held APOLLO snapshot (oldest worker)",
                registry=r,
                multiprocess_mode="min",
            ),
            snapshot_refresh_errors=Counter(
                "apollo_extender_snapshot_refresh_errors_total", "Failed snapshot refreshes", ["code"], registry=r
            ),
            policy_lookups=Counter(
                "apollo_extender_policy_lookups_total",
                "Per-pod policy lookups by outcome (hit, fetched, timeout, error)",
                ["outcome"],
                registry=r,
            ),
            filtered_nodes=Counter(
                "apollo_extender_filtered_nodes_total", "Nodes removed by filter", ["kind"], registry=r
            ),
            placements=Gauge(
                "apollo_extender_hot_placements",
                "Pods bound since APOLLO's last sample, tracked",
                registry=r,
                multiprocess_mode="max",
            ),
            results_reported=Counter(
                "apollo_extender_scheduling_results_total",
                "SchedulingResult reports to APOLLO",
                ["outcome"],
                registry=r,
            ),
        )


def exposition(metrics: ExtenderMetrics) -> bytes:
    """This process's metrics, or every gunicorn worker's aggregated when multiprocess mode is on.

    Without aggregation a scrape would see whichever worker accepted the connection, and counters
    would jump between workers' values.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(metrics.registry)
