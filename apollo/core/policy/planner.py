"""What a planner is: the small protocol the policy facade iterates, and what it hands each planner.

A new kind of advice is one file: a class with the actions it issues, ``plan`` (one tick in, decisions
and reasons for inaction out) and ``finish`` (what an answer or an expiry means for it: a cool-down,
relief that settles), built from a :class:`PolicyContext`. Planners keep only their own state between
ticks (streaks, what they already provisioned); everything shared lives in the context's ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from apollo.core.decisions import Action, PolicyDecision, PolicyOutput
from apollo.core.domain import NodeInsight, PlacementCounter, RunningPod, WorkloadOutlook
from apollo.core.policy.ledger import InFlight, Ledger, Move, request_id
from apollo.core.policy.settings import PolicySettings
from apollo.core.scoring.table import NodeTable
from apollo.core.scoring.weights import ScoringWeights


@dataclass(frozen=True)
class PolicyInput:
    """One tick's view of the cluster, as every planner reads it."""

    now: float
    table: NodeTable
    pods: Sequence[RunningPod] = ()
    insights: Mapping[str, NodeInsight] = field(default_factory=dict)
    placements: Sequence[PlacementCounter] = ()
    workloads: Sequence[WorkloadOutlook] = ()


@dataclass
class PolicyContext:
    """What planners share: the settings in force (tuning may replace them), the weights and the ledger."""

    settings: PolicySettings
    weights: ScoringWeights
    ledger: Ledger

    def request_id(self, action: Action, content: str, now: float) -> str:
        return request_id(action, content, now, self.settings.decision_epoch_seconds)

    def issue(
        self, decision: PolicyDecision, subject: str, now: float, workload: str, move: Move | None = None
    ) -> PolicyDecision:
        """Record `decision` in the ledger (in flight until answered or expired) and return it."""
        self.ledger.track(decision, subject, now, workload, self.settings.result_grace_seconds, move)
        return decision


class Planner(Protocol):
    """One kind of orchestration advice (see the module docstring)."""

    @property
    def actions(self) -> frozenset[Action]:
        """The actions this planner issues; results for them are routed back to it."""
        ...

    def plan(self, tick: PolicyInput) -> PolicyOutput:
        """Decisions for this tick, and why it did not act on what it looked at."""
        ...

    def finish(self, entry: InFlight, success: bool, now: float) -> None:
        """A decision of this planner was answered (or expired: `success` False)."""
        ...


PlannerFactory = Callable[[PolicyContext], Planner]
