"""APOLLO's Kubernetes reader as an informer: list, then watch, through a fake API server.

The fake answers `list_node` / `list_pod_for_all_namespaces` as the client does with
`_preload_content=False` (a listing's bytes, or a watch stream of JSON lines), the style of the other
`ListWatch` tests. Each `sync()` runs one list-then-watch round of both loops, as their threads would.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from apollo.adapters.kubernetes import BOUND_PODS, KubeReader
from apollo.config import ApolloSettings, ForecastSettings, PrometheusSettings, TuningSettings
from apollo.core.domain import ClusterView, PodSignature
from apollo.core.outlooks import PodIndexer, workload_outlooks
from apollo.runtime import engine as engine_module
from apollo.runtime.engine import Engine
from apollo.runtime.reports import ReportStore, TTLFollower, TTLMap
from apollo.runtime.sources import ClusterRead, Sample


class _Resp:
    def __init__(self, data: bytes = b"", lines: list[bytes] | None = None) -> None:
        self.data = data
        self.lines = lines or []

    def stream(self, size: int) -> Any:
        yield from self.lines

    def release_conn(self) -> None:
        pass


class FakeApi:
    """One collection per kind; `emit` queues a watch event, applied to the collection once streamed."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"nodes": {}, "pods": {}}
        self.queued: dict[str, list[tuple[str, dict[str, Any]]]] = {"nodes": [], "pods": []}
        self.version = 1
        self.calls: list[dict[str, Any]] = []

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}

    def put(self, kind: str, obj: dict[str, Any]) -> None:
        """A change the watch never reports (missed while disconnected): only a listing shows it."""
        meta = obj["metadata"]
        self.objects[kind][(meta.get("namespace", ""), meta["name"])] = self._stamp(obj)

    def drop(self, kind: str, namespace: str, name: str) -> None:
        self.objects[kind].pop((namespace, name))

    def emit(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self.queued[kind].append((event_type, self._stamp(obj)))

    def _answer(self, kind: str, kw: dict[str, Any]) -> _Resp:
        self.calls.append({"kind": kind, **kw})
        if not kw.get("watch"):
            listing = {"metadata": {"resourceVersion": str(self.version)}, "items": list(self.objects[kind].values())}
            return _Resp(orjson.dumps(listing))
        lines = []
        for event_type, obj in self.queued[kind]:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            if event_type == "DELETED":
                self.objects[kind].pop(key, None)
            else:
                self.objects[kind][key] = obj
            lines.append(orjson.dumps({"type": event_type, "object": obj}) + b"\n")
        self.queued[kind] = []
        return _Resp(lines=lines)

    def list_node(self, **kw: Any) -> _Resp:
        return self._answer("nodes", kw)

    def list_pod_for_all_namespaces(self, **kw: Any) -> _Resp:
        return self._answer("pods", kw)


def node(name: str, cpu: str = "16", labels: dict[str, str] | None = None, heartbeat: str = "t0") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {"pool": "a"}},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "64Gi"},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}],
        },
    }


def pod(
    name: str, node_name: str, cpu: str = "1", ready: str = "True", ns: str = "ml", owner: str = "train"
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"app": owner},
            "ownerReferences": [{"kind": "StatefulSet", "name": owner, "controller": True}],
        },
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]},
    }


class Harness:
    def __init__(self) -> None:
        self.now = [100.0]
        self.reports = ReportStore(60.0, clock=lambda: self.now[0])
        self.api = FakeApi()
        self.reader = KubeReader(self.api, self.reports.signatures, relist_backoff_seconds=0.01)

    def sync(self) -> None:
        for watch in self.reader.watches:
            watch.run_once()

    def read(self) -> ClusterRead:
        got = self.reader.read()
        assert got is not None
        return got


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.api.put("nodes", node("n1"))
    harness.api.put("nodes", node("n2"))
    harness.api.put("pods", pod("a", "n1"))
    return harness


def _names(view: ClusterView) -> list[str]:
    return [p.name for p in view.pods]


