"""Extender verbs with real ExtenderArgs JSON, on the Flask test client (no network)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import grpc
import orjson
import pytest

from apollo_api.v1 import apollo_pb2 as pb
from common.quantity import parse_quantity
from extender.app import create_app
from extender.config import ExtenderSettings, load_settings
from extender.placements import Placement
from extender.podspec import pod_demand
from extender.snapshot import NodeEntry, Snapshot
from extender.verbs import ExtenderState

GiB = 2**30


def _pod(
    name: str = "p", cpu: str = "1", memory: str = "1Gi", affinity_nodes: list[str] | None = None
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
    }
    if affinity_nodes:
        pod["spec"]["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": affinity_nodes}]}
                    ]
                }
            }
        }
    return pod


def _entry(score: int, cpu_headroom: float, overload: bool = False, mem_headroom: float = 100 * GiB) -> NodeEntry:
    return NodeEntry(
        score=score,
        reason=f"score {score}",
        overload=overload,
        cpu_headroom_cores=cpu_headroom,
        memory_headroom_bytes=mem_headroom,
        cpu_allocatable_cores=16.0,
        memory_allocatable_bytes=128 * GiB,
    )


@pytest.fixture
def app_and_state() -> tuple[Any, ExtenderState]:
    settings = ExtenderSettings(apollo_address="127.0.0.1:1", watch_pods=False, policy_mode="off").validate()
    app = create_app(settings, channel=grpc.insecure_channel("127.0.0.1:1"), start_background=False)
    state: ExtenderState = app.extensions["apollo"]
    state.store.replace(
        Snapshot.from_entries(
            generation=1,
            created_at=time.time() - 5,
            nodes={
                "idle": _entry(90, 12.0),
                "busy": _entry(30, 2.0),
                "hot": _entry(5, 0.5, overload=True),
            },
        )
    )
    return app.test_client(), state


def _post(client: Any, verb: str, payload: Any) -> Any:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return client.post(f"/{verb}", data=body, content_type="application/json")


def test_filter_drops_predicted_overload_with_reason(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, _ = app_and_state
    resp = _post(client, "filter", {"Pod": _pod(cpu="1"), "NodeNames": ["idle", "busy", "hot", "unknown"]})
    out = resp.get_json()
    assert resp.status_code == 200 and out["Error"] == ""
    assert out["NodeNames"] == ["idle", "busy", "unknown"]
    assert "overload" in out["FailedNodes"]["hot"]
    assert out["FailedAndUnresolvableNodes"] == {}


def test_filter_drops_node_whose_headroom_is_below_request(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, _ = app_and_state
    out = _post(client, "filter", {"Pod": _pod(cpu="4"), "NodeNames": ["idle", "busy"]}).get_json()
    assert out["NodeNames"] == ["idle"]
    assert out["FailedNodes"]["busy"].startswith("predicted CPU headroom 2.00 cores < request 4.00")


def test_pinned_node_is_scored_not_filtered(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, _ = app_and_state
    pod = _pod(affinity_nodes=["hot"])
    out = _post(client, "filter", {"Pod": pod, "NodeNames": ["hot"]}).get_json()
    assert out["NodeNames"] == ["hot"] and out["FailedNodes"] == {}


def test_filter_with_full_nodelist_answers_nodelist(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, _ = app_and_state
    nodes = {"items": [{"metadata": {"name": n}, "status": {}} for n in ("idle", "hot")]}
    out = _post(client, "filter", {"Pod": _pod(), "Nodes": nodes}).get_json()
    assert [n["metadata"]["name"] for n in out["Nodes"]["items"]] == ["idle"]
    assert out["NodeNames"] is None


def test_prioritize_ranks_by_apollo_and_hot_value(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, state = app_and_state
    names = ["idle", "busy", "hot"]
    scores = {
        h["Host"]: h["Score"] for h in _post(client, "prioritize", {"Pod": _pod(), "NodeNames": names}).get_json()
    }
    assert scores["idle"] > scores["busy"] > scores["hot"]
    assert all(0 <= s <= 10 for s in scores.values())
    # A burst of pods bound to "idle" since the sample must lower its score.
    for i in range(10):
        state.ledger.record(f"u{i}", Placement("idle", 1.0, GiB, time.time()))
    after = {h["Host"]: h["Score"] for h in _post(client, "prioritize", {"Pod": _pod(), "NodeNames": names}).get_json()}
    assert after["idle"] < scores["idle"]


def test_hot_value_keeps_pods_bound_shortly_before_the_sample(app_and_state: tuple[Any, ExtenderState]) -> None:
    """Metrics show a new pod only a while after it is bound: within hot_value_lag_seconds it still counts."""
    client, state = app_and_state
    snap = state.store.current
    assert snap is not None and state.settings.hot_value_lag_seconds == 60.0

    def busy_fits() -> bool:  # "busy" has 2 cores of predicted headroom; the pod asks for 1
        reply = _post(client, "filter", {"Pod": _pod(cpu="1"), "NodeNames": ["idle", "busy"]}).get_json()
        return "busy" in reply["NodeNames"]

    assert busy_fits()
    state.ledger.record("long-ago", Placement("busy", 1.5, GiB, snap.created_at - 600))  # in APOLLO's numbers
    assert busy_fits()
    state.ledger.record("just-before", Placement("busy", 1.5, GiB, snap.created_at - 20))  # not yet in them
    assert not busy_fits()


def test_stale_snapshot_fails_open(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, state = app_and_state
    snap = state.store.current
    assert snap is not None
    state.store.replace(dataclasses.replace(snap, stale=True, stale_reason="prom down"))
    out = _post(client, "filter", {"Pod": _pod(), "NodeNames": ["idle", "hot"]}).get_json()
    assert out["NodeNames"] == ["idle", "hot"]
    pri = _post(client, "prioritize", {"Pod": _pod(), "NodeNames": ["idle", "hot"]}).get_json()
    assert {h["Score"] for h in pri} == {5}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'apollo_extender_fallbacks_total{reason="apollo-stale",verb="filter"} 1.0' in metrics


def test_no_snapshot_fails_open_and_readyz_says_so() -> None:
    settings = ExtenderSettings(apollo_address="127.0.0.1:1", watch_pods=False, policy_mode="off").validate()
    client = create_app(settings, channel=grpc.insecure_channel("127.0.0.1:1"), start_background=False).test_client()
    out = _post(client, "filter", {"Pod": _pod(), "NodeNames": ["a", "b"]}).get_json()
    assert out["NodeNames"] == ["a", "b"] and out["Error"] == ""
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["apollo"] == "no-snapshot"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[]", "ExtenderArgs must be a JSON object"),
        (b"{}", "ExtenderArgs.Pod is missing"),
        (orjson.dumps({"Pod": {"metadata": {"name": "p"}}}), "neither NodeNames nor Nodes"),
        (orjson.dumps({"Pod": "x", "NodeNames": []}), "Pod must be a Pod object"),
        (orjson.dumps({"Pod": {"metadata": {"name": "p"}}, "NodeNames": [1]}), "NodeNames must be a list"),
        (orjson.dumps({"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": [{}]}}), "items[0].metadata.name"),
        (orjson.dumps({"Pod": _pod(cpu="lots"), "NodeNames": ["a"]}), "invalid resource request"),
        (b"", "empty request body"),
    ],
)
def test_bad_input_gets_precise_error(app_and_state: tuple[Any, ExtenderState], body: bytes, message: str) -> None:
    client, _ = app_and_state
    resp = _post(client, "filter", body)
    assert resp.status_code == 200
    assert message in resp.get_json()["Error"]
    pri = _post(client, "prioritize", body)
    assert pri.status_code == 400 and message in pri.get_json()["Error"]


def test_oversized_body_and_too_many_nodes() -> None:
    settings = ExtenderSettings(
        apollo_address="127.0.0.1:1", watch_pods=False, policy_mode="off", max_body_bytes=4096, max_nodes=3
    ).validate()
    client = create_app(settings, channel=grpc.insecure_channel("127.0.0.1:1"), start_background=False).test_client()
    big = orjson.dumps({"Pod": _pod(), "NodeNames": [f"n{i}" for i in range(1000)]})
    out = _post(client, "filter", big).get_json()
    assert "exceeds the limit of 4096 bytes" in out["Error"]
    out = _post(client, "filter", {"Pod": _pod(), "NodeNames": ["a", "b", "c", "d"]}).get_json()
    assert "more than the limit of 3" in out["Error"]


def test_non_protocol_requests_get_400s(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, _ = app_and_state
    assert client.get("/filter").status_code == 405
    assert client.get("/nope").status_code == 404
    body = client.get("/nope").get_json()
    assert body["kind"] == "Status" and body["code"] == 404 and body["reason"] == "NotFound"


def test_quantities_and_demand() -> None:
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("2Gi") == 2 * GiB
    assert parse_quantity("1k") == 1000
    assert math.isclose(parse_quantity("1.5"), 1.5)
    pod = _pod(cpu="250m", memory="512Mi")
    pod["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]
    demand = pod_demand(pod)
    assert demand.cpu_cores == 2.0 and demand.memory_bytes == 512 * 2**20


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="snapshot_max_age_seconds must exceed"):
        load_settings(environ={"EXTENDER_SNAPSHOT_MAX_AGE_SECONDS": "1", "EXTENDER_REFRESH_INTERVAL_SECONDS": "2"})
    with pytest.raises(ValueError, match="apollo_address must be host:port"):
        load_settings(environ={"EXTENDER_APOLLO_ADDRESS": "nohost"})
    assert load_settings(environ={"EXTENDER_SERVER__WORKERS": "3"}).server.workers == 3
    with pytest.raises(ValueError, match="hot_value_lag_seconds must be a finite number in"):
        load_settings(environ={"EXTENDER_HOT_VALUE_LAG_SECONDS": "-1"})


def test_failure_reasons_carry_no_format_verbs() -> None:
    from extender.protocol import encode_filter_result

    out = orjson.loads(encode_filter_result(None, [], {"n": "cpu peak 97% > 85%"}, {"g": "no GPU: 0% free"}))
    assert "%" not in str(out["FailedNodes"]) + str(out["FailedAndUnresolvableNodes"])
    assert out["FailedNodes"]["n"] == "cpu peak 97 pct > 85 pct"


def test_affinity_to_several_nodes_is_a_candidate_set_not_a_pin(app_and_state: tuple[Any, ExtenderState]) -> None:
    client, _ = app_and_state
    out = _post(
        client, "filter", {"Pod": _pod(affinity_nodes=["hot", "idle"]), "NodeNames": ["hot", "idle"]}
    ).get_json()
    assert out["NodeNames"] == ["idle"] and "hot" in out["FailedNodes"]


class _SlowPolicyStub:
    """GetSchedulingPolicy that answers after a delay, like a busy APOLLO."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def GetSchedulingPolicy(self, request: Any, timeout: float) -> Any:
        from apollo_api.v1 import apollo_pb2 as pb

        self.calls += 1
        time.sleep(self.delay)
        return pb.SchedulingPolicy(node_preferences=[pb.NodePreference(node_name="idle", score=99)])


