"""From the forecaster's rows to the decision core's node table and per-workload outlooks. Pure.

The forecaster works per node x resource; decisions need, per node, every resource's series plus
capacity and requests, and per workload an estimate of its own use. At 10,000 nodes a Python object per
node per tick costs more than the whole forecast, so the node table is built with array gathers:
:class:`NodeLayout` (computed once per membership change) says which forecast row holds each node's
resource, and :func:`node_table` fills every column in one pass. Pods are walked in Python once per cluster
view (:class:`PodIndex`), not once per tick.

A workload's use is the node forecast apportioned to its pods by their share of the node's load
(measured usage from a signature when known, else requests): the only per-pod attribution available
without per-pod metrics, and it follows the forecast rather than one sample.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    order: IntArray  # forecast rows sorted by node (for per-node reductions)
    starts: IntArray  # where each node's rows begin in ``order``

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
        order = np.argsort(node_of_row, kind="stable")
        starts = np.searchsorted(node_of_row[order], np.arange(len(nodes)))
        return cls(nodes, index, {r: v for r, v in rows.items() if (v >= 0).any()}, node_of_row, order, starts)

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
        if not len(self.nodes):
            return np.zeros(0)
        finite = np.where(np.isfinite(per_row), per_row, -np.inf)[self.order]
        out = np.maximum.reduceat(finite, self.starts)
        result: FloatArray = np.where(np.isfinite(out), out, np.nan)
        return result


def node_table(
    layout: NodeLayout,
    *,
    mean: FloatArray,
    upper: FloatArray,
    pods: PodIndex,
    insights: Mapping[str, NodeInsight],
    anomaly: BoolArray,
    anomaly_score: FloatArray,
    stale: bool | BoolArray,
    step_seconds: float,
) -> NodeTable:
    """The tick's :class:`NodeTable` from per-row forecasts ``[n_rows, H]`` and per-row abnormal flags.

    ``anomaly``/``anomaly_score`` are per forecast row (a node is abnormal when any of its resources
    is). Capacity: Kubernetes' allocatable (in ``pods``, the cluster view indexed against ``layout``),
    else an insight agent's report, else unknown.
    """
    nodes = layout.nodes
    n = len(nodes)
    cpu_cap, mem_cap, gpu_cap = (pods.capacity[k].copy() for k in range(3))
    gpus_free = np.full(n, np.nan)
    csd = np.full(n, np.nan)
    fast = np.full(n, np.nan)
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
    requested = pods.requested
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
        stale=np.broadcast_to(np.asarray(stale, dtype=np.bool_), (n,)).copy(),
        step_seconds=np.full(n, step_seconds),
        index=layout.index,
    )


def _share(pod: RunningPod, resource: str) -> float:
    if resource == "cpu":
        return pod.cpu_usage_cores if math.isfinite(pod.cpu_usage_cores) else pod.cpu_request_cores
    return pod.memory_usage_bytes if math.isfinite(pod.memory_usage_bytes) else pod.memory_request_bytes


PodKey = tuple[str, str]  # (namespace, name): unique among a cluster's pods
PodChange = tuple[PodKey, RunningPod | None]  # the pod now under that key; None = gone
Workload = tuple[str, str, str]  # namespace, controller kind, controller name


@dataclass(frozen=True)
class PodIndex:
    """What the pods contribute to a tick (built by :class:`PodIndexer`; :meth:`of` for a one-off).

    ``requested`` sums requests per node row (cpu cores, memory bytes, GPUs). For workload outlooks:
    every pod of a Deployment / StatefulSet on a known node, with its workload (``group_of``), its node
    row and its share of the node's load per resource (usage when a signature knows it, else requests).
    ``capacity`` holds Kubernetes' allocatable per node row. The engine keeps the index while the cluster
    view is the same object, so a tick without changes does no per-pod or per-node Python work here.
    """

    requested: FloatArray
    capacity: FloatArray  # [3, n]: Kubernetes' allocatable cores, bytes, GPUs per node row (0 unknown)
    groups: tuple[Workload, ...]
    replicas: tuple[int, ...]
    mean_requests: tuple[tuple[float, float], ...]  # per workload: cpu cores, memory bytes per replica
    group_of: IntArray
    starts: IntArray  # first member of each workload (members are stored workload by workload)
    rows: IntArray
    shares: Mapping[str, FloatArray]

    @classmethod
    def of(cls, index: Mapping[str, int], pods: Sequence[RunningPod], capacity: Mapping[str, NodeCapacity]) -> PodIndex:
        return PodIndexer(index, pods, capacity).index()


@dataclass(frozen=True)
class _Members:
    """One workload's members in pod order: node rows, own load weights (cpu, memory), mean requests."""

    rows: IntArray
    weights: FloatArray  # [2, members]
    mean_requests: tuple[float, float]


