"""Extender settings (EXTENDER_* variables or a YAML file), with defaults fit for production."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.settings import ConfigError, host_port, int_range, load, positive


@dataclass(frozen=True)
class ExtenderSettings:
    """How the extender reaches APOLLO and how long it is willing to wait for it."""

    bind: str = "0.0.0.0:8888"
    apollo_address: str = "apollo.apollo-system.svc:50051"
    # How often the background thread refreshes the score snapshot.
    refresh_interval_seconds: float = 2.0
    # Older than this, the snapshot no longer steers scheduling (neutral scores, no filtering).
    snapshot_max_age_seconds: float = 30.0
    # Pods bound this long before APOLLO's sample still count as hot value: node metrics show a new pod
    # only after it starts, is scraped and enters the rate window (about a minute with Prometheus
    # defaults). Counting it twice in that window errs towards spreading; forgetting it would pile on.
    hot_value_lag_seconds: float = 60.0
    grpc_timeout_seconds: float = 2.0
    # Per-pod GetSchedulingPolicy (signature-aware fit: GPU, CSD, storage tier, locality):
    # "annotated" asks only for pods annotated apollo.io/scheduling-policy=true, "all" for every pod,
    # "off" never. The snapshot alone ranks everything else, which is what keeps bulk scheduling fast.
    policy_mode: str = "annotated"
    # How long a request may wait for a policy it had to fetch. 0 (default): never wait; the answer
    # is cached when it arrives and the next request for the pod (prioritize after filter) uses it.
    policy_budget_ms: float = 0.0
    policy_cache_ttl_seconds: float = 30.0
    # Watch pods to count bindings since APOLLO's last sample and report scheduling results.
    watch_pods: bool = True
    kubeconfig: str = ""
    max_body_bytes: int = 64 * 2**20
    max_nodes: int = 20_000
    # Two workers: the GIL caps a worker at one core, and concurrent callers (several schedulers, a
    # burst of probes) would queue behind one another's verbs. kube-scheduler's own calls are serial
    # and land on one worker; the other costs its own pod watch (~0.25 ms CPU per bound pod) and
    # snapshot copy. Set 1 where a single scheduler is the only caller; scale out with replicas.
    workers: int = 2
    # Threads serve probes and /metrics beside the verbs, and the rare concurrent scheduler profile.
    threads: int = 8
    log_level: str = "INFO"

    def validate(self) -> ExtenderSettings:
        host_port("bind", self.bind)
        host_port("apollo_address", self.apollo_address)
        for name in (
            "refresh_interval_seconds",
            "snapshot_max_age_seconds",
            "grpc_timeout_seconds",
            "policy_cache_ttl_seconds",
        ):
            positive(name, getattr(self, name))
        if self.policy_mode not in ("off", "annotated", "all"):
            raise ConfigError(f"policy_mode must be off, annotated or all, got {self.policy_mode!r}")
        if not 0 <= self.policy_budget_ms <= 1000:
            raise ConfigError(f"policy_budget_ms must be in [0, 1000], got {self.policy_budget_ms!r}")
        if not 0 <= self.hot_value_lag_seconds <= 3600:
            raise ConfigError(f"hot_value_lag_seconds must be in [0, 3600], got {self.hot_value_lag_seconds!r}")
        if self.snapshot_max_age_seconds <= self.refresh_interval_seconds:
            raise ConfigError("snapshot_max_age_seconds must exceed refresh_interval_seconds")
        int_range("max_body_bytes", self.max_body_bytes, 1024, 2**31)
        int_range("max_nodes", self.max_nodes, 1, 1_000_000)
        int_range("workers", self.workers, 1, 64)
        int_range("threads", self.threads, 1, 256)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        return self


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> ExtenderSettings:
    return load(ExtenderSettings, "EXTENDER", path, environ)
