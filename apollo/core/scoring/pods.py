"""Which node suits a pod, from forecasts and insights. Pure numpy, no I/O.

Why risk-aware predicted headroom: Trimaran and Crane score on current or recent load, so a node that is
quiet now but about to run its nightly job looks best exactly when it is worst. Here a node is judged by
the upper quantile of its forecast over the pod's own horizon, plus what the pod itself will add, plus the
pods already bound to it since the last sample (the "hot value" the forecast cannot see yet).

Why a table: a tick builds one :class:`~apollo.core.scoring.table.NodeTable` (running maxima of every
node's upper forecast, capacity, insight facts as flat arrays); scoring one pod against 5,000 nodes is
then a few dozen vector operations, and the human reasons are only formatted for the nodes someone asks
about.

Fail open: stale data score every node neutral and filter none, because an advisor that is out of date
must never stop scheduling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from apollo.core.domain import (
    MAX_SCORE,
    NEUTRAL_SCORE,
    NodeInsight,
    NodeOutlook,
    PlacementCounter,
    PodDemand,
    PodSignature,
    ScoreResult,
)
from apollo.core.scoring.table import NodeTable
from apollo.core.scoring.weights import ScoringWeights
from common.settings import in_range

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# Locality term per relation to the pod's data; the primary copy wins, a cache is better than nothing.
LOCALITY_PRIMARY, LOCALITY_DATA, LOCALITY_CACHE = 1.0, 0.8, 0.6
UNKNOWN_TERM = 0.5
_ITEM_READS = 16


@dataclass(frozen=True)
class _Hot:
    cpu: FloatArray
    memory: FloatArray
    gpus: FloatArray
    pods: IntArray


def _hot_vectors(table: NodeTable, placements: Iterable[PlacementCounter]) -> _Hot:
    n = len(table)
    hot = _Hot(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64))
    for p in placements:
        i = table.index.get(p.node)
        if i is not None:
            hot.cpu[i] += p.cpu_cores
            hot.memory[i] += p.memory_bytes
            hot.gpus[i] += p.gpus
            hot.pods[i] += p.pods
    return hot


def _placements(
    placements: Mapping[str, PlacementCounter] | Iterable[PlacementCounter] | None,
) -> list[PlacementCounter]:
    if placements is None:
        return []
    if isinstance(placements, Mapping):
        return list(placements.values())
    return list(placements)


@dataclass(frozen=True)
class _Load:
    """Predicted peak of one resource with the pod, and whether it fell back to requests."""

    peak: FloatArray
    fallback: BoolArray
    infeasible: BoolArray


def _predicted_load(
    forecast_peak: FloatArray,
    capacity: FloatArray,
    requested: FloatArray,
    hot: FloatArray,
    pod_estimate: float,
    pod_request: float,
    threshold: float,
) -> _Load:
    """Forecast peak + (pod + hot) / capacity; requests-based where the forecast is missing.

    The forecast already contains the usage of pods that were running at the sample, so only the pod and
    the hot value are added. Without a forecast only requests are known: that fit fails only when the
    requests exceed the node (packing to 95% of requests is normal), not at the load threshold.
    """
    with np.errstate(invalid="ignore"):
        predicted = forecast_peak + np.nan_to_num((pod_estimate + hot) / capacity)  # capacity unknown: add 0
        by_requests = (requested + hot + pod_request) / capacity
        fallback = np.isnan(forecast_peak)
        peak = np.where(fallback, by_requests, predicted)
        infeasible = np.where(fallback, by_requests > 1.0, predicted > threshold)
    return _Load(peak, fallback, infeasible & np.isfinite(peak))


def _headroom_term(cpu: _Load, memory: _Load, threshold: float) -> FloatArray:
    """1 on an idle node, 0 at the threshold, on the scarcer resource; unknown capacity is neutral."""
    worst = np.fmax(cpu.peak, memory.peak)
    term = np.clip((threshold - worst) / threshold, 0.0, 1.0)
    return np.where(np.isnan(worst), UNKNOWN_TERM, term)


def _known_or(values: FloatArray, present: BoolArray) -> FloatArray:
    return np.where(np.isnan(values), UNKNOWN_TERM, present.astype(np.float64))


def _locality_term(table: NodeTable, signature: PodSignature) -> FloatArray:
    term = np.zeros(len(table))
    for names, value in (
        (signature.cache_nodes, LOCALITY_CACHE),
        (signature.data_nodes, LOCALITY_DATA),
        ((signature.primary_node,), LOCALITY_PRIMARY),
    ):
        rows = [table.index[n] for n in names if n in table.index]
        term[rows] = np.maximum(term[rows], value)
    return term


def _storage_term(table: NodeTable, column: int, signature: PodSignature) -> FloatArray:
    """Fast local storage with room for the recommended size, and a quiet disk over the horizon."""
    with np.errstate(invalid="ignore"):
        fast = _known_or(table.fast_free_bytes, table.fast_free_bytes >= max(signature.storage_size_bytes, 1))
    if column < 0:
        return fast
    disk = table.disk_peak_to[:, column]
    return np.where(np.isnan(disk), fast, 0.5 * (fast + np.clip(1.0 - disk, 0.0, 1.0)))


@dataclass(frozen=True)
class PodScores:
    """Scores of one pod on every node of a table; :meth:`result` formats one node's verdict."""

    pod: PodDemand
    table: NodeTable
    threshold: float
    score: IntArray
    feasible: BoolArray
    overload: BoolArray
    cpu: _Load
    memory: _Load
    terms: Mapping[str, FloatArray]
    weights: Mapping[str, float]
    penalty: FloatArray
    gpu_shortfall: BoolArray
    gpus_free: FloatArray
    hot_pods: IntArray
    # Single verdicts read so far: past _ITEM_READS the caller is formatting many nodes, and converting
    # every array to a list once is cheaper than reading element by element.
    _reads: list[int] = field(default_factory=lambda: [0], init=False, repr=False, compare=False)

    def result(self, i: int) -> ScoreResult:
        """Node ``i``'s verdict: score, reason, feasibility and the factors behind them."""
        rows = self._rows if "_rows" in self.__dict__ or self._reads[0] >= _ITEM_READS else self._items
        self._reads[0] += 1
        factors = {name: term[i] for name, term in rows.terms.items()}
        factors.update(cpu_peak=rows.cpu_peak[i], memory_peak=rows.memory_peak[i], anomaly_penalty=rows.penalty[i])
        return ScoreResult(
            node=self.table.nodes[i],
            score=rows.score[i],
            reason=self._reason(i, rows),
            feasible=rows.feasible[i],
            overload_predicted=rows.overload[i],
            factors=factors,
        )

    def results(self) -> list[ScoreResult]:
        return [self.result(i) for i in range(len(self.table))]

    def top(self, n: int) -> list[ScoreResult]:
        """The ``n`` best feasible nodes, best first (ties in table order): format only what is sent."""
        feasible = np.flatnonzero(self.feasible)
        order = feasible[np.argsort(-self.score[feasible], kind="stable")[: max(n, 0)]]
        return [self.result(int(i)) for i in order]

    def result_for(self, node: str) -> ScoreResult | None:
        i = self.table.index.get(node)
        return None if i is None else self.result(i)

    def _arrays(self, convert: Callable[[npt.NDArray[Any]], Sequence[Any]]) -> _Rows:
        return _Rows(
            score=convert(self.score),
            feasible=convert(self.feasible),
            overload=convert(self.overload),
            stale=convert(self.table.stale),
            cpu_peak=convert(self.cpu.peak),
            memory_peak=convert(self.memory.peak),
            cpu_fallback=convert(self.cpu.fallback),
            memory_fallback=convert(self.memory.fallback),
            cpu_problem=convert(self.cpu.infeasible),
            memory_problem=convert(self.memory.infeasible),
            gpu_shortfall=convert(self.gpu_shortfall),
            gpus_free=convert(self.gpus_free),
            penalty=convert(self.penalty),
            hot_pods=convert(self.hot_pods),
            terms={name: convert(term) for name, term in self.terms.items()},
        )

    @cached_property
    def _rows(self) -> _Rows:
        """The arrays as Python lists, once: formatting numpy scalars one by one costs 10x more."""
        return self._arrays(lambda a: a.tolist())

    @cached_property
    def _items(self) -> _Rows:
        """The arrays read element by element (the same Python values as ``tolist``): a migration target's
        verdict or one node asked about must not convert 10,000 nodes' arrays into lists first."""
        return self._arrays(_Items)

    def _reason(self, i: int, rows: _Rows) -> str:
        if rows.stale[i]:
            return "stale forecast: neutral score"
        problems = self._infeasible_reasons(i, rows)
        if problems:
            return "; ".join(problems)
        ranked = sorted(rows.terms, key=lambda t: -self.weights[t] * rows.terms[t][i])
        parts = [_describe(t, rows, i) for t in ranked[:3]]
        if rows.penalty[i] > 0:
            parts.append(f"anomaly -{rows.penalty[i]:.0f}")
        return f"{rows.score[i]}: " + ", ".join(parts)

    def _infeasible_reasons(self, i: int, rows: _Rows) -> list[str]:
        out = []
        for name, problem, peak, fallback in (
            ("cpu", rows.cpu_problem, rows.cpu_peak, rows.cpu_fallback),
            ("memory", rows.memory_problem, rows.memory_peak, rows.memory_fallback),
        ):
            if problem[i]:
                if fallback[i]:
                    out.append(f"no {name} forecast; requests-based fit {peak[i]:.0%} exceeds allocatable")
                else:
                    out.append(f"predicted {name} peak {peak[i]:.0%} with pod > threshold {self.threshold:.0%}")
        if rows.gpu_shortfall[i]:
            need = max(self.pod.gpus, 1)
            out.append(f"GPU workload needs {need} GPU(s), {max(rows.gpus_free[i], 0):.0f} free")
        return out


