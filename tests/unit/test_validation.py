"""apollo.adapters.grpc.validation against real protobuf messages: NaN, infinities, negatives, missing names, ranges."""

from __future__ import annotations

import math

import pytest
from google.protobuf.descriptor import FieldDescriptor

from apollo.adapters.grpc import validation
from apollo.adapters.grpc.validation import (
    FieldError,
    format_errors,
    sanitize_metrics,
    validate_cluster_insight,
    validate_cluster_prediction_request,
    validate_execution_result,
    validate_message,
    validate_node_score_snapshot_request,
    validate_orchestration_policy_request,
    validate_policy_subscription,
    validate_prediction_request,
    validate_resource_metrics,
    validate_scheduling_policy_request,
    validate_scheduling_result,
    validate_workload_signature,
)
from apollo_api.v1 import apollo_pb2 as pb

NAN = math.nan
INF = math.inf


def paths(errors: list[FieldError]) -> list[str]:
    return [error.path for error in errors]


def good_metrics() -> pb.ResourceMetrics:
    metrics = pb.ResourceMetrics(
        cpu_usage_percent=42.5,
        cpu_request_cores=2.0,
        cpu_limit_cores=4.0,
        memory_usage_percent=61.0,
        memory_usage_bytes=3 << 30,
        memory_request_bytes=4 << 30,
        memory_limit_bytes=8 << 30,
        disk_read_bytes=10_000,
        disk_write_iops=300,
        disk_read_throughput_mbps=120.5,
        network_rx_throughput_mbps=80.0,
        gpu_usage_percent=99.0,
        gpu_memory_usage_bytes=20 << 30,
        gpu_memory_total_bytes=40 << 30,
    )
    metrics.collected_at.GetCurrentTime()
    return metrics


def good_signature() -> pb.WorkloadSignature:
    return pb.WorkloadSignature(
        pod_name="trainer-0",
        pod_namespace="ml",
        node_name="node-1",
        workload_type=pb.WORKLOAD_TYPE_IMAGE,
        current_stage=pb.PIPELINE_STAGE_TRAINING,
        io_pattern=pb.IO_PATTERN_READ_HEAVY,
        confidence=0.87,
        estimated_batch_size=256,
        current_metrics=good_metrics(),
        kueue_info=pb.KueueInfo(queue_name="q", priority=-10, nominal_cpu=8.0),
        data_locality=pb.DataLocalityInfo(locality_score=0.7, data_size_bytes=1 << 40),
    )


def good_insight() -> pb.ClusterInsight:
    insight = pb.ClusterInsight(
        node_name="node-1",
        node_resources=pb.NodeResources(
            cpu_allocatable_cores=16.0,
            memory_allocatable_bytes=64 << 30,
            cpu_used_cores=18.0,  # more than allocatable: overcommit is not an error
            memory_used_bytes=70 << 30,
            gpu_allocatable=4,
        ),
        network_status=pb.NetworkStatus(bandwidth_mbps=10_000.0, latency_ms=0.2),
        io_statistics=pb.IOStatistics(total_read_bytes=1 << 30, p99_read_latency_ms=4.5),
        node_roles=["worker"],
    )
    insight.storage_devices.add(device_name="nvme0", total_bytes=1 << 40, used_bytes=1 << 39, utilization_percent=50)
    insight.storage_devices.add(device_name="nvme1", total_bytes=1 << 40, used_bytes=1 << 38)
    insight.gpu_devices.add(gpu_id="0", utilization_percent=100.0, temperature_celsius=65.0)
    insight.cluster_queues.add(name="cq", cpu_usage_percent=180.0)  # borrowing: above 100 is fine
    return insight


# --- WorkloadSignature ----


def test_valid_signature_has_no_errors() -> None:
    assert validate_workload_signature(good_signature()) == []


def test_signature_requires_pod_identity() -> None:
    signature = good_signature()
    signature.pod_name = ""
    signature.pod_namespace = "   "
    errors = validate_workload_signature(signature)
    assert errors == [
        FieldError("pod_name", "is required, got ''"),
        FieldError("pod_namespace", "is required, got '   '"),
    ]