def test_nothing_is_answered_before_both_listings_then_the_pods_bound_to_nodes(h: Harness) -> None:
    assert h.reader.read() is None
    h.reader.watches[0].run_once()  # nodes only
    assert h.reader.read() is None and not h.reader.synced
    h.reader.watches[1].run_once()
    first = h.read()
    assert h.reader.synced and _names(first.view) == ["a"] and set(first.view.nodes) == {"n1", "n2"}
    assert first.view.pods[0].owner_kind == "StatefulSet" and first.view.pods[0].cpu_request_cores == 1.0
    pod_calls = [c for c in h.api.calls if c["kind"] == "pods"]
    assert all(c["field_selector"] == BOUND_PODS for c in pod_calls)
    assert pod_calls[1]["watch"] is True and pod_calls[1]["resource_version"] == str(h.api.version)  # the listing's


def test_unchanged_means_the_same_view_object_and_events_that_change_nothing_keep_it(h: Harness) -> None:
    h.sync()
    first = h.read()
    again = h.read()
    assert again.view is first.view and again.base is first.view and again.changes == ()
    h.api.emit("nodes", "MODIFIED", node("n1", heartbeat="t1"))  # a heartbeat: nothing the policy reads
    h.api.emit("pods", "MODIFIED", pod("a", "n1", ready="False"))  # a condition: nothing the policy reads
    h.sync()  # also relists both collections: unchanged objects are not even converted again
    assert h.read().view is first.view
    assert h.reader.cache.pod_events == 1 and h.reader.cache.node_events == 1


def test_add_modify_delete_each_give_a_new_view_with_the_changes_since_the_last(h: Harness) -> None:
    h.sync()
    first = h.read().view
    h.api.emit("pods", "ADDED", pod("b", "n2"))
    h.sync()
    added = h.read()
    assert _names(added.view) == ["a", "b"] and added.base is first
    assert [(k, p.name if p else None) for k, p in added.changes] == [(("ml", "b"), "b")]
    h.api.emit("pods", "MODIFIED", pod("a", "n1", cpu="3"))
    h.sync()
    modified = h.read()
    assert _names(modified.view) == ["a", "b"]  # a changed pod keeps its place
    assert modified.view.pods[0].cpu_request_cores == 3.0 and modified.base is added.view
    h.api.emit("pods", "DELETED", pod("a", "n1", cpu="3"))
    h.api.emit("nodes", "MODIFIED", node("n2", cpu="8"))
    h.sync()
    deleted = h.read()
    assert _names(deleted.view) == ["b"] and deleted.changes == ((("ml", "a"), None),)
    assert deleted.view.nodes["n2"].cpu_cores == 8.0 and deleted.view.nodes is not modified.view.nodes
    assert modified.view.nodes["n2"].cpu_cores == 16.0  # a view handed out never changes
    h.api.emit("nodes", "DELETED", node("n1"))
    h.sync()
    assert set(h.read().view.nodes) == {"n2"}


def test_a_terminating_or_finished_pod_leaves_the_view(h: Harness) -> None:
    h.sync()
    terminating = pod("a", "n1")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    h.api.emit("pods", "MODIFIED", terminating)
    h.sync()
    assert h.read().view.pods == ()


def test_a_relist_applies_what_the_watch_missed(h: Harness) -> None:
    h.sync()
    before = h.read().view
    h.api.drop("pods", "ml", "a")
    h.api.put("pods", pod("c", "n2"))
    h.api.put("nodes", node("n3"))
    h.sync()  # e.g. after the watch expired (410 Gone): ListWatch lists again
    after = h.read()
    assert _names(after.view) == ["c"] and set(after.view.nodes) == {"n1", "n2", "n3"}
    assert after.base is before and {k for k, _ in after.changes} == {("ml", "a"), ("ml", "c")}


