"""The extender's decisions: which candidate nodes pass, and their 0-10 scores. Pure, vectorised.

Inputs are the snapshot (APOLLO's pod-agnostic view, also held as arrays), the pod's demand, the
hot-value ledger and, when it is already cached, APOLLO's per-pod policy. A request maps its node
names to snapshot rows once and does the arithmetic in numpy, so 5,000 nodes cost about as much
as the JSON codec. Everything fails open: without usable data every node passes with a neutral
score, because an unavailable advisor must never stop scheduling.

Each verb runs once per pod from kube-scheduler's single scheduling loop, between long stretches in
which kube-scheduler and the API server have the cores (and the caches): measured in a scheduling
run, the same Python costs about three times what a tight loop suggests. So the request path does as
few operations as it can, and whatever does not depend on the pod is derived once and kept in the
snapshot's memo: the columns with one extra row standing for every name APOLLO does not know (so no
per-request "known" masks), the headroom left after the hot value (per ledger change, not per
request), and the rows of recent node lists (filter's list, and the passed list prioritize gets next).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat

import numpy as np
import numpy.typing as npt

from extender.placements import HotValue
from extender.podspec import PodDemand
from extender.protocol import MAX_EXTENDER_SCORE
from extender.snapshot import Snapshot

NEUTRAL_SCORE = MAX_EXTENDER_SCORE // 2
UNKNOWN_NODE_SCORE = 50.0  # APOLLO's 0-100 scale: a node it does not know is neither preferred nor avoided
RECENT_NODE_LISTS = 4  # filter's and prioritize's lists of the last pods (kube-scheduler alternates them)
FloatArray = npt.NDArray[np.float64]
RowArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class PodPolicy:
    """APOLLO's per-pod answer (GetSchedulingPolicy): 0-100 per node, infeasible nodes with reasons."""

    scores: Mapping[str, int]
    infeasible: Mapping[str, str]


@dataclass(frozen=True)
class Rows:
    """A node list as snapshot rows; names APOLLO does not know map to the extra row `len(snapshot)`."""

    rows: RowArray
    unknown: tuple[int, ...]  # positions (in the list) of those names, usually none


@dataclass(frozen=True)
class Scores:
    """Prioritize's answer: a 0-10 score per requested node, with the snapshot rows it was computed on."""

    names: list[str]
    scores: list[int]
    snapshot: Snapshot | None = None
    rows: Rows | None = None

    def pairs(self) -> list[tuple[str, int]]:
        return list(zip(self.names, self.scores, strict=True))


@dataclass(frozen=True)
class FilterOutcome:
    passed: list[str]
    failed: dict[str, str]
    unresolvable: dict[str, str]
    fallback: str = ""


@dataclass(frozen=True)
class Columns:
    """The snapshot's columns plus one last row for unknown names: neutral score, no overload, NaN capacity.

    NaN makes every comparison false (never filtered) and every fit NaN (scored by its base alone),
    which is what an unknown node got from explicit masks before.
    """

    score: FloatArray
    overload: npt.NDArray[np.bool_]
    cpu_headroom: FloatArray
    memory_headroom: FloatArray
    cpu_allocatable: FloatArray
    memory_allocatable: FloatArray


def columns(snapshot: Snapshot) -> Columns:
    cached: Columns | None = snapshot.memo.get("columns")
    if cached is None:
        cached = snapshot.memo["columns"] = Columns(
            score=np.append(snapshot.score, UNKNOWN_NODE_SCORE),
            overload=np.append(snapshot.overload, False),
            cpu_headroom=np.append(snapshot.cpu_headroom, np.nan),
            memory_headroom=np.append(snapshot.memory_headroom, np.nan),
            cpu_allocatable=np.append(snapshot.cpu_allocatable, np.nan),
            memory_allocatable=np.append(snapshot.memory_allocatable, np.nan),
        )
    return cached


