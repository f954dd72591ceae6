"""APOLLO's settings tree: one declaration per setting drives the YAML file, the APOLLO_* variables, the
validation and the reference page (`docs/settings/apollo.md`, from `python hack/gen_settings_docs.py`).

Every field has a default that works in a cluster with node-exporter (and DCGM for GPUs), so a
deployment only writes down what differs. The orchestration policy (`policy`) and the scoring weights
(`scoring`) are the pure core's own settings classes, embedded whole: there is no second list of their
knobs to fall out of step. Validation happens once at start-up and names the offending field, because a
bad threshold discovered at the first overload is far more expensive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apollo.core.domain import RESOURCES
from apollo.core.forecasting.params import ForecastParams
from apollo.core.policy.settings import PolicySettings
from apollo.core.scoring.weights import ScoringWeights
from common.settings import (
    LOG_LEVEL,
    ConfigError,
    Validated,
    boolean,
    host_port,
    http_url,
    in_range,
    int_range,
    load,
    non_empty,
    one_of,
    positive,
    setting,
)

__all__ = [
    "ApolloSettings",
    "ForecastSettings",
    "KubernetesSettings",
    "PolicySettings",
    "PrometheusSettings",
    "ScoringWeights",
    "TuningSettings",
    "load_settings",
]

# Each query must return one series per node, as a utilisation fraction 0..1, carrying the Kubernetes
# node name in `node_label` (relabel it at scrape time or edit the query).
DEFAULT_QUERIES = {
    "cpu": '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[2m]))',
    "memory": "1 - sum by (node) (node_memory_MemAvailable_bytes) / sum by (node) (node_memory_MemTotal_bytes)",
    "disk_io": "max by (node) (rate(node_disk_io_time_seconds_total[2m]))",
    "network": "sum by (node) (rate(node_network_receive_bytes_total[2m]) + "
    "rate(node_network_transmit_bytes_total[2m])) / sum by (node) (node_network_speed_bytes > 0)",
    "gpu": "avg by (node) (DCGM_FI_DEV_GPU_UTIL) / 100",
}


def _queries(name: str, value: Any) -> None:
    """Known resources only, each a non-empty PromQL string."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping of resource to PromQL, got {value!r}")
    unknown = set(value) - set(RESOURCES)
    if unknown:
        raise ConfigError(f"{name} has unknown resources {sorted(unknown)}; known: {', '.join(RESOURCES)}")
    for resource, query in value.items():
        non_empty()(f"{name}.{resource}", query)


