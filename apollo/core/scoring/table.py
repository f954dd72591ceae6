"""Every node's forecast and facts as flat arrays, built once per tick: what per-pod scoring and the policy read.

Why a table: scoring one pod against 5,000 nodes must be a few dozen vector operations, not a Python loop
over nodes; the running maxima of each node's upper forecast make "the peak over the pod's horizon" one
column read. Unknowns are NaN, never zero, so a missing figure cannot pass for an idle node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from apollo.core.domain import NodeInsight, NodeOutlook

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _series_matrix(outlooks: Sequence[NodeOutlook], resource: str, horizon: int, which: str = "upper") -> FloatArray:
    """Rows padded with NaN to ``horizon``; full-length rows are stacked in one copy (the common case)."""
    out = np.full((len(outlooks), horizon), np.nan)
    rows: list[int] = []
    full: list[FloatArray] = []
    for i, o in enumerate(outlooks):
        series = getattr(o, which).get(resource)
        if series is None or not series.size:
            continue
        if series.size >= horizon:
            rows.append(i)
            full.append(series if series.size == horizon else series[:horizon])
        else:
            out[i, : series.size] = series
    if rows:
        out[rows] = np.stack(full)
    return out


def _running_max(upper: FloatArray) -> FloatArray:
    """Peak up to each step, ignoring NaN steps (NaN only while nothing is known yet)."""
    if upper.shape[1] == 0:
        return upper.copy()
    result: FloatArray = np.fmax.accumulate(upper, axis=1)
    return result


def _positive_or_nan(values: FloatArray) -> FloatArray:
    return np.where(values > 0, values, np.nan)


@dataclass(frozen=True)
class NodeTable:
    """Every node's forecast and facts as flat arrays, row ``i`` = ``nodes[i]``; built once per tick.

    ``*_upper`` are the raw upper-quantile series ``[n, H]``, ``*_mean`` the mean forecasts; ``*_peak_to``
    the running maxima of the upper series, so the peak over any pod horizon is one column. ``gpus_free``
    etc. are NaN where unknown.
    """

    nodes: tuple[str, ...]
    index: Mapping[str, int]
    horizon: int
    cpu_upper: FloatArray
    memory_upper: FloatArray
    cpu_peak_to: FloatArray
    memory_peak_to: FloatArray
    disk_peak_to: FloatArray
    gpu_peak_to: FloatArray
    cpu_capacity: FloatArray
    memory_capacity: FloatArray
    cpu_requested: FloatArray
    memory_requested: FloatArray
    gpus_free: FloatArray
    csd_free: FloatArray
    fast_free_bytes: FloatArray
    anomaly: BoolArray
    anomaly_score: FloatArray
    stale: BoolArray
    step_seconds: FloatArray
    cpu_mean: FloatArray
    memory_mean: FloatArray

    @classmethod
    def build(cls, outlooks: Sequence[NodeOutlook], insights: Mapping[str, NodeInsight] | None = None) -> NodeTable:
        """From per-node outlooks (tests, on-demand callers); the engine uses :meth:`from_matrices`."""
        nodes = tuple(o.node for o in outlooks)
        horizon = max((v.size for o in outlooks for v in o.upper.values()), default=0)
        gpus_free, csd_free, fast_free = _insight_vectors(outlooks, insights or {})
        return cls.from_matrices(
            nodes,
            upper={r: _series_matrix(outlooks, r, horizon) for r in ("cpu", "memory", "disk_io", "gpu")},
            mean={r: _series_matrix(outlooks, r, horizon, "mean") for r in ("cpu", "memory")},
            cpu_capacity=np.array([o.capacity.cpu_cores for o in outlooks], dtype=np.float64),
            memory_capacity=np.array([o.capacity.memory_bytes for o in outlooks], dtype=np.float64),
            cpu_requested=np.array([o.requested_cpu_cores for o in outlooks], dtype=np.float64),
            memory_requested=np.array([o.requested_memory_bytes for o in outlooks], dtype=np.float64),
            gpus_free=gpus_free,
            csd_free=csd_free,
            fast_free_bytes=fast_free,
            anomaly=np.array([o.anomaly for o in outlooks], dtype=np.bool_),
            anomaly_score=np.array([max(o.anomaly_score, 0.0) for o in outlooks], dtype=np.float64),
            stale=np.array([o.stale for o in outlooks], dtype=np.bool_),
            step_seconds=np.array([o.step_seconds for o in outlooks], dtype=np.float64),
        )

    @classmethod
    def from_matrices(
        cls,
        nodes: tuple[str, ...],
        *,
        upper: Mapping[str, FloatArray],
        mean: Mapping[str, FloatArray],
        cpu_capacity: FloatArray,
        memory_capacity: FloatArray,
        cpu_requested: FloatArray,
        memory_requested: FloatArray,
        gpus_free: FloatArray,
        csd_free: FloatArray,
        fast_free_bytes: FloatArray,
        anomaly: BoolArray,
        anomaly_score: FloatArray,
        stale: BoolArray,
        step_seconds: FloatArray,
        index: Mapping[str, int] | None = None,
    ) -> NodeTable:
        """From per-node arrays (row i = ``nodes[i]``): what the engine builds each tick without a Python loop.

        ``upper``/``mean`` map a resource to ``[n, H]`` (NaN unknown; a resource absent = unknown
        everywhere). Capacities of 0 or less mean unknown and become NaN. ``index`` (name -> row of
        ``nodes``), when the caller already holds it, saves rebuilding a dict of every node each tick.
        """
        if index is None:
            index = {name: i for i, name in enumerate(nodes)}
        if len(index) != len(nodes):
            raise ValueError("node names must be unique")
        horizon = max((m.shape[1] for m in upper.values()), default=0)
        unknown = np.full((len(nodes), horizon), np.nan)

        def series(src: Mapping[str, FloatArray], resource: str) -> FloatArray:
            got = src.get(resource)
            return unknown if got is None else got

        cpu, mem = series(upper, "cpu"), series(upper, "memory")
        return cls(
            nodes=nodes,
            index=index,
            horizon=horizon,
            cpu_upper=cpu,
            memory_upper=mem,
            cpu_peak_to=_running_max(cpu),
            memory_peak_to=_running_max(mem),
            disk_peak_to=_running_max(series(upper, "disk_io")),
            gpu_peak_to=_running_max(series(upper, "gpu")),
            cpu_capacity=_positive_or_nan(np.asarray(cpu_capacity, dtype=np.float64)),
            memory_capacity=_positive_or_nan(np.asarray(memory_capacity, dtype=np.float64)),
            cpu_requested=np.asarray(cpu_requested, dtype=np.float64),
            memory_requested=np.asarray(memory_requested, dtype=np.float64),
            gpus_free=gpus_free,
            csd_free=csd_free,
            fast_free_bytes=fast_free_bytes,
            anomaly=anomaly,
            anomaly_score=anomaly_score,
            stale=stale,
            step_seconds=step_seconds,
            cpu_mean=series(mean, "cpu"),
            memory_mean=series(mean, "memory"),
        )

    def __len__(self) -> int:
        return len(self.nodes)

    def peak_column(self, horizon_steps: int) -> int:
        """Column of ``*_peak_to`` covering a pod horizon of ``horizon_steps`` (0 = the whole horizon)."""
        if self.horizon == 0:
            return -1
        steps = self.horizon if horizon_steps <= 0 else min(horizon_steps, self.horizon)
        return steps - 1


def _insight_vectors(
    outlooks: Sequence[NodeOutlook], insights: Mapping[str, NodeInsight]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Free GPUs (insight, else allocatable minus requested), free CSDs and fast-storage bytes (NaN unknown)."""
    n = len(outlooks)
    gpus = np.array([o.capacity.gpus - o.requested_gpus for o in outlooks], dtype=np.float64)
    csd = np.full(n, np.nan)
    fast = np.full(n, np.nan)
    for i, o in enumerate(outlooks):
        insight = insights.get(o.node)
        if insight is not None:
            gpus[i] = insight.gpus_available
            csd[i] = insight.csd_available
            fast[i] = insight.fast_storage_free_bytes
    return np.maximum(gpus, 0.0), csd, fast