class _Items(Sequence[Any]):
    """An array's elements as Python scalars on demand (``ndarray.item``: the values ``tolist`` gives)."""

    __slots__ = ("_array",)

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self._array = array

    def __len__(self) -> int:
        return len(self._array)

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return self._array[i].tolist()
        return self._array.item(i)


@dataclass(frozen=True, slots=True)
class _Rows:
    score: Sequence[int]
    feasible: Sequence[bool]
    overload: Sequence[bool]
    stale: Sequence[bool]
    cpu_peak: Sequence[float]
    memory_peak: Sequence[float]
    cpu_fallback: Sequence[bool]
    memory_fallback: Sequence[bool]
    cpu_problem: Sequence[bool]
    memory_problem: Sequence[bool]
    gpu_shortfall: Sequence[bool]
    gpus_free: Sequence[float]
    penalty: Sequence[float]
    hot_pods: Sequence[int]
    terms: dict[str, Sequence[float]]


_LOCALITY_LABELS = {LOCALITY_PRIMARY: "primary data node", LOCALITY_DATA: "holds data", LOCALITY_CACHE: "caches data"}


def _describe(term: str, rows: _Rows, i: int) -> str:
    value = rows.terms[term][i]
    if term == "headroom":
        text = f"cpu peak {rows.cpu_peak[i]:.0%}, memory peak {rows.memory_peak[i]:.0%} with pod"
        if rows.cpu_fallback[i] or rows.memory_fallback[i]:
            text = "no forecast, requests-based: " + text
        if rows.hot_pods[i]:
            text += f" (+{rows.hot_pods[i]} just bound)"
        return text
    if term == "locality":
        return _LOCALITY_LABELS.get(value, "no data locality")
    if term == "gpu":
        return f"{rows.gpus_free[i]:.0f} GPU(s) free"
    if term == "csd":
        return {1.0: "CSD available", 0.0: "no CSD"}.get(value, "CSD unknown")
    return "fast storage" if value >= 0.5 else "no fast storage"


