"""The tick's vectorised paths give exactly what a straightforward implementation gives.

Each reference below is the plain version of a computation the engine does in bulk (the earlier code,
or the per-item loop it replaces), kept here so a faster path can never change a decision: results are
compared for equality, not closeness.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from apollo.core.decisions import Action
from apollo.core.domain import RESOURCES, NodeCapacity, NodeInsight, PodSignature, RunningPod, StorageDevice
from apollo.core.forecasting.combine import _MSE_FLOOR, Combiner
from apollo.core.forecasting.early_warning import overload_warning
from apollo.core.outlooks import NodeLayout, PodIndex, node_table, workload_outlooks
from apollo.core.policy import PolicyEngine, PolicySettings
from apollo.core.policy.migrate import MigratePlanner, _LazyHotspot
from apollo.core.policy.provision import ProvisionPlanner
from apollo.core.policy.scale import ScalePlanner
from apollo.core.scoring.table import NodeTable

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _reference_overload_warning(
    upper: FloatArray, threshold: float | FloatArray, k: int
) -> tuple[list[bool], list[int], list[int]]:
    """Per series: a run of k steps over the threshold, the 1-based step where the first one starts, steps over."""
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (upper.shape[0],))
    flags, first, steps = [], [], []
    for row, line in zip(upper.tolist(), thr.tolist(), strict=True):
        over = [value > line for value in row]  # NaN is never over
        runs = [j for j in range(len(row) - k + 1) if all(over[j : j + k])]
        flags.append(bool(runs))
        first.append(runs[0] + 1 if runs else -1)
        steps.append(sum(over))
    return flags, first, steps


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_overload_warning_matches_a_per_series_scan(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    upper = rng.uniform(0.6, 1.1, (500, 6))
    upper[rng.uniform(size=upper.shape) < 0.1] = np.nan
    upper[:5] = np.inf  # never expected, but the answer must not depend on the path either
    per_series = rng.uniform(0.7, 1.0, 500)
    for threshold in (0.85, per_series):
        got = overload_warning(np.asfortranarray(upper), threshold, k)  # column-major, as forecasts come
        flags, first, steps = _reference_overload_warning(upper, threshold, k)
        assert got.flags.tolist() == flags
        assert got.first_step.tolist() == first
        assert got.steps_over.tolist() == steps
        assert got.flags.dtype == np.bool_ and got.first_step.dtype == got.steps_over.dtype == np.int64
    empty = overload_warning(np.zeros((0, 6)), 0.85, k)
    assert empty.flags.shape == empty.first_step.shape == empty.steps_over.shape == (0,)


# ---------------------------------------------------------------------------------------------------------
# A small cluster over several ticks: the engine's node table, workload outlooks and every planner.

GiB = 2**30
NODES, PODS_PER_NODE, HORIZON = 120, 4, 6


def _cluster(rng: np.random.Generator) -> tuple[dict[str, NodeCapacity], tuple[RunningPod, ...]]:
    names = [f"node-{i:03d}" for i in range(NODES)]
    capacity = {n: NodeCapacity(16.0 if i % 9 else 0.0, 64 * GiB, 4 if i % 10 == 0 else 0) for i, n in enumerate(names)}
    pods = []
    for i, node in enumerate(names):
        for k in range(PODS_PER_NODE):
            owner = f"svc-{(i * PODS_PER_NODE + k) % 23}"
            kind = ("Deployment", "StatefulSet", "Job", "DaemonSet", "")[(i + k) % 5]
            heavy = PodSignature(
                io_pattern="IO_PATTERN_RANDOM",
                storage_class="STORAGE_CLASS_FAST" if k % 2 else "STORAGE_CLASS_UNSPECIFIED",
                cpu_usage_cores=float(rng.uniform(0.1, 2.0)) if k == 1 else math.nan,
            )
            pods.append(
                RunningPod(
                    "apps" if k % 3 else "ml", f"{owner}-{i}-{k}", node, kind, owner if kind else "",
                    cpu_request_cores=float(rng.uniform(0.0, 2.0)),
                    memory_request_bytes=float(rng.uniform(0.0, 4.0)) * GiB,
                    cpu_usage_cores=float(rng.uniform(0.1, 3.0)) if k == 2 else math.nan,
                    checkpointed=k % 3 == 0, priority=int(rng.integers(0, 3)), restarts=int(rng.integers(0, 3)),
                    completed_fraction=float(rng.choice([0.0, 0.5])), signature=heavy if k in (1, 3) else None,
                )
            )  # fmt: skip
    return capacity, tuple(pods)


def _forecast(rng: np.random.Generator, level: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-row (node x resource) mean and upper forecasts ``[n_rows, H]``, some unknown."""
    mean = np.clip(level[:, None] + rng.normal(0.0, 0.05, (level.size, HORIZON)).cumsum(axis=1), 0.0, 1.2)
    upper = mean + rng.uniform(0.02, 0.15, mean.shape)
    gone = rng.uniform(size=level.size) < 0.03
    mean[gone] = upper[gone] = np.nan
    return mean, upper


