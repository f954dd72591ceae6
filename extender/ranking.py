"""The extender's decisions: which candidate nodes pass, and their 0-10 scores. Pure, vectorised.

Inputs are the snapshot (APOLLO's pod-agnostic view, also held as arrays), the pod's demand, the
hot-value ledger and, when it is already cached, APOLLO's per-pod policy. A request maps its node
names to snapshot rows once and does the arithmetic in numpy, so 5,000 nodes cost about as much
as the JSON codec. Everything fails open: without usable data every node passes with a neutral
score, because an unavailable advisor must never stop scheduling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import numpy.typing as npt

from extender.podspec import PodDemand
from extender.protocol import MAX_EXTENDER_SCORE
from extender.snapshot import Snapshot

NEUTRAL_SCORE = MAX_EXTENDER_SCORE // 2
FloatArray = npt.NDArray[np.float64]


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


@dataclass(frozen=True)
class _Rows:
    """The request's nodes as snapshot rows (-1 = unknown to APOLLO) and their hot value."""

    rows: npt.NDArray[np.int64]
    known: npt.NDArray[np.bool_]
    hot_cpu: FloatArray
    hot_memory: FloatArray


_NO_HOT = (0.0, 0.0)


def _rows(snapshot: Snapshot, names: list[str], hot: Mapping[str, tuple[float, float]]) -> _Rows:
    index = snapshot.index
    rows = np.fromiter(map(index.get, names, repeat(-1)), dtype=np.int64, count=len(names))
    if hot:
        # One C-level lookup per requested name; looping over the ledger instead cost O(hot nodes).
        pairs = np.array(list(map(hot.get, names, repeat(_NO_HOT))), dtype=np.float64).reshape(len(names), 2)
        hot_cpu, hot_memory = pairs[:, 0], pairs[:, 1]
    else:
        hot_cpu = hot_memory = np.zeros(len(names))
    return _Rows(np.where(rows >= 0, rows, 0), rows >= 0, hot_cpu, hot_memory)


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
    capability (no GPU, no CSD) is unresolvable. The single node a pod is pinned to is never
    dropped for predicted load. If load alone would leave no node at all, every node passes:
    ranking them is better than leaving the pod Pending on a forecast.
    """
    if snapshot is None:
        return FilterOutcome(list(names), {}, {}, fallback_reason)
    r = _rows(snapshot, names, hot)
    cpu_left = snapshot.cpu_headroom[r.rows] - r.hot_cpu - demand.cpu_cores
    mem_left = snapshot.memory_headroom[r.rows] - r.hot_memory - demand.memory_bytes
    with np.errstate(invalid="ignore"):
        over = snapshot.overload[r.rows] | (cpu_left < 0) | (mem_left < 0)
    over &= r.known
    if demand.pinned_nodes:
        over &= np.fromiter((n not in demand.pinned_nodes for n in names), dtype=np.bool_, count=len(names))
    unresolvable: dict[str, str] = {}
    if policy is not None and policy.infeasible:
        unresolvable = {n: policy.infeasible[n] for n in names if n in policy.infeasible}
    failed: dict[str, str] = {}
    for i in np.flatnonzero(over).tolist():
        name = names[i]
        if name in unresolvable:
            continue
        row = int(r.rows[i])
        if snapshot.overload[row]:
            failed[name] = f"APOLLO predicts overload: {snapshot.reasons.get(name) or 'upper forecast over threshold'}"
        elif cpu_left[i] < 0:
            failed[name] = (
                f"predicted CPU headroom {cpu_left[i] + demand.cpu_cores:.2f} cores < request {demand.cpu_cores:.2f}"
            )
        else:
            failed[name] = (
                f"predicted memory headroom {(mem_left[i] + demand.memory_bytes) / 2**20:.0f}Mi "
                f"< request {demand.memory_bytes / 2**20:.0f}Mi"
            )
    passed = [n for n in names if n not in failed and n not in unresolvable] if failed or unresolvable else list(names)
    if not passed and failed:
        return FilterOutcome(list(failed), {}, unresolvable, "all-filtered-by-load")
    return FilterOutcome(passed, failed, unresolvable)


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
    r = _rows(snapshot, names, hot)
    base = np.where(r.known, snapshot.score[r.rows], 50.0)
    if policy is not None and policy.scores:
        override = np.fromiter((policy.scores.get(n, -1) for n in names), dtype=np.float64, count=len(names))
        base = np.where(override >= 0, override, base)
    with np.errstate(invalid="ignore", divide="ignore"):
        cpu_fit = (snapshot.cpu_headroom[r.rows] - r.hot_cpu - demand.cpu_cores) / snapshot.cpu_allocatable[r.rows]
        mem_fit = (snapshot.memory_headroom[r.rows] - r.hot_memory - demand.memory_bytes) / snapshot.memory_allocatable[
            r.rows
        ]
    fit = np.clip(np.fmin(cpu_fit, mem_fit), 0.0, 1.0)  # fmin ignores a NaN side
    score100 = np.where(r.known & np.isfinite(fit), 0.5 * base + 50.0 * fit, base)
    scores = np.clip(np.rint(score100 / 10.0), 0, MAX_EXTENDER_SCORE).astype(np.int64)
    return list(zip(names, scores.tolist(), strict=True))