def test_policy_cache_never_blocks_by_default_and_fetches_once() -> None:
    from extender.apollo_client import PolicyCache
    from extender.metrics import ExtenderMetrics

    stub = _SlowPolicyStub(0.2)
    cache = PolicyCache(stub, ExtenderMetrics.create(), ttl=30, timeout=1)  # type: ignore[arg-type]
    pod = _pod()
    demand = pod_demand(pod)
    t0 = time.perf_counter()
    assert cache.get(pod, demand, ["idle"], budget=0) is None  # filter: no wait
    assert cache.get(pod, demand, ["idle"], budget=0.5) is None  # prioritize: never re-waits an old lookup
    assert time.perf_counter() - t0 < 0.05
    time.sleep(0.3)
    policy = cache.get(pod, demand, ["idle"], budget=0)
    assert policy is not None and policy.scores == {"idle": 99} and stub.calls == 1


def test_policy_mode_annotated_asks_only_for_annotated_pods() -> None:
    from extender.verbs import POLICY_ANNOTATION, wants_policy

    pod = _pod()
    assert not wants_policy("annotated", pod) and wants_policy("all", pod)
    pod["metadata"]["annotations"] = {POLICY_ANNOTATION: "true"}
    assert wants_policy("annotated", pod) and not wants_policy("off", pod)


