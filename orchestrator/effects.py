"""What the migration state machine reads and what it asks for: its vocabulary, shared by every phase.

A reconcile hands the machine a :class:`World` (everything it observed) and gets back a :class:`Plan`:
the next status and the :data:`Effect`s to execute; executing them yields :class:`Outcome`s that the
machine folds back in. These types live apart from the phase logic so that the phases (one module
each), the controller that executes effects and the APOLLO link that sends reports all depend on the
same small, pure module rather than on each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apollo_api.podmigration import PodMigration, PodMigrationStatus
from orchestrator import placement, podinfo
from orchestrator.config import CapSettings, EvictionSettings

Json = Mapping[str, Any]

FINALIZER = "apollo.io/bare-pod-protection"


@dataclass(frozen=True)
class MachineConfig:
    caps: CapSettings = field(default_factory=CapSettings)
    eviction: EvictionSettings = field(default_factory=EvictionSettings)
    ttl_seconds_after_finished: int = 86_400
    resume_grace_seconds: float = 10.0
    cap_retry_seconds: float = 2.0
    # Whether ExecutionResults can be sent (an APOLLO link is configured).
    reports: bool = False


@dataclass(frozen=True)
class ClaimInfo:
    """The checkpoint claim as read from the API server, and where its volume can be mounted."""

    name: str
    found: bool
    phase: str = ""
    # The bound PersistentVolume's spec.nodeAffinity.required (None: mountable on any node).
    volume_selector: Json | None = None


@dataclass(frozen=True)
class World:
    """Everything one reconcile observed. `migrations` are every PodMigration known (caps, duplicates,
    reservations); `nodes` the raw nodes pre-flight needs; `usage` what placement needs per node."""

    now: float
    migration: PodMigration
    pod: Json | None = None
    migrations: Sequence[PodMigration] = ()
    nodes: Mapping[str, Json] = field(default_factory=dict)
    usage: Mapping[str, placement.NodeView] = field(default_factory=dict)
    claim: ClaimInfo | None = None
    job: Json | None = None
    candidates: Sequence[Json] = ()


# -- effects -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evict:
    namespace: str
    pod: str
    uid: str


@dataclass(frozen=True)
class CreatePod:
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Emit:
    """A Kubernetes Event on the pod (`kind` "Pod") or on the migration (`kind` "PodMigration")."""

    kind: str
    name: str
    uid: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Report:
    """An ExecutionResult for APOLLO (the migration carried out one of its policies)."""

    request_id: str
    success: bool
    reason: str
    duration_ms: int
    metrics: dict[str, str]
    pod: str
    namespace: str
    source_node: str
    target_node: str
    migration: str


@dataclass(frozen=True)
class PatchMeta:
    labels: dict[str, str] = field(default_factory=dict)
    add_finalizer: bool = False
    remove_finalizer: bool = False


@dataclass(frozen=True)
class Delete:
    """TTL after finished: the object goes (never a pod, never a claim)."""


Effect = Evict | CreatePod | Emit | Report | PatchMeta | Delete


@dataclass(frozen=True)
class Outcome:
    """What executing an effect did: HTTP-like `code` (0 for effects without one) and the server's words."""

    ok: bool
    code: int = 0
    message: str = ""


@dataclass
class Plan:
    status: PodMigrationStatus
    effects: list[Effect] = field(default_factory=list)
    requeue_after: float | None = None


def emit_migration(m: PodMigration, kind: str, reason: str, message: str) -> Emit:
    """An Event on the PodMigration itself."""
    return Emit("PodMigration", m.name, m.uid, kind, reason, message)


def emit_pod(pod: Json, kind: str, reason: str, message: str) -> Emit:
    """An Event on a pod (the source, or the replacement once there is one)."""
    return Emit("Pod", podinfo.name(pod), podinfo.uid(pod), kind, reason, message)
