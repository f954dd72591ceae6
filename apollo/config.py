"""APOLLO's settings: one typed, validated object, read from a YAML file and APOLLO_* variables.

Every field has a default that works in a cluster with node-exporter (and DCGM for GPUs), so a
deployment only writes down what differs. Validation happens once at start-up and names the
offending field, because a bad threshold discovered at the first overload is far more expensive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import ConfigError, Validated, host_port, int_range, load, open_unit, positive

RESOURCES = ("cpu", "memory", "disk_io", "network", "gpu")


def _default_queries() -> dict[str, str]:
    # Each query must return one series per node, as a utilisation fraction 0..1, carrying the
    # Kubernetes node name in `node_label` (relabel it at scrape time or edit the query).
    return {
        "cpu": '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[2m]))',
        "memory": "1 - sum by (node) (node_memory_MemAvailable_bytes) / sum by (node) (node_memory_MemTotal_bytes)",
        "disk_io": "max by (node) (rate(node_disk_io_time_seconds_total[2m]))",
        "network": "sum by (node) (rate(node_network_receive_bytes_total[2m]) + "
        "rate(node_network_transmit_bytes_total[2m])) / sum by (node) (node_network_speed_bytes > 0)",
        "gpu": "avg by (node) (DCGM_FI_DEV_GPU_UTIL) / 100",
    }


@dataclass(frozen=True)
class PrometheusSettings:
    """Where node metrics come from and how to read them."""

    url: str = "http://prometheus-operated.monitoring.svc:9090"
    queries: dict[str, str] = field(default_factory=_default_queries)
    # Label holding the Kubernetes node name in every query result.
    node_label: str = "node"
    # When `node_label` is absent: map the `instance` label (host:port) to a node name.
    instance_to_node: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = 5.0
    # Samples older than this make the engine stale: neutral scores, no migrations.
    stale_after_seconds: float = 180.0
    verify_tls: bool = True

    def validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"prometheus.url must be an http(s) URL, got {self.url!r}")
        unknown = set(self.queries) - set(RESOURCES)
        if unknown:
            raise ConfigError(f"prometheus.queries has unknown resources {sorted(unknown)}; known: {RESOURCES}")
        for name, query in self.queries.items():
            if not isinstance(query, str) or not query.strip():
                raise ConfigError(f"prometheus.queries.{name} must be a non-empty PromQL string")
        positive()("prometheus.timeout_seconds", self.timeout_seconds)
        positive()("prometheus.stale_after_seconds", self.stale_after_seconds)
        if not self.node_label:
            raise ConfigError("prometheus.node_label must not be empty")


@dataclass(frozen=True)
class ForecastSettings:
    """How far and how carefully the engine looks ahead."""

    step_seconds: float = 30.0
    horizon_minutes: int = 30
    season_minutes: int = 1440
    # Upper quantile used for every decision (scores, overload warnings, migrations).
    decision_quantile: float = 0.95
    overload_threshold: float = 0.85
    # Steps over the threshold in a row before a node counts as "overload coming" (not a lone spike).
    overload_consecutive_steps: int = 3
    # Samples before forecasts steer anything (neutral scores, no migrations until then); a warm
    # start from Prometheus history usually covers them at once.
    warmup_samples: int = 12
    # Accuracy below which the engine stops trusting forecasts and scores on current load.
    reactive_mase_above: float = 1.5
    alpha: float = 0.3
    beta: float = 0.05
    phi: float = 0.9
    gamma: float = 0.1

    @property
    def horizon_steps(self) -> int:
        return max(1, math.ceil(self.horizon_minutes * 60 / self.step_seconds))

    def validate(self) -> None:
        positive()("forecast.step_seconds", self.step_seconds)
        int_range(1, 1440)("forecast.horizon_minutes", self.horizon_minutes)
        int_range(0, 7 * 1440)("forecast.season_minutes", self.season_minutes)
        open_unit()("forecast.decision_quantile", self.decision_quantile)
        if not 0.5 < self.decision_quantile < 1:
            raise ConfigError(f"forecast.decision_quantile must be in (0.5, 1), got {self.decision_quantile}")
        open_unit()("forecast.overload_threshold", self.overload_threshold)
        int_range(1, self.horizon_steps)("forecast.overload_consecutive_steps", self.overload_consecutive_steps)
        positive()("forecast.reactive_mase_above", self.reactive_mase_above)
        int_range(0, 100_000)("forecast.warmup_samples", self.warmup_samples)
        for name in ("alpha", "beta", "phi", "gamma"):
            open_unit()(f"forecast.{name}", getattr(self, name))


@dataclass(frozen=True)
class TuningSettings:
    """Self-tuning from Prometheus history."""

    enabled: bool = True
    interval_seconds: float = 3600.0
    lookback_hours: float = 48.0
    holdout_fraction: float = 0.25

    def validate(self) -> None:
        positive()("tuning.interval_seconds", self.interval_seconds)
        positive()("tuning.lookback_hours", self.lookback_hours)
        open_unit()("tuning.holdout_fraction", self.holdout_fraction)


@dataclass(frozen=True)
class PolicyCaps:
    """Guards on orchestration decisions; the engine maps them onto the pure policy's settings."""

    dry_run: bool = False
    confirm_ticks: int = 2
    max_migrations_per_node: int = 1
    max_migrations_per_workload: int = 1
    max_migrations_cluster: int = 5
    workload_cooldown_seconds: float = 600.0
    migration_timeout_seconds: int = 300
    checkpoint_label: str = "apollo.io/checkpoint"

    def validate(self) -> None:
        int_range(1, 1000)("policy.confirm_ticks", self.confirm_ticks)
        int_range(0, 1000)("policy.max_migrations_per_node", self.max_migrations_per_node)
        int_range(0, 1000)("policy.max_migrations_per_workload", self.max_migrations_per_workload)
        int_range(0, 10000)("policy.max_migrations_cluster", self.max_migrations_cluster)
        if self.workload_cooldown_seconds < 0:
            raise ConfigError("policy.workload_cooldown_seconds must be >= 0")
        int_range(1, 86400)("policy.migration_timeout_seconds", self.migration_timeout_seconds)


@dataclass(frozen=True)
class KubernetesSettings:
    """Reading nodes and pods (capacity, owners, checkpoint opt-in) for migration decisions."""

    enabled: bool = False
    # Empty: in-cluster service-account credentials.
    kubeconfig: str = ""


@dataclass(frozen=True)
class ApolloSettings(Validated):
    """Everything the `apollo` process reads at start-up."""

    grpc_address: str = "0.0.0.0:50051"
    http_address: str = "0.0.0.0:8080"
    log_level: str = "INFO"
    # How long insight-agent reports (signatures, cluster insights) stay valid without a refresh.
    report_ttl_seconds: float = 600.0
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    tuning: TuningSettings = field(default_factory=TuningSettings)
    policy: PolicyCaps = field(default_factory=PolicyCaps)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    def check_relations(self) -> None:
        for name in ("grpc_address", "http_address"):
            host_port()(name, getattr(self, name))
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        positive()("report_ttl_seconds", self.report_ttl_seconds)
        self.prometheus.validate()
        self.forecast.validate()
        self.tuning.validate()
        self.policy.validate()


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> ApolloSettings:
    """File ($APOLLO_CONFIG or `path`), then APOLLO_* variables on top, then validation."""
    return load(ApolloSettings, "APOLLO", path, environ)
