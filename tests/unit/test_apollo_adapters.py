"""Pure adapters of APOLLO: wire conversions, the Kubernetes reader's mapping, outlooks, the broker, reports."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest

from apollo.adapters.grpc.wire import action_to_wire, insight_from_wire, policy_to_wire, signature_from_wire
from apollo.adapters.kube_objects import nodes_from, running_pod_from
from apollo.core.decisions import Action, MigrationTarget, PolicyDecision, Priority
from apollo.core.domain import NodeCapacity, PodSignature, RunningPod
from apollo.core.outlooks import NodeLayout, PodIndex, node_table, workload_outlooks
from apollo.runtime.broker import PolicyBroker
from apollo.runtime.reports import ReportStore
from apollo_api.podmigration import CHECKPOINT_LABEL, MIGRATION_ANNOTATION
from apollo_api.v1 import apollo_pb2 as pb

GiB = 2**30


def _pod(**over: object) -> dict[str, object]:
    pod: dict[str, object] = {
        "metadata": {
            "name": "train-abc12-xyz",
            "namespace": "ml",
            "labels": {"pod-template-hash": "abc12", CHECKPOINT_LABEL: "true"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "train-abc12", "controller": True}],
        },
        "spec": {
            "nodeName": "n1",
            "priority": 5,
            "containers": [
                {"name": "loader", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "trainer", "resources": {"requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}}},
            ],
            "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "train-ckpt"}}],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "loader", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                {"name": "trainer", "restartCount": 2, "state": {"running": {}}},
            ],
        },
    }
    pod.update(over)
    return pod


def test_running_pod_mapping() -> None:
    pod = running_pod_from(_pod())
    assert pod is not None
    assert (pod.owner_kind, pod.owner_name) == ("Deployment", "train")
    assert pod.cpu_request_cores == 2.5 and pod.memory_request_bytes == 5 * GiB and pod.gpus == 1
    assert pod.checkpointed and pod.completed_fraction == 0.5 and pod.restarts == 2 and pod.priority == 5
    assert pod.pvc_names == ("train-ckpt",) and not pod.is_migrating
    migrating = _pod()
    migrating["metadata"]["annotations"] = {MIGRATION_ANNOTATION: "m-1"}  # type: ignore[index]
    assert running_pod_from(migrating).is_migrating  # type: ignore[union-attr]
    assert running_pod_from(_pod(status={"phase": "Succeeded"})) is None
    unbound = _pod()
    unbound["spec"] = {"containers": []}
    assert running_pod_from(unbound) is None
    unlabelled = _pod()
    unlabelled["metadata"]["labels"] = {"pod-template-hash": "abc12"}  # type: ignore[index]
    assert not running_pod_from(unlabelled).checkpointed  # type: ignore[union-attr]


def test_nodes_mapping_ignores_bad_quantities() -> None:
    cap, labels = nodes_from(
        [
            {
                "metadata": {"name": "a", "labels": {"zone": "z1"}},
                "status": {"allocatable": {"cpu": "8", "memory": "32Gi"}},
            },
            {"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "lots"}}},
        ]
    )
    assert cap["a"] == NodeCapacity(8.0, 32 * GiB, 0) and labels["a"] == {"zone": "z1"}
    assert cap["b"].cpu_cores == 0.0


def test_signature_and_insight_conversion() -> None:
    sig = signature_from_wire(
        pb.WorkloadSignature(
            pod_name="p",
            pod_namespace="ns",
            io_pattern=pb.IO_PATTERN_READ_HEAVY,
            workload_type=999,  # type: ignore[arg-type]  # a newer agent's value this build does not know
            current_metrics=pb.ResourceMetrics(cpu_request_cores=2, cpu_usage_percent=50, memory_usage_bytes=GiB),
            data_locality=pb.DataLocalityInfo(primary_node="n2", locality_score=0.8),
        )
    )
    assert sig.io_pattern == "IO_PATTERN_READ_HEAVY" and sig.workload_type == "WORKLOAD_TYPE_UNKNOWN"
    assert sig.cpu_usage_cores == 1.0 and sig.memory_usage_bytes == GiB and sig.primary_node == "n2"
    assert math.isnan(signature_from_wire(pb.WorkloadSignature(pod_name="p")).cpu_usage_cores)
    insight = insight_from_wire(
        pb.ClusterInsight(
            node_name="n",
            gpu_devices=[pb.GPUStatus(is_available=True), pb.GPUStatus(is_available=False)],
            csd_devices=[pb.CSDStatus(is_available=True)],
            storage_devices=[pb.StorageDeviceStatus(device_type="nvme", available_bytes=10 * GiB)],
        )
    )
    assert (insight.gpus_available, insight.gpus_total, insight.csd_available) == (1, 2, 1)
    assert insight.has_fast_storage and insight.allocatable is None  # no node_resources: capacity unknown
    sized = insight_from_wire(
        pb.ClusterInsight(
            node_name="n",
            node_resources=pb.NodeResources(cpu_allocatable_cores=8, memory_allocatable_bytes=-1, gpu_allocatable=2),
        )
    )
    assert sized.allocatable == NodeCapacity(8.0, 0.0, 2)


def test_core_actions_carry_the_wire_numbers() -> None:
    """The broker filters subscriptions by comparing the core's Action values with the wire's numbers."""
    for action in Action:
        assert int(action) == action_to_wire(action) == pb.OrchestrationAction.Value(action.wire_name)


def _decision(rid: str = "r1", namespace: str = "ml", deadline: int = 300) -> PolicyDecision:
    return PolicyDecision(
        request_id=rid,
        action=Action.MIGRATE,
        priority=Priority.HIGH,
        reason="overload predicted",
        contributing_factors=("cpu_peak=0.95",),
        created_at=time.time(),
        deadline_seconds=deadline,
        migration=MigrationTarget("p", namespace, "n1", "n2", True, 300),
    )


def test_policy_to_wire_fills_the_oneof() -> None:
    msg = policy_to_wire(_decision())
    assert msg.WhichOneof("target") == "migration"
    assert msg.action == pb.ORCHESTRATION_ACTION_MIGRATE and msg.priority == pb.POLICY_PRIORITY_HIGH
    assert msg.migration.target_node == "n2" and msg.constraints.allow_disruption
    assert msg.deadline.seconds - msg.created_at.seconds in (299, 300, 301)


def test_broker_replays_unacked_and_never_acked() -> None:
    broker = PolicyBroker()
    assert broker.publish(_decision("a"))
    assert not broker.publish(_decision("a"))  # repeat ignored
    broker.publish(_decision("b", namespace="other"))
    sub = broker.subscribe("orch", frozenset(), frozenset({"ml"}))
    assert [sub.queue.get_nowait().request_id] == ["a"] and sub.queue.empty()
    broker.publish(_decision("c"))
    assert sub.queue.get_nowait().request_id == "c"
    broker.unsubscribe(sub)
    assert broker.ack("a")
    again = broker.subscribe("orch", frozenset(), frozenset({"ml"}))
    assert [again.queue.get_nowait().request_id] == ["c"]  # "a" was acknowledged: never again
    scale_only = broker.subscribe("s", frozenset({pb.ORCHESTRATION_ACTION_SCALE_UP}), frozenset())
    assert scale_only.queue.empty()
    migrations = broker.subscribe("m", frozenset({pb.ORCHESTRATION_ACTION_MIGRATE}), frozenset())
    assert {migrations.queue.get_nowait().request_id for _ in range(2)} == {"b", "c"}


def test_broker_expires_policies_past_their_deadline() -> None:
    now = [1000.0]
    broker = PolicyBroker(clock=lambda: now[0])
    broker.publish(replace(_decision("old"), created_at=1000.0, deadline_seconds=10))
    now[0] = 1009.0
    assert not broker.subscribe("x", frozenset(), frozenset()).queue.empty()
    now[0] = 1011.0
    assert broker.subscribe("x", frozenset(), frozenset()).queue.empty()


def test_report_store_keeps_domain_values_until_their_ttl() -> None:
    now = [0.0]
    store = ReportStore(60.0, clock=lambda: now[0])
    store.put_signature("ns", "p", PodSignature(io_pattern="IO_PATTERN_READ_HEAVY"))
    store.put_insight(insight_from_wire(pb.ClusterInsight(node_name="n1")))
    assert store.signature("ns", "p") == PodSignature(io_pattern="IO_PATTERN_READ_HEAVY")
    assert set(store.live_insights()) == {"n1"} and store.insight("n1") is not None
    now[0] = 61.0
    assert store.signature("ns", "p") is None and store.live_insights() == {}


def test_node_table_and_workload_apportioning() -> None:
    keys = [("n1", "cpu"), ("n1", "memory"), ("n2", "cpu")]
    mean = np.array([[0.5, 0.5], [0.25, 0.25], [0.1, 0.1]])
    upper = mean + 0.1
    cap = {"n1": NodeCapacity(8.0, 32 * GiB), "n2": NodeCapacity(4.0, 8 * GiB)}
    pods = [
        RunningPod("ml", "a", "n1", "Deployment", "train", cpu_request_cores=1.0, memory_request_bytes=GiB),
        RunningPod("ml", "b", "n1", "Deployment", "other", cpu_request_cores=3.0, memory_request_bytes=GiB),
    ]
    layout = NodeLayout.of(keys)
    index = PodIndex.of(layout.index, pods, cap)
    table = node_table(
        layout,
        mean=mean,
        upper=upper,
        pods=index,
        insights={},
        anomaly=np.array([False, True, False]),
        anomaly_score=np.array([1.0, 7.0, np.nan]),
        stale=False,
        step_seconds=30.0,
    )
    n1, n2 = table.index["n1"], table.index["n2"]
    assert table.cpu_requested[n1] == 4.0 and table.anomaly[n1] and not table.anomaly[n2]
    assert table.anomaly_score[n1] == 7.0 and table.anomaly_score[n2] == 0.0
    assert np.allclose(table.cpu_upper[n2], [0.2, 0.2]) and np.isnan(table.memory_upper[n2]).all()
    assert table.cpu_capacity[n2] == 4.0 and table.memory_mean[n1] == pytest.approx([0.25, 0.25])
    wl = {w.name: w for w in workload_outlooks(table, index)}
    # "train" holds 1 of the 4 requested cores on n1: a quarter of n1's forecast cores (0.5 * 8 / 4).
    assert np.allclose(wl["train"].cpu_mean, [1.0, 1.0]) and np.allclose(wl["other"].cpu_mean, [3.0, 3.0])
    assert wl["train"].replicas == 1
