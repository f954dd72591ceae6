"""Batch planning: which pods a drain-like request moves off a node, and which it skips and why.

Pure: the adapter lists the pods on the node, the PodMigrations and the PodDisruptionBudgets, and
this module decides, so a dry run and the real request show the same plan. Like `kubectl drain`,
the batch does not refuse the whole request because of one pod: DaemonSet and static pods, finished
or terminating pods and pods already migrating are skipped with their reason. PDBs are not a reason
to skip: each migration's eviction waits for its budget (429, retried until the deadline), and the
plan says which pods will wait and for which budget. How many move at once is the controller's
concurrency caps' business (global, per node, per namespace, per workload), so a batch never
overruns them however large it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apollo_api.podmigration import PodMigration
from common.errors import Unprocessable
from orchestrator.api.request import BatchRequest, selector_from_object
from orchestrator.preflight import active_migration_of, controller_of, unmovable_reason


@dataclass(frozen=True)
class Budget:
    """A PodDisruptionBudget as the plan needs it."""

    namespace: str
    name: str
    disruptions_allowed: int
    selector: Mapping[str, Any] | None

    @classmethod
    def from_json(cls, pdb: Mapping[str, Any]) -> Budget:
        meta = pdb.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            disruptions_allowed=int((pdb.get("status") or {}).get("disruptionsAllowed", 0) or 0),
            selector=(pdb.get("spec") or {}).get("selector"),
        )

    def covers(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if namespace != self.namespace:
            return False
        selector = selector_from_object(self.selector)
        return selector is not None and selector.matches(labels)


@dataclass(frozen=True)
class PlannedMove:
    namespace: str
    pod_name: str
    owner_kind: str
    owner_name: str
    budgets: tuple[str, ...] = ()
    waits_for: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pod_name": self.pod_name,
            "pod_namespace": self.namespace,
            "owner": {"kind": self.owner_kind, "name": self.owner_name} if self.owner_kind else None,
            "disruption_budgets": list(self.budgets),
            "waits_for": self.waits_for or None,
        }


@dataclass(frozen=True)
class Skipped:
    namespace: str
    pod_name: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"pod_name": self.pod_name, "pod_namespace": self.namespace, "reason": self.reason}


@dataclass(frozen=True)
class BatchPlan:
    moves: tuple[PlannedMove, ...] = ()
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)


def _name(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def plan_batch(
    request: BatchRequest,
    pods: Iterable[Mapping[str, Any]],
    migrations: Sequence[PodMigration],
    budgets: Iterable[Budget],
    *,
    max_pods: int,
) -> BatchPlan:
    """The moves and skips for `request` over the pods listed on its source node."""
    budgets = list(budgets)
    moves: list[PlannedMove] = []
    skipped: list[Skipped] = []
    selected = []
    for pod in pods:
        namespace, name = _name(pod)
        if (pod.get("spec") or {}).get("nodeName") != request.source_node:
            continue
        if request.namespace and namespace != request.namespace:
            continue
        if not request.selector.matches((pod.get("metadata") or {}).get("labels") or {}):
            continue
        selected.append(pod)
    for pod in sorted(selected, key=_name):
        namespace, name = _name(pod)
        reason = unmovable_reason(pod)
        if reason:
            skipped.append(Skipped(namespace, name, f"pod {reason}"))
            continue
        other = active_migration_of(namespace, pod, migrations)
        if other is not None:
            skipped.append(
                Skipped(namespace, name, f"already migrating: {other.namespace}.{other.name} is {other.status.phase}")
            )
            continue
        kind, owner = controller_of(pod)
        labels = (pod.get("metadata") or {}).get("labels") or {}
        covering = tuple(sorted(b.name for b in budgets if b.covers(namespace, labels)))
        moves.append(PlannedMove(namespace, name, kind, owner, covering))
    if len(moves) > max_pods:
        raise Unprocessable(
            f"the batch would move {len(moves)} pods, more than the limit of {max_pods} (api.max_batch_pods); "
            "narrow label_selector or namespace",
            field="label_selector",
        )
    return BatchPlan(tuple(_with_budget_waits(moves, budgets)), tuple(skipped))


def _with_budget_waits(moves: list[PlannedMove], budgets: list[Budget]) -> list[PlannedMove]:
    """Mark the moves beyond what each budget allows now: their eviction waits for the budget."""
    allowed_now = {(b.namespace, b.name): b.disruptions_allowed for b in budgets}
    remaining = dict(allowed_now)
    out: list[PlannedMove] = []
    for move in moves:
        keys = [(move.namespace, name) for name in move.budgets]
        blocked = [key for key in keys if remaining[key] <= 0]
        for key in keys:
            remaining[key] -= 1
        if blocked:
            names = ", ".join(f"{name} ({max(0, allowed_now[(ns, name)])} allowed now)" for ns, name in blocked)
            move = PlannedMove(
                move.namespace,
                move.pod_name,
                move.owner_kind,
                move.owner_name,
                move.budgets,
                f"PodDisruptionBudget {names}: the eviction is retried until the budget allows it or the timeout",
            )
        out.append(move)
    return out