def test_watcher_counts_a_binding_once_and_reports_scored_pods() -> None:
    from extender.placements import PlacementLedger
    from extender.pod_watcher import BindingSink, PodWatcher, bound_at

    ledger = PlacementLedger()
    reports: list[Any] = []
    seen = lambda uid: time.monotonic() - 0.5 if uid == "uid-p" else None  # noqa: E731
    watcher = PodWatcher(None, BindingSink(ledger, seen, reports.append))
    pod = _pod(cpu="2", memory="1Gi")
    pod["spec"]["nodeName"] = "idle"
    pod["status"] = {
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-22T08:00:00Z"}]
    }
    watcher.handle("ADDED", pod)
    watcher.handle("MODIFIED", pod)
    assert len(ledger) == 1 and ledger.usage_since(0) == {"idle": (2.0, float(GiB))}
    assert len(reports) == 1 and reports[0].scheduled_node == "idle" and reports[0].scheduling_duration_ms >= 500
    assert bound_at(pod) == 1795334400.0
    watcher.handle("DELETED", pod)
    assert len(ledger) == 0


class _SnapshotStub:
    def __init__(self, reply: pb.NodeScoreSnapshot) -> None:
        self.reply = reply
        self.requests: list[pb.NodeScoreSnapshotRequest] = []

    def GetNodeScoreSnapshot(self, request: pb.NodeScoreSnapshotRequest, timeout: float) -> pb.NodeScoreSnapshot:
        self.requests.append(request)
        return self.reply