def node_rows(snapshot: Snapshot, names: list[str]) -> Rows:
    """Snapshot rows of `names`, reused while recent requests list the same nodes.

    kube-scheduler sends the same feasible set for pod after pod, and prioritize gets filter's answer:
    comparing the list with a few recent ones (C-level, about 20 us at 1,000 names, nothing when the
    lengths differ) is cheaper than looking every name up again (about 140 us). The memo holds one
    tuple, replaced atomically, so threads share it.
    """
    recent: tuple[tuple[list[str], Rows], ...] = snapshot.memo.get("rows", ())
    for listed, rows in recent:
        if listed == names:
            return rows
    unknown_row = len(snapshot)
    found = np.fromiter(map(snapshot.index.get, names, repeat(unknown_row)), dtype=np.intp, count=len(names))
    unknown = tuple(np.flatnonzero(found == unknown_row).tolist()) if unknown_row in found else ()
    rows = Rows(found, unknown)
    remember_rows(snapshot, names, rows)
    return rows


def remember_rows(snapshot: Snapshot, names: list[str], rows: Rows) -> None:
    recent: tuple[tuple[list[str], Rows], ...] = snapshot.memo.get("rows", ())
    snapshot.memo["rows"] = ((names, rows), *recent[: RECENT_NODE_LISTS - 1])


def free_by_row(snapshot: Snapshot, hot: Mapping[str, tuple[float, float]]) -> tuple[FloatArray, FloatArray]:
    """(CPU, memory) headroom per row once the hot value is taken off, kept until the ledger changes.

    The ledger publishes a new immutable mapping per binding, so its identity says when to update. A
    `HotValue` names the nodes changed since the mapping the columns were built from: the update copies
    the columns and rewrites those rows (one per binding), where a rebuild reads every node with recent
    bindings (about 9 us per 100 nodes, per binding, on the request path).
    """
    last = snapshot.memo.get("free")
    if last is not None and last[0] is hot:
        return last[1], last[2]
    cols = columns(snapshot)
    index = snapshot.index
    changed = hot.changed_since(last[0]) if last is not None and isinstance(hot, HotValue) else None
    if last is not None and changed is not None and len(changed) < len(hot):
        cpu, memory = last[1].copy(), last[2].copy()
        for name in changed:
            row = index.get(name)
            if row is not None:
                used_cpu, used_memory = hot.get(name, (0.0, 0.0))
                cpu[row] = cols.cpu_headroom[row] - used_cpu
                memory[row] = cols.memory_headroom[row] - used_memory
    elif hot:
        used = np.zeros((2, len(cols.score)))
        for name, (c, m) in hot.items():
            row = index.get(name)
            if row is not None:
                used[0, row], used[1, row] = c, m
        cpu, memory = cols.cpu_headroom - used[0], cols.memory_headroom - used[1]
    else:
        cpu, memory = cols.cpu_headroom, cols.memory_headroom
    snapshot.memo["free"] = (hot, cpu, memory)
    return cpu, memory


def overload_message(snapshot: Snapshot, name: str) -> str:
    """Why a flagged node fails, built once per node and generation (the same words for every pod)."""
    messages: dict[str, str] = snapshot.memo.setdefault("overload_messages", {})
    message = messages.get(name)
    if message is None:
        reason = snapshot.reasons.get(name) or "upper forecast over threshold"
        message = messages[name] = f"APOLLO predicts overload: {reason}"
    return message