def test_signature_nan_metric_has_precise_path_and_reason() -> None:
    signature = good_signature()
    signature.current_metrics.cpu_usage_percent = NAN
    (error,) = validate_workload_signature(signature)
    assert error.path == "current_metrics.cpu_usage_percent"
    assert error.reason.startswith("must be finite and in [0, 100] percent")
    assert error.reason.endswith("got nan")


@pytest.mark.parametrize(
    ("field", "value", "suffix"),
    [
        ("disk_read_throughput_mbps", INF, "got inf"),
        ("network_tx_throughput_mbps", -INF, "got -inf"),
        ("cpu_request_cores", -0.5, "got -0.5"),
        ("memory_usage_bytes", -1, "got -1"),
        ("disk_write_iops", -300, "got -300"),
    ],
)
def test_signature_metric_not_finite_or_negative(field: str, value: float, suffix: str) -> None:
    signature = good_signature()
    setattr(signature.current_metrics, field, value)
    (error,) = validate_workload_signature(signature)
    assert error == FieldError(f"current_metrics.{field}", f"must be finite and >= 0, {suffix}")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0.0, True),
        (100.0, True),
        (104.9, True),
        (105.0, True),
        (105.01, False),
        (400.0, False),
        (-1.0, False),
    ],
)
def test_percent_bounds_with_documented_slack(value: float, ok: bool) -> None:
    signature = good_signature()
    signature.current_metrics.memory_usage_percent = value
    errors = validate_workload_signature(signature)
    assert (errors == []) is ok
    if not ok:
        assert paths(errors) == ["current_metrics.memory_usage_percent"]
    assert validation.PERCENT_SLACK == 5.0


@pytest.mark.parametrize(("value", "ok"), [(0.0, True), (1.0, True), (1.5, False), (-0.1, False), (NAN, False)])
def test_signature_confidence_is_a_probability(value: float, ok: bool) -> None:
    signature = good_signature()
    signature.confidence = value
    errors = validate_workload_signature(signature)
    assert paths(errors) == ([] if ok else ["confidence"])


def test_signature_nested_messages_are_checked() -> None:
    signature = good_signature()
    signature.estimated_batch_size = -4
    signature.data_locality.estimated_transfer_time_ms = NAN
    signature.kubeflow_info.gpu_request = -1
    signature.kueue_info.borrowing_limit_cpu = INF
    assert paths(validate_workload_signature(signature)) == [
        "estimated_batch_size",
        "kubeflow_info.gpu_request",
        "kueue_info.borrowing_limit_cpu",
        "data_locality.estimated_transfer_time_ms",
    ]


def test_signed_fields_and_unknown_enums_are_accepted() -> None:
    signature = good_signature()
    signature.kueue_info.priority = -1000
    signature.workload_type = 99  # type: ignore[assignment]  # a newer agent's enum value
    assert validate_workload_signature(signature) == []


# --- ClusterInsight ----


def test_valid_insight_allows_used_above_allocatable() -> None:
    assert validate_cluster_insight(good_insight()) == []


def test_insight_requires_node_name() -> None:
    insight = good_insight()
    insight.node_name = ""
    assert validate_cluster_insight(insight) == [FieldError("node_name", "is required, got ''")]


def test_insight_negative_and_non_finite_resources_with_indexed_paths() -> None:
    insight = good_insight()
    insight.node_resources.memory_available_bytes = -5
    insight.node_resources.cpu_available_cores = NAN
    insight.storage_devices[1].used_bytes = -1
    insight.gpu_devices[0].utilization_percent = 150.0
    insight.network_status.current_utilization = INF
    insight.io_statistics.avg_write_latency_ms = -0.1
    insight.cluster_queues[0].memory_usage_percent = NAN
    assert paths(validate_cluster_insight(insight)) == [
        "node_resources.cpu_available_cores",
        "node_resources.memory_available_bytes",
        "storage_devices[1].used_bytes",
        "gpu_devices[0].utilization_percent",
        "network_status.current_utilization",
        "io_statistics.avg_write_latency_ms",
        "cluster_queues[0].memory_usage_percent",
    ]