def _reference_workload_outlooks(table: NodeTable, pods: PodIndex) -> dict[str, list[FloatArray]]:
    """Each workload's summed series from per-pod terms built one pod at a time.

    The terms are summed with the engine's primitive (one ``np.add.reduceat`` segment, whose addition
    order is numpy's own), so what is compared is how the terms are formed, exactly.
    """
    out: dict[str, list[FloatArray]] = {}
    columns = {
        "cpu": (table.cpu_capacity, table.cpu_mean, table.cpu_upper),
        "memory": (table.memory_capacity, table.memory_mean, table.memory_upper),
    }
    for g, (namespace, kind, name) in enumerate(pods.groups):
        members = range(pods.starts[g], pods.starts[g + 1] if g + 1 < len(pods.groups) else len(pods.rows))
        series: list[FloatArray] = []
        known = False
        for res, (capacity, mean, upper) in columns.items():
            terms: list[list[FloatArray]] = [[], []]
            for m in members:
                row = int(pods.rows[m])
                share, cap = float(pods.shares[res][m]), float(capacity[row])
                usable = cap > 0 and not np.isnan(upper[row]).all() and share > 0
                known |= usable
                weight = share * cap if usable else 0.0
                for j, src in enumerate((mean, upper)):
                    terms[j].append(np.array([0.0 if math.isnan(v) else v * weight for v in src[row].tolist()]))
            series += [np.add.reduceat(np.array(t), [0], axis=0)[0] for t in terms]
        if known:
            out[f"{namespace}/{kind}/{name}"] = series
    return out


class _PlainMigratePlanner(MigratePlanner):
    """The migrate planner with its hysteresis and hotspot order written out per node (the earlier code)."""

    def _confirmed_hotspots(self, table: NodeTable, now: float, with_pods: set[str] | None = None) -> list[Any]:
        st = self.ctx.settings
        if table.horizon == 0:
            return []
        k = min(st.consecutive_steps, table.horizon)
        thr = st.overload_threshold
        cpu_w, mem_w = (_reference_overload_warning(u, thr, k) for u in (table.cpu_upper, table.memory_upper))
        warn = np.array(cpu_w[0]) | np.array(mem_w[0])
        both = np.array(cpu_w[0]) & np.array(mem_w[0])
        first = np.where(both, np.minimum(cpu_w[1], mem_w[1]), np.maximum(cpu_w[1], mem_w[1]))
        cpu_peak, mem_peak = table.cpu_peak_to[:, -1], table.memory_peak_to[:, -1]
        if now > self.last_tick:
            self._advance_streaks(table, warn, np.fmax(cpu_peak, mem_peak))
            self.last_tick = now
        names = self.confirmed if with_pods is None else self.confirmed & with_pods
        rows = [i for i in (table.index.get(n) for n in names) if i is not None and not table.stale[i]]
        severity = np.fmax(np.nan_to_num(cpu_peak), np.nan_to_num(mem_peak))
        rows.sort(key=lambda i: (-severity[i], table.nodes[i]))
        leaving = self.ctx.ledger.leaving_all()

        def size(i: int) -> Any:
            moving = leaving.get(table.nodes[i], (0.0, 0.0))
            return self._hotspot(table, i, float(cpu_peak[i]), float(mem_peak[i]), int(first[i]), moving)

        return [_LazyHotspot(table.nodes[i], i, size) for i in rows]

    def _advance_streaks(self, table: NodeTable, warn: BoolArray, peak: FloatArray) -> None:
        st = self.ctx.settings
        self.confirmed &= set(table.nodes)
        self.streak = {n: c for n, c in self.streak.items() if n in table.index}
        rows = set(np.flatnonzero(warn).tolist())
        rows.update(table.index[n] for n in (*self.streak, *self.confirmed))
        for i in sorted(rows):
            node = table.nodes[i]
            if table.stale[i]:
                continue
            self.streak[node] = min(self.streak.get(node, 0) + 1, st.confirm_ticks) if warn[i] else 0
            if self.streak[node] >= st.confirm_ticks:
                self.confirmed.add(node)
            elif not peak[i] >= st.clear_level:
                self.confirmed.discard(node)
            if not self.streak[node]:
                del self.streak[node]