def test_refresher_builds_the_snapshot_from_columns_and_refuses_ragged_ones() -> None:
    from extender.apollo_client import Refresher
    from extender.metrics import ExtenderMetrics
    from extender.snapshot import SnapshotStore

    reply = pb.NodeScoreSnapshot(generation=4)
    c = reply.columns
    c.node_names.extend(["a", "b"])
    c.score.extend([80, 10])
    c.predicted_overload.extend([False, True])
    c.cpu_headroom_cores.extend([6.0, math.nan])
    c.memory_headroom_bytes.extend([8 * GiB, math.nan])
    c.cpu_allocatable_cores.extend([8.0, math.nan])
    c.memory_allocatable_bytes.extend([16 * GiB, math.nan])
    c.overload_reasons["b"] = "cpu p90 forecast 97 pct"
    stub = _SnapshotStub(reply)
    store, metrics = SnapshotStore(), ExtenderMetrics.create()
    refresher = Refresher(stub, store, metrics, interval=1, timeout=1)  # type: ignore[arg-type]
    assert refresher.refresh_once() and stub.requests[0].columnar
    snap = store.current
    assert snap is not None and snap.generation == 4 and len(snap) == 2
    a, b = snap.entry("a"), snap.entry("b")
    assert a is not None and (a.score, a.overload, a.cpu_headroom_cores) == (80, False, 6.0)
    assert b is not None and b.overload and b.reason == "cpu p90 forecast 97 pct" and math.isnan(b.cpu_headroom_cores)
    assert stub.requests[-1].known_generation == 0
    # A ragged answer (a column shorter than the names) is refused; the held snapshot stays.
    ragged = pb.NodeScoreSnapshot(generation=5)
    ragged.columns.node_names.extend(["a", "b"])
    ragged.columns.score.extend([1])
    stub.reply = ragged
    assert not refresher.refresh_once()
    assert store.current is snap and store.last_error == "MALFORMED"
    assert stub.requests[-1].known_generation == 4