def test_insight_filesystem_and_csd_are_checked() -> None:
    insight = good_insight()
    insight.distributed_filesystems.add(name="lustre", utilization_percent=120.0, latency_ms=-2.0)
    insight.csd_devices.add(device_id="csd0", compute_utilization=NAN)
    insight.running_workloads.add(pod_name="p", pod_namespace="ns", io_usage=-1.0)
    assert paths(validate_cluster_insight(insight)) == [
        "running_workloads[0].io_usage",
        "csd_devices[0].compute_utilization",
        "distributed_filesystems[0].utilization_percent",
        "distributed_filesystems[0].latency_ms",
    ]


# --- Scheduling ----


def test_scheduling_policy_request() -> None:
    request = pb.SchedulingPolicyRequest(
        pod_name="p",
        pod_namespace="ns",
        cpu_request_cores=0.5,
        memory_request_bytes=1 << 30,
        gpu_request=1,
        candidate_nodes=["a", "b"],
        horizon_minutes=30,
    )
    request.pod_labels["app"] = "x"
    assert validate_scheduling_policy_request(request) == []

    bad = pb.SchedulingPolicyRequest(
        cpu_request_cores=NAN, memory_request_bytes=-1, horizon_minutes=1441, candidate_nodes=["a", ""]
    )
    errors = validate_scheduling_policy_request(bad)
    assert paths(errors) == [
        "pod_name",
        "pod_namespace",
        "cpu_request_cores",
        "memory_request_bytes",
        "horizon_minutes",
        "candidate_nodes[1]",
    ]
    assert errors[4].reason == "must be 0 (server default) or in [1, 1440] minutes, got 1441"


def test_scheduling_result_and_snapshot_request() -> None:
    assert validate_scheduling_result(pb.SchedulingResult(pod_name="p", pod_namespace="ns")) == []
    assert paths(validate_scheduling_result(pb.SchedulingResult(scheduling_duration_ms=-3))) == [
        "pod_name",
        "pod_namespace",
        "scheduling_duration_ms",
    ]
    assert validate_node_score_snapshot_request(pb.NodeScoreSnapshotRequest()) == []
    bad = pb.NodeScoreSnapshotRequest(node_names=["", "n"], known_generation=-1)
    assert paths(validate_node_score_snapshot_request(bad)) == ["node_names[0]", "known_generation"]


# --- Forecast ----


@pytest.mark.parametrize(
    ("horizon", "ok"), [(0, True), (1, True), (60, True), (1440, True), (1441, False), (-1, False)]
)
def test_prediction_request_horizon(horizon: int, ok: bool) -> None:
    errors = validate_prediction_request(pb.PredictionRequest(node_name="n", horizon_minutes=horizon))
    assert paths(errors) == ([] if ok else ["horizon_minutes"])


@pytest.mark.parametrize(
    ("level", "ok"),
    [(0.0, True), (0.5, True), (0.95, True), (1.0, False), (-0.5, False), (NAN, False), (INF, False)],
)
def test_prediction_request_confidence_level(level: float, ok: bool) -> None:
    errors = validate_prediction_request(pb.PredictionRequest(node_name="n", confidence_level=level))
    assert paths(errors) == ([] if ok else ["confidence_level"])
    if not ok:
        assert "strictly between 0 and 1" in errors[0].reason


def test_prediction_request_requires_node() -> None:
    assert paths(validate_prediction_request(pb.PredictionRequest())) == ["node_name"]


def test_cluster_prediction_request() -> None:
    assert validate_cluster_prediction_request(pb.ClusterPredictionRequest()) == []
    good = pb.ClusterPredictionRequest(horizon_minutes=120, confidence_level=0.9, node_filters=["a"])
    assert validate_cluster_prediction_request(good) == []
    bad = pb.ClusterPredictionRequest(horizon_minutes=5000, confidence_level=2.0, node_filters=[" "])
    assert paths(validate_cluster_prediction_request(bad)) == [
        "horizon_minutes",
        "confidence_level",
        "node_filters[0]",
    ]


# --- Orchestration ----


def test_policy_subscription() -> None:
    good = pb.PolicySubscription(subscriber_id="orchestrator-0", action_filters=[pb.ORCHESTRATION_ACTION_MIGRATE])
    assert validate_policy_subscription(good) == []
    bad = pb.PolicySubscription(namespace_filters=["ml", ""])
    assert paths(validate_policy_subscription(bad)) == ["subscriber_id", "namespace_filters[1]"]