class PodIndexer:
    """A :class:`PodIndex` kept current as pods change: only the nodes and workloads touched are redone.

    Under churn (a few dozen pods bound or deleted per tick among 40,000) a full pass over every pod in
    Python each tick would cost more than the rest of the tick, while one change only moves its node's
    sums and its workload's members. Pods are identified by ``(namespace, name)``; they keep the order
    they were given in, a changed pod keeping its place and a new one going last, which is how the
    Kubernetes cache orders a view's pods. In that order every sum is redone from scratch per touched
    node or workload, never by adding and subtracting, so the index equals a full build over the same
    pods bit for bit, whatever the history (tests hold the earlier full build as the reference).
    Pods on nodes outside ``index`` contribute nothing. Not thread-safe: the engine's tick owns it.
    """

    def __init__(
        self, index: Mapping[str, int], pods: Sequence[RunningPod], capacity: Mapping[str, NodeCapacity]
    ) -> None:
        self._index = index
        self._position: dict[PodKey, int] = {}  # every live pod's place in the order (never reused)
        self._next = 0
        self._pods: dict[PodKey, RunningPod] = {}
        self._on_node: dict[int, dict[PodKey, RunningPod]] = {}
        self._members: dict[Workload, dict[PodKey, RunningPod]] = {}
        self._requested = np.zeros((3, len(index)))
        self._weights = np.zeros((2, len(index)))  # per node row: the share weights' totals (cpu, memory)
        self._blocks: dict[Workload, _Members] = {}
        self._dirty_nodes: set[int] = set()
        self._dirty_groups: set[Workload] = set()
        self._stacked: tuple[tuple[Workload, ...], IntArray, FloatArray, IntArray, IntArray] | None = None
        self._capacity = np.zeros((3, len(index)))
        # Workloads whose members (rows, shares, requests) the last `index()` may have changed; None: all.
        self.touched: set[Workload] | None = None
        self._first = True
        self.set_capacity(capacity)
        self._load(pods)

    def _load(self, pods: Sequence[RunningPod]) -> None:
        """The first pods, in one pass (what `apply` would do for each, without its bookkeeping per change)."""
        for pod in pods:
            key = (pod.namespace, pod.name)
            if key in self._position:  # the same pod twice: the later one replaces it, as in `apply`
                self.apply([(key, pod)])
                continue
            self._position[key] = self._next
            self._next += 1
            row = self._index.get(pod.node)
            if row is None:
                continue
            self._pods[key] = pod
            self._on_node.setdefault(row, {})[key] = pod
            group = _workload(pod)
            if group is not None:
                self._members.setdefault(group, {})[key] = pod
        self._dirty_nodes.update(self._on_node)
        self._dirty_groups.update(self._members)

    def set_capacity(self, capacity: Mapping[str, NodeCapacity]) -> None:
        """Kubernetes' allocatable per node (a new array: indexes already handed out keep theirs)."""
        allocatable = np.zeros((3, len(self._index)))
        for name, cap in capacity.items():
            i = self._index.get(name)
            if i is not None:
                allocatable[:, i] = (cap.cpu_cores, cap.memory_bytes, cap.gpus)
        self._capacity = allocatable

    def apply(self, changes: Iterable[PodChange]) -> None:
        """Pods added, replaced or gone, in the order they happened."""
        for key, pod in changes:
            old = self._pods.get(key)
            if pod is None:
                self._position.pop(key, None)
            elif key not in self._position:
                self._position[key] = self._next
                self._next += 1
            row = None if pod is None else self._index.get(pod.node)
            old_row = None if old is None else self._index.get(old.node)
            self._move(self._on_node, key, old_row, row, pod)
            self._dirty_nodes.update(r for r in (old_row, row) if r is not None)
            group = _workload(pod) if row is not None else None
            old_group = _workload(old) if old_row is not None else None
            self._move(self._members, key, old_group, group, pod)
            self._dirty_groups.update(g for g in (old_group, group) if g is not None)
            if pod is None or row is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod

    def _move(
        self, where: dict[Any, dict[PodKey, RunningPod]], key: PodKey, old: Any, new: Any, pod: RunningPod | None
    ) -> None:
        """Take ``key`` out of bucket ``old`` and put ``pod`` in bucket ``new`` (in place when they are one)."""
        if old is not None and old != new:
            bucket = where[old]
            del bucket[key]
            if not bucket:
                del where[old]
        if new is None or pod is None:
            return
        bucket = where.setdefault(new, {})
        if key in bucket or not bucket:
            bucket[key] = pod
            return
        last = next(reversed(bucket))
        bucket[key] = pod
        if self._position[key] < self._position[last]:  # joined a bucket out of turn (owner changed): reorder
            ordered = sorted(bucket.items(), key=lambda item: self._position[item[0]])
            bucket.clear()
            bucket.update(ordered)

    def index(self) -> PodIndex:
        """The index as of the changes applied so far (recomputes what they touched; see `touched`)."""
        touched = set(self._dirty_groups)
        for row in self._dirty_nodes:
            cpu = memory = gpus = cpu_weight = memory_weight = 0.0
            for pod in self._on_node.get(row, {}).values():
                group = _workload(pod)
                if group is not None:
                    touched.add(group)  # its share of the node's load may have moved
                cpu += pod.cpu_request_cores
                memory += pod.memory_request_bytes
                gpus += pod.gpus
                cpu_weight += _share(pod, "cpu")
                memory_weight += _share(pod, "memory")
            self._requested[:, row] = (cpu, memory, gpus)
            self._weights[:, row] = (cpu_weight, memory_weight)
        self._dirty_nodes.clear()
        self.touched, self._first = (None if self._first else touched), False
        if self._dirty_groups or self._stacked is None:
            self._restack()
        groups, rows, weights, group_of, starts = self._stacked  # type: ignore[misc]
        totals = self._weights[:, rows]
        shares = np.zeros_like(weights)
        np.divide(weights, totals, out=shares, where=totals > 0)
        blocks = [self._blocks[g] for g in groups]
        return PodIndex(
            requested=self._requested.copy(),
            capacity=self._capacity,
            groups=groups,
            replicas=tuple(len(b.rows) for b in blocks),
            mean_requests=tuple(b.mean_requests for b in blocks),
            group_of=group_of,
            starts=starts,
            rows=rows,
            shares={"cpu": shares[0], "memory": shares[1]},
        )

    def _restack(self) -> None:
        """Redo the touched workloads' members, then lay every workload's out end to end, sorted by workload."""
        for group in self._dirty_groups:
            members = self._members.get(group)
            if not members:
                self._blocks.pop(group, None)
                continue
            pods = list(members.values())
            self._blocks[group] = _Members(
                rows=np.array([self._index[p.node] for p in pods], dtype=np.int64),
                weights=np.array([[_share(p, "cpu") for p in pods], [_share(p, "memory") for p in pods]]),
                mean_requests=(
                    sum(p.cpu_request_cores for p in pods) / len(pods),
                    sum(p.memory_request_bytes for p in pods) / len(pods),
                ),
            )
        self._dirty_groups.clear()
        groups = tuple(sorted(self._blocks))
        blocks = [self._blocks[g] for g in groups]
        sizes = np.array([len(b.rows) for b in blocks], dtype=np.int64)
        self._stacked = (
            groups,
            np.concatenate([b.rows for b in blocks]) if blocks else np.zeros(0, dtype=np.int64),
            np.concatenate([b.weights for b in blocks], axis=1) if blocks else np.zeros((2, 0)),
            np.repeat(np.arange(len(groups), dtype=np.int64), sizes),
            np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if blocks else np.zeros(0, dtype=np.int64),
        )


