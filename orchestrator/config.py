"""Orchestrator settings (ORCHESTRATOR_* variables or a YAML file): one validated tree.

The controller's limits (how many migrations at once, how long to wait between refused evictions,
how long finished objects stay) and its coordination (the leader Lease, the APOLLO link) are
declared here once with the reason for each default; `docs/settings/orchestrator.md` is generated
from these declarations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.server import ServerSettings
from common.settings import (
    LOG_LEVEL,
    Check,
    ConfigError,
    Validated,
    host_port,
    in_range,
    int_range,
    load,
    non_empty,
    positive,
    setting,
)
from orchestrator.api.settings import ApiSettings


def _empty_or_host_port() -> Check:
    inner = host_port()

    def check(name: str, value: object) -> None:
        if value != "":
            inner(name, value)

    return check


@dataclass(frozen=True)
class OrchestratorServerSettings(ServerSettings):
    """The HTTP port (probes, metrics, the REST API): one gunicorn worker, which also runs the controller."""

    bind: str = setting("0.0.0.0:8080", "Address and port to listen on.", host_port())
    workers: int = setting(
        1,
        "Must be 1: the controller, its watches and its leader-election campaign run inside the worker "
        "(threads do not survive gunicorn's fork, so the master cannot hold them), and a second worker would "
        "be a second campaigner with its own watches in the same pod for no gain. Concurrency of the HTTP side "
        "comes from `threads`; capacity from replicas (only the leader acts).",
        int_range(1, 1),
    )


@dataclass(frozen=True)
class CapSettings:
    """Concurrent migrations admitted at once (phases Capturing, Evicting, Rescheduling)."""

    total: int = setting(
        10,
        "Cluster-wide: every migration is an eviction, a reschedule and a restart from checkpoint; ten at once "
        "keeps the API server, the scheduler and the checkpoint storage well clear of a thundering herd.",
        int_range(1, 10_000),
    )
    per_node: int = setting(
        2,
        "Per node, as source or target: draining a node one pod at a time is slow, but moving many pods onto "
        "one target at once is how a target becomes the next hot node.",
        int_range(1, 1_000),
    )
    per_namespace: int = setting(5, "Per namespace: one tenant's moves must not use every slot.", int_range(1, 1_000))
    per_workload: int = setting(
        1,
        "Per workload (Deployment, StatefulSet, Job, or bare pod): one replica of a workload moves at a time, so "
        "a single-replica workload is never down twice and a multi-replica one keeps the rest serving.",
        int_range(1, 1_000),
    )


@dataclass(frozen=True)
class EvictionSettings:
    """Retrying an eviction a PodDisruptionBudget refuses (HTTP 429), until the migration's deadline."""

    initial_backoff_seconds: float = setting(
        1.0, "First wait after a refusal: a budget often frees up as soon as another pod turns Ready.", positive()
    )
    max_backoff_seconds: float = setting(
        30.0,
        "Longest wait between attempts: long enough not to hammer the API server, short enough that a freed "
        "budget is used within half a minute.",
        positive(),
    )
    multiplier: float = setting(2.0, "Backoff growth per refused attempt (exponential).", in_range(1.0, 10.0))
    settle_seconds: float = setting(
        1.0,
        "Pause between recording the migration as Evicting (with its capacity reservation) and the first "
        "eviction request: the webhook and the extender learn of it through their watches, and a replacement "
        "created before they have (a Deployment replaces an evicted pod at once) would go unmatched.",
        in_range(0.0, 60.0),
    )

    def check_relations(self) -> None:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ConfigError("eviction.max_backoff_seconds must be >= eviction.initial_backoff_seconds")


@dataclass(frozen=True)
class LeaderSettings:
    """Lease-based leader election: only the holder of the Lease reconciles, so two replicas never act twice."""

    enabled: bool = setting(
        True, "Off only for a single replica run by hand (tests, development): then nothing guards a second.", None
    )
    namespace: str = setting("apollo-system", "Namespace of the Lease (the orchestrator's own).", non_empty())
    lease_name: str = setting("apollo-orchestrator", "Name of the coordination.k8s.io Lease.", non_empty())
    identity: str = setting(
        "",
        "This replica's holder identity. Empty: <hostname>_<pid>_<random>, unique per process, so a restarted "
        "worker in the same pod waits for its predecessor's lease instead of assuming it.",
        None,
    )
    lease_duration_seconds: float = setting(
        15.0,
        "How long a lease stays valid after its last renewal: a standby takes over this long after the leader "
        "dies (client-go's default).",
        in_range(2.0, 600.0),
    )
    renew_deadline_seconds: float = setting(
        10.0,
        "The leader stops acting when it could not renew for this long; it must be shorter than the lease "
        "duration so the old leader has stopped before a standby may start.",
        in_range(1.0, 600.0),
    )
    retry_period_seconds: float = setting(
        2.0, "How often the leader renews and a standby tries to acquire.", in_range(0.1, 60.0)
    )

    def check_relations(self) -> None:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ConfigError(
                "leader: retry_period_seconds < renew_deadline_seconds < lease_duration_seconds must hold "
                f"(got {self.retry_period_seconds:g} < {self.renew_deadline_seconds:g} < "
                f"{self.lease_duration_seconds:g})"
            )


