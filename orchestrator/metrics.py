"""Prometheus metrics of the orchestrator, on an injectable registry (one per runtime, so tests are isolated).

Under gunicorn the values live in `PROMETHEUS_MULTIPROC_DIR` files and `/metrics` aggregates them;
the gauges say how (`livemax`: the single worker's live value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from apollo_api.podmigration import STEP_NAMES
from common.http import metrics_exposition
from orchestrator import podinfo

_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class OrchestratorMetrics:
    registry: CollectorRegistry
    migrations: Counter
    active: Gauge
    step_seconds: Histogram
    migration_seconds: Histogram
    evictions: Counter
    evictions_refused: Counter
    reconcile_seconds: Histogram
    reconcile_errors: Counter
    leader: Gauge
    policies: Counter
    reports: Counter
    apollo_connected: Gauge
    scaled: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> OrchestratorMetrics:
        r = registry or CollectorRegistry()
        return cls(
            registry=r,
            migrations=Counter(
                "apollo_orchestrator_migrations_total",
                "Migrations finished, by phase (Succeeded, Failed, Cancelled) and reason (condition reason)",
                ["phase", "reason"],
                registry=r,
            ),
            active=Gauge(
                "apollo_orchestrator_migrations_active",
                "Migrations not finished, by phase (as this replica's cache sees them)",
                ["phase"],
                registry=r,
                multiprocess_mode="livemax",
            ),
            step_seconds=Histogram(
                "apollo_orchestrator_step_seconds",
                "Time from the previous step to this one, per step (e.g. sourceTerminated shows a Job's "
                "wait for the old pod to terminate)",
                ["step"],
                buckets=_STEP_BUCKETS,
                registry=r,
            ),
            migration_seconds=Histogram(
                "apollo_orchestrator_migration_seconds",
                "Whole migration duration, by final phase",
                ["phase"],
                buckets=_STEP_BUCKETS,
                registry=r,
            ),
            evictions=Counter(
                "apollo_orchestrator_evictions_total",
                "Eviction requests, by result (accepted, refused-by-budget, gone, error)",
                ["result"],
                registry=r,
            ),
            evictions_refused=Counter(
                "apollo_orchestrator_evictions_refused_by_pdb_total",
                "Evictions a PodDisruptionBudget refused (HTTP 429), by namespace",
                ["namespace"],
                registry=r,
            ),
            reconcile_seconds=Histogram(
                "apollo_orchestrator_reconcile_seconds",
                "Time per reconcile (read the world, act, write status)",
                buckets=_RECONCILE_BUCKETS,
                registry=r,
            ),
            reconcile_errors=Counter(
                "apollo_orchestrator_reconcile_errors_total",
                "Reconciles that failed and were retried, by kind (api, conflict, bug)",
                ["kind"],
                registry=r,
            ),
            leader=Gauge(
                "apollo_orchestrator_leader",
                "1 while this replica holds the leader Lease",
                registry=r,
                multiprocess_mode="livemax",
            ),
            policies=Counter(
                "apollo_orchestrator_policies_total",
                "OrchestrationPolicies received from APOLLO, by action and outcome",
                ["action", "outcome"],
                registry=r,
            ),
            reports=Counter(
                "apollo_orchestrator_execution_results_total",
                "ExecutionResults sent to APOLLO, by result (sent, failed)",
                ["result"],
                registry=r,
            ),
            apollo_connected=Gauge(
                "apollo_orchestrator_apollo_connected",
                "1 while the policy subscription stream is open",
                registry=r,
                multiprocess_mode="livemax",
            ),
            scaled=Counter(
                "apollo_orchestrator_scale_actions_total",
                "SCALE policies acted on, by outcome (scaled, refused, failed, dry-run)",
                ["outcome"],
                registry=r,
            ),
        )

    def observe_finished(self, phase: str, reason: str, steps: Mapping[str, str], started: float | None) -> None:
        """Count a finished migration and the time between its consecutive steps."""
        self.migrations.labels(phase, reason).inc()
        previous = started
        for step in STEP_NAMES:
            at = podinfo.parse_time(steps.get(step, ""))
            if at is None:
                continue
            if previous is not None and step != "accepted":
                self.step_seconds.labels(step).observe(max(0.0, at - previous))
            previous = at
        finished = podinfo.parse_time(steps.get("finished", ""))
        if started is not None and finished is not None:
            self.migration_seconds.labels(phase).observe(max(0.0, finished - started))

    def exposition(self) -> bytes:
        return metrics_exposition(self.registry)