def test_a_signature_attaches_to_its_pod_as_a_new_view_and_expiry_detaches_it(h: Harness) -> None:
    h.sync()
    first = h.read().view
    assert first.pods[0].signature is None and math.isnan(first.pods[0].cpu_usage_cores)
    h.reports.put_signature("ml", "other", PodSignature(cpu_usage_cores=9.0))  # a pod not in the cluster
    assert h.read().view is first
    signature = PodSignature(io_pattern="IO_PATTERN_RANDOM", cpu_usage_cores=2.5)
    h.reports.put_signature("ml", "a", signature)
    signed = h.read()
    assert signed.view is not first and signed.view.pods[0].signature == signature
    assert signed.view.pods[0].cpu_usage_cores == 2.5 and [k for k, _ in signed.changes] == [("ml", "a")]
    assert h.read().view is signed.view
    h.api.emit("pods", "MODIFIED", pod("a", "n1", cpu="2"))  # a pod event keeps the signature known
    h.sync()
    modified = h.read().view
    assert modified.pods[0].signature == signature and modified.pods[0].cpu_request_cores == 2.0
    h.now[0] += 61.0  # past the reports' TTL
    expired = h.read()
    assert expired.view.pods[0].signature is None and expired.changes == ((("ml", "a"), expired.view.pods[0]),)
    assert h.read().view is expired.view


def test_follower_reports_puts_and_expiries_once_each() -> None:
    now = [0.0]
    store: TTLMap[str, int] = TTLMap(10.0, lambda: now[0])
    follower = TTLFollower(store)
    store.put("a", 1)
    store.put("b", 2)
    assert follower.changes() == {"a": 1, "b": 2}
    assert follower.changes() == {}
    now[0] = 5.0
    store.put("a", 3)  # renewed: its first put's expiry must not remove it
    assert follower.changes() == {"a": 3} and follower.get("a") == 3
    now[0] = 10.5
    assert follower.changes() == {"b": None} and store.get("b") is None and follower.get("b") is None
    now[0] = 16.0
    assert follower.changes() == {"a": None}
    store.put("c", 4)
    now[0] = 30.0
    assert follower.changes() == {"c": None}  # put and expired between two looks: unknown either way


# ------------------------------------------------------------------------------------------- the engine


