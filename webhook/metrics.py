"""Prometheus metrics of the webhook, on an injectable registry (one per app, so tests are isolated).

Under gunicorn the workers' values are aggregated through `PROMETHEUS_MULTIPROC_DIR`
(`common.http.metrics_exposition`), so a scrape sees the service, not whichever worker answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Admission sits on every opted-in pod's create; the interesting range is well under the 2 s timeout.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


@dataclass
class WebhookMetrics:
    registry: CollectorRegistry
    admission_seconds: Histogram
    admissions: Counter
    mutations: Counter
    skips: Counter
    errors: Counter
    claims: Counter
    phase_waits: Counter
    active_migrations: Gauge
    migrations_synced: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WebhookMetrics:
        r = registry or CollectorRegistry()
        return cls(
            registry=r,
            admission_seconds=Histogram(
                "apollo_webhook_admission_seconds",
                "Server-side time per AdmissionReview, from body read to response encoded",
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            admissions=Counter(
                "apollo_webhook_admissions_total",
                "AdmissionReviews answered, by result (patched, unchanged, rejected, failed_open)",
                ["result"],
                registry=r,
            ),
            mutations=Counter(
                "apollo_webhook_mutations_total",
                "Changes made to admitted pods, by kind (checkpoint_volume, strip_containers, ...)",
                ["kind"],
                registry=r,
            ),
            skips=Counter(
                "apollo_webhook_skips_total",
                "Pods, or parts of a change, left alone, by reason (not_opted_in, volume_present, ...)",
                ["reason"],
                registry=r,
            ),
            errors=Counter(
                "apollo_webhook_errors_total",
                "Failures: bad_request (400), internal (answered allowed without a patch), claim",
                ["kind"],
                registry=r,
            ),
            claims=Counter(
                "apollo_webhook_claims_total",
                "Checkpoint claim creations, by outcome (created, exists, failed, dropped)",
                ["outcome"],
                registry=r,
            ),
            phase_waits=Counter(
                "apollo_webhook_phase_waits_total",
                "Admissions that waited for a migration's Evicting phase, by outcome (matched, gone, timeout)",
                ["outcome"],
                registry=r,
            ),
            active_migrations=Gauge(
                "apollo_webhook_active_migrations",
                "Active PodMigrations held in memory (largest across live workers)",
                registry=r,
                multiprocess_mode="livemax",
            ),
            migrations_synced=Gauge(
                "apollo_webhook_migrations_synced",
                "1 once PodMigrations have been listed (lowest across live workers)",
                registry=r,
                multiprocess_mode="livemin",
            ),
        )
