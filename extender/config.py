"""Extender settings (EXTENDER_* variables or a YAML file), with defaults fit for production."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.server import ServerSettings
from common.settings import (
    ConfigError,
    Validated,
    host_port,
    in_range,
    int_range,
    load,
    one_of,
    positive,
    setting,
)


@dataclass(frozen=True)
class ExtenderSettings(Validated):
    """How the extender reaches APOLLO and how long it is willing to wait for it."""

    server: ServerSettings = setting(
        ServerSettings,
        "gunicorn: bind, workers, TLS. The worker class is extender.worker.VerbWorker (a thread per keep-alive "
        "connection, so `threads` does not apply). Two workers: the GIL caps a worker at one core and concurrent "
        "callers would queue behind one another's verbs; kube-scheduler's own calls are serial and land on one "
        "worker. The pod watch is one per extender whatever the count (shared by the workers); scale out with "
        "replicas.",
    )
    apollo_address: str = setting(
        "apollo.apollo-system.svc:50051", "APOLLO's gRPC address (the Service in manifests/apollo).", host_port()
    )
    refresh_interval_seconds: float = setting(
        2.0,
        "How often the background thread refreshes the score snapshot; unchanged ones cost a few bytes.",
        positive(),
    )
    snapshot_max_age_seconds: float = setting(
        30.0,
        "Older than this, the snapshot no longer steers scheduling (neutral scores, no filtering): a stale "
        "advisor must not keep pods off nodes that have cooled down.",
        positive(),
    )
    hot_value_lag_seconds: float = setting(
        60.0,
        "Pods bound this long before APOLLO's sample still count as hot value: node metrics show a new pod only "
        "after it starts, is scraped and enters the rate window (about a minute with Prometheus defaults). "
        "Counting it twice in that window errs towards spreading; forgetting it would pile on.",
        in_range(0, 3600),
    )
    grpc_timeout_seconds: float = setting(2.0, "Deadline of every call to APOLLO, off the request path.", positive())
    policy_mode: str = setting(
        "annotated",
        "Per-pod GetSchedulingPolicy (GPU, CSD, storage tier, locality): `annotated` asks only for pods annotated "
        "apollo.io/scheduling-policy=true, `all` for every pod, `off` never. The snapshot alone ranks everything "
        "else, which keeps bulk scheduling fast.",
        one_of("off", "annotated", "all"),
    )
    policy_budget_ms: float = setting(
        0.0,
        "How long a request may wait for a policy it had to fetch. 0: never wait; the answer is cached when it "
        "arrives and the prioritize call after the filter call uses it.",
        in_range(0, 1000),
    )
    policy_cache_ttl_seconds: float = setting(30.0, "How long a per-pod policy answer is reused.", positive())
    watch_pods: bool = setting(
        True, "Watch pods to count bindings since APOLLO's last sample and to report scheduling results.", None
    )
    reserve_for_migrations: bool = setting(
        True,
        "Hold each active migration's target capacity for its replacement (watches PodMigrations, reads the "
        "reserved nodes): a pod created during the migration must not take the room the move relies on.",
        None,
    )
    kubeconfig: str = setting("", "Empty: in-cluster service-account credentials.", None)
    max_body_bytes: int = setting(
        64 * 2**20, "Largest ExtenderArgs accepted (a NodeList of 20,000 nodes fits).", int_range(1024, 2**31)
    )
    max_nodes: int = setting(20_000, "Most node names one request may carry.", int_range(1, 1_000_000))
    log_level: str = setting("INFO", "Structured JSON log level.", one_of("DEBUG", "INFO", "WARNING", "ERROR"))

    def check_relations(self) -> None:
        if self.snapshot_max_age_seconds <= self.refresh_interval_seconds:
            raise ConfigError("snapshot_max_age_seconds must exceed refresh_interval_seconds")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> ExtenderSettings:
    return load(ExtenderSettings, "EXTENDER", path, environ)
