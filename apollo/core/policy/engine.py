"""Orchestration policy: migrate before overload, scale and provision advice. Pure, clock injected.

Why this shape: every decision here costs something real (a checkpoint/restore cycle, replicas, a volume),
so the policy is deliberately slow to act and quick to stop:

* A node is "overload coming" only when its upper forecast stays over the threshold for ``k`` consecutive
  horizon steps (a lone spike is what the interval already allows for) on ``confirm_ticks`` consecutive
  ticks; it is cleared only once its peak falls below ``threshold - hysteresis_margin``, so a node
  hovering at the threshold does not flap.
* The pod moved is the cheapest one that fixes the node: checkpointed first (it resumes, not restarts),
  then low priority, far along (completed containers are not re-run), few restarts; the target is the
  node with the best predicted headroom for that pod (:mod:`apollo.core.scoring.pods`).
* Caps per source node, per workload and cluster-wide, a global rate and per-workload cooldowns bound the
  blast radius of a bad forecast. Issued decisions stay "in flight" until :meth:`PolicyEngine.record_result`
  or their deadline; an unanswered decision counts as failed, so a lost report never blocks the caps.

Nothing reads the clock: every entry point takes ``now`` (seconds), which keeps decisions reproducible
in tests and in backtests that replay history. The engine is not thread-safe; one tick thread drives it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from apollo.core.domain import (
    FAST_STORAGE_CLASSES,
    SCALABLE_KINDS,
    UNMOVABLE_KINDS,
    Action,
    AutoscalingTarget,
    MigrationTarget,
    NodeInsight,
    NodeOutlook,
    PlacementCounter,
    PolicyDecision,
    PolicyOutput,
    Priority,
    ProvisioningTarget,
    RunningPod,
    Skip,
    WorkloadOutlook,
)
from apollo.core.forecasting.early_warning import overload_warning
from apollo.core.scoring.pods import BoolArray, FloatArray, NodeTable, ScoringWeights, score_pod

GiB = 2**30
MAX_TARGET_ATTEMPTS = 3  # candidate pods tried for a target per node and tick: bounds the cost of a full cluster


@dataclass(frozen=True)
class PolicySettings:
    """Every threshold and cap of the orchestration policy, with production-safe defaults.

    Overload: ``overload_threshold`` (upper-quantile utilisation fraction), ``consecutive_steps`` (k),
    ``confirm_ticks``, ``hysteresis_margin``. Migration caps: in flight per source node / per workload /
    cluster, ``rate_limit`` issued per ``rate_window_seconds``, cooldown per workload after a success and
    (shorter) after a failure. ``settle_seconds``: how long a finished move still counts as relief on its
    source and load on its target, until the forecast has seen it. ``result_grace_seconds``: added to a
    decision's deadline before an unanswered decision is written off as failed. ``decision_epoch_seconds``:
    the bucket of time within which a repeated decision gets the same request id.
    Scaling: replicas follow ``max(mean/target, upper/upper_limit)`` of requests, ignoring changes within
    ``scale_tolerance`` (as the HPA does); scale-down also waits ``scale_down_confirm_ticks``.
    """

    overload_threshold: float = 0.9
    consecutive_steps: int = 3
    confirm_ticks: int = 2
    hysteresis_margin: float = 0.05
    max_migrations_per_node: int = 1
    max_migrations_per_workload: int = 1
    max_migrations_cluster: int = 5
    rate_limit: int = 10
    rate_window_seconds: float = 600.0
    workload_cooldown_seconds: float = 600.0
    failure_cooldown_seconds: float = 300.0
    migration_timeout_seconds: int = 300
    settle_seconds: float = 300.0
    result_grace_seconds: float = 120.0
    require_checkpoint: bool = False
    preserve_pv: bool = True
    dry_run: bool = False
    decision_epoch_seconds: float = 600.0
    scale_target_utilization: float = 0.7
    scale_upper_limit: float = 1.0
    scale_tolerance: float = 0.1
    scale_max_step_up: int = 4
    scale_max_step_down: int = 1
    scale_default_max_replicas: int = 100
    scale_down_confirm_ticks: int = 3
    scale_up_cooldown_seconds: float = 180.0
    scale_down_cooldown_seconds: float = 600.0
    action_deadline_seconds: int = 300
    provision_default_size_bytes: int = 10 * GiB
    provision_default_iops: int = 3000
    provision_default_throughput_mbps: int = 125
    provision_cooldown_seconds: float = 900.0
    pvc_suffix: str = "-ckpt"

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        for name in ("consecutive_steps", "confirm_ticks", "rate_limit", "migration_timeout_seconds",
                     "scale_max_step_up", "scale_max_step_down", "scale_default_max_replicas",
                     "scale_down_confirm_ticks", "action_deadline_seconds", "provision_default_size_bytes",
                     "rate_window_seconds", "decision_epoch_seconds", "scale_upper_limit"):  # fmt: skip
            _in_range(name, getattr(self, name), 0, math.inf, low_open=True)
        for name in ("max_migrations_per_node", "max_migrations_per_workload", "max_migrations_cluster",
                     "workload_cooldown_seconds", "failure_cooldown_seconds", "settle_seconds",
                     "result_grace_seconds", "scale_up_cooldown_seconds", "scale_down_cooldown_seconds",
                     "provision_default_iops", "provision_default_throughput_mbps",
                     "provision_cooldown_seconds"):  # fmt: skip
            _in_range(name, getattr(self, name), 0, math.inf)
        _in_range("overload_threshold", self.overload_threshold, 0.0, 1.0, low_open=True)
        _in_range("hysteresis_margin", self.hysteresis_margin, 0.0, self.overload_threshold, high_open=True)
        _in_range("scale_tolerance", self.scale_tolerance, 0.0, 1.0, high_open=True)
        _in_range("scale_target_utilization", self.scale_target_utilization, 0.0, self.scale_upper_limit, low_open=True)
        if not re.fullmatch(r"[-a-z0-9.]{0,40}", self.pvc_suffix):
            raise ValueError(f"PolicySettings.pvc_suffix must be lower-case DNS characters, got {self.pvc_suffix!r}")

    @property
    def clear_level(self) -> float:
        """Upper-forecast peak under which an overload warning is cleared (and moves aim for)."""
        return self.overload_threshold - self.hysteresis_margin


def _check_type(name: str, value: object, annotation: object) -> None:
    type_name = str(getattr(annotation, "__name__", annotation))
    expected = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}[type_name]
    if isinstance(value, bool) and bool not in expected:
        raise ValueError(f"PolicySettings.{name} must be {annotation}, got {value!r}")
    if not isinstance(value, expected):
        raise ValueError(f"PolicySettings.{name} must be {annotation}, got {value!r}")


def _in_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"PolicySettings.{name} must be in {lo}{low}, {high}{hi}, got {value!r}")


# ---- state ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InFlight:
    """An issued decision awaiting its result. Migrations carry the load they move (cores, bytes)."""

    request_id: str
    action: Action
    subject: str
    issued_at: float
    expires_at: float
    workload: str = ""
    source_node: str = ""
    target_node: str = ""
    cpu_cores: float = 0.0
    memory_bytes: float = 0.0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class _Move:
    source: str = ""
    target: str = ""
    cpu_cores: float = 0.0
    memory_bytes: float = 0.0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Settling:
    """A finished move the forecast has not seen yet: relief on the source, load on the target."""

    source_node: str
    target_node: str
    until: float
    cpu_cores: float
    memory_bytes: float
    gpus: int


@dataclass
class PolicyState:
    """Everything the policy remembers between ticks; plain data so a caller may persist or inspect it."""

    streak: dict[str, int] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    inflight: dict[str, InFlight] = field(default_factory=dict)
    settling: list[Settling] = field(default_factory=list)
    cooldown_until: dict[str, float] = field(default_factory=dict)
    issued_at: list[float] = field(default_factory=list)
    scale_down_streak: dict[str, int] = field(default_factory=dict)
    provisioned: set[str] = field(default_factory=set)
    last_overload_tick: float = -math.inf
    last_scaling_tick: float = -math.inf

    def inflight_count(self, action: Action, *, source: str = "", workload: str = "") -> int:
        return sum(
            1
            for e in self.inflight.values()
            if e.action == action
            and (not source or e.source_node == source)
            and (not workload or e.workload == workload)
        )

    def cooling(self, key: str, now: float) -> float:
        """Seconds of cooldown left for ``key`` (0 when none)."""
        return max(0.0, self.cooldown_until.get(key, -math.inf) - now)


def request_id(action: Action, content: str, now: float, epoch_seconds: float) -> str:
    """Same action + content within one epoch -> same id, so the orchestrator can drop repeats."""
    epoch = int(now // epoch_seconds)
    digest = hashlib.sha256(f"{action.name}|{content}|{epoch}".encode()).hexdigest()
    return f"{action.name.lower().replace('_', '-')}-{digest[:24]}"


def pvc_name_for(pod: RunningPod, suffix: str = "-ckpt") -> str:
    """``<workload-or-pod><suffix>`` as a valid DNS-1123 name: the claim must outlive any one pod.

    A Deployment's pods get random names, so their claim is named after the workload; a StatefulSet's
    pods keep their names across restarts (``web-0``), so each gets its own claim, as its volume
    claim templates would; a bare pod is its own workload.
    """
    stable = pod.owner_kind == "StatefulSet" or not pod.owner_name
    base = re.sub(r"[^a-z0-9-]+", "-", (pod.name if stable else pod.owner_name).lower()).strip("-") or "pod"
    return base[: 253 - len(suffix)].rstrip("-") + suffix


# ---- migration helpers --------------------------------------------------------------------------------


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
        return float(np.fmax(np.nan_to_num(self.cpu_peak), np.nan_to_num(self.memory_peak)))


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


def _pod_exclusion(pod: RunningPod, state: PolicyState, settings: PolicySettings, now: float) -> str:
    """Why ``pod`` may not move now ("" when it may)."""
    if pod.is_migrating or any(e.subject == pod.key for e in state.inflight.values()):
        return "already migrating"
    if pod.owner_kind in UNMOVABLE_KINDS:
        return f"owned by a {pod.owner_kind}: bound to its node"
    if settings.require_checkpoint and not pod.checkpointed:
        return "not checkpointed (require_checkpoint)"
    left = state.cooling(f"migrate:{pod.workload_key}", now)
    if left > 0:
        return f"workload {pod.workload_key} cooling down for {left:.0f}s"
    if state.inflight_count(Action.MIGRATE, workload=pod.workload_key) >= settings.max_migrations_per_workload:
        return f"workload {pod.workload_key} at its cap of {settings.max_migrations_per_workload} migration(s)"
    if pod.cpu_load_cores <= 0 and pod.memory_load_bytes <= 0:
        return "no measurable load: moving it relieves nothing"
    return ""


def _factor(label: str, value: float) -> str:
    return f"{label} {value:.0%}" if math.isfinite(value) else f"{label} unknown"


# ---- the engine ---------------------------------------------------------------------------------------


class PolicyEngine:
    """Holds :class:`PolicyState` across ticks; every method is deterministic in its arguments."""

    def __init__(
        self,
        settings: PolicySettings | None = None,
        weights: ScoringWeights | None = None,
        state: PolicyState | None = None,
    ) -> None:
        self.settings = settings or PolicySettings()
        self.weights = weights or ScoringWeights()
        self.state = state or PolicyState()

    # -- public ------------------------------------------------------------------------------------

    def evaluate(
        self,
        now: float,
        outlooks: Sequence[NodeOutlook] | NodeTable,
        pods: Sequence[RunningPod] = (),
        insights: Mapping[str, NodeInsight] | None = None,
        placements: Iterable[PlacementCounter] = (),
        workloads: Sequence[WorkloadOutlook] = (),
    ) -> PolicyOutput:
        """One tick of every policy: migrations, then scaling, then provisioning advice."""
        return (
            self.plan_migrations(now, outlooks, pods, insights, placements)
            + self.plan_scaling(now, workloads)
            + self.plan_provisioning(now, pods, insights)
        )

    def record_result(self, request_id: str, success: bool, now: float) -> bool:
        """Feedback from the executor: frees the in-flight slot, starts cooldowns. False if unknown id."""
        entry = self.state.inflight.pop(request_id, None)
        if entry is None:
            return False
        self._finish(entry, success, now)
        return True

    def plan_migrations(
        self,
        now: float,
        outlooks: Sequence[NodeOutlook] | NodeTable,
        pods: Sequence[RunningPod],
        insights: Mapping[str, NodeInsight] | None = None,
        placements: Iterable[PlacementCounter] = (),
    ) -> PolicyOutput:
        """Advance the overload hysteresis (once per ``now``) and move one pod off each confirmed node.

        Pass the tick's :class:`NodeTable` (built with insights) to share it with scoring; ``insights``
        is only used when outlooks are given.
        """
        skipped = self._expire(now)
        table = outlooks if isinstance(outlooks, NodeTable) else NodeTable.build(outlooks, insights)
        if len(table) and bool(table.stale.all()):
            return PolicyOutput((), (*skipped, Skip(Action.MIGRATE, "*", "stale forecast: no migrations")))
        hotspots = self._confirmed_hotspots(table, now)
        by_node: dict[str, list[RunningPod]] = {}
        for pod in pods:
            by_node.setdefault(pod.node, []).append(pod)
        placed = list(placements)
        decisions: list[PolicyDecision] = []
        for spot in sorted(hotspots, key=lambda s: (-s.severity, s.node)):
            decision, why = self._migrate_from(spot, table, by_node.get(spot.node, []), placed, now)
            skipped.extend(why)
            if decision is not None:
                decisions.append(decision)
        return PolicyOutput(tuple(decisions), tuple(skipped))

    def plan_scaling(self, now: float, workloads: Sequence[WorkloadOutlook]) -> PolicyOutput:
        """Replica advice for Deployments/StatefulSets from their pods' forecast usage vs requests."""
        skipped = self._expire(now)
        advance = now > self.state.last_scaling_tick
        self.state.last_scaling_tick = max(now, self.state.last_scaling_tick)
        present = {w.key for w in workloads}
        self.state.scale_down_streak = {k: v for k, v in self.state.scale_down_streak.items() if k in present}
        decisions: list[PolicyDecision] = []
        for workload in workloads:
            outcome = self._scale(workload, now, advance)
            if isinstance(outcome, PolicyDecision):
                decisions.append(outcome)
            elif outcome is not None:
                skipped.append(outcome)
        return PolicyOutput(tuple(decisions), tuple(skipped))

    def plan_provisioning(
        self, now: float, pods: Sequence[RunningPod], insights: Mapping[str, NodeInsight] | None = None
    ) -> PolicyOutput:
        """Checkpoint/data PVC advice for I/O-heavy pods lacking fast storage; one per claim, ever."""
        skipped = self._expire(now)
        decisions: list[PolicyDecision] = []
        seen: set[str] = set()
        for pod in sorted(pods, key=lambda p: p.key):
            decision, why = self._provision(pod, (insights or {}).get(pod.node), now, seen)
            if decision is not None:
                decisions.append(decision)
            elif why:
                skipped.append(Skip(Action.PROVISION, pod.key, why))
        return PolicyOutput(tuple(decisions), tuple(skipped))

    # -- bookkeeping -------------------------------------------------------------------------------

    def _expire(self, now: float) -> list[Skip]:
        """Write off unanswered decisions as failed and forget settled moves and old rate entries."""
        s = self.state
        out = []
        for rid, entry in list(s.inflight.items()):
            if entry.expires_at <= now:
                del s.inflight[rid]
                self._finish(entry, False, now)
                out.append(
                    Skip(entry.action, entry.subject, f"{rid}: no result before its deadline; counted as failed")
                )
        s.settling = [x for x in s.settling if x.until > now]
        s.issued_at = [t for t in s.issued_at if t > now - self.settings.rate_window_seconds]
        return out

    def _finish(self, entry: InFlight, success: bool, now: float) -> None:
        st, s = self.settings, self.state
        if entry.action == Action.MIGRATE:
            wait = st.workload_cooldown_seconds if success else st.failure_cooldown_seconds
            s.cooldown_until[f"migrate:{entry.workload}"] = now + wait
            if success:
                s.settling.append(
                    Settling(entry.source_node, entry.target_node, now + st.settle_seconds,
                             entry.cpu_cores, entry.memory_bytes, entry.gpus)
                )  # fmt: skip
        elif entry.action in (Action.SCALE_UP, Action.SCALE_DOWN):
            up = entry.action == Action.SCALE_UP
            wait = (
                (st.scale_up_cooldown_seconds if up else st.scale_down_cooldown_seconds)
                if success
                else st.failure_cooldown_seconds
            )
            s.cooldown_until[f"scale:{entry.subject}"] = now + wait
        elif success:
            s.provisioned.add(entry.subject)
        else:
            s.cooldown_until[f"provision:{entry.subject}"] = now + st.provision_cooldown_seconds

    def _track(
        self, decision: PolicyDecision, subject: str, now: float, workload: str, move: _Move | None = None
    ) -> None:
        """Remember an issued decision until its result, or its deadline plus grace, whichever first."""
        expires = now + decision.deadline_seconds + self.settings.result_grace_seconds
        m = move or _Move()
        self.state.inflight[decision.request_id] = InFlight(
            decision.request_id, decision.action, subject, now, expires, workload,
            m.source, m.target, m.cpu_cores, m.memory_bytes, m.gpus,
        )  # fmt: skip

    def _rid(self, action: Action, content: str, now: float) -> str:
        return request_id(action, content, now, self.settings.decision_epoch_seconds)

    # -- overload hysteresis -----------------------------------------------------------------------

    def _confirmed_hotspots(self, table: NodeTable, now: float) -> list[_Hotspot]:
        st, s = self.settings, self.state
        h = table.horizon
        if h == 0:
            return []
        k = min(st.consecutive_steps, h)
        cpu_w = overload_warning(table.cpu_upper, st.overload_threshold, k)
        mem_w = overload_warning(table.memory_upper, st.overload_threshold, k)
        warn = cpu_w.flags | mem_w.flags
        first = np.where(cpu_w.flags & mem_w.flags, np.minimum(cpu_w.first_step, mem_w.first_step),
                         np.maximum(cpu_w.first_step, mem_w.first_step))  # fmt: skip
        cpu_peak, mem_peak = table.cpu_peak_to[:, -1], table.memory_peak_to[:, -1]
        peak = np.fmax(cpu_peak, mem_peak)
        if now > s.last_overload_tick:
            self._advance_streaks(table, warn, peak)
            s.last_overload_tick = now
        spots = []
        for node in s.confirmed:
            i = table.index.get(node)
            if i is None or table.stale[i]:
                continue
            spots.append(self._hotspot(table, i, float(cpu_peak[i]), float(mem_peak[i]), int(first[i])))
        return spots

    def _advance_streaks(self, table: NodeTable, warn: BoolArray, peak: FloatArray) -> None:
        st, s = self.settings, self.state
        s.confirmed &= set(table.nodes)
        s.streak = {n: c for n, c in s.streak.items() if n in table.index}
        for i, node in enumerate(table.nodes):
            if table.stale[i]:
                continue  # old data are no evidence either way
            s.streak[node] = min(s.streak.get(node, 0) + 1, st.confirm_ticks) if warn[i] else 0
            if s.streak[node] >= st.confirm_ticks:
                s.confirmed.add(node)
            elif not peak[i] >= st.clear_level:  # NaN (no forecast) clears as well
                s.confirmed.discard(node)
            if not s.streak[node]:
                del s.streak[node]

    def _hotspot(self, table: NodeTable, i: int, cpu_peak: float, mem_peak: float, first: int) -> _Hotspot:
        """Load that must leave node ``i`` to bring it under the clear level, minus relief already under way."""
        node, target = table.nodes[i], self.settings.clear_level
        moving_cpu = moving_mem = 0.0
        for e in self.state.inflight.values():
            if e.action == Action.MIGRATE and e.source_node == node:
                moving_cpu, moving_mem = moving_cpu + e.cpu_cores, moving_mem + e.memory_bytes
        for x in self.state.settling:
            if x.source_node == node:
                moving_cpu, moving_mem = moving_cpu + x.cpu_cores, moving_mem + x.memory_bytes
        need_cpu = float(np.nan_to_num((cpu_peak - target) * table.cpu_capacity[i] - moving_cpu))
        need_mem = float(np.nan_to_num((mem_peak - target) * table.memory_capacity[i] - moving_mem))
        return _Hotspot(i, node, cpu_peak, mem_peak, first, need_cpu, need_mem, moving_cpu + moving_mem > 0)

    # -- migration ---------------------------------------------------------------------------------

    def _cap_reason(self, node: str) -> str:
        st, s = self.settings, self.state
        if s.inflight_count(Action.MIGRATE) >= st.max_migrations_cluster:
            return f"cluster at its cap of {st.max_migrations_cluster} migration(s) in flight"
        if len(s.issued_at) >= st.rate_limit:
            return f"rate limit: {st.rate_limit} migration(s) per {st.rate_window_seconds:.0f}s"
        if s.inflight_count(Action.MIGRATE, source=node) >= st.max_migrations_per_node:
            return f"node at its cap of {st.max_migrations_per_node} migration(s) in flight"
        return ""

    def _migrate_from(
        self, spot: _Hotspot, table: NodeTable, pods: list[RunningPod], placed: list[PlacementCounter], now: float
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
            why = _pod_exclusion(pod, self.state, self.settings, now)
            if why:
                skipped.append(Skip(Action.MIGRATE, pod.key, why))
                continue
            candidates.append(_Candidate(pod, _coverage(pod, spot)))
        if not candidates:
            skipped.append(Skip(Action.MIGRATE, spot.node, "overload coming but no movable pod"))
            return None, skipped
        pending = placed + self._pending_placements()
        for cand in sorted(candidates, key=_Candidate.rank)[:MAX_TARGET_ATTEMPTS]:
            target, detail = self._target_for(cand.pod, table, pending)
            if target is None:
                skipped.append(Skip(Action.MIGRATE, cand.pod.key, detail))
                continue
            return self._issue_migration(spot, cand, target, detail, table, now), skipped
        skipped.append(Skip(Action.MIGRATE, spot.node, "overload coming but no feasible target for any candidate"))
        return None, skipped

    def _pending_placements(self) -> list[PlacementCounter]:
        """Moves in flight or settling, as load on their targets the forecast cannot see yet."""
        out = [
            PlacementCounter(e.target_node, 1, e.cpu_cores, e.memory_bytes, e.gpus)
            for e in self.state.inflight.values()
            if e.action == Action.MIGRATE and e.target_node
        ]
        out += [PlacementCounter(x.target_node, 1, x.cpu_cores, x.memory_bytes, x.gpus) for x in self.state.settling]
        return out

    def _target_for(self, pod: RunningPod, table: NodeTable, pending: list[PlacementCounter]) -> tuple[str | None, str]:
        """Best feasible node by predicted headroom, never the source, a stale or an overloading node."""
        scores = score_pod(pod.as_demand(), table, pending, self.weights, self.settings.overload_threshold)
        excluded = np.zeros(len(table), dtype=np.bool_)
        rows = [table.index[n] for n in (pod.node, *self.state.confirmed) if n in table.index]
        excluded[rows] = True
        ok = scores.feasible & ~table.stale & ~excluded
        if not ok.any():
            return None, f"no feasible target among {len(table) - 1} other node(s)"
        best = int(np.argmax(np.where(ok, scores.score, -1)))
        return table.nodes[best], scores.result(best).reason

    def _issue_migration(
        self, spot: _Hotspot, cand: _Candidate, target: str, target_reason: str, table: NodeTable, now: float
    ) -> PolicyDecision:
        st, pod = self.settings, cand.pod
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
            f"target {target}: {target_reason}",
        )
        decision = PolicyDecision(
            request_id=self._rid(Action.MIGRATE, f"{pod.key}|{pod.node}|{target}", now),
            action=Action.MIGRATE,
            created_at=now,
            dry_run=st.dry_run,
            priority=priority,
            reason=f"overload predicted on {spot.node} {when}; moving {pod.key} to {target}",
            contributing_factors=factors,
            deadline_seconds=deadline,
            migration=MigrationTarget(
                pod.name, pod.namespace, pod.node, target, st.preserve_pv, st.migration_timeout_seconds
            ),
        )
        move = _Move(pod.node, target, pod.cpu_load_cores, pod.memory_load_bytes, pod.gpus)
        self._track(decision, pod.key, now, pod.workload_key, move)
        self.state.issued_at.append(now)
        return decision

    # -- scaling -----------------------------------------------------------------------------------

    def _scale(self, w: WorkloadOutlook, now: float, advance: bool) -> PolicyDecision | Skip | None:
        """A decision, a reason not to act (filed under the direction considered), or None: nothing to do."""
        st, s = self.settings, self.state
        why = self._scale_exclusion(w, now)
        if why:
            return Skip(Action.SCALE_UP, w.key, why)
        need = _scale_need(w, st)
        if need is None:
            return Skip(Action.SCALE_UP, w.key, "no usable forecast or requests")
        direction = Action.SCALE_UP if need.ratio > 1.0 else Action.SCALE_DOWN
        desired = self._bounded_replicas(w, need.ratio)
        if abs(need.ratio - 1.0) <= st.scale_tolerance or desired == w.replicas:
            s.scale_down_streak.pop(w.key, None)
            bound = desired == w.replicas and abs(need.ratio - 1.0) > st.scale_tolerance
            return Skip(direction, w.key, f"at its replica bound: {need.detail}") if bound else None
        if desired < w.replicas:
            streak = s.scale_down_streak.get(w.key, 0) + (1 if advance else 0)
            s.scale_down_streak[w.key] = streak
            if streak < st.scale_down_confirm_ticks:
                left = st.scale_down_confirm_ticks - streak
                return Skip(direction, w.key, f"scale-down to {desired} waits {left} more tick(s)")
        s.scale_down_streak.pop(w.key, None)
        return self._issue_scale(w, desired, need, now)

    def _scale_exclusion(self, w: WorkloadOutlook, now: float) -> str:
        if w.kind not in SCALABLE_KINDS:
            return f"{w.kind} is not scalable by replicas"
        if w.has_autoscaler:
            return "an autoscaler owns the replica count"
        if w.replicas == 0:
            return "scaled to zero: no usage to extrapolate"
        if any(e.subject == w.key for e in self.state.inflight.values()):
            return "scaling already in flight"
        left = self.state.cooling(f"scale:{w.key}", now)
        return f"cooling down for {left:.0f}s" if left > 0 else ""

    def _bounded_replicas(self, w: WorkloadOutlook, ratio: float) -> int:
        st = self.settings
        desired = math.ceil(w.replicas * ratio - 1e-9)
        desired = min(desired, w.replicas + st.scale_max_step_up)
        desired = max(desired, w.replicas - st.scale_max_step_down)
        high = w.max_replicas or st.scale_default_max_replicas
        low = min(max(w.min_replicas, 1), high)
        return min(max(desired, low), high)

    def _issue_scale(self, w: WorkloadOutlook, desired: int, need: _ScaleNeed, now: float) -> PolicyDecision:
        st = self.settings
        up = desired > w.replicas
        action = Action.SCALE_UP if up else Action.SCALE_DOWN
        priority = (Priority.HIGH if need.upper_over else Priority.MEDIUM) if up else Priority.LOW
        detail = need.detail
        reason = f"{'scale up' if up else 'scale down'} {w.key} {w.replicas} -> {desired}: {detail}"
        decision = PolicyDecision(
            request_id=self._rid(action, f"{w.key}|{w.replicas}|{desired}", now),
            action=action,
            created_at=now,
            dry_run=st.dry_run,
            priority=priority,
            reason=reason,
            contributing_factors=(detail, f"target utilisation {st.scale_target_utilization:.0%} of requests"),
            deadline_seconds=st.action_deadline_seconds,
            autoscaling=AutoscalingTarget(w.name, w.namespace, w.kind, w.replicas, desired, reason),
        )
        self._track(decision, w.key, now, w.key)
        return decision

    # -- provisioning ------------------------------------------------------------------------------

    def _provision(
        self, pod: RunningPod, insight: NodeInsight | None, now: float, seen: set[str]
    ) -> tuple[PolicyDecision | None, str]:
        st, sig = self.settings, pod.signature
        if sig is None or not sig.io_heavy:
            return None, ""
        lacks_fast = insight is not None and not insight.has_fast_storage
        if not (lacks_fast or sig.storage_class in FAST_STORAGE_CLASSES):
            return None, ""
        pvc = sig.storage_pvc_name or pvc_name_for(pod, st.pvc_suffix)
        key = f"{pod.namespace}/{pvc}"
        why = self._provision_exclusion(pod, pvc, key, now, seen)
        seen.add(key)
        if why:
            return None, why
        tier = sig.storage_class if sig.storage_class in FAST_STORAGE_CLASSES else "STORAGE_CLASS_FAST"
        target = ProvisioningTarget(
            pvc, pod.namespace, tier,
            sig.storage_size_bytes or st.provision_default_size_bytes,
            sig.storage_iops or st.provision_default_iops,
            sig.storage_throughput_mbps or st.provision_default_throughput_mbps,
        )  # fmt: skip
        cause = (
            f"node {pod.node} has no free fast storage" if lacks_fast else f"signature recommends {sig.storage_class}"
        )
        decision = PolicyDecision(
            request_id=self._rid(Action.PROVISION, f"{key}|{tier}|{target.size_bytes}", now),
            action=Action.PROVISION,
            created_at=now,
            dry_run=st.dry_run,
            priority=Priority.MEDIUM,
            reason=f"provision {key} ({tier}) for {pod.key}: {sig.io_pattern}, {cause}",
            contributing_factors=(sig.io_pattern, cause),
            deadline_seconds=st.action_deadline_seconds,
            provisioning=target,
        )
        self._track(decision, key, now, pod.workload_key)
        return decision, ""

    def _provision_exclusion(self, pod: RunningPod, pvc: str, key: str, now: float, seen: set[str]) -> str:
        s = self.state
        if pvc in pod.pvc_names or key in s.provisioned:
            return f"{key} already exists"
        if key in seen or any(e.subject == key for e in s.inflight.values()):
            return f"{key} already requested"
        left = s.cooling(f"provision:{key}", now)
        return f"{key} cooling down for {left:.0f}s after a failure" if left > 0 else ""


@dataclass(frozen=True, slots=True)
class _ScaleNeed:
    ratio: float
    upper_over: bool
    detail: str


def _scale_need(w: WorkloadOutlook, st: PolicySettings) -> _ScaleNeed | None:
    """Replica multiplier: mean usage should sit at the target, the upper quantile within the limit."""
    ratios: list[float] = []
    parts: list[str] = []
    upper_over = False
    for name, mean, upper, request in (
        ("cpu", w.cpu_mean, w.cpu_upper, w.cpu_request_cores),
        ("memory", w.memory_mean, w.memory_upper, w.memory_request_bytes),
    ):
        total = request * w.replicas
        if total <= 0 or not (np.isfinite(mean).any() and np.isfinite(upper).any()):
            continue
        mean_u = float(np.fmax.reduce(mean)) / total
        upper_u = float(np.fmax.reduce(upper)) / total
        ratios.append(max(mean_u / st.scale_target_utilization, upper_u / st.scale_upper_limit))
        upper_over = upper_over or upper_u > st.scale_upper_limit
        parts.append(f"{name} mean {mean_u:.0%}, upper {upper_u:.0%} of requests")
    if not ratios:
        return None
    return _ScaleNeed(max(ratios), upper_over, "; ".join(parts))