def test_orchestration_policy_request() -> None:
    good = pb.OrchestrationPolicyRequest(pod_name="p", pod_namespace="ns")
    assert validate_orchestration_policy_request(good) == []
    assert paths(validate_orchestration_policy_request(pb.OrchestrationPolicyRequest(pod_name="p"))) == [
        "pod_namespace"
    ]


def test_execution_result() -> None:
    good = pb.ExecutionResult(request_id="r-1", success=True, execution_duration_ms=1200, pod_name="p")
    good.metrics["evicted_ms"] = "300"
    assert validate_execution_result(good) == []
    bad = pb.ExecutionResult(execution_duration_ms=-1)
    errors = validate_execution_result(bad)
    assert errors == [
        FieldError("request_id", "is required, got ''"),
        FieldError("execution_duration_ms", "must be finite and >= 0, got -1"),
    ]


# --- sanitize_metrics ----


def test_sanitize_drops_bad_values_and_reports_them_in_field_order() -> None:
    metrics = good_metrics()
    metrics.gpu_usage_percent = INF
    metrics.cpu_usage_percent = NAN
    metrics.memory_usage_bytes = -7
    metrics.memory_usage_percent = 250.0
    before = metrics.SerializeToString(deterministic=True)

    cleaned, dropped = sanitize_metrics(metrics)

    assert dropped == ("cpu_usage_percent", "memory_usage_percent", "memory_usage_bytes", "gpu_usage_percent")
    assert cleaned.cpu_usage_percent == 0.0
    assert cleaned.memory_usage_percent == 0.0
    assert cleaned.memory_usage_bytes == 0
    assert cleaned.gpu_usage_percent == 0.0
    # Everything else is kept, including the timestamp, and the input is not modified.
    assert cleaned.cpu_request_cores == 2.0
    assert cleaned.gpu_memory_total_bytes == 40 << 30
    assert cleaned.collected_at == metrics.collected_at
    assert metrics.SerializeToString(deterministic=True) == before
    assert validate_resource_metrics(cleaned) == []


def test_sanitize_clean_metrics_is_identity() -> None:
    metrics = good_metrics()
    cleaned, dropped = sanitize_metrics(metrics)
    assert dropped == ()
    assert cleaned == metrics
    assert cleaned is not metrics


def test_sanitize_drops_exactly_what_validation_reports() -> None:
    """For every numeric field and every kind of bad value: validated as bad <=> dropped by sanitize."""
    bad_values: list[float] = [NAN, INF, -INF, -1.0, 1e9]
    for field in pb.ResourceMetrics.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        is_float = field.type == FieldDescriptor.TYPE_DOUBLE
        for value in bad_values if is_float else [-1, 10**12]:
            metrics = pb.ResourceMetrics()
            setattr(metrics, field.name, value)
            reported = paths(validate_resource_metrics(metrics, prefix="current_metrics"))
            _, dropped = sanitize_metrics(metrics)
            assert reported == [f"current_metrics.{name}" for name in dropped], (field.name, value)


# --- helpers ----


def test_validate_message_dispatches_and_rejects_unknown_types() -> None:
    assert paths(validate_message(pb.PolicySubscription())) == ["subscriber_id"]
    assert paths(validate_message(pb.ClusterInsight())) == ["node_name"]
    assert validate_message(good_signature()) == []
    with pytest.raises(TypeError, match=r"apollo\.ReportResponse"):
        validate_message(pb.ReportResponse())


def test_format_errors() -> None:
    errors = [FieldError("a.b", "is required, got ''"), FieldError("c[0]", "must be finite and >= 0, got -1")]
    assert str(errors[0]) == "a.b: is required, got ''"
    assert format_errors(errors) == "a.b: is required, got ''; c[0]: must be finite and >= 0, got -1"


def test_every_range_rule_names_a_real_numeric_field() -> None:
    pool = pb.DESCRIPTOR.pool
    for full_name in validation._RANGES:
        field = pool.FindFieldByName(full_name)  # raises KeyError on a renamed / removed field
        assert field.type in validation._NUMERIC_TYPES, full_name
