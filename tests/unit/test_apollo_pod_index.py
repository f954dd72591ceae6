"""The incremental pod index equals a full build over the same pods, bit for bit, whatever the history.

The reference is the earlier full build (one pass over every pod), kept here verbatim; the engine now
keeps a `PodIndexer` and applies only the pods that changed since the previous view. Pods, changes and
orders are random; results are compared for equality, not closeness.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from apollo.core.domain import SCALABLE_KINDS, NodeCapacity, PodSignature, RunningPod
from apollo.core.outlooks import PodChange, PodIndex, PodIndexer, PodKey

GiB = 2**30


def _share(pod: RunningPod, resource: str) -> float:
    if resource == "cpu":
        return pod.cpu_usage_cores if math.isfinite(pod.cpu_usage_cores) else pod.cpu_request_cores
    return pod.memory_usage_bytes if math.isfinite(pod.memory_usage_bytes) else pod.memory_request_bytes


def _reference(index: Mapping[str, int], pods: Sequence[RunningPod], capacity: Mapping[str, NodeCapacity]) -> PodIndex:
    """The earlier `PodIndex.of`: one pass over the pods in order."""
    allocatable = np.zeros((3, len(index)))
    for name, cap in capacity.items():
        i = index.get(name)
        if i is not None:
            allocatable[:, i] = (cap.cpu_cores, cap.memory_bytes, cap.gpus)
    requested = np.zeros((3, len(index)))
    weight_total: dict[tuple[str, str], float] = defaultdict(float)
    grouped: dict[tuple[str, str, str], list[RunningPod]] = defaultdict(list)
    for pod in pods:
        i = index.get(pod.node)
        if i is None:
            continue
        requested[0, i] += pod.cpu_request_cores
        requested[1, i] += pod.memory_request_bytes
        requested[2, i] += pod.gpus
        weight_total[(pod.node, "cpu")] += _share(pod, "cpu")
        weight_total[(pod.node, "memory")] += _share(pod, "memory")
        if pod.owner_kind in SCALABLE_KINDS:
            grouped[(pod.namespace, pod.owner_kind, pod.owner_name)].append(pod)
    groups = tuple(sorted(grouped))
    group_of: list[int] = []
    rows: list[int] = []
    shares: dict[str, list[float]] = {"cpu": [], "memory": []}
    for g, group in enumerate(groups):
        for pod in grouped[group]:
            group_of.append(g)
            rows.append(index[pod.node])
            for res, out in shares.items():
                weight = weight_total[(pod.node, res)]
                out.append(_share(pod, res) / weight if weight > 0 else 0.0)
    return PodIndex(
        requested=requested,
        capacity=allocatable,
        groups=groups,
        replicas=tuple(len(grouped[g]) for g in groups),
        mean_requests=tuple(
            (
                sum(p.cpu_request_cores for p in grouped[g]) / len(grouped[g]),
                sum(p.memory_request_bytes for p in grouped[g]) / len(grouped[g]),
            )
            for g in groups
        ),
        group_of=np.array(group_of, dtype=np.int64),
        starts=np.searchsorted(np.array(group_of, dtype=np.int64), np.arange(len(groups))),
        rows=np.array(rows, dtype=np.int64),
        shares={res: np.array(v, dtype=np.float64) for res, v in shares.items()},
    )


def _members(index: PodIndex) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Per workload: everything its outlook is computed from."""
    out = {}
    ends = [*index.starts[1:].tolist(), len(index.rows)]
    for g, key in enumerate(index.groups):
        lo, hi = int(index.starts[g]), ends[g]
        shares = tuple(index.shares[r][lo:hi].tolist() for r in ("cpu", "memory"))
        out[key] = (index.rows[lo:hi].tolist(), shares, index.replicas[g], index.mean_requests[g])
    return out


def _assert_same(got: PodIndex, want: PodIndex) -> None:
    for name in ("requested", "capacity", "group_of", "starts", "rows"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b), name
    assert got.groups == want.groups
    assert got.replicas == want.replicas
    assert got.mean_requests == want.mean_requests
    assert set(got.shares) == set(want.shares)
    for res in want.shares:
        assert got.shares[res].dtype == want.shares[res].dtype
        assert np.array_equal(got.shares[res], want.shares[res]), res


def _pod(rng: np.random.Generator, name: str, nodes: Sequence[str]) -> RunningPod:
    kind = ("Deployment", "StatefulSet", "Job", "")[int(rng.integers(0, 4))]
    owner = f"svc-{int(rng.integers(0, 6))}" if kind else ""
    usage = float(rng.uniform(0.0, 3.0)) if rng.uniform() < 0.3 else math.nan
    return RunningPod(
        ("apps", "ml")[int(rng.integers(0, 2))], name, str(rng.choice(nodes)), kind, owner,
        cpu_request_cores=float(rng.choice([0.0, rng.uniform(0.0, 2.0)])),
        memory_request_bytes=float(rng.uniform(0.0, 4.0)) * GiB,
        cpu_usage_cores=usage,
        gpus=int(rng.integers(0, 2)),
        signature=PodSignature(cpu_usage_cores=usage) if math.isfinite(usage) else None,
    )  # fmt: skip


