"""From the forecaster's rows to the decision core's node table and per-workload outlooks. Pure.

The forecaster works per node x resource; decisions need, per node, every resource's series plus
capacity and requests, and per workload an estimate of its own use. At 10,000 nodes a Python object per
node per tick costs more than the whole forecast, so the node table is built with array gathers:
:class:`NodeLayout` (computed once per membership change) says which forecast row holds each node's
resource, and :func:`node_table` fills every column in one pass. Only pods are walked in Python, once.

A workload's use is the node forecast apportioned to its pods by their share of the node's load
(measured usage from a signature when known, else requests): the only per-pod attribution available
without per-pod metrics, and it follows the forecast rather than one sample.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from apollo.core.domain import RESOURCES, SCALABLE_KINDS, NodeCapacity, NodeInsight, RunningPod, WorkloadOutlook
from apollo.core.scoring.table import NodeTable

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class NodeLayout:
    """Where each node's resources sit among the forecaster's rows (``keys`` = ``(node, resource)``)."""

    nodes: tuple[str, ...]
    index: Mapping[str, int]
    rows: Mapping[str, IntArray]  # resource -> forecast row per node, -1 where the node lacks it
    node_of_row: IntArray  # node position of every forecast row

    @classmethod
    def of(cls, keys: Sequence[Hashable]) -> NodeLayout:
        pairs = [(str(k[0]), str(k[1])) for k in keys]  # type: ignore[index]
        nodes = tuple(sorted({node for node, _ in pairs}))
        index = {name: i for i, name in enumerate(nodes)}
        rows = {r: np.full(len(nodes), -1, dtype=np.int64) for r in RESOURCES}
        node_of_row = np.empty(len(pairs), dtype=np.int64)
        for row, (node, resource) in enumerate(pairs):
            node_of_row[row] = index[node]
            if resource in rows:
                rows[resource][index[node]] = row
        return cls(nodes, index, {r: v for r, v in rows.items() if (v >= 0).any()}, node_of_row)

    def gather(self, per_row: FloatArray, resource: str) -> FloatArray:
        """Rows of ``per_row`` ``[n_rows, ...]`` for ``resource``, one per node, NaN where absent."""
        rows = self.rows.get(resource)
        shape = (len(self.nodes), *per_row.shape[1:])
        if rows is None:
            return np.full(shape, np.nan)
        taken = per_row[np.maximum(rows, 0)]
        result: FloatArray = np.where((rows >= 0).reshape(-1, *([1] * (per_row.ndim - 1))), taken, np.nan)
        return result

    def node_max(self, per_row: FloatArray) -> FloatArray:
        """Per node, the largest finite value over its rows (NaN when none)."""
        out = np.full(len(self.nodes), -np.inf)
        np.fmax.at(out, self.node_of_row, np.where(np.isfinite(per_row), per_row, -np.inf))
        result: FloatArray = np.where(np.isfinite(out), out, np.nan)
        return result


def node_table(
    layout: NodeLayout,
    *,
    mean: FloatArray,
    upper: FloatArray,
    capacity: Mapping[str, NodeCapacity],
    pods: Sequence[RunningPod],
    insights: Mapping[str, NodeInsight],
    anomaly: BoolArray,
    anomaly_score: FloatArray,
    stale: bool,
    step_seconds: float,
) -> NodeTable:
    """The tick's :class:`NodeTable` from per-row forecasts ``[n_rows, H]`` and per-row abnormal flags.

    ``anomaly``/``anomaly_score`` are per forecast row (a node is abnormal when any of its resources
    is). Capacity: Kubernetes' allocatable, else an insight agent's report, else unknown.
    """
    nodes = layout.nodes
    n = len(nodes)
    cpu_cap = np.zeros(n)
    mem_cap = np.zeros(n)
    gpu_cap = np.zeros(n)
    gpus_free = np.full(n, np.nan)
    csd = np.full(n, np.nan)
    fast = np.full(n, np.nan)
    for name, cap in capacity.items():
        i = layout.index.get(name)
        if i is not None:
            cpu_cap[i], mem_cap[i], gpu_cap[i] = cap.cpu_cores, cap.memory_bytes, cap.gpus
    for name, insight in insights.items():
        i = layout.index.get(name)
        if i is None:
            continue
        if insight.allocatable is not None and cpu_cap[i] <= 0:
            cpu_cap[i], mem_cap[i] = insight.allocatable.cpu_cores, insight.allocatable.memory_bytes
            gpu_cap[i] = insight.allocatable.gpus
        gpus_free[i] = insight.gpus_available
        csd[i] = insight.csd_available
        fast[i] = insight.fast_storage_free_bytes
    requested = np.zeros((3, n))
    for pod in pods:
        i = layout.index.get(pod.node)
        if i is not None:
            requested[0, i] += pod.cpu_request_cores
            requested[1, i] += pod.memory_request_bytes
            requested[2, i] += pod.gpus
    gpus_free = np.where(np.isnan(gpus_free), gpu_cap - requested[2], gpus_free)
    flagged = layout.node_max(np.where(anomaly, 1.0, 0.0))
    score = layout.node_max(anomaly_score)
    return NodeTable.from_matrices(
        nodes,
        upper={r: layout.gather(upper, r) for r in layout.rows},
        mean={r: layout.gather(mean, r) for r in ("cpu", "memory") if r in layout.rows},
        cpu_capacity=cpu_cap,
        memory_capacity=mem_cap,
        cpu_requested=requested[0],
        memory_requested=requested[1],
        gpus_free=np.maximum(gpus_free, 0.0),
        csd_free=csd,
        fast_free_bytes=fast,
        anomaly=flagged > 0,
        anomaly_score=np.nan_to_num(score, nan=0.0),
        stale=np.full(n, stale, dtype=np.bool_),
        step_seconds=np.full(n, step_seconds),
    )


def _share(pod: RunningPod, resource: str) -> float:
    if resource == "cpu":
        return pod.cpu_usage_cores if math.isfinite(pod.cpu_usage_cores) else pod.cpu_request_cores
    return pod.memory_usage_bytes if math.isfinite(pod.memory_usage_bytes) else pod.memory_request_bytes


def workload_outlooks(table: NodeTable, pods: Sequence[RunningPod]) -> list[WorkloadOutlook]:
    """Deployments / StatefulSets with their apportioned use (cores and bytes over the horizon)."""
    horizon = table.horizon
    if horizon == 0:
        return []
    weight_total: dict[tuple[str, str], float] = defaultdict(float)
    groups: dict[tuple[str, str, str], list[RunningPod]] = defaultdict(list)
    for pod in pods:
        for res in ("cpu", "memory"):
            weight_total[(pod.node, res)] += _share(pod, res)
        if pod.owner_kind in SCALABLE_KINDS:
            groups[(pod.namespace, pod.owner_kind, pod.owner_name)].append(pod)
    columns = {
        "cpu": (table.cpu_capacity, table.cpu_mean, table.cpu_upper),
        "memory": (table.memory_capacity, table.memory_mean, table.memory_upper),
    }
    out = []
    for (namespace, kind, name), members in sorted(groups.items()):
        series = {key: np.zeros(horizon) for key in ("cpu_mean", "cpu_upper", "memory_mean", "memory_upper")}
        known = False
        for pod in members:
            i = table.index.get(pod.node)
            if i is None:
                continue
            for res, (capacity, mean, upper) in columns.items():
                cap, total = capacity[i], weight_total[(pod.node, res)]
                if not cap > 0 or total <= 0 or np.isnan(upper[i]).all():
                    continue
                share = _share(pod, res) / total * cap
                series[f"{res}_mean"] += np.nan_to_num(mean[i], nan=0.0) * share
                series[f"{res}_upper"] += np.nan_to_num(upper[i], nan=0.0) * share
                known = True
        if not known:
            continue
        out.append(
            WorkloadOutlook(
                namespace=namespace,
                kind=kind,
                name=name,
                replicas=len(members),
                cpu_request_cores=sum(p.cpu_request_cores for p in members) / len(members),
                memory_request_bytes=sum(p.memory_request_bytes for p in members) / len(members),
                cpu_mean=series["cpu_mean"],
                cpu_upper=series["cpu_upper"],
                memory_mean=series["memory_mean"],
                memory_upper=series["memory_upper"],
            )
        )
    return out