def _failure_messages(
    snapshot: Snapshot,
    names: list[str],
    rows: RowArray,
    positions: Sequence[int],
    free: tuple[FloatArray, FloatArray],
    demand: PodDemand,
) -> dict[str, str]:
    """The reason each failing node fails, from plain Python values (numpy scalars cost more per item)."""
    failing = rows[list(positions)]
    values = (columns(snapshot).overload[failing].tolist(), free[0][failing].tolist(), free[1][failing].tolist())
    failed: dict[str, str] = {}
    for i, is_flagged, cpu, memory in zip(positions, *values, strict=True):
        name = names[i]
        if is_flagged:
            failed[name] = overload_message(snapshot, name)
        elif cpu < demand.cpu_cores:
            failed[name] = f"predicted CPU headroom {cpu:.2f} cores < request {demand.cpu_cores:.2f}"
        else:
            failed[name] = (
                f"predicted memory headroom {memory / 2**20:.0f}Mi < request {demand.memory_bytes / 2**20:.0f}Mi"
            )
    return failed


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
    listed = node_rows(snapshot, names)
    rows = listed.rows
    free = cpu_free, memory_free = free_by_row(snapshot, hot)
    over = columns(snapshot).overload[rows]
    over |= cpu_free[rows] < demand.cpu_cores  # NaN (unknown) compares false: never dropped for load
    over |= memory_free[rows] < demand.memory_bytes
    if demand.pinned_nodes:
        over &= np.fromiter((n not in demand.pinned_nodes for n in names), dtype=np.bool_, count=len(names))
    unresolvable: dict[str, str] = {}
    drop = over
    if policy is not None and policy.infeasible:
        lacking = np.fromiter((n in policy.infeasible for n in names), dtype=np.bool_, count=len(names))
        unresolvable = {names[i]: policy.infeasible[names[i]] for i in np.flatnonzero(lacking).tolist()}
        drop = over | lacking
        over = over & ~lacking  # unresolvable wins: preempting pods would not give the node what it lacks
    positions = over.nonzero()[0].tolist()
    if not positions and not unresolvable:
        return FilterOutcome(list(names), {}, {})
    failed = _failure_messages(snapshot, names, rows, positions, free, demand) if positions else {}
    keep = ~drop
    passed = list(compress(names, keep.tolist()))
    if not passed and failed:
        return FilterOutcome(list(failed), {}, unresolvable, "all-filtered-by-load")
    # kube-scheduler's prioritize call for this pod lists exactly these nodes: its rows are known now.
    kept = rows[keep]
    unknown = tuple(np.flatnonzero(kept == len(snapshot)).tolist()) if listed.unknown else ()
    remember_rows(snapshot, passed, Rows(kept, unknown))
    return FilterOutcome(passed, failed, unresolvable)


def prioritize_nodes(
    snapshot: Snapshot | None,
    demand: PodDemand,
    names: list[str],
    hot: Mapping[str, tuple[float, float]],
    policy: PodPolicy | None,
) -> Scores:
    """0-10 per node: half APOLLO's score (per-pod when available), half this pod's predicted fit.

    The fit term subtracts the hot value, so consecutive pods in a burst see each other.
    """
    if snapshot is None:
        return Scores(names, [NEUTRAL_SCORE] * len(names))
    listed = node_rows(snapshot, names)
    rows = listed.rows
    cols = columns(snapshot)
    cpu_free, memory_free = free_by_row(snapshot, hot)
    base = cols.score[rows]
    if policy is not None and policy.scores:
        override = np.fromiter((policy.scores.get(n, -1) for n in names), dtype=np.float64, count=len(names))
        base = np.where(override >= 0, override, base)
    with np.errstate(invalid="ignore", divide="ignore"):  # zero allocatable: an infinite (clipped) fit
        fit = np.fmin(  # fmin ignores a NaN side
            (cpu_free[rows] - demand.cpu_cores) / cols.cpu_allocatable[rows],
            (memory_free[rows] - demand.memory_bytes) / cols.memory_allocatable[rows],
        )
    np.maximum(fit, 0.0, out=fit)
    np.minimum(fit, 1.0, out=fit)
    score100 = np.where(np.isfinite(fit), 0.5 * base + 50.0 * fit, base)
    score10 = np.rint(score100 / 10.0)
    np.maximum(score10, 0.0, out=score10)
    np.minimum(score10, MAX_EXTENDER_SCORE, out=score10)
    return Scores(names, score10.astype(np.int64).tolist(), snapshot, listed)
