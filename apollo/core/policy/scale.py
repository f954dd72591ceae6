"""Replica advice for Deployments and StatefulSets from their pods' forecast use against their requests.

Replicas follow ``max(mean / target, upper / upper_limit)`` of the requests: the mean should sit at the
target utilisation and the upper quantile within the limit. Changes within ``scale_tolerance`` are ignored
(as the HPA does), steps are bounded, a scale-down must persist for ``scale_down_confirm_ticks``, and a
workload an autoscaler owns is left to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from apollo.core.decisions import Action, AutoscalingTarget, PolicyDecision, PolicyOutput, Priority, Skip
from apollo.core.domain import SCALABLE_KINDS, WorkloadOutlook
from apollo.core.policy.ledger import InFlight
from apollo.core.policy.planner import PolicyContext, PolicyInput
from apollo.core.policy.settings import PolicySettings


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


class ScalePlanner:
    """SCALE_UP / SCALE_DOWN advice; keeps the scale-down confirmation streaks."""

    actions = frozenset({Action.SCALE_UP, Action.SCALE_DOWN})

    def __init__(self, ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.down_streak: dict[str, int] = {}
        self.last_tick = -math.inf

    def plan(self, tick: PolicyInput) -> PolicyOutput:
        now = tick.now
        advance = now > self.last_tick
        self.last_tick = max(now, self.last_tick)
        present = {w.key for w in tick.workloads}
        self.down_streak = {k: v for k, v in self.down_streak.items() if k in present}
        decisions: list[PolicyDecision] = []
        skipped: list[Skip] = []
        for workload in tick.workloads:
            outcome = self._scale(workload, now, advance)
            if isinstance(outcome, PolicyDecision):
                decisions.append(outcome)
            elif outcome is not None:
                skipped.append(outcome)
        return PolicyOutput(tuple(decisions), tuple(skipped))

    def finish(self, entry: InFlight, success: bool, now: float) -> None:
        st = self.ctx.settings
        up = entry.action == Action.SCALE_UP
        wait = (
            (st.scale_up_cooldown_seconds if up else st.scale_down_cooldown_seconds)
            if success
            else (st.failure_cooldown_seconds)
        )
        self.ctx.ledger.cool(f"scale:{entry.subject}", now + wait)

    def _scale(self, w: WorkloadOutlook, now: float, advance: bool) -> PolicyDecision | Skip | None:
        """A decision, a reason not to act (filed under the direction considered), or None: nothing to do."""
        st = self.ctx.settings
        why = self._exclusion(w, now)
        if why:
            return Skip(Action.SCALE_UP, w.key, why)
        need = _scale_need(w, st)
        if need is None:
            return Skip(Action.SCALE_UP, w.key, "no usable forecast or requests")
        direction = Action.SCALE_UP if need.ratio > 1.0 else Action.SCALE_DOWN
        desired = self._bounded_replicas(w, need.ratio)
        if abs(need.ratio - 1.0) <= st.scale_tolerance or desired == w.replicas:
            self.down_streak.pop(w.key, None)
            bound = desired == w.replicas and abs(need.ratio - 1.0) > st.scale_tolerance
            return Skip(direction, w.key, f"at its replica bound: {need.detail}") if bound else None
        if desired < w.replicas:
            streak = self.down_streak.get(w.key, 0) + (1 if advance else 0)
            self.down_streak[w.key] = streak
            if streak < st.scale_down_confirm_ticks:
                left = st.scale_down_confirm_ticks - streak
                return Skip(direction, w.key, f"scale-down to {desired} waits {left} more tick(s)")
        self.down_streak.pop(w.key, None)
        return self._issue(w, desired, need, now)

    def _exclusion(self, w: WorkloadOutlook, now: float) -> str:
        if w.kind not in SCALABLE_KINDS:
            return f"{w.kind} is not scalable by replicas"
        if w.has_autoscaler:
            return "an autoscaler owns the replica count"
        if w.replicas == 0:
            return "scaled to zero: no usage to extrapolate"
        if self.ctx.ledger.busy(w.key):
            return "scaling already in flight"
        left = self.ctx.ledger.cooling(f"scale:{w.key}", now)
        return f"cooling down for {left:.0f}s" if left > 0 else ""

    def _bounded_replicas(self, w: WorkloadOutlook, ratio: float) -> int:
        st = self.ctx.settings
        desired = math.ceil(w.replicas * ratio - 1e-9)
        desired = min(desired, w.replicas + st.scale_max_step_up)
        desired = max(desired, w.replicas - st.scale_max_step_down)
        high = w.max_replicas or st.scale_default_max_replicas
        low = min(max(w.min_replicas, 1), high)
        return min(max(desired, low), high)

    def _issue(self, w: WorkloadOutlook, desired: int, need: _ScaleNeed, now: float) -> PolicyDecision:
        st = self.ctx.settings
        up = desired > w.replicas
        action = Action.SCALE_UP if up else Action.SCALE_DOWN
        priority = (Priority.HIGH if need.upper_over else Priority.MEDIUM) if up else Priority.LOW
        reason = f"{'scale up' if up else 'scale down'} {w.key} {w.replicas} -> {desired}: {need.detail}"
        decision = PolicyDecision(
            request_id=self.ctx.request_id(action, f"{w.key}|{w.replicas}|{desired}", now),
            action=action,
            created_at=now,
            dry_run=st.dry_run,
            priority=priority,
            reason=reason,
            contributing_factors=(need.detail, f"target utilisation {st.scale_target_utilization:.0%} of requests"),
            deadline_seconds=st.action_deadline_seconds,
            autoscaling=AutoscalingTarget(w.name, w.namespace, w.kind, w.replicas, desired, reason),
        )
        return self.ctx.issue(decision, w.key, now, w.key)