def _fit_terms(
    pod: PodDemand, table: NodeTable, column: int, gpus_free: FloatArray, weights: ScoringWeights
) -> tuple[dict[str, FloatArray], dict[str, float], BoolArray]:
    """Terms that apply to this pod, their weights, and the nodes lacking GPUs it needs."""
    terms: dict[str, FloatArray] = {}
    used: dict[str, float] = {}
    shortfall = np.zeros(len(table), dtype=np.bool_)
    if pod.needs_gpu:
        shortfall = gpus_free < max(pod.gpus, 1)
        busy = table.gpu_peak_to[:, column] if column >= 0 else np.full(len(table), np.nan)
        terms["gpu"] = np.where(shortfall, 0.0, np.where(np.isnan(busy), 1.0, np.clip(1.0 - busy, 0.0, 1.0)))
        used["gpu"] = weights.gpu
    sig = pod.signature
    if sig is not None and sig.wants_csd:
        terms["csd"] = _known_or(table.csd_free, np.nan_to_num(table.csd_free) > 0)
        used["csd"] = weights.csd
    if sig is not None and sig.io_heavy:
        terms["storage"] = _storage_term(table, column, sig)
        used["storage"] = weights.storage
    if sig is not None and sig.has_locality:
        terms["locality"] = _locality_term(table, sig)
        importance = sig.locality_score if 0 < sig.locality_score <= 1 else 1.0
        used["locality"] = weights.locality * importance
    return terms, used, shortfall