def test_flask_routes_answer_a_chunked_body_as_a_sized_one(
    app_and_state: tuple[Any, ExtenderState],
) -> None:
    """The Flask routes (any WSGI server but ours) read a chunked body (no length) like a sized one."""
    import io

    client, _ = app_and_state
    body = orjson.dumps({"Pod": _pod(), "NodeNames": ["idle", "busy", "hot"]})
    fast = client.post("/prioritize", data=body, content_type="application/json")
    chunked = client.post(
        "/prioritize",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        # What gunicorn hands over for a chunked body: no length, a stream that ends with the body.
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"},
    )
    assert chunked.status_code == fast.status_code == 200
    assert chunked.get_json() == fast.get_json() and len(fast.get_json()) == 3


def test_a_bug_in_a_verb_is_answered_in_protocol_terms_not_a_traceback(
    app_and_state: tuple[Any, ExtenderState], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, state = app_and_state

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(state.store, "usable", broken)
    out = _post(client, "filter", {"Pod": _pod(), "NodeNames": ["idle"]})
    assert out.status_code == 200 and out.get_json()["Error"] == "internal error: RuntimeError"
    pri = _post(client, "prioritize", {"Pod": _pod(), "NodeNames": ["idle"]})
    assert pri.status_code == 500 and pri.get_json() == {"Error": "internal error: RuntimeError"}
    assert b"Traceback" not in pri.data
    errors = state.metrics.registry.get_sample_value(
        "apollo_extender_request_errors_total", {"verb": "filter", "kind": "internal"}
    )
    assert errors == 1


def test_ledger_sums_incrementally_and_drops_what_apollo_has_sampled() -> None:
    from extender.placements import PlacementLedger

    ledger = PlacementLedger(max_entries=3)
    ledger.record("a", Placement("n1", 1.0, 1.0 * GiB, bound_at=100.0))
    ledger.record("b", Placement("n1", 2.0, 1.0 * GiB, bound_at=110.0))
    assert not ledger.record("b", Placement("n2", 5.0, 0.0, bound_at=111.0))  # counted once
    held = ledger.usage_since(0.0)
    assert held == {"n1": (3.0, 2.0 * GiB)}
    ledger.record("c", Placement("n2", 0.5, 0.0, bound_at=120.0))
    assert held == {"n1": (3.0, 2.0 * GiB)}  # a reader's dict never changes under it
    assert ledger.usage_since(0.0) == {"n1": (3.0, 2.0 * GiB), "n2": (0.5, 0.0)}
    # APOLLO's sample moved past "a": it is in APOLLO's numbers now, and gone from the ledger.
    assert ledger.usage_since(105.0) == {"n1": (2.0, 1.0 * GiB), "n2": (0.5, 0.0)}
    assert "a" not in ledger and len(ledger) == 2
    ledger.forget("c")  # deleted pod
    assert ledger.usage_since(105.0) == {"n1": (2.0, 1.0 * GiB)}
    # A binding older than the sample is remembered (not re-processed) but not counted.
    ledger.record("old", Placement("n3", 4.0, 0.0, bound_at=90.0))
    assert "old" in ledger and ledger.usage_since(105.0) == {"n1": (2.0, 1.0 * GiB)}
    # Full: the oldest binding makes room.
    ledger.record("d", Placement("n4", 1.0, 0.0, bound_at=130.0))
    ledger.record("e", Placement("n4", 1.0, 0.0, bound_at=131.0))
    assert len(ledger) == 3 and "old" not in ledger
    assert ledger.usage_since(105.0) == {"n1": (2.0, 1.0 * GiB), "n4": (2.0, 0.0)}


def test_prioritize_reply_is_the_same_json_through_cached_rows_hot_values_and_encoded_names() -> None:
    from extender.placements import PlacementLedger
    from extender.protocol import encode_priorities, prepare
    from extender.ranking import prioritize_nodes

    snap = prepare(
        Snapshot.from_entries(
            generation=1,
            created_at=time.time() - 5,
            nodes={f"n{i}": _entry(10 * i, float(i)) for i in range(8)},
        )
    )
    demand = pod_demand(_pod(cpu="500m"))
    ledger = PlacementLedger()

    def expected(names: list[str]) -> list[dict[str, Any]]:
        scores = prioritize_nodes(snap, demand, names, ledger.usage_since(0), None)
        return [{"Host": h, "Score": s} for h, s in scores.pairs()]

    for names in (["n1", "n2", "n3"], ["n1", "n2", "n3"], ["n7", 'odd"name', "n0"], ["n5"], []):
        hot = ledger.usage_since(0)
        reply = encode_priorities(prioritize_nodes(snap, demand, names, hot, None))
        assert orjson.loads(reply) == expected(names)
    # A binding changes the hot value: the cached per-row columns follow the ledger, not the last request.
    before = dict(prioritize_nodes(snap, demand, ["n6", "n4"], ledger.usage_since(0), None).pairs())
    ledger.record("u", Placement("n6", 5.0, 0.0, time.time()))
    after = dict(prioritize_nodes(snap, demand, ["n6", "n4"], ledger.usage_since(0), None).pairs())
    assert after["n6"] < before["n6"] and after["n4"] == before["n4"]


def test_hot_columns_updated_per_binding_equal_a_rebuild_through_a_ledger_history() -> None:
    """The per-row headroom follows each binding by rewriting the changed rows; it must match a rebuild."""
    import random

    import numpy as np

    from extender.placements import PlacementLedger
    from extender.ranking import free_by_row

    rng = random.Random(3)
    names = [f"n{i}" for i in range(12)]
    entries = {n: _entry(50, rng.uniform(0, 8), mem_headroom=8 * GiB) for n in names}
    snap = Snapshot.from_entries(generation=1, created_at=0.0, nodes=entries)
    ledger = PlacementLedger(max_entries=40)
    since, uids, incremental = 0.0, [], 0
    for step in range(400):
        roll = rng.random()
        if roll < 0.6:
            uids.append(f"u{step}")
            node = rng.choice([*names, "not-in-snapshot"])
            bound_at = since + rng.uniform(-5, 50)
            ledger.record(uids[-1], Placement(node, rng.uniform(0, 1), rng.uniform(0, GiB), bound_at))
        elif roll < 0.85 and uids:
            ledger.forget(rng.choice(uids))
        elif roll < 0.9:
            since += rng.uniform(0, 10)  # APOLLO's sample moves: a new epoch, sums recomputed
        hot = ledger.usage_since(since)
        last = snap.memo.get("free")
        incremental += last is not None and hot.changed_since(last[0]) is not None
        cpu, memory = free_by_row(snap, hot)
        rebuilt = Snapshot.from_entries(generation=1, created_at=0.0, nodes=entries)
        expected_cpu, expected_memory = free_by_row(rebuilt, dict(hot))
        np.testing.assert_allclose(cpu, expected_cpu, rtol=0, atol=1e-9)
        np.testing.assert_allclose(memory, expected_memory, rtol=0, atol=1e-3)
    assert incremental > 200  # the history exercised the update, not only rebuilds
