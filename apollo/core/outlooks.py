"""From the forecaster's rows to the decision core's per-node and per-workload outlooks. Pure.

The forecaster works per node x resource; decisions need, per node, every resource's series plus
capacity and requests, and per workload an estimate of its own use. A workload's use is the
node forecast apportioned to its pods by their share of the node's load (measured usage from a
signature when known, else requests): the only per-pod attribution available without per-pod
metrics, and it follows the forecast rather than one sample.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from apollo.core.domain import RESOURCES, SCALABLE_KINDS, NodeCapacity, NodeOutlook, RunningPod, WorkloadOutlook

FloatArray = npt.NDArray[np.float64]


def node_outlooks(
    keys: Sequence[tuple[str, str]],
    mean: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    capacity: Mapping[str, NodeCapacity],
    pods: Sequence[RunningPod],
    anomaly_z: Mapping[str, float],
    labels: Mapping[str, Mapping[str, str]],
    step_seconds: float,
    anomaly_threshold: float,
    stale: bool = False,
) -> list[NodeOutlook]:
    """One NodeOutlook per node seen in `keys` (rows of the [n, H] arrays)."""
    rows: dict[str, dict[str, int]] = defaultdict(dict)
    for i, (node, resource) in enumerate(keys):
        if resource in RESOURCES:
            rows[node][resource] = i
    requested: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for pod in pods:
        acc = requested[pod.node]
        acc[0] += pod.cpu_request_cores
        acc[1] += pod.memory_request_bytes
        acc[2] += pod.gpus
    out = []
    for node in sorted(rows):
        r = rows[node]
        z = anomaly_z.get(node, 0.0)
        req = requested.get(node, [0.0, 0.0, 0.0])
        out.append(
            NodeOutlook(
                node=node,
                capacity=capacity.get(node, NodeCapacity(0.0, 0.0)),
                mean={res: mean[i] for res, i in r.items()},
                upper={res: upper[i] for res, i in r.items()},
                lower={res: lower[i] for res, i in r.items()},
                requested_cpu_cores=req[0],
                requested_memory_bytes=req[1],
                requested_gpus=int(req[2]),
                anomaly=z >= anomaly_threshold,
                anomaly_score=z if math.isfinite(z) else 0.0,
                labels=dict(labels.get(node, {})),
                stale=stale,
                step_seconds=step_seconds,
            )
        )
    return out


def _share(pod: RunningPod, resource: str) -> float:
    if resource == "cpu":
        return pod.cpu_usage_cores if math.isfinite(pod.cpu_usage_cores) else pod.cpu_request_cores
    return pod.memory_usage_bytes if math.isfinite(pod.memory_usage_bytes) else pod.memory_request_bytes


def workload_outlooks(outlooks: Sequence[NodeOutlook], pods: Sequence[RunningPod]) -> list[WorkloadOutlook]:
    """Deployments / StatefulSets with their apportioned use (cores and bytes over the horizon)."""
    by_node = {o.node: o for o in outlooks}
    weight_total: dict[tuple[str, str], float] = defaultdict(float)
    for pod in pods:
        for res in ("cpu", "memory"):
            weight_total[(pod.node, res)] += _share(pod, res)
    groups: dict[tuple[str, str, str], list[RunningPod]] = defaultdict(list)
    for pod in pods:
        if pod.owner_kind in SCALABLE_KINDS:
            groups[(pod.namespace, pod.owner_kind, pod.owner_name)].append(pod)
    out = []
    for (namespace, kind, name), members in sorted(groups.items()):
        horizon = max((by_node[p.node].horizon for p in members if p.node in by_node), default=0)
        if horizon == 0:
            continue
        series = {key: np.zeros(horizon) for key in ("cpu_mean", "cpu_upper", "memory_mean", "memory_upper")}
        known = False
        for pod in members:
            node = by_node.get(pod.node)
            if node is None:
                continue
            for res, cap in (("cpu", node.capacity.cpu_cores), ("memory", node.capacity.memory_bytes)):
                total = weight_total[(pod.node, res)]
                if cap <= 0 or total <= 0 or res not in node.upper:
                    continue
                share = _share(pod, res) / total
                for stat, src in (("mean", node.mean), ("upper", node.upper)):
                    values = np.nan_to_num(src[res][:horizon], nan=0.0)
                    series[f"{res}_{stat}"][: values.size] += values * cap * share
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