@dataclass(frozen=True)
class ApolloLinkSettings:
    """The subscription to APOLLO's OrchestrationPolicy stream and the ExecutionResult reports."""

    address: str = setting(
        "",
        "APOLLO's gRPC address (host:port). Empty: no APOLLO link; migrations come only from PodMigration "
        "objects (kubectl, the REST API).",
        _empty_or_host_port(),
    )
    subscriber_id: str = setting(
        "apollo-orchestrator",
        "Identifies this subscriber to APOLLO; one id for every replica, since APOLLO re-sends what is not "
        "acknowledged whichever replica reconnects.",
        non_empty(),
    )
    namespaces: tuple[str, ...] = setting(
        (), "Only policies for these namespaces (comma-separated). Empty: every namespace.", None
    )
    dry_run: bool = setting(
        False,
        "Turn every MIGRATE policy into a dry-run PodMigration (validated and captured, never evicted) and "
        "log SCALE policies without scaling. APOLLO's own dry run (allow_disruption false) is always honoured.",
        None,
    )
    scale: bool = setting(
        True,
        "Act on SCALE_UP/SCALE_DOWN policies for workloads annotated apollo.io/autoscale=true, through the "
        "scale subresource; other workloads' policies are answered as refused.",
        None,
    )
    reconnect_initial_seconds: float = setting(
        1.0, "First wait before re-subscribing after the stream ends or fails.", positive()
    )
    reconnect_max_seconds: float = setting(
        30.0, "Longest wait between re-subscription attempts (exponential backoff with jitter).", positive()
    )
    grpc_timeout_seconds: float = setting(
        5.0, "Deadline of each ReportExecutionResult call; a failed report is retried later.", positive()
    )

    def check_relations(self) -> None:
        if self.reconnect_max_seconds < self.reconnect_initial_seconds:
            raise ConfigError("apollo.reconnect_max_seconds must be >= apollo.reconnect_initial_seconds")


@dataclass(frozen=True)
class OrchestratorSettings(Validated):
    """The migration controller: caps, retries, leader election, APOLLO link, and its HTTP port."""

    server: OrchestratorServerSettings = setting(
        OrchestratorServerSettings,
        "gunicorn with one worker: the worker runs the controller (leader-elected) beside the HTTP routes.",
    )
    kubeconfig: str = setting("", "Empty: in-cluster service-account credentials.", None)
    caps: CapSettings = setting(CapSettings, "Concurrent migrations allowed at once.")
    eviction: EvictionSettings = setting(EvictionSettings, "Retrying evictions refused by PodDisruptionBudgets.")
    leader: LeaderSettings = setting(LeaderSettings, "Lease-based leader election between replicas.")
    apollo: ApolloLinkSettings = setting(ApolloLinkSettings, "The APOLLO policy subscription and result reports.")
    ttl_seconds_after_finished: int = setting(
        86_400,
        "Finished PodMigrations are deleted this long after they finish (like a Job's ttlSecondsAfterFinished; "
        "0 deletes at once): a day keeps them for inspection without growing etcd forever.",
        int_range(0, 10 * 365 * 86_400),
    )
    resume_grace_seconds: float = setting(
        10.0,
        "How long a Running replacement of a checkpointed pod may take to report where it resumed from "
        "(apollo.io/resumed-from) when the source never reported a checkpoint step; past it the migration "
        "succeeds with resume Unknown. With a reported checkpoint the report is awaited until the deadline.",
        in_range(0.0, 3600.0),
    )
    resync_seconds: float = setting(
        30.0,
        "Every active migration is reconciled at least this often even without events, a safety net for a "
        "missed watch event; watches and timers drive the normal pace.",
        in_range(1.0, 3600.0),
    )
    cap_retry_seconds: float = setting(
        2.0, "How soon a migration held back by a cap is looked at again (a finishing one also wakes it).", positive()
    )
    api_timeout_seconds: float = setting(
        10.0, "Deadline of each Kubernetes API call, so a hung connection cannot stall the controller.", positive()
    )
    api: ApiSettings = setting(
        ApiSettings,
        "The migration REST API (/api/v1/migrations) served on the same port: authentication, body and batch "
        "limits. TLS is server.certfile/keyfile.",
    )
    log_level: str = setting("INFO", "Structured JSON log level.", LOG_LEVEL)


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> OrchestratorSettings:
    return load(OrchestratorSettings, "ORCHESTRATOR", path, environ)