@pytest.mark.parametrize("seed", range(3))
def test_engine_path_decides_as_the_plain_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    capacity, pods = _cluster(rng)
    keys = [(node, r) for node in capacity for r in RESOURCES]
    layout = NodeLayout.of(keys)
    index = PodIndex.of(layout.index, pods, capacity)
    insights = {"node-004": NodeInsight("node-004", storage=(StorageDevice("d", "hdd", 10, 10),))}
    settings = PolicySettings(max_migrations_cluster=8, rate_limit=6, confirm_ticks=2, scale_down_confirm_ticks=2)
    fast = PolicyEngine(settings)
    plain = PolicyEngine(settings, planners=(_PlainMigratePlanner, ScalePlanner, ProvisionPlanner))
    level = rng.uniform(0.3, 1.0, len(keys))
    decided = skipped = 0
    for tick in range(10):
        now = 1_000.0 + 300.0 * tick
        mean, upper = _forecast(rng, level)
        stale = rng.uniform(size=len(layout.nodes)) < 0.05
        anomaly = rng.uniform(size=len(keys)) < 0.02
        table = node_table(
            layout, mean=mean, upper=upper, pods=index, insights=insights, anomaly=anomaly,
            anomaly_score=np.where(anomaly, 4.0, 0.0), stale=stale, step_seconds=300.0,
        )  # fmt: skip
        workloads = workload_outlooks(table, index)
        reference = _reference_workload_outlooks(table, index)
        assert [w.key for w in workloads] == list(reference)
        for w in workloads:
            got = (w.cpu_mean, w.cpu_upper, w.memory_mean, w.memory_upper)
            assert all(np.array_equal(a, b) for a, b in zip(got, reference[w.key], strict=True))
        outputs = [eng.evaluate(now, table, pods, insights, (), workloads) for eng in (fast, plain)]
        assert repr(outputs[0]) == repr(outputs[1])
        decided += len(outputs[0].decisions)
        skipped += len(outputs[0].skipped)
        # Answer some decisions, the same way on both sides: cool-downs and settling moves then differ per tick.
        for decision in outputs[0].decisions[::2]:
            success = bool(rng.uniform() < 0.7)
            assert fast.record_result(decision.request_id, success, now + 60.0)
            assert plain.record_result(decision.request_id, success, now + 60.0)
        level = np.clip(level + rng.normal(0.0, 0.08, level.size), 0.0, 1.1)
    actions = {d.action for d in fast.ledger.inflight.values()}
    assert decided > 20 and skipped > 100 and Action.MIGRATE in actions  # the fixture exercises every planner


def _reference_weights(sq_sum: FloatArray, weight: FloatArray) -> FloatArray:
    """Inverse fourth-power weights normalised over experts; the model alone where nothing is known yet."""
    known = weight > 0
    inverse: FloatArray = np.maximum(sq_sum, _MSE_FLOOR * weight[None])
    inverse = inverse * inverse
    inverse = inverse * inverse
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / inverse
        inverse = inverse / inverse.sum(axis=0)[None]
    inverse[0] = np.where(known, inverse[0], 1.0)
    inverse[1:] = np.where(known[None], inverse[1:], 0.0)
    return inverse


@pytest.mark.parametrize("seed", range(5))
def test_combiner_weights_match_the_plain_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    combiner = Combiner(3000, 6, 288, 288)
    combiner.sq_sum[:] = rng.uniform(0.0, 10.0 ** rng.uniform(-14, 1), combiner.sq_sum.shape)
    combiner.sq_sum[:, :, :20] = 0.0  # a perfectly flat series: the floor keeps it finite
    combiner.weight[:] = rng.uniform(0.0, 1.0, combiner.weight.shape)
    combiner.weight[:, rng.uniform(size=3000) < 0.1] = 0.0  # nothing scored yet
    assert np.array_equal(combiner.weights(), _reference_weights(combiner.sq_sum, combiner.weight))
