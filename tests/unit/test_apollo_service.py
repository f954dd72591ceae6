"""APOLLO's gRPC services on a real server on a free loopback port, fed by a scripted Prometheus client."""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from apollo.adapters.prometheus import PrometheusSource
from apollo.config import ApolloSettings, ForecastSettings, PolicySettings, PrometheusSettings
from apollo.core.domain import ClusterView, NodeCapacity, RunningPod
from apollo.runtime.sources import ClusterRead
from apollo.server import Apollo, serve
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc


class ScriptedProm:
    """Answers instant queries from a dict {resource: {node: value}}; raises when told to fail."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}
        self.fail = False

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if self.fail:
            raise ConnectionError("connection refused")
        resource = query.split(":")[1]
        now = dt.datetime.now().timestamp()
        return [{"metric": {"node": n}, "value": [now, str(v)]} for n, v in self.values.get(resource, {}).items()]

    def custom_query_range(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise NotImplementedError


@pytest.fixture
def apollo() -> Iterator[tuple[Apollo, ScriptedProm, grpc.Channel]]:
    settings = ApolloSettings(
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        prometheus=PrometheusSettings(
            url="http://127.0.0.1:1", queries={"cpu": "q:cpu", "memory": "q:memory"}, stale_after_seconds=0.5
        ),
        forecast=ForecastSettings(step_seconds=1.0, horizon_minutes=1, season_minutes=0, warmup_samples=3),
        policy=PolicySettings(consecutive_steps=3, confirm_ticks=2),
    ).validate()
    prom = ScriptedProm()
    running = serve(settings, PrometheusSource(settings.prometheus, prom), start_ticks=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    yield running, prom, channel
    channel.close()
    running.stop(0.5)


def _three_nodes(running: Apollo, prom: ScriptedProm, channel: grpc.Channel, bare: bool = False) -> None:
    """idle, busy and hot nodes with 16 cores / 64 GiB reported (plus "bare", without capacity), 5 ticks."""
    prom.values = {
        "cpu": {"idle": 0.1, "busy": 0.6, "hot": 0.97} | ({"bare": 0.3} if bare else {}),
        "memory": {"idle": 0.2, "busy": 0.5, "hot": 0.95} | ({"bare": 0.3} if bare else {}),
    }
    insight = pb_grpc.InsightServiceStub(channel)
    for node in ("idle", "busy", "hot"):
        insight.ReportClusterInsight(
            pb.ClusterInsight(
                node_name=node,
                node_resources=pb.NodeResources(cpu_allocatable_cores=16, memory_allocatable_bytes=64 * 2**30),
            )
        )
    for _ in range(5):
        running.engine.run_tick()


def test_snapshot_ranks_idle_above_busy_and_flags_overload(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, prom, channel = apollo
    _three_nodes(running, prom, channel)
    stub = pb_grpc.SchedulingPolicyServiceStub(channel)
    snap = stub.GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest())
    scores = {n.node_name: n for n in snap.nodes}
    assert not snap.stale and snap.generation == 5
    assert scores["idle"].score > scores["busy"].score > scores["hot"].score
    assert scores["hot"].predicted_overload and not scores["idle"].predicted_overload
    assert scores["idle"].cpu_allocatable_cores == pytest.approx(16, rel=1e-6)
    assert 0 < scores["idle"].cpu_headroom_cores < 16
    same = stub.GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest(known_generation=snap.generation))
    assert same.not_modified and not same.nodes
    policy = stub.GetSchedulingPolicy(
        pb.SchedulingPolicyRequest(
            pod_name="p", pod_namespace="ns", cpu_request_cores=1, candidate_nodes=["idle", "busy", "hot", "x"]
        )
    )
    prefs = {p.node_name: p for p in policy.node_preferences}
    # The pod's own use lowers every score a little; the order and the verdicts stay.
    assert prefs["idle"].score > prefs["busy"].score > prefs["hot"].score
    assert prefs["idle"].score <= scores["idle"].score
    # Load alone never marks a node infeasible (only a missing capability does): it scores 0 with a reason.
    assert prefs["hot"].score == 0 and not prefs["hot"].infeasible and "threshold" in prefs["hot"].reason
    assert "with pod" in prefs["idle"].reason
    assert not prefs["idle"].infeasible and prefs["x"].score == 50 and not prefs["x"].infeasible


def test_columnar_snapshot_carries_the_same_scores_as_the_per_node_form(
    apollo: tuple[Apollo, ScriptedProm, grpc.Channel],
) -> None:
    running, prom, channel = apollo
    _three_nodes(running, prom, channel, bare=True)  # "bare" has no reported capacity: headroom unknown
    stub = pb_grpc.SchedulingPolicyServiceStub(channel)
    rows = {n.node_name: n for n in stub.GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest()).nodes}
    reply = stub.GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest(columnar=True))
    assert not reply.nodes and reply.HasField("columns")
    c = reply.columns
    assert sorted(c.node_names) == sorted(rows)
    for i, name in enumerate(c.node_names):
        row = rows[name]
        assert (c.score[i], c.predicted_overload[i]) == (row.score, row.predicted_overload)
        assert c.predicted_cpu_upper_percent[i] == pytest.approx(row.predicted_cpu_upper_percent)
        if name == "bare":
            assert math.isnan(c.cpu_headroom_cores[i]) and math.isnan(c.cpu_allocatable_cores[i])
            assert row.cpu_allocatable_cores == 0
        else:
            assert c.cpu_headroom_cores[i] == pytest.approx(row.cpu_headroom_cores)
            assert c.memory_allocatable_bytes[i] == pytest.approx(row.memory_allocatable_bytes)
    assert dict(c.overload_reasons) == {"hot": rows["hot"].reason}
    only = stub.GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest(columnar=True, node_names=["hot", "nope", "idle"]))
    assert sorted(only.columns.node_names) == ["hot", "idle"] and len(only.columns.score) == 2


def test_prometheus_outage_turns_snapshot_stale_and_neutral(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, prom, channel = apollo
    prom.values = {"cpu": {"a": 0.99}, "memory": {"a": 0.99}}
    for _ in range(4):
        running.engine.run_tick()
    prom.fail = True
    import time

    time.sleep(0.6)
    running.engine.run_tick()
    snap = pb_grpc.SchedulingPolicyServiceStub(channel).GetNodeScoreSnapshot(pb.NodeScoreSnapshotRequest())
    assert snap.stale and "prometheus unavailable" in snap.stale_reason
    assert [(n.score, n.predicted_overload) for n in snap.nodes] == [(50, False)]


def test_invalid_messages_get_invalid_argument_naming_the_field(
    apollo: tuple[Apollo, ScriptedProm, grpc.Channel],
) -> None:
    _, _, channel = apollo
    insight = pb_grpc.InsightServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        insight.ReportWorkloadSignature(pb.WorkloadSignature(pod_namespace="ns"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pod_name" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.SchedulingPolicyServiceStub(channel).GetSchedulingPolicy(pb.SchedulingPolicyRequest(pod_name="p"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pod_namespace" in (err.value.details() or "")
    # A NaN metric is dropped, the signature is still accepted.
    ok = insight.ReportWorkloadSignature(
        pb.WorkloadSignature(
            pod_name="p", pod_namespace="ns", current_metrics=pb.ResourceMetrics(cpu_usage_percent=float("nan"))
        )
    )
    assert ok.success


def test_stream_rejects_bad_message_without_ending(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    _, _, channel = apollo
    msgs = [
        pb.WorkloadSignature(pod_name="a", pod_namespace="ns"),
        pb.WorkloadSignature(pod_namespace="ns"),
        pb.WorkloadSignature(pod_name="c", pod_namespace="ns"),
    ]
    reply = pb_grpc.InsightServiceStub(channel).StreamWorkloadSignatures(iter(msgs))
    assert reply.messages_received == 3 and reply.messages_processed == 2
    assert "pod_name" in reply.status


def _get(port: int, path: str) -> tuple[int, dict[str, Any] | bytes]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw) if raw.startswith(b"{") else raw


def test_http_probes_metrics_and_errors(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, _, channel = apollo
    port = running.http_port
    # Before the tick loop's first round: alive, not ready, and the body already says why.
    assert _get(port, "/healthz") == (200, {"status": "ok", "service": "apollo"})
    status, body = _get(port, "/readyz")
    assert status == 503 and isinstance(body, dict)
    assert body["stale"] is True and body["stale_reason"] == "no sample yet" and "first tick" in body["reason"]
    # One round (here with no data yet): gRPC health turns SERVING and /readyz 200, stale or not.
    running.ticks.run_once()
    status, body = _get(port, "/readyz")
    assert status == 200 and isinstance(body, dict)
    assert body["stale"] is True and body["mode"] == "predictive" and body["generation"] == 0
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="apollo.ForecastService"))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    status, text = _get(port, "/metrics")
    assert status == 200 and isinstance(text, bytes) and b"apollo_tick_seconds_count 1.0" in text
    status, body = _get(port, "/nope")
    assert status == 404 and isinstance(body, dict) and body["kind"] == "Status" and body["code"] == 404


class FakeKube:
    """Stands in for the Kubernetes reader: a fixed cluster view."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def read(self) -> ClusterRead:
        return ClusterRead(self.view)