def _anomaly_penalty(table: NodeTable, weights: ScoringWeights) -> FloatArray:
    severity = 0.5 + 0.5 * np.clip(table.anomaly_score / weights.anomaly_z_full, 0.0, 1.0)
    return np.where(table.anomaly, weights.anomaly_penalty * severity, 0.0)


def score_pod(
    pod: PodDemand,
    table: NodeTable,
    placements: Mapping[str, PlacementCounter] | Iterable[PlacementCounter] | None = None,
    weights: ScoringWeights | None = None,
    *,
    threshold: float,
) -> PodScores:
    """Score ``pod`` on every node of ``table``: SchedulingPolicy's per-pod view and the migration target's.

    ``threshold`` is the overload line (``policy.overload_threshold``): a predicted peak above it is infeasible.
    """
    in_range(0.0, 1.0, lo_open=True)("threshold", threshold)
    weights = weights or ScoringWeights()
    column = table.peak_column(pod.horizon_steps)
    hot = _hot_vectors(table, _placements(placements))
    n = len(table)
    nan = np.full(n, np.nan)
    cpu = _predicted_load(
        table.cpu_peak_to[:, column] if column >= 0 else nan,
        table.cpu_capacity, table.cpu_requested, hot.cpu, pod.estimated_cpu_cores, pod.cpu_cores, threshold,
    )  # fmt: skip
    memory = _predicted_load(
        table.memory_peak_to[:, column] if column >= 0 else nan,
        table.memory_capacity, table.memory_requested, hot.memory,
        pod.estimated_memory_bytes, pod.memory_bytes, threshold,
    )  # fmt: skip
    gpus_free = table.gpus_free - hot.gpus
    fit, fit_weights, shortfall = _fit_terms(pod, table, column, gpus_free, weights)
    terms = {"headroom": _headroom_term(cpu, memory, threshold), **fit}
    used = {"headroom": weights.headroom, **fit_weights}
    total = sum(used.values())
    raw = sum(used[t] * terms[t] for t in terms) / total * MAX_SCORE
    penalty = _anomaly_penalty(table, weights)
    overload = (cpu.infeasible & ~cpu.fallback) | (memory.infeasible & ~memory.fallback)
    feasible = ~(cpu.infeasible | memory.infeasible | shortfall)
    score = np.where(feasible, np.clip(np.rint(raw - penalty), 0, MAX_SCORE), 0).astype(np.int64)
    stale = table.stale
    return PodScores(
        pod=pod,
        table=table,
        threshold=threshold,
        score=np.where(stale, NEUTRAL_SCORE, score),
        feasible=feasible | stale,
        overload=overload & ~stale,
        cpu=cpu,
        memory=memory,
        terms=terms,
        weights=used,
        penalty=np.where(stale, 0.0, penalty),
        gpu_shortfall=shortfall & ~stale,
        gpus_free=gpus_free,
        hot_pods=hot.pods,
    )


def score_nodes(
    pod: PodDemand,
    outlooks: Sequence[NodeOutlook],
    insights: Mapping[str, NodeInsight] | None = None,
    placements: Mapping[str, PlacementCounter] | Iterable[PlacementCounter] | None = None,
    weights: ScoringWeights | None = None,
    *,
    threshold: float,
) -> list[ScoreResult]:
    """Convenience for a handful of nodes: build the table, score, format every node, best first."""
    scores = score_pod(pod, NodeTable.build(outlooks, insights), placements, weights, threshold=threshold)
    return sorted(scores.results(), key=lambda r: (not r.feasible, -r.score, r.node))