def _workload(pod: RunningPod | None) -> Workload | None:
    if pod is None or pod.owner_kind not in SCALABLE_KINDS:
        return None
    return (pod.namespace, pod.owner_kind, pod.owner_name)


def workload_outlooks(
    table: NodeTable, pods: PodIndex, only: Collection[Workload] | None = None
) -> list[WorkloadOutlook]:
    """Deployments / StatefulSets with their apportioned use (cores and bytes over the horizon).

    The series are summed per workload with ``np.add.reduceat`` over the pods indexed in ``pods`` (built
    against ``table``'s rows), so the cost per tick does not grow with a Python loop over pods. ``only``
    restricts the work to those workloads (the engine's update after a few pods changed): each
    workload's sum is over its own members in the same order either way, so the values are the same.
    """
    horizon = table.horizon
    if horizon == 0 or not pods.groups:
        return []
    if only is None:
        selected = list(range(len(pods.groups)))
        rows, shares, starts = pods.rows, pods.shares, pods.starts
    else:
        selected = [g for g, key in enumerate(pods.groups) if key in only]
        if not selected:
            return []
        ends = np.append(pods.starts[1:], len(pods.rows))
        members = np.concatenate([np.arange(pods.starts[g], ends[g]) for g in selected])
        sizes = ends[selected] - pods.starts[selected]
        rows, starts = pods.rows[members], np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        shares = {res: pods.shares[res][members] for res in ("cpu", "memory")}
    columns = {
        "cpu": (table.cpu_capacity, table.cpu_mean, table.cpu_upper),
        "memory": (table.memory_capacity, table.memory_mean, table.memory_upper),
    }
    series: dict[str, FloatArray] = {}
    known = np.zeros(len(selected), dtype=np.bool_)
    for res, (capacity, mean, upper) in columns.items():
        cap = capacity[rows]
        # Per node first, then gathered per pod: nodes are several times fewer than pods.
        forecast_known = np.asarray(~np.isnan(upper).all(axis=1), dtype=np.bool_)
        usable = (cap > 0) & forecast_known[rows] & (shares[res] > 0)
        share = np.where(usable, shares[res] * np.nan_to_num(cap), 0.0)[:, None]
        for stat, src in (("mean", mean), ("upper", upper)):
            # Members are stored workload by workload, so a sum per workload is one reduceat.
            summed = np.add.reduceat(np.nan_to_num(src, nan=0.0)[rows] * share, starts, axis=0)
            series[f"{res}_{stat}"] = summed
        known |= np.maximum.reduceat(usable, starts)
    cpu_mean, cpu_upper = series["cpu_mean"], series["cpu_upper"]
    memory_mean, memory_upper = series["memory_mean"], series["memory_upper"]
    out = []
    for i in np.flatnonzero(known).tolist():
        g = selected[i]
        namespace, kind, name = pods.groups[g]
        cpu_request, memory_request = pods.mean_requests[g]
        out.append(
            WorkloadOutlook(
                namespace, kind, name, pods.replicas[g], cpu_request, memory_request,
                cpu_mean[i], cpu_upper[i], memory_mean[i], memory_upper[i],
            )
        )  # fmt: skip
    return out
