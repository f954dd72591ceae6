"""Migrate before overload: confirm the node, pick the cheapest pod that fixes it, pick its target.

* A node is "overload coming" only when its upper forecast stays over the threshold for ``k`` consecutive
  horizon steps (a lone spike is what the interval already allows for) on ``confirm_ticks`` consecutive
  ticks; it is cleared only once its peak falls below ``threshold - hysteresis_margin``, so a node
  hovering at the threshold does not flap.
* The pod moved is the cheapest one that fixes the node: checkpointed first (it resumes, not restarts),
  then low priority, far along (completed containers are not re-run), few restarts.
* The target: :meth:`MigratePlanner.choose_target` is the one place a migration target is chosen, for the
  planner's own moves and for on-demand advice (``GetOrchestrationPolicy``) alike: the feasible node with
  the best predicted headroom for that pod, counting moves already under way, never the source, a stale
  node or a node confirmed overloading.
* Caps per source node, per workload and cluster-wide, a rate limit and per-workload cool-downs bound the
  blast radius of a bad forecast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from apollo.core.decisions import Action, MigrationTarget, PolicyDecision, PolicyOutput, Priority, Skip
from apollo.core.domain import UNMOVABLE_KINDS, PlacementCounter, RunningPod, ScoreResult
from apollo.core.forecasting.early_warning import overload_warning
from apollo.core.policy.ledger import InFlight, Move
from apollo.core.policy.planner import PolicyContext, PolicyInput
from apollo.core.scoring.pods import score_pod
from apollo.core.scoring.table import BoolArray, FloatArray, NodeTable

MAX_TARGET_ATTEMPTS = 3  # candidate pods tried for a target per node and tick: bounds the cost of a full cluster


@dataclass(frozen=True, slots=True)
class _Hotspot:
    """A confirmed node: where it peaks, when the overload starts, how much load must leave it."""

    row: int
    node: str
    cpu_peak: float
    memory_peak: float
    first_step: int
    need_cpu_cores: float
    need_memory_bytes: float
    moving: bool

    @property
    def severity(self) -> float:
        return max(_known(self.cpu_peak), _known(self.memory_peak))


def _known(value: float, default: float = 0.0) -> float:
    """``value``, or ``default`` when it is NaN (scalar math: numpy per hotspot costs more than the plan)."""
    return default if math.isnan(value) else value


@dataclass(frozen=True, slots=True)
class _LazyHotspot:
    """A confirmed node in plan order; ``sized()`` works out its relief (only for nodes actually planned)."""

    node: str
    row: int
    size: Callable[[int], _Hotspot]

    def sized(self) -> _Hotspot:
        return self.size(self.row)


def _coverage(pod: RunningPod, spot: _Hotspot) -> float:
    """Share of the needed relief the pod's move provides, on the scarcer resource (>= 1 is enough)."""
    shares = [
        load / need
        for load, need in ((pod.cpu_load_cores, spot.need_cpu_cores), (pod.memory_load_bytes, spot.need_memory_bytes))
        if need > 0
    ]
    return min(shares, default=math.inf)


@dataclass(frozen=True, slots=True)
class _Candidate:
    pod: RunningPod
    coverage: float

    @property
    def sufficient(self) -> bool:
        return self.coverage >= 1.0

    def rank(self) -> tuple[bool, bool, int, float, int, float, str]:
        """Checkpointed, then enough relief, then least disruption.

        Among pods that suffice the closest fit wins (moving more than needed is needless disruption);
        among pods that do not, the one relieving most.
        """
        p = self.pod
        return (
            not p.checkpointed,
            not self.sufficient,
            p.priority,
            1.0 - p.completed_fraction,
            p.restarts,
            self.coverage if self.sufficient else -self.coverage,
            p.key,
        )


def _factor(label: str, value: float) -> str:
    return f"{label} {value:.0%}" if math.isfinite(value) else f"{label} unknown"


