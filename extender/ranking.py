"""The extender's decisions: which candidate nodes pass, and their 0-10 scores. Pure functions.

Inputs are the snapshot (APOLLO's pod-agnostic view), the pod's demand, the hot-value ledger and,
when it arrived within budget, APOLLO's per-pod policy. Everything fails open: without usable data
every node passes with a neutral score, because an unavailable advisor must never stop scheduling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from extender.podspec import PodDemand
from extender.protocol import MAX_EXTENDER_SCORE
from extender.snapshot import Snapshot

NEUTRAL_SCORE = MAX_EXTENDER_SCORE // 2


@dataclass(frozen=True)
class PodPolicy:
    """APOLLO's per-pod answer (GetSchedulingPolicy): 0-100 per node, infeasible nodes with reasons."""

    scores: Mapping[str, int]
    infeasible: Mapping[str, str]


@dataclass(frozen=True)
class FilterOutcome:
    passed: list[str]
    failed: dict[str, str]
    unresolvable: dict[str, str]
    fallback: str = ""


def _headroom_after(
    entry_cpu: float, entry_mem: float, used: tuple[float, float], demand: PodDemand
) -> tuple[float, float]:
    return entry_cpu - used[0] - demand.cpu_cores, entry_mem - used[1] - demand.memory_bytes


def filter_nodes(
    snapshot: Snapshot | None,
    fallback_reason: str,
    demand: PodDemand,
    names: list[str],
    hot: Mapping[str, tuple[float, float]],
    policy: PodPolicy | None,
) -> FilterOutcome:
    """Drop nodes predicted to overload with this pod, and nodes lacking what the pod needs.

    Predicted load is a resolvable failure (preempting pods there would relieve it); a missing
    capability (no GPU, no CSD) is unresolvable. A node the pod's required affinity names is never
    dropped for predicted load. If load alone would leave no node at all, every node passes:
    ranking them is better than leaving the pod Pending on a forecast.
    """
    if snapshot is None:
        return FilterOutcome(list(names), {}, {}, fallback_reason)
    passed: list[str] = []
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    zero = (0.0, 0.0)
    for name in names:
        if policy is not None and name in policy.infeasible:
            unresolvable[name] = policy.infeasible[name]
            continue
        entry = snapshot.nodes.get(name)
        if entry is None or name in demand.pinned_nodes:
            passed.append(name)
            continue
        if entry.overload:
            failed[name] = f"APOLLO predicts overload: {entry.reason}"
            continue
        cpu_left, mem_left = _headroom_after(
            entry.cpu_headroom_cores, entry.memory_headroom_bytes, hot.get(name, zero), demand
        )
        if cpu_left < 0:
            failed[name] = (
                f"predicted CPU headroom {cpu_left + demand.cpu_cores:.2f} cores < request {demand.cpu_cores:.2f}"
            )
        elif mem_left < 0:
            failed[name] = (
                f"predicted memory headroom {(mem_left + demand.memory_bytes) / 2**20:.0f}Mi "
                f"< request {demand.memory_bytes / 2**20:.0f}Mi"
            )
        else:
            passed.append(name)
    if not passed and failed:
        return FilterOutcome(list(failed), {}, unresolvable, "all-filtered-by-load")
    return FilterOutcome(passed, failed, unresolvable)


def _fit(entry_headroom: float, allocatable: float, used: float, request: float) -> float:
    if not (math.isfinite(entry_headroom) and math.isfinite(allocatable)) or allocatable <= 0:
        return math.nan
    return max(0.0, min(1.0, (entry_headroom - used - request) / allocatable))


def prioritize_nodes(
    snapshot: Snapshot | None,
    demand: PodDemand,
    names: list[str],
    hot: Mapping[str, tuple[float, float]],
    policy: PodPolicy | None,
) -> list[tuple[str, int]]:
    """0-10 per node: half APOLLO's score (per-pod when available), half this pod's predicted fit.

    The fit term subtracts the hot value, so consecutive pods in a burst see each other.
    """
    if snapshot is None:
        return [(name, NEUTRAL_SCORE) for name in names]
    out: list[tuple[str, int]] = []
    zero = (0.0, 0.0)
    for name in names:
        entry = snapshot.nodes.get(name)
        base = policy.scores.get(name) if policy is not None else None
        if entry is None:
            score100 = float(base) if base is not None else 50.0
        else:
            base_score = float(base if base is not None else entry.score)
            used = hot.get(name, zero)
            fits = [
                f
                for f in (
                    _fit(entry.cpu_headroom_cores, entry.cpu_allocatable_cores, used[0], demand.cpu_cores),
                    _fit(
                        entry.memory_headroom_bytes,
                        entry.memory_allocatable_bytes,
                        used[1],
                        demand.memory_bytes,
                    ),
                )
                if not math.isnan(f)
            ]
            score100 = 0.5 * base_score + 50.0 * min(fits) if fits else base_score
        out.append((name, max(0, min(MAX_EXTENDER_SCORE, round(score100 / 10)))))
    return out