def _string_map(name: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{name} must map strings to strings, got {value!r}")


@dataclass(frozen=True)
class PrometheusSettings:
    """Where node metrics come from and how to read them."""

    url: str = setting(
        "http://prometheus-operated.monitoring.svc:9090",
        "The Prometheus Operator's default Service; the only source of node load APOLLO reads.",
        http_url(),
    )
    queries: dict[str, str] = setting(
        DEFAULT_QUERIES,
        "One PromQL per resource, each a utilisation fraction per node: node-exporter for cpu, memory, disk "
        "and network, DCGM for GPUs. Counters go through rate(), which also absorbs counter resets. A resource "
        "left out is not forecast.",
        _queries,
    )
    node_label: str = setting(
        "node", "Label holding the Kubernetes node name in every query result (relabel at scrape time).", non_empty()
    )
    instance_to_node: dict[str, str] = setting(
        {},
        "When node_label is absent: the instance label (host:port) mapped to a node name; otherwise the host part "
        "of the instance is taken as the name.",
        _string_map,
    )
    timeout_seconds: float = setting(
        5.0, "Per query: well under a tick, so a slow Prometheus delays one tick, not the loop.", positive()
    )
    stale_after_seconds: float = setting(
        180.0,
        "Without a successful sample for this long the view turns stale: neutral scores, no migrations. Six "
        "30 s ticks ride out a Prometheus restart without dropping what the forecast knows.",
        positive(),
    )
    verify_tls: bool = setting(True, "Check Prometheus' certificate when the URL is https.", boolean())


FORECAST_MODES = ("auto", "predictive", "reactive")


@dataclass(frozen=True)
class ForecastSettings:
    """How far and how carefully the engine looks ahead, and at what cadence."""

    step_seconds: float = setting(
        300.0,
        "Forecast resolution: the model takes one sample per step, the mean of the ticks within it (history "
        "from Prometheus is averaged the same way, avg_over_time). Five minutes serve a 30-minute horizon in "
        "6 steps and a daily season in 288, which keeps 10,000 nodes x 5 resources within a few hundred MB "
        "and each tick within tens of ms; 30 s steps would need 60 steps and a 2,880-sample season (GBs).",
        positive(),
    )
    tick_seconds: float = setting(
        30.0,
        "Engine tick: how often current load is read (what reactive mode and the 5-minute means are made of) "
        "and scores, policies and the snapshot are recomputed, e.g. as pods come and go. Twice the usual "
        "scrape interval, so each tick sees a fresh sample. Clamped to step_seconds (a tick longer than a "
        "step would skip steps); with tick == step every tick is a model step.",
        positive(),
    )
    horizon_minutes: int = setting(
        30,
        "How far ahead scores and overload warnings look: longer than a migration takes (checkpoint, evict, "
        "reschedule), short enough to stay accurate.",
        int_range(1, 1440),
    )
    season_minutes: int = setting(
        1440,
        "Length of the season the periodicity test looks for (a day); 0 disables seasonality.",
        int_range(0, 7 * 1440),
    )
    decision_quantile: float = setting(
        0.95,
        "Upper quantile every decision reads (scores, overload warnings, migrations): risk-aware, so a node "
        "that might spike is not chosen as if it would not.",
        in_range(0.5, 1.0, lo_open=True, hi_open=True),
    )
    warmup_samples: int = setting(
        6,
        "Model steps before forecasts steer anything (neutral scores, no policies until then): one horizon of "
        "the model's own errors. A warm start from Prometheus history covers them at once.",
        int_range(0, 100_000),
    )
    warm_start_steps: int = setting(
        120,
        "Model steps of full-resolution history replayed at start (10 h at 5-minute steps): enough for the "
        "intervals' error window (96 steps) and the accuracy figures. The periodicity test's days of history "
        "come in as hourly means (two days + a margin), so a seasonal series is seasonal again right after a "
        "restart without replaying days of samples.",
        int_range(0, 100_000),
    )
    mode: str = setting(
        "auto",
        "auto: decide on forecasts while they beat last value, on current load otherwise. predictive / "
        "reactive force one mode (reactive = what a plain threshold on current load would do; useful to "
        "compare, or while a metric is being fixed).",
        one_of(*FORECAST_MODES),
    )
    reactive_skill_above: float = setting(
        1.0,
        "Fall back to reactive mode when the live skill (forecast MAE / last value's MAE on the same samples, "
        "all series pooled) reaches this: a forecast no better than repeating the last value is not worth "
        "acting on ahead of time.",
        in_range(0.0, 10.0, lo_open=True),
    )
    predictive_skill_below: float = setting(
        0.95,
        "Return to predictive mode once the live skill is below this: the model must win by a margin, so the "
        "mode does not flap around 1.",
        in_range(0.0, 10.0, lo_open=True),
    )
    mode_confirm_horizons: float = setting(
        1.0,
        "The live skill must stay past reactive_skill_above (or below predictive_skill_below, to come back) "
        "for this many forecast horizons of model steps before the mode changes: at the start of a climb "
        "last value briefly wins while the model's trend catches up, which is when its warning matters. "
        "0 switches at the first step.",
        in_range(0.0, 100.0),
    )
    reactive_mase_above: float = setting(
        0.0,
        "Deprecated and ignored (the fallback is on skill against last value, reactive_skill_above); accepted "
        "so that existing settings files still load.",
        in_range(0.0, 1e6),
    )
    forget_after_minutes: float = setting(
        60.0,
        "A series missing from Prometheus this long is dropped (a node that left); shorter gaps keep what the "
        "model has learnt, the missing samples count as gaps.",
        positive(),
    )
    smoothing: ForecastParams = setting(
        ForecastParams,
        "Initial smoothing weights of every series (the tuning job refits them per resource kind).",
    )

    @property
    def horizon_steps(self) -> int:
        return max(1, math.ceil(self.horizon_minutes * 60 / self.step_seconds))

    @property
    def mode_confirm_steps(self) -> int:
        return math.ceil(self.mode_confirm_horizons * self.horizon_steps)

    @property
    def tick_interval(self) -> float:
        """The engine's tick, never longer than a model step."""
        return min(self.tick_seconds, self.step_seconds)

    def check_relations(self) -> None:
        if self.predictive_skill_below > self.reactive_skill_above:
            raise ConfigError(
                "forecast.predictive_skill_below must not exceed forecast.reactive_skill_above "
                f"({self.predictive_skill_below} > {self.reactive_skill_above}): the mode would flap"
            )


@dataclass(frozen=True)
class TuningSettings:
    """Self-tuning from Prometheus history."""

    enabled: bool = setting(True, "Refit smoothing weights and the warning's k from history on a schedule.", boolean())
    interval_seconds: float = setting(
        3600.0, "Between refits (the first one too): the fit replays hours of history, so not every tick.", positive()
    )
    lookback_hours: float = setting(
        48.0, "History replayed per refit: two days cover the daily season twice.", positive()
    )
    holdout_fraction: float = setting(
        0.25,
        "Newest share of the history kept out of the search: new weights are adopted only if they also win there.",
        in_range(0.0, 1.0, lo_open=True, hi_open=True),
    )


@dataclass(frozen=True)
class KubernetesSettings:
    """Reading nodes and pods (capacity, owners, checkpoint opt-in) for migration decisions."""

    enabled: bool = setting(
        False,
        "Off: capacity comes only from insight agents and no pod-level policy is issued. The manifests turn "
        "it on; local runs without an API server leave it off.",
        boolean(),
    )
    kubeconfig: str = setting("", "Empty: in-cluster service-account credentials.", None)


@dataclass(frozen=True)
class ApolloSettings(Validated):
    """Everything the `apollo` process reads at start-up."""

    grpc_address: str = setting("0.0.0.0:50051", "gRPC: the four services and gRPC health.", host_port())
    http_address: str = setting("0.0.0.0:8080", "HTTP: /metrics, /healthz and /readyz.", host_port())
    log_level: str = setting("INFO", "Structured JSON log level.", LOG_LEVEL)
    report_ttl_seconds: float = setting(
        600.0,
        "How long insight-agent reports (signatures, cluster insights) stay valid without a refresh, so a pod "
        "or node that disappeared stops steering decisions.",
        positive(),
    )
    prometheus: PrometheusSettings = setting(PrometheusSettings, "Node metrics.")
    forecast: ForecastSettings = setting(ForecastSettings, "The forecaster.")
    tuning: TuningSettings = setting(TuningSettings, "Scheduled refits from Prometheus history.")
    policy: PolicySettings = setting(
        PolicySettings, "The orchestration policy: what overload means, caps, cool-downs, scale and provision advice."
    )
    scoring: ScoringWeights = setting(ScoringWeights, "Weights of the per-pod score's terms.")
    kubernetes: KubernetesSettings = setting(KubernetesSettings, "Nodes and pods from the API server.")

    def check_relations(self) -> None:
        steps = self.forecast.horizon_steps
        if self.policy.consecutive_steps > steps:
            raise ConfigError(
                f"policy.consecutive_steps must be at most the forecast horizon ({steps} steps of "
                f"{self.forecast.step_seconds:g}s), got {self.policy.consecutive_steps}"
            )


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> ApolloSettings:
    """File ($APOLLO_CONFIG or `path`), then APOLLO_* variables on top, then validation."""
    return load(ApolloSettings, "APOLLO", path, environ)