def _hot_cluster(running: Apollo, prom: ScriptedProm) -> None:
    prom.values = {"cpu": {"idle": 0.1, "hot": 0.97}, "memory": {"idle": 0.2, "hot": 0.5}}
    pods = (
        RunningPod("ml", "trainer", "hot", "Deployment", "trainer", cpu_request_cores=6.0, checkpointed=True),
        RunningPod("ml", "web", "hot", "Deployment", "web", cpu_request_cores=1.0),
    )
    cap = {n: NodeCapacity(16.0, 64 * 2**30) for n in ("idle", "hot")}
    running.engine.kube = FakeKube(ClusterView(cap, {}, pods))


def test_migration_policy_stream_ack_and_reconnect(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, prom, channel = apollo
    _hot_cluster(running, prom)
    stub = pb_grpc.OrchestrationPolicyServiceStub(channel)
    received: list[pb.OrchestrationPolicy] = []
    stream: Any = stub.SubscribePolicies(
        pb.PolicySubscription(
            subscriber_id="orch", namespace_filters=["ml"], action_filters=[pb.ORCHESTRATION_ACTION_MIGRATE]
        )
    )
    reader = threading.Thread(target=lambda: received.extend([next(stream)]), daemon=True)
    reader.start()
    for _ in range(6):
        running.engine.run_tick()
    reader.join(timeout=10)
    stream.cancel()
    assert received, "no policy on the stream"
    policy = received[0]
    assert policy.action == pb.ORCHESTRATION_ACTION_MIGRATE and policy.WhichOneof("target") == "migration"
    assert (policy.migration.pod_name, policy.migration.source_node, policy.migration.target_node) == (
        "trainer",
        "hot",
        "idle",
    )  # the checkpointed pod, to the node with headroom
    assert policy.contributing_factors and "hot" in policy.reason
    # Not acknowledged yet: a reconnecting subscriber gets it again.
    again: Any = stub.SubscribePolicies(
        pb.PolicySubscription(subscriber_id="orch", action_filters=[pb.ORCHESTRATION_ACTION_MIGRATE])
    )
    assert next(again).request_id == policy.request_id
    again.cancel()
    ack = stub.ReportExecutionResult(
        pb.ExecutionResult(request_id=policy.request_id, action=policy.action, success=True, execution_duration_ms=900)
    )
    assert ack.success and ack.message == "recorded"
    replay = running.engine.broker.subscribe("orch", frozenset({pb.ORCHESTRATION_ACTION_MIGRATE}), frozenset())
    assert replay.queue.empty()  # acknowledged: never sent again
    unknown = stub.ReportExecutionResult(pb.ExecutionResult(request_id="nope", success=False))
    assert "not in flight" in unknown.message
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportExecutionResult(pb.ExecutionResult())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in (err.value.details() or "")


def test_on_demand_migration_advice(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, prom, channel = apollo
    _hot_cluster(running, prom)
    for _ in range(6):  # intervals are wide (conservative) on a short history
        running.engine.run_tick()
    stub = pb_grpc.OrchestrationPolicyServiceStub(channel)
    advice = stub.GetOrchestrationPolicy(pb.OrchestrationPolicyRequest(pod_name="web", pod_namespace="ml"))
    assert advice.migration.target_node == "idle" and advice.migration.source_node == "hot"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOrchestrationPolicy(pb.OrchestrationPolicyRequest(pod_name="ghost", pod_namespace="ml"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOrchestrationPolicy(
            pb.OrchestrationPolicyRequest(
                pod_name="web", pod_namespace="ml", requested_action=pb.ORCHESTRATION_ACTION_SCALE_UP
            )
        )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED and "requested_action" in (err.value.details() or "")
    # A server-streaming call refuses a bad subscription the same way (the one error mapping).
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stub.SubscribePolicies(pb.PolicySubscription(namespace_filters=["ml"]))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "subscriber_id" in (err.value.details() or "")


def test_forecast_service(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, prom, channel = apollo
    prom.values = {"cpu": {"a": 0.4, "b": 0.6}, "memory": {"a": 0.3, "b": 0.5}}
    for _ in range(5):
        running.engine.run_tick()
    stub = pb_grpc.ForecastServiceStub(channel)
    pred = stub.GetResourcePrediction(pb.PredictionRequest(node_name="a", horizon_minutes=1, confidence_level=0.9))
    assert len(pred.predicted_usage) == 60 and len(pred.upper_bound) == 60
    for lo, mid, hi in zip(pred.lower_bound, pred.predicted_usage, pred.upper_bound, strict=True):
        assert lo.cpu_usage <= mid.cpu_usage <= hi.cpu_usage
    assert abs(pred.predicted_usage[0].cpu_usage - 0.4) < 0.1 and 0 < pred.confidence_level < 1
    # Unknown stays unknown: constant load gives no evidence of skill, and no disk query means no disk
    # forecast; both are NaN on the wire, never 0.0.
    assert math.isnan(pred.model_accuracy)
    assert all(math.isnan(p.io_usage) and math.isnan(p.network_usage) for p in pred.predicted_usage)
    assert pred.forecast_mode == pb.FORECAST_MODE_PREDICTIVE and pred.mode_reason == ""
    cluster = stub.GetClusterPrediction(pb.ClusterPredictionRequest())
    assert {p.node_name for p in cluster.node_predictions} == {"a", "b"}
    agg = cluster.aggregated_prediction
    assert abs(agg.predicted_usage[0].cpu_usage - 0.5) < 0.1 and math.isnan(agg.predicted_usage[0].io_usage)
    assert agg.forecast_mode == pb.FORECAST_MODE_PREDICTIVE
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResourcePrediction(pb.PredictionRequest(node_name="zz"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResourcePrediction(pb.PredictionRequest(node_name="a", horizon_minutes=5000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "horizon_minutes" in (err.value.details() or "")


def test_cluster_insight_stream_and_scheduling_result(apollo: tuple[Apollo, ScriptedProm, grpc.Channel]) -> None:
    running, _, channel = apollo
    insights = [
        pb.ClusterInsight(node_name="a", node_resources=pb.NodeResources(cpu_allocatable_cores=8)),
        pb.ClusterInsight(node_name="b", node_resources=pb.NodeResources(cpu_allocatable_cores=-1)),
        pb.ClusterInsight(),
    ]
    reply = pb_grpc.InsightServiceStub(channel).StreamClusterInsights(iter(insights))
    assert (reply.messages_received, reply.messages_processed) == (3, 1)
    assert running.engine.reports.insight("a") is not None and running.engine.reports.insight("b") is None
    sched = pb_grpc.SchedulingPolicyServiceStub(channel)
    ok = sched.ReportSchedulingResult(
        pb.SchedulingResult(
            pod_name="p", pod_namespace="ns", scheduled_node="a", success=True, scheduling_duration_ms=5
        )
    )
    assert ok.success
    with pytest.raises(grpc.RpcError) as err:
        sched.ReportSchedulingResult(pb.SchedulingResult(pod_namespace="ns", scheduling_duration_ms=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_extender_reports_scheduling_results_in_batches_and_bad_ones_alone(
    apollo: tuple[Apollo, ScriptedProm, grpc.Channel],
) -> None:
    from extender.apollo_client import ResultReporter
    from extender.metrics import ExtenderMetrics

    running, _, channel = apollo
    metrics = ExtenderMetrics.create()
    reporter = ResultReporter(pb_grpc.SchedulingPolicyServiceStub(channel), metrics, timeout=5, linger=0.05)
    for i in range(3):
        reporter.submit(pb.SchedulingResult(pod_name=f"p{i}", pod_namespace="ns", scheduled_node="n", success=True))
    reporter.submit(pb.SchedulingResult(pod_name="", pod_namespace="ns"))  # invalid: rejected alone
    batch = reporter.next_batch()
    assert len(batch) == 4
    reporter.send(batch)
    sent = metrics.registry.get_sample_value("apollo_extender_scheduling_results_total", {"outcome": "sent"})
    rejected = metrics.registry.get_sample_value("apollo_extender_scheduling_results_total", {"outcome": "rejected"})
    assert (sent, rejected) == (3, 1)
    recorded = running.metrics.registry.get_sample_value("apollo_scheduling_results_total", {"outcome": "success"})
    assert recorded == 3
    # The other gunicorn worker reports the same placement: counted once, the repeat as a duplicate;
    # a re-created pod of the same name (new UID) is a new placement.
    again = pb.SchedulingResult(pod_uid="u1", pod_name="p0", pod_namespace="ns", scheduled_node="n", success=True)
    reporter.send(
        [
            again,
            again,
            pb.SchedulingResult(pod_uid="u2", pod_name="p0", pod_namespace="ns", scheduled_node="n", success=True),
        ]
    )
    assert running.metrics.registry.get_sample_value("apollo_scheduling_results_total", {"outcome": "success"}) == 5
    assert running.metrics.registry.get_sample_value("apollo_scheduling_results_total", {"outcome": "duplicate"}) == 1


def test_result_reporter_falls_back_to_unary_calls_for_an_older_apollo() -> None:
    from extender.apollo_client import ResultReporter
    from extender.metrics import ExtenderMetrics

    class Unimplemented(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNIMPLEMENTED

    class OldApollo:
        def __init__(self) -> None:
            self.unary: list[str] = []

        def StreamSchedulingResults(self, results: Any, timeout: float) -> pb.StreamResponse:
            raise Unimplemented()

        def ReportSchedulingResult(self, result: pb.SchedulingResult, timeout: float) -> pb.ReportResponse:
            self.unary.append(result.pod_name)
            return pb.ReportResponse(success=True)

    stub = OldApollo()
    metrics = ExtenderMetrics.create()
    reporter = ResultReporter(stub, metrics, timeout=1, linger=0)  # type: ignore[arg-type]
    reporter.send([pb.SchedulingResult(pod_name="a", pod_namespace="ns")])
    reporter.send([pb.SchedulingResult(pod_name="b", pod_namespace="ns")])
    assert stub.unary == ["a", "b"]
    assert metrics.registry.get_sample_value("apollo_extender_scheduling_results_total", {"outcome": "sent"}) == 2