class MigratePlanner:
    """MIGRATE decisions; keeps the overload hysteresis (streaks, confirmed nodes) and the issue times."""

    actions = frozenset({Action.MIGRATE})

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.streak: dict[str, int] = {}
        self.confirmed: set[str] = set()
        self.issued_at: list[float] = []
        self.last_tick = -math.inf
        self._by_node: tuple[Sequence[RunningPod], dict[str, list[RunningPod]]] | None = None

    # -- the protocol ------------------------------------------------------------------------------

    def plan(self, tick: PolicyInput) -> PolicyOutput:
        """Advance the overload hysteresis (once per ``now``) and move one pod off each confirmed node."""
        st, table, now = self.ctx.settings, tick.table, tick.now
        self.issued_at = [t for t in self.issued_at if t > now - st.rate_window_seconds]
        if len(table) and bool(table.stale.all()):
            return PolicyOutput((), (Skip(Action.MIGRATE, "*", "stale forecast: no migrations"),))
        by_node = self._pods_by_node(tick.pods)
        decisions: list[PolicyDecision] = []
        skipped: list[Skip] = []
        # A confirmed node without pods has nothing to move: it is reported without sizing its relief, so
        # a cluster-wide overload (every node confirmed) costs one line per node, not a plan per node.
        spots = self._confirmed_hotspots(table, now, with_pods=set(by_node))
        for node in sorted(self.confirmed - set(by_node)):
            if node in table.index and not table.stale[table.index[node]]:
                skipped.append(Skip(Action.MIGRATE, node, "overload coming but no pod on the node"))
        for k, spot in enumerate(spots):
            cluster_cap = self._cluster_cap_reason()
            if cluster_cap:  # no further move this tick: say so per node without sizing each one
                skipped.extend(Skip(Action.MIGRATE, rest.node, cluster_cap) for rest in spots[k:])
                break
            decision, why = self._migrate_from(spot.sized(), table, by_node.get(spot.node, []), tick.placements, now)
            skipped.extend(why)
            if decision is not None:
                decisions.append(decision)
        return PolicyOutput(tuple(decisions), tuple(skipped))

    def _pods_by_node(self, pods: Sequence[RunningPod]) -> dict[str, list[RunningPod]]:
        """Pods grouped by node, kept while the pod list is the same object (a tick without pod changes)."""
        cached = self._by_node
        if cached is None or cached[0] is not pods:
            by_node: dict[str, list[RunningPod]] = {}
            for pod in pods:
                by_node.setdefault(pod.node, []).append(pod)
            cached = self._by_node = (pods, by_node)
        return cached[1]

    def finish(self, entry: InFlight, success: bool, now: float) -> None:
        """A success cools the workload down and settles the move; a failure cools it down for less."""
        st, ledger = self.ctx.settings, self.ctx.ledger
        wait = st.workload_cooldown_seconds if success else st.failure_cooldown_seconds
        ledger.cool(f"migrate:{entry.workload}", now + wait)
        if success:
            ledger.settle(entry.move, now + st.settle_seconds)

    # -- the one home of target choice -------------------------------------------------------------

    def choose_target(
        self, pod: RunningPod, table: NodeTable, placements: Sequence[PlacementCounter] = ()
    ) -> tuple[ScoreResult | None, str]:
        """The feasible node with the best predicted headroom for `pod` (its result), or None and why.

        Moves in flight or settling count as load on their targets; the pod's own node, stale nodes and
        nodes confirmed overloading are never chosen.
        """
        pending = [*placements, *self.ctx.ledger.pending_placements()]
        st = self.ctx.settings
        scores = score_pod(pod.as_demand(), table, pending, self.ctx.weights, threshold=st.overload_threshold)
        excluded = np.zeros(len(table), dtype=np.bool_)
        excluded[[table.index[n] for n in (pod.node, *self.confirmed) if n in table.index]] = True
        ok = scores.feasible & ~table.stale & ~excluded
        if not ok.any():
            return None, f"no feasible target among {max(len(table) - 1, 0)} other node(s)"
        best = int(np.argmax(np.where(ok, scores.score, -1)))
        return scores.result(best), ""

    def advise(self, pod: RunningPod, table: NodeTable, now: float) -> PolicyDecision | Skip:
        """On-demand MIGRATE advice for one pod: the same target rules, not tracked against the caps.

        Asked for explicitly, so it is advice to the asker rather than an action of APOLLO's own: it is
        neither dry-run nor counted in flight; its request id is the one a proactive move of the same pod to
        the same node would carry in this epoch, so the orchestrator can recognise the pair.
        """
        st = self.ctx.settings
        target, why = self.choose_target(pod, table)
        if target is None:
            return Skip(Action.MIGRATE, pod.key, why)
        return PolicyDecision(
            request_id=self.ctx.request_id(Action.MIGRATE, f"{pod.key}|{pod.node}|{target.node}", now),
            action=Action.MIGRATE,
            priority=Priority.MEDIUM,
            reason=f"on request: best target {target.node} ({target.reason})",
            contributing_factors=(f"target_score={target.score}", f"source={pod.node}"),
            created_at=now,
            deadline_seconds=st.migration_timeout_seconds,
            migration=self._target(pod, target.node),
        )

    # -- overload hysteresis -----------------------------------------------------------------------

    def _confirmed_hotspots(
        self, table: NodeTable, now: float, with_pods: set[str] | None = None
    ) -> list[_LazyHotspot]:
        """Advance the hysteresis (once per ``now``); the confirmed nodes (among ``with_pods`` when given),
        most severe first. Each one's relief is sized only when the plan gets to it."""
        st = self.ctx.settings
        if table.horizon == 0:
            return []
        k = min(st.consecutive_steps, table.horizon)
        cpu_w = overload_warning(table.cpu_upper, st.overload_threshold, k)
        mem_w = overload_warning(table.memory_upper, st.overload_threshold, k)
        warn = cpu_w.flags | mem_w.flags
        first = np.where(cpu_w.flags & mem_w.flags, np.minimum(cpu_w.first_step, mem_w.first_step),
                         np.maximum(cpu_w.first_step, mem_w.first_step))  # fmt: skip
        cpu_peak, mem_peak = table.cpu_peak_to[:, -1], table.memory_peak_to[:, -1]
        if now > self.last_tick:
            self._advance_streaks(table, warn, np.fmax(cpu_peak, mem_peak))
            self.last_tick = now
        names = self.confirmed if with_pods is None else self.confirmed & with_pods
        found = np.fromiter((i for i in map(table.index.get, names) if i is not None), np.int64)
        found = found[~table.stale[found]]
        severity = np.fmax(np.nan_to_num(cpu_peak[found]), np.nan_to_num(mem_peak[found]))
        # Most severe first, then by name (names are unique): one sort of plain tuples, not numpy scalars.
        positions = found.tolist()
        keys = zip((-severity).tolist(), [table.nodes[i] for i in positions], positions, strict=True)
        rows = [i for _, _, i in sorted(keys)]
        leaving = self.ctx.ledger.leaving_all()

        def size(i: int) -> _Hotspot:
            moving = leaving.get(table.nodes[i], (0.0, 0.0))
            return self._hotspot(table, i, float(cpu_peak[i]), float(mem_peak[i]), int(first[i]), moving)

        return [_LazyHotspot(table.nodes[i], i, size) for i in rows]

    def _advance_streaks(self, table: NodeTable, warn: BoolArray, peak: FloatArray) -> None:
        """Streaks and confirmations; only warned, streaking or confirmed nodes can change, so only they are
        visited (a quiet node of 10,000 costs nothing)."""
        st = self.ctx.settings
        index = table.index
        self.confirmed = {n for n in self.confirmed if n in index}
        self.streak = {n: c for n, c in self.streak.items() if n in index}
        rows = set(np.flatnonzero(warn).tolist())
        rows.update(index[n] for n in (*self.streak, *self.confirmed))
        visit = np.array(sorted(rows), dtype=np.int64)
        # The visited rows' values as Python scalars: numpy scalar reads cost more than the loop itself.
        stale, warned, peaks = table.stale[visit].tolist(), warn[visit].tolist(), peak[visit].tolist()
        for k, i in enumerate(visit.tolist()):
            node = table.nodes[i]
            if stale[k]:
                continue  # old data are no evidence either way
            self.streak[node] = min(self.streak.get(node, 0) + 1, st.confirm_ticks) if warned[k] else 0
            if self.streak[node] >= st.confirm_ticks:
                self.confirmed.add(node)
            elif not peaks[k] >= st.clear_level:  # NaN (no forecast) clears as well
                self.confirmed.discard(node)
            if not self.streak[node]:
                del self.streak[node]

    def _hotspot(
        self, table: NodeTable, i: int, cpu_peak: float, mem_peak: float, first: int, moving: tuple[float, float]
    ) -> _Hotspot:
        """Load that must leave node ``i`` to bring it under the clear level, minus relief already under way."""
        node, target = table.nodes[i], self.ctx.settings.clear_level
        moving_cpu, moving_mem = moving
        need_cpu = _known((cpu_peak - target) * float(table.cpu_capacity[i]) - moving_cpu)
        need_mem = _known((mem_peak - target) * float(table.memory_capacity[i]) - moving_mem)
        return _Hotspot(i, node, cpu_peak, mem_peak, first, need_cpu, need_mem, moving_cpu + moving_mem > 0)

    # -- choosing and issuing ----------------------------------------------------------------------

    def _cluster_cap_reason(self) -> str:
        st, ledger = self.ctx.settings, self.ctx.ledger
        if ledger.count(Action.MIGRATE) >= st.max_migrations_cluster:
            return f"cluster at its cap of {st.max_migrations_cluster} migration(s) in flight"
        if len(self.issued_at) >= st.rate_limit:
            return f"rate limit: {st.rate_limit} migration(s) per {st.rate_window_seconds:.0f}s"
        return ""

    def _cap_reason(self, node: str) -> str:
        st, ledger = self.ctx.settings, self.ctx.ledger
        cluster = self._cluster_cap_reason()
        if cluster:
            return cluster
        if ledger.count(Action.MIGRATE, source=node) >= st.max_migrations_per_node:
            return f"node at its cap of {st.max_migrations_per_node} migration(s) in flight"
        return ""

    def _pod_exclusion(self, pod: RunningPod, now: float) -> str:
        """Why ``pod`` may not move now ("" when it may)."""
        st, ledger = self.ctx.settings, self.ctx.ledger
        if pod.is_migrating or ledger.busy(pod.key):
            return "already migrating"
        if pod.owner_kind in UNMOVABLE_KINDS:
            return f"owned by a {pod.owner_kind}: bound to its node"
        if st.require_checkpoint and not pod.checkpointed:
            return "not checkpointed (require_checkpoint)"
        left = ledger.cooling(f"migrate:{pod.workload_key}", now)
        if left > 0:
            return f"workload {pod.workload_key} cooling down for {left:.0f}s"
        if ledger.count(Action.MIGRATE, workload=pod.workload_key) >= st.max_migrations_per_workload:
            return f"workload {pod.workload_key} at its cap of {st.max_migrations_per_workload} migration(s)"
        if pod.cpu_load_cores <= 0 and pod.memory_load_bytes <= 0:
            return "no measurable load: moving it relieves nothing"
        return ""

    def _migrate_from(
        self,
        spot: _Hotspot,
        table: NodeTable,
        pods: list[RunningPod],
        placed: Sequence[PlacementCounter],
        now: float,
    ) -> tuple[PolicyDecision | None, list[Skip]]:
        cap = self._cap_reason(spot.node)
        if cap:
            return None, [Skip(Action.MIGRATE, spot.node, cap)]
        if spot.need_cpu_cores <= 0 and spot.need_memory_bytes <= 0:
            why = "relief already under way" if spot.moving else "node capacity unknown: relief cannot be sized"
            return None, [Skip(Action.MIGRATE, spot.node, why)]
        skipped: list[Skip] = []
        candidates = []
        for pod in pods:
            why = self._pod_exclusion(pod, now)
            if why:
                skipped.append(Skip(Action.MIGRATE, pod.key, why))
                continue
            candidates.append(_Candidate(pod, _coverage(pod, spot)))
        if not candidates:
            skipped.append(Skip(Action.MIGRATE, spot.node, "overload coming but no movable pod"))
            return None, skipped
        for cand in sorted(candidates, key=_Candidate.rank)[:MAX_TARGET_ATTEMPTS]:
            target, detail = self.choose_target(cand.pod, table, placed)
            if target is None:
                skipped.append(Skip(Action.MIGRATE, cand.pod.key, detail))
                continue
            return self._issue(spot, cand, target, table, now), skipped
        skipped.append(Skip(Action.MIGRATE, spot.node, "overload coming but no feasible target for any candidate"))
        return None, skipped

    def _target(self, pod: RunningPod, node: str) -> MigrationTarget:
        st = self.ctx.settings
        return MigrationTarget(pod.name, pod.namespace, pod.node, node, st.preserve_pv, st.migration_timeout_seconds)

    def _issue(
        self, spot: _Hotspot, cand: _Candidate, target: ScoreResult, table: NodeTable, now: float
    ) -> PolicyDecision:
        st, pod = self.ctx.settings, cand.pod
        step = float(table.step_seconds[spot.row])
        lead = (spot.first_step - 1) * step if spot.first_step > 0 else math.inf
        priority = (
            Priority.CRITICAL if lead < st.migration_timeout_seconds
            else Priority.HIGH if lead < 3 * st.migration_timeout_seconds
            else Priority.MEDIUM
        )  # fmt: skip
        deadline = int(max(st.migration_timeout_seconds, min(lead, 24 * 3600)))
        when = f"in {lead:.0f}s" if math.isfinite(lead) else "(holding above clear level)"
        factors = (
            _factor("cpu upper peak", spot.cpu_peak),
            _factor("memory upper peak", spot.memory_peak),
            f"threshold {st.overload_threshold:.0%} for {st.consecutive_steps} step(s) on {st.confirm_ticks} tick(s)",
            "checkpointed: resumes from checkpoint" if pod.checkpointed else "not checkpointed: restarts",
            f"completed containers {pod.completed_fraction:.0%}, priority {pod.priority}, restarts {pod.restarts}",
            "relief sufficient" if cand.sufficient else "relief partial: largest available",
            f"target {target.node}: {target.reason}",
        )
        decision = PolicyDecision(
            request_id=self.ctx.request_id(Action.MIGRATE, f"{pod.key}|{pod.node}|{target.node}", now),
            action=Action.MIGRATE,
            created_at=now,
            dry_run=st.dry_run,
            priority=priority,
            reason=f"overload predicted on {spot.node} {when}; moving {pod.key} to {target.node}",
            contributing_factors=factors,
            deadline_seconds=deadline,
            migration=self._target(pod, target.node),
        )
        move = Move(pod.node, target.node, pod.cpu_load_cores, pod.memory_load_bytes, pod.gpus)
        self.issued_at.append(now)
        return self.ctx.issue(decision, pod.key, now, pod.workload_key, move)