class _Ordered:
    """The order the Kubernetes cache keeps: a changed pod keeps its place, a new one goes last."""

    def __init__(self, pods: Sequence[RunningPod]) -> None:
        self.pods: dict[PodKey, RunningPod] = {(p.namespace, p.name): p for p in pods}

    def apply(self, changes: Sequence[PodChange]) -> None:
        for key, pod in changes:
            if pod is None:
                self.pods.pop(key, None)
            else:
                self.pods[key] = pod


@pytest.mark.parametrize("seed", range(6))
def test_incremental_index_equals_a_full_build_after_every_batch_of_changes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes = [f"node-{i}" for i in range(12)]
    index = {n: i for i, n in enumerate(nodes[:10])}  # two nodes outside the layout: their pods count nowhere
    capacity = {n: NodeCapacity(float(rng.integers(0, 3)) * 8.0, 64 * GiB, int(rng.integers(0, 2))) for n in nodes}
    start = [_pod(rng, f"p{i}", nodes) for i in range(60)]
    indexer = PodIndexer(index, start, capacity)
    truth = _Ordered(start)
    _assert_same(indexer.index(), _reference(index, tuple(truth.pods.values()), capacity))
    serial = len(start)
    for _ in range(25):
        changes: list[PodChange] = []
        for _ in range(int(rng.integers(0, 8))):
            live = list(truth.pods)
            roll = rng.uniform()
            batch: list[PodChange]
            if roll < 0.35 or not live:  # a new pod
                pod = _pod(rng, f"p{serial}", nodes)
                serial += 1
                batch = [((pod.namespace, pod.name), pod)]
            elif roll < 0.6:  # gone
                batch = [(live[int(rng.integers(0, len(live)))], None)]
            elif roll < 0.75:  # gone and back under the same name: last in the order now
                key = live[int(rng.integers(0, len(live)))]
                batch = [(key, None), (key, replace(truth.pods[key], cpu_request_cores=float(rng.uniform(0.0, 2.0))))]
            else:  # changed in place: requests, usage, or even its owner
                key = live[int(rng.integers(0, len(live)))]
                old = truth.pods[key]
                kind = str(rng.choice(["Deployment", "StatefulSet", ""])) if rng.uniform() < 0.3 else old.owner_kind
                new = replace(
                    old, cpu_request_cores=float(rng.uniform(0.0, 2.0)), owner_kind=kind,
                    owner_name=f"svc-{int(rng.integers(0, 6))}" if kind else "",
                    cpu_usage_cores=float(rng.uniform(0.0, 3.0)) if rng.uniform() < 0.5 else math.nan,
                )  # fmt: skip
                batch = [(key, new)]
            truth.apply(batch)
            changes += batch
        before = _members(indexer.index())
        indexer.apply(changes)
        if rng.uniform() < 0.2:
            capacity = dict(capacity, **{str(rng.choice(nodes)): NodeCapacity(4.0, 8 * GiB)})
            indexer.set_capacity(capacity)
        got = indexer.index()
        _assert_same(got, _reference(index, tuple(truth.pods.values()), capacity))
        # Workloads not reported as touched are exactly as they were (the engine keeps their outlooks).
        assert indexer.touched is not None
        after = _members(got)
        assert {g for g in set(before) | set(after) if before.get(g) != after.get(g)} <= indexer.touched


def test_the_index_handed_out_does_not_change_afterwards() -> None:
    capacity = {"a": NodeCapacity(8.0, 32 * GiB)}
    pod = RunningPod("ns", "p", "a", "Deployment", "w", cpu_request_cores=1.0)
    indexer = PodIndexer({"a": 0}, [pod], capacity)
    first = indexer.index()
    kept: dict[str, Any] = {"requested": first.requested.copy(), "capacity": first.capacity.copy()}
    indexer.apply([(("ns", "p"), replace(pod, cpu_request_cores=3.0)), (("ns", "q"), replace(pod, name="q"))])
    indexer.set_capacity({"a": NodeCapacity(2.0, GiB)})
    second = indexer.index()
    assert np.array_equal(first.requested, kept["requested"]) and np.array_equal(first.capacity, kept["capacity"])
    assert second.requested[0, 0] == 4.0 and second.capacity[0, 0] == 2.0 and second.replicas == (2,)
    indexer.apply([(("ns", "p"), None), (("ns", "q"), None)])
    empty = indexer.index()
    assert empty.groups == () and empty.rows.size == 0 and empty.requested[0, 0] == 0.0


def test_a_pod_listed_twice_counts_once_as_its_later_version_in_its_first_place() -> None:
    capacity = {"a": NodeCapacity(8.0, 32 * GiB), "b": NodeCapacity(8.0, 32 * GiB)}
    first = RunningPod("ns", "p", "a", "Deployment", "w", cpu_request_cores=1.0)
    other = RunningPod("ns", "q", "b", "Deployment", "w", cpu_request_cores=2.0)
    later = replace(first, cpu_request_cores=5.0)
    index = {"a": 0, "b": 1}
    _assert_same(
        PodIndexer(index, [first, other, later], capacity).index(), _reference(index, [later, other], capacity)
    )