class _Prom:
    def __init__(self) -> None:
        self.values = {("n1", "cpu"): 0.5, ("n1", "memory"): 0.4, ("n2", "cpu"): 0.3, ("n2", "memory"): 0.2}

    def latest(self) -> Sample:
        return Sample(values=dict(self.values))

    def history(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def _engine(h: Harness, tick_seconds: float = 60.0) -> Engine:
    settings = ApolloSettings(
        prometheus=PrometheusSettings(url="http://127.0.0.1:1", queries={"cpu": "cpu", "memory": "memory"}),
        forecast=ForecastSettings(
            tick_seconds=tick_seconds, step_seconds=60, horizon_minutes=5, season_minutes=0, warmup_samples=1
        ),
        tuning=TuningSettings(enabled=False),
    ).validate()
    return Engine(settings, _Prom(), h.reports, clock=lambda: h.now[0], kube=h.reader)


def test_the_engine_holds_decisions_until_kubernetes_synced(h: Harness) -> None:
    engine = _engine(h)
    for _ in range(3):
        view = engine.run_tick()
        h.now[0] += 60.0
    assert view.stale and view.stale_reason == "kubernetes not synced" and view.cluster.pods == ()
    h.sync()
    view = engine.run_tick()
    assert not view.stale and [p.name for p in view.cluster.pods] == ["a"]


def test_the_engine_index_follows_the_changes_and_equals_a_full_build(h: Harness) -> None:
    engine = _engine(h)
    h.sync()
    engine.run_tick()
    assert engine._pods is not None
    indexer = engine._pods[2]
    rng = np.random.default_rng(3)
    for step in range(12):
        h.now[0] += 60.0
        h.api.emit("pods", "ADDED", pod(f"b{step}", ("n1", "n2")[step % 2], cpu=str(1 + step % 3)))
        if step % 3 == 0:
            h.api.emit("pods", "DELETED", pod(f"b{step - 2}" if step >= 2 else "a", "n1"))
        if step % 4 == 1:
            h.reports.put_signature("ml", f"b{step - 1}", PodSignature(cpu_usage_cores=float(rng.uniform(0, 2))))
        h.sync()
        view = engine.run_tick()
        held = engine._pods
        assert held is not None and held[0] is view.cluster and held[2] is indexer  # updated, not rebuilt
        full = PodIndexer(engine._layout.index, view.cluster.pods, view.cluster.nodes).index()
        got = held[3]
        assert np.array_equal(got.requested, full.requested) and got.groups == full.groups
        assert got.replicas == full.replicas and np.array_equal(got.rows, full.rows)
        assert all(np.array_equal(got.shares[r], full.shares[r]) for r in full.shares)
    unchanged = engine.run_tick()
    assert engine._pods is not None and engine._pods[0] is unchanged.cluster is view.cluster


def test_between_model_steps_only_the_workloads_whose_pods_changed_are_recomputed(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(12):
        h.api.put("pods", pod(f"w{i}", ("n1", "n2")[i % 2], cpu=str(1 + i % 3), owner=f"svc-{i % 4}"))
    engine = _engine(h, tick_seconds=10.0)  # six ticks per model step
    h.sync()
    computed: list[set[tuple[str, str, str]] | None] = []
    full = workload_outlooks

    def spy(table: Any, pods: Any, only: Any = None) -> Any:
        computed.append(None if only is None else set(only))
        return full(table, pods, only)

    monkeypatch.setattr(engine_module, "workload_outlooks", spy)
    for step in range(18):
        h.now[0] += 10.0
        if step % 2:
            h.api.emit("pods", "ADDED", pod(f"x{step}", "n2", owner=f"svc-{step % 4}"))
        h.sync()
        view = engine.run_tick()
        if engine._workloads is None:  # warming up: nothing planned yet
            continue
        assert engine._pods is not None and view.table is not None
        reference = full(view.table, engine._pods[3])
        got = engine._workloads.outlooks
        assert [w.key for w in got] == [w.key for w in reference]
        for a, b in zip(got, reference, strict=True):
            assert (a.replicas, a.cpu_request_cores, a.memory_request_bytes) == (
                b.replicas, b.cpu_request_cores, b.memory_request_bytes,
            )  # fmt: skip
            for name in ("cpu_mean", "cpu_upper", "memory_mean", "memory_upper"):
                assert np.array_equal(getattr(a, name), getattr(b, name)), name
    partial = [c for c in computed if c is not None]
    assert partial and all(c <= {("ml", "StatefulSet", f"svc-{k}") for k in range(4)} for c in partial)
    assert any(len(c) < 4 for c in partial)  # a pod added on n2 touches the workloads there, not all


def test_the_benchmark_cluster_reads_as_intended_and_its_churn_keeps_the_pod_count() -> None:
    from bench.forecast.cluster import PodChurn, SyntheticCluster
    from bench.forecast.ticks import _feed, kube_reader

    reports = ReportStore(600.0)
    nodes = [f"node-{i}" for i in range(20)]
    reader, cluster, figures = kube_reader(nodes, 4, 1, reports)
    assert isinstance(cluster, SyntheticCluster) and figures["kube_listing_mb"] > 0
    first = reader.read()
    assert first is not None and len(first.view.pods) == 80 and set(first.view.nodes) == set(nodes)
    kinds = {p.owner_kind for p in first.view.pods}
    assert kinds == {"DaemonSet", "Deployment", "StatefulSet"}
    assert all(p.owner_name.startswith("svc-") for p in first.view.pods if p.owner_kind == "Deployment")
    churn = PodChurn(cluster, 10)
    assert churn.events_per_tick == 8
    assert _feed(reader, churn.tick()) == 8
    after = reader.read()
    assert after is not None and after.view is not first.view and len(after.view.pods) == 80
    gone = {k for k, p in after.changes if p is None}
    came = {k for k, p in after.changes if p is not None}
    assert len(gone) == len(came) == 2 and not gone & came  # a DELETED after "terminating" changes nothing more
    assert {(p.namespace, p.name) for p in after.view.pods} == {
        (p.namespace, p.name) for p in first.view.pods
    } - gone | came
