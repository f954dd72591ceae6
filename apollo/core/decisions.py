"""What the policy decides: orchestration actions, their targets, and why something was not done.

The two enums carry the seed's wire numbers (``OrchestrationAction``, ``PolicyPriority``), so the
adapter's translation is a lookup and nothing can drift; targets and decisions are plain frozen values
the planners build and the gRPC adapter converts at the edge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.IntEnum):
    """Orchestration actions the core emits; values are the seed's ``OrchestrationAction`` numbers."""

    MIGRATE = 1
    PROVISION = 2
    SCALE_UP = 3
    SCALE_DOWN = 4

    @property
    def wire_name(self) -> str:
        return f"ORCHESTRATION_ACTION_{self.name}"


class Priority(enum.IntEnum):
    """Urgency of a decision; values are the seed's ``PolicyPriority`` numbers, so they also order."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def wire_name(self) -> str:
        return f"POLICY_PRIORITY_{self.name}"


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    pod_name: str
    namespace: str
    source_node: str
    target_node: str
    preserve_pv: bool
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class AutoscalingTarget:
    workload_name: str
    namespace: str
    workload_kind: str
    current_replicas: int
    desired_replicas: int
    scaling_reason: str


@dataclass(frozen=True, slots=True)
class ProvisioningTarget:
    """``storage_class`` is the seed's ``StorageClass`` value name (the tier, not a Kubernetes class)."""

    pvc_name: str
    namespace: str
    storage_class: str
    size_bytes: int
    iops: int
    throughput_mbps: int
    access_mode: str = "ReadWriteOnce"


@dataclass(frozen=True)
class PolicyDecision:
    """One orchestration decision; exactly one target matches ``action`` (the wire's oneof).

    ``request_id`` is a digest of the content and the decision epoch, so a repeat (an engine restart, a
    retried stream) carries the same id and the orchestrator can drop it. ``dry_run`` decisions are
    advice only: the caller must not execute them.
    """

    request_id: str
    action: Action
    priority: Priority
    reason: str
    contributing_factors: tuple[str, ...]
    created_at: float
    deadline_seconds: int
    dry_run: bool = False
    migration: MigrationTarget | None = None
    autoscaling: AutoscalingTarget | None = None
    provisioning: ProvisioningTarget | None = None

    def __post_init__(self) -> None:
        targets = {
            Action.MIGRATE: self.migration,
            Action.SCALE_UP: self.autoscaling,
            Action.SCALE_DOWN: self.autoscaling,
            Action.PROVISION: self.provisioning,
        }
        present = sum(t is not None for t in (self.migration, self.autoscaling, self.provisioning))
        if targets[self.action] is None or present != 1:
            raise ValueError(f"{self.action.name} decision needs exactly its own target")

    @property
    def namespace(self) -> str:
        """The namespace the decision acts in (subscribers filter on it)."""
        if self.migration is not None:
            return self.migration.namespace
        if self.autoscaling is not None:
            return self.autoscaling.namespace
        return self.provisioning.namespace if self.provisioning is not None else ""

    @property
    def expires_at(self) -> float:
        """When the decision's deadline passes (seconds, the clock of ``created_at``)."""
        return self.created_at + self.deadline_seconds


@dataclass(frozen=True, slots=True)
class Skip:
    """Why the policy did not act on something it looked at (for logs, metrics and dry-run review)."""

    action: Action
    subject: str
    reason: str


@dataclass(frozen=True)
class PolicyOutput:
    decisions: tuple[PolicyDecision, ...] = ()
    skipped: tuple[Skip, ...] = ()

    def __add__(self, other: PolicyOutput) -> PolicyOutput:
        return PolicyOutput(self.decisions + other.decisions, self.skipped + other.skipped)
