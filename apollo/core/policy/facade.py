"""The orchestration policy's facade: one tick in, every planner's decisions out; answers routed back.

Why this shape: every decision costs something real (a checkpoint/restore cycle, replicas, a volume), so
each planner is deliberately slow to act and quick to stop, and they all share one ledger of what is in
flight, settling and cooling down (:mod:`apollo.core.policy.ledger`). The facade owns that ledger and the
planners (:mod:`~apollo.core.policy.migrate`, :mod:`~apollo.core.policy.scale`,
:mod:`~apollo.core.policy.provision` by default; any object following
:class:`~apollo.core.policy.planner.Planner` can join), expires unanswered decisions once per tick (as
failures, so a lost report never blocks a cap) and hands each ``ExecutionResult`` to the planner whose
action it answers.

Nothing reads the clock: every entry point takes ``now`` (seconds), which keeps decisions reproducible
in tests and in backtests that replay history. Not thread-safe; the caller serialises (the engine's lock).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from apollo.core.decisions import Action, PolicyDecision, PolicyOutput, Skip
from apollo.core.domain import NodeInsight, NodeOutlook, PlacementCounter, RunningPod, WorkloadOutlook
from apollo.core.policy.ledger import Ledger
from apollo.core.policy.migrate import MigratePlanner
from apollo.core.policy.planner import Planner, PlannerFactory, PolicyContext, PolicyInput
from apollo.core.policy.provision import ProvisionPlanner
from apollo.core.policy.scale import ScalePlanner
from apollo.core.policy.settings import PolicySettings
from apollo.core.scoring.table import NodeTable
from apollo.core.scoring.weights import ScoringWeights

P = TypeVar("P")

DEFAULT_PLANNERS: tuple[PlannerFactory, ...] = (MigratePlanner, ScalePlanner, ProvisionPlanner)
"""Migrations first (they relieve an overload now), then scaling, then provisioning advice."""


class PolicyEngine:
    """The planners, their shared ledger and the settings in force; deterministic in its arguments."""

    def __init__(
        self,
        settings: PolicySettings | None = None,
        weights: ScoringWeights | None = None,
        planners: Sequence[PlannerFactory] = DEFAULT_PLANNERS,
    ) -> None:
        self.ctx = PolicyContext(settings or PolicySettings(), weights or ScoringWeights(), Ledger())
        self.planners: tuple[Planner, ...] = tuple(make(self.ctx) for make in planners)

    @property
    def settings(self) -> PolicySettings:
        return self.ctx.settings

    @settings.setter
    def settings(self, value: PolicySettings) -> None:
        """Replace the settings in force (the tuning job adopts a new k); planners read them each tick."""
        self.ctx.settings = value

    @property
    def ledger(self) -> Ledger:
        return self.ctx.ledger

    def planner(self, kind: type[P]) -> P:
        """The configured planner of type `kind`; LookupError when it is not part of this engine."""
        for planner in self.planners:
            if isinstance(planner, kind):
                return planner
        raise LookupError(f"no {kind.__name__} configured")

    def evaluate(
        self,
        now: float,
        outlooks: Sequence[NodeOutlook] | NodeTable,
        pods: Sequence[RunningPod] = (),
        insights: Mapping[str, NodeInsight] | None = None,
        placements: Iterable[PlacementCounter] = (),
        workloads: Sequence[WorkloadOutlook] = (),
    ) -> PolicyOutput:
        """One tick of every planner, after writing off decisions whose deadline passed.

        Pass the tick's :class:`NodeTable` (built with insights) to share it with scoring; ``outlooks``
        are turned into one here.
        """
        table = outlooks if isinstance(outlooks, NodeTable) else NodeTable.build(outlooks, insights)
        out = self._expire(now)
        tick = PolicyInput(
            now, table, tuple(pods), insights if insights is not None else {}, tuple(placements), tuple(workloads)
        )
        for planner in self.planners:
            out += planner.plan(tick)
        return out

    def record_result(self, request_id: str, success: bool, now: float) -> bool:
        """Feedback from the executor: frees the in-flight slot, starts cool-downs. False if unknown id."""
        entry = self.ledger.pop(request_id)
        if entry is None:
            return False
        self._owner(entry.action).finish(entry, success, now)
        return True

    def advise_migration(self, pod: RunningPod, table: NodeTable, now: float) -> PolicyDecision | Skip:
        """On-demand MIGRATE advice for one pod, by the migrate planner's own target rules (untracked)."""
        return self.planner(MigratePlanner).advise(pod, table, now)

    def _owner(self, action: Action) -> Planner:
        for planner in self.planners:
            if action in planner.actions:
                return planner
        raise LookupError(f"no planner issues {action!r}")

    def _expire(self, now: float) -> PolicyOutput:
        """Write off unanswered decisions as failed (their planner starts its cool-down) and say so."""
        skipped = []
        for entry in self.ledger.expire(now):
            self._owner(entry.action).finish(entry, False, now)
            reason = f"{entry.request_id}: no result before its deadline; counted as failed"
            skipped.append(Skip(entry.action, entry.subject, reason))
        return PolicyOutput((), tuple(skipped))
