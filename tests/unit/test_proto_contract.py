"""The wire contract of proto/apollo.proto, pinned field by field, and freshness of the generated stubs.

SEED_* below is the gRPC part of SEED-CONTRACT.md (the contract of the APOLLO clients already in the field),
copied as data in the seed's own notation so this test does not depend on where that document lives:
``N name type`` = field number N, ``[]`` = repeated, ``Timestamp`` = google.protobuf.Timestamp. EXTENSION_*
lists what this project added under new numbers. The descriptor test fails on any difference in name,
number, type, label, map-ness or oneof membership, on a missing message / enum value / RPC, and on any
addition that is not listed here (so an addition is always a deliberate, reviewed edit of this file).
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from apollo_api.v1 import apollo_pb2, apollo_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]

FDP = descriptor_pb2.FieldDescriptorProto

SEED_MESSAGES: dict[str, str] = {
    "WorkloadSignature": (
        "1 pod_name string; 2 pod_namespace string; 3 pod_uid string; 4 node_name string; 5 "
        "container_name string; 6 workload_type WorkloadType; 7 current_stage PipelineStage; 8 io_pattern "
        "IOPattern; 9 confidence double; 10 framework string; 11 framework_version string; 12 "
        "is_gpu_workload bool; 13 is_distributed bool; 14 estimated_batch_size int32; 15 current_metrics "
        "ResourceMetrics; 16 storage_recommendation StorageRecommendation; 17 argo_context ArgoContext; "
        "18 first_seen Timestamp; 19 last_seen Timestamp; 20 updated_at Timestamp; 21 is_pipeline bool; "
        "22 pipeline_step string; 23 kubeflow_info KubeflowInfo; 24 kueue_info KueueInfo; 25 "
        "data_locality DataLocalityInfo"
    ),
    "ClusterInsight": (
        "1 node_name string; 2 node_uid string; 3 node_resources NodeResources; 4 storage_devices "
        "[]StorageDeviceStatus; 5 running_workloads []WorkloadSummary; 6 csd_devices []CSDStatus; 7 "
        "gpu_devices []GPUStatus; 8 network_status NetworkStatus; 9 io_statistics IOStatistics; 10 "
        "collected_at Timestamp; 11 node_type string; 12 node_roles []string; 13 distributed_filesystems "
        "[]DistributedFilesystemInfo; 14 cluster_queues []ClusterQueueStatus"
    ),
    "DistributedFilesystemInfo": (
        "1 name string; 2 type string; 3 mount_path string; 4 server string; 5 total_bytes int64; 6 "
        "available_bytes int64; 7 utilization_percent double; 8 is_healthy bool; 9 latency_ms double; 10 "
        "throughput_mbps double"
    ),
    "ClusterQueueStatus": (
        "1 name string; 2 pending_workloads int32; 3 admitted_workloads int32; 4 cpu_usage_percent "
        "double; 5 memory_usage_percent double; 6 total_local_queues int32; 7 is_active bool"
    ),
    "SchedulingPolicy": (
        "1 request_id string; 2 pod_name string; 3 pod_namespace string; 4 decision SchedulingDecision; 5 "
        "node_preferences []NodePreference; 6 resource_requirements ComputedResourceRequirements; 7 "
        "storage_requirements StorageRequirements; 8 constraints []SchedulingConstraint; 9 priority "
        "int32; 10 allow_preemption bool; 11 affinity_rules []AffinityRule; 12 reason string; 13 "
        "created_at Timestamp; 14 expires_at Timestamp; 15 plugin_weights PluginWeights"
    ),
    "PluginWeights": (
        "1 data_locality_aware float; 2 storage_tier_aware float; 3 io_pattern_based float; 4 kueue_aware "
        "float; 5 pipeline_stage_aware float"
    ),
    "OrchestrationPolicy": (
        "1 request_id string; 2 action OrchestrationAction; 3 migration MigrationTarget; 4 provisioning "
        "ProvisioningTarget; 5 autoscaling AutoscalingTarget; 6 priority PolicyPriority; 7 constraints "
        "ExecutionConstraints; 8 reason string; 9 contributing_factors []string; 10 created_at Timestamp; "
        "11 deadline Timestamp"
    ),
    "ResourcePrediction": (
        "1 node_name string; 2 prediction_id string; 3 prediction_start Timestamp; 4 prediction_end "
        "Timestamp; 5 prediction_horizon_minutes int32; 6 predicted_usage []TimestampedResources; 7 "
        "confidence_level double; 8 upper_bound []TimestampedResources; 9 lower_bound "
        "[]TimestampedResources; 10 anomaly_detected bool; 11 anomaly_type string; 12 anomaly_score "
        "double; 13 recommendations []PredictionRecommendation; 14 model_type string; 15 model_accuracy "
        "double; 16 created_at Timestamp"
    ),
    "ResourceMetrics": (
        "1 cpu_usage_percent double; 2 cpu_request_cores double; 3 cpu_limit_cores double; 4 "
        "memory_usage_percent double; 5 memory_usage_bytes int64; 6 memory_request_bytes int64; 7 "
        "memory_limit_bytes int64; 8 disk_read_bytes int64; 9 disk_write_bytes int64; 10 disk_read_iops "
        "int64; 11 disk_write_iops int64; 12 disk_read_throughput_mbps double; 13 "
        "disk_write_throughput_mbps double; 14 network_rx_bytes int64; 15 network_tx_bytes int64; 16 "
        "network_rx_throughput_mbps double; 17 network_tx_throughput_mbps double; 18 gpu_usage_percent "
        "double; 19 gpu_memory_usage_bytes int64; 20 gpu_memory_total_bytes int64; 21 collected_at "
        "Timestamp"
    ),
    "StorageRecommendation": (
        "1 recommended_class StorageClass; 2 recommended_size string; 3 recommended_iops int64; 4 "
        "recommended_throughput_mbps int64; 5 reason string"
    ),
    "ArgoContext": (
        "1 workflow_name string; 2 workflow_namespace string; 3 workflow_uid string; 4 step_name string; "
        "5 template_name string; 6 dependencies []string; 7 next_steps []string; 8 is_dag_task bool; 9 "
        "phase string; 10 input_artifacts []ArgoArtifact; 11 output_artifacts []ArgoArtifact; 12 "
        "input_parameters map<string,string>"
    ),
    "ArgoArtifact": ("1 name string; 2 path string; 3 s3_key string; 4 from string"),
    "KubeflowInfo": (
        "1 parallelism int32; 2 completions int32; 3 backoff_limit int32; 4 restart_policy string; 5 "
        "active_deadline_seconds int32; 6 replicas int32; 7 min_replicas int32; 8 max_replicas int32; 9 "
        "cpu_request double; 10 memory_request_bytes int64; 11 gpu_request int32; 12 job_type string; 13 "
        "phase string; 14 active_pods int32; 15 succeeded_pods int32; 16 failed_pods int32"
    ),
    "KueueInfo": (
        "1 queue_name string; 2 cluster_queue string; 3 local_queue string; 4 pending_workloads int32; 5 "
        "admitted_workloads int32; 6 reserved_workloads int32; 7 nominal_cpu double; 8 "
        "nominal_memory_bytes int64; 9 borrowing_limit_cpu double; 10 borrowing_limit_memory int64; 11 "
        "priority int32; 12 preemption_policy string; 13 topology_key string; 14 topology_domains "
        "[]string; 15 affinities []KueueAffinity"
    ),
    "KueueAffinity": (
        "1 type string; 2 key string; 3 operator string; 4 values []string; 5 topology_key string; 6 weight int32"
    ),
    "DataLocalityInfo": (
        "1 filesystem_type string; 2 filesystem_path string; 3 server_address string; 4 data_nodes "
        "[]string; 5 cache_nodes []string; 6 primary_node string; 7 locality_score double; 8 "
        "data_size_bytes int64; 9 estimated_transfer_time_ms double"
    ),
    "NodeResources": (
        "1 cpu_allocatable_cores double; 2 memory_allocatable_bytes int64; 3 storage_allocatable_bytes "
        "int64; 4 gpu_allocatable int32; 5 cpu_used_cores double; 6 memory_used_bytes int64; 7 "
        "storage_used_bytes int64; 8 gpu_used int32; 9 cpu_available_cores double; 10 "
        "memory_available_bytes int64; 11 storage_available_bytes int64; 12 gpu_available int32"
    ),
    "StorageDeviceStatus": (
        "1 device_name string; 2 device_type string; 3 total_bytes int64; 4 used_bytes int64; 5 "
        "available_bytes int64; 6 utilization_percent double; 7 health_score double; 8 current_iops "
        "int64; 9 max_iops int64; 10 current_throughput_mbps double; 11 max_throughput_mbps double"
    ),
    "CSDStatus": (
        "1 device_id string; 2 device_name string; 3 is_available bool; 4 compute_utilization double; 5 "
        "memory_used_bytes int64; 6 memory_total_bytes int64; 7 supported_operations []string; 8 "
        "health_score double"
    ),
    "GPUStatus": (
        "1 gpu_id string; 2 gpu_model string; 3 utilization_percent double; 4 memory_used_bytes int64; 5 "
        "memory_total_bytes int64; 6 temperature_celsius double; 7 power_usage_watts double; 8 "
        "is_available bool"
    ),
    "NetworkStatus": (
        "1 bandwidth_mbps double; 2 current_utilization double; 3 latency_ms double; 4 packets_rx int64; "
        "5 packets_tx int64; 6 errors int64"
    ),
    "IOStatistics": (
        "1 total_read_bytes int64; 2 total_write_bytes int64; 3 total_read_ops int64; 4 total_write_ops "
        "int64; 5 avg_read_latency_ms double; 6 avg_write_latency_ms double; 7 p99_read_latency_ms "
        "double; 8 p99_write_latency_ms double"
    ),
    "WorkloadSummary": (
        "1 pod_name string; 2 pod_namespace string; 3 workload_type WorkloadType; 4 current_stage "
        "PipelineStage; 5 cpu_usage double; 6 memory_usage double; 7 io_usage double"
    ),
    "NodePreference": ("1 node_name string; 2 score int32; 3 reason string"),
    "ComputedResourceRequirements": (
        "1 cpu_cores double; 2 memory_bytes int64; 3 storage_bytes int64; 4 gpu_count int32; 5 "
        "expected_iops int64; 6 expected_throughput_mbps int64"
    ),
    "StorageRequirements": (
        "1 storage_class StorageClass; 2 size_bytes int64; 3 min_iops int64; 4 min_throughput_mbps int64; "
        "5 expected_io_pattern IOPattern; 6 requires_csd bool"
    ),
    "SchedulingConstraint": ("1 constraint_type string; 2 key string; 3 operator string; 4 values []string"),
    "AffinityRule": (
        "1 rule_type string; 2 topology_key string; 3 target_labels []string; 4 is_required bool; 5 weight int32"
    ),
    "MigrationTarget": (
        "1 pod_name string; 2 pod_namespace string; 3 source_node string; 4 target_node string; 5 "
        "preserve_pv bool; 6 timeout_seconds int32"
    ),
    "ProvisioningTarget": (
        "1 pvc_name string; 2 namespace string; 3 storage_class StorageClass; 4 size_bytes int64; 5 iops "
        "int64; 6 throughput_mbps int64; 7 access_mode string"
    ),
    "AutoscalingTarget": (
        "1 workload_name string; 2 workload_namespace string; 3 workload_kind string; 4 current_replicas "
        "int32; 5 desired_replicas int32; 6 scaling_reason string"
    ),
    "ExecutionConstraints": (
        "1 max_retries int32; 2 timeout_seconds int32; 3 allow_disruption bool; 4 blackout_windows []string"
    ),
    "TimestampedResources": (
        "1 timestamp Timestamp; 2 cpu_usage double; 3 memory_usage double; 4 io_usage double; 5 network_usage double"
    ),
    "PredictionRecommendation": (
        "1 recommendation_type string; 2 description string; 3 priority PolicyPriority; 4 "
        "recommended_action_time Timestamp"
    ),
    "ReportResponse": ("1 success bool; 2 message string; 3 request_id string"),
    "StreamResponse": ("1 messages_received int64; 2 messages_processed int64; 3 status string"),
    "SchedulingPolicyRequest": (
        "1 pod_name string; 2 pod_namespace string; 3 pod_uid string; 4 pod_labels map<string,string>; 5 "
        "pod_annotations map<string,string>"
    ),
    "SchedulingResult": (
        "1 request_id string; 2 pod_name string; 3 pod_namespace string; 4 scheduled_node string; 5 "
        "success bool; 6 failure_reason string; 7 scheduling_duration_ms int64"
    ),
    "PolicySubscription": (
        "1 subscriber_id string; 2 action_filters []OrchestrationAction; 3 namespace_filters []string"
    ),
    "OrchestrationPolicyRequest": ("1 pod_name string; 2 pod_namespace string; 3 requested_action OrchestrationAction"),
    "ExecutionResult": (
        "1 request_id string; 2 action OrchestrationAction; 3 success bool; 4 failure_reason string; 5 "
        "execution_duration_ms int64; 6 metrics map<string,string>"
    ),
    "PredictionRequest": ("1 node_name string; 2 horizon_minutes int32; 3 confidence_level double"),
    "ClusterPredictionRequest": ("1 horizon_minutes int32; 2 confidence_level double; 3 node_filters []string"),
    "ClusterPrediction": (
        "1 node_predictions []ResourcePrediction; 2 aggregated_prediction ResourcePrediction; 3 created_at Timestamp"
    ),
}

SEED_ENUMS: dict[str, str] = {
    "WorkloadType": (
        "WORKLOAD_TYPE_UNKNOWN=0, WORKLOAD_TYPE_IMAGE=1, WORKLOAD_TYPE_TEXT=2, WORKLOAD_TYPE_TABULAR=3, "
        "WORKLOAD_TYPE_AUDIO=4, WORKLOAD_TYPE_VIDEO=5, WORKLOAD_TYPE_MULTIMODAL=6, "
        "WORKLOAD_TYPE_GENERIC=7"
    ),
    "PipelineStage": (
        "PIPELINE_STAGE_UNKNOWN=0, PIPELINE_STAGE_DATA_LOADING=1, PIPELINE_STAGE_PREPROCESSING=2, "
        "PIPELINE_STAGE_TRAINING=3, PIPELINE_STAGE_VALIDATION=4, PIPELINE_STAGE_INFERENCE=5, "
        "PIPELINE_STAGE_POSTPROCESSING=6, PIPELINE_STAGE_CHECKPOINTING=7, PIPELINE_STAGE_IDLE=8"
    ),
    "IOPattern": (
        "IO_PATTERN_UNKNOWN=0, IO_PATTERN_READ_HEAVY=1, IO_PATTERN_WRITE_HEAVY=2, IO_PATTERN_BALANCED=3, "
        "IO_PATTERN_SEQUENTIAL=4, IO_PATTERN_RANDOM=5, IO_PATTERN_BURSTY=6"
    ),
    "SchedulingDecision": (
        "SCHEDULING_DECISION_UNSPECIFIED=0, SCHEDULING_DECISION_ALLOW=1, SCHEDULING_DECISION_PREFER=2, "
        "SCHEDULING_DECISION_REQUIRE=3, SCHEDULING_DECISION_DELAY=4, SCHEDULING_DECISION_REJECT=5"
    ),
    "OrchestrationAction": (
        "ORCHESTRATION_ACTION_UNSPECIFIED=0, ORCHESTRATION_ACTION_MIGRATE=1, "
        "ORCHESTRATION_ACTION_PROVISION=2, ORCHESTRATION_ACTION_SCALE_UP=3, "
        "ORCHESTRATION_ACTION_SCALE_DOWN=4, ORCHESTRATION_ACTION_REBALANCE=5, "
        "ORCHESTRATION_ACTION_OPTIMIZE=6"
    ),
    "PolicyPriority": (
        "POLICY_PRIORITY_UNSPECIFIED=0, POLICY_PRIORITY_LOW=1, POLICY_PRIORITY_MEDIUM=2, "
        "POLICY_PRIORITY_HIGH=3, POLICY_PRIORITY_CRITICAL=4"
    ),
    "StorageClass": (
        "STORAGE_CLASS_UNSPECIFIED=0, STORAGE_CLASS_STANDARD=1, STORAGE_CLASS_FAST=2, "
        "STORAGE_CLASS_ULTRA_FAST=3, STORAGE_CLASS_CSD=4, STORAGE_CLASS_MEMORY=5"
    ),
}

SEED_SERVICES: dict[str, str] = {
    "InsightService": (
        "ReportWorkloadSignature(WorkloadSignature) -> ReportResponse; StreamWorkloadSignatures(stream "
        "WorkloadSignature) -> StreamResponse; ReportClusterInsight(ClusterInsight) -> ReportResponse; "
        "StreamClusterInsights(stream ClusterInsight) -> StreamResponse"
    ),
    "SchedulingPolicyService": (
        "GetSchedulingPolicy(SchedulingPolicyRequest) -> SchedulingPolicy; "
        "ReportSchedulingResult(SchedulingResult) -> ReportResponse"
    ),
    "OrchestrationPolicyService": (
        "SubscribePolicies(PolicySubscription) -> stream OrchestrationPolicy; "
        "GetOrchestrationPolicy(OrchestrationPolicyRequest) -> OrchestrationPolicy; "
        "ReportExecutionResult(ExecutionResult) -> ReportResponse"
    ),
    "ForecastService": (
        "GetResourcePrediction(PredictionRequest) -> ResourcePrediction; "
        "GetClusterPrediction(ClusterPredictionRequest) -> ClusterPrediction"
    ),
}

# Oneofs of the seed: message -> oneof name -> member field numbers.
SEED_ONEOFS: dict[str, dict[str, tuple[int, ...]]] = {"OrchestrationPolicy": {"target": (3, 4, 5)}}

# Additions of this project (new numbers only; each is commented in proto/apollo.proto).
EXTENSION_MESSAGES: dict[str, str] = {
    "SchedulingPolicyRequest": (
        "6 cpu_request_cores double; 7 memory_request_bytes int64; 8 gpu_request int32; "
        "9 candidate_nodes []string; 10 horizon_minutes int32"
    ),
    "ExecutionResult": (
        "7 pod_name string; 8 pod_namespace string; 9 source_node string; 10 target_node string; 11 migration_id string"
    ),
    "SchedulingResult": "8 pod_uid string",
    "NodeScoreSnapshotRequest": "1 node_names []string; 2 known_generation int64; 3 columnar bool",
    "NodeScoreSnapshot": (
        "1 generation int64; 2 created_at Timestamp; 3 stale bool; 4 nodes []NodeScore; "
        "5 horizon_minutes int32; 6 mode ForecastMode; 7 not_modified bool; 8 stale_reason string; "
        "9 columns NodeScoreColumns"
    ),
    "NodeScoreColumns": (
        "1 node_names []string; 2 score []int32; 3 predicted_overload []bool; 4 cpu_headroom_cores []double; "
        "5 memory_headroom_bytes []double; 6 cpu_allocatable_cores []double; 7 memory_allocatable_bytes []double; "
        "8 predicted_cpu_upper_percent []double; 9 predicted_memory_upper_percent []double; "
        "10 overload_reasons map<string,string>"
    ),
    "NodeScore": (
        "1 node_name string; 2 score int32; 3 reason string; 4 predicted_overload bool; "
        "5 predicted_cpu_upper_percent double; 6 predicted_memory_upper_percent double; "
        "7 cpu_headroom_cores double; 8 memory_headroom_bytes int64; 9 cpu_allocatable_cores double; "
        "10 memory_allocatable_bytes int64"
    ),
    "NodePreference": "4 infeasible bool",
    "ResourcePrediction": "17 forecast_mode ForecastMode; 18 mode_reason string",
}
EXTENSION_ENUMS: dict[str, str] = {
    "ForecastMode": "FORECAST_MODE_UNSPECIFIED=0, FORECAST_MODE_PREDICTIVE=1, FORECAST_MODE_REACTIVE=2",
}
EXTENSION_SERVICES: dict[str, str] = {
    "SchedulingPolicyService": (
        "GetNodeScoreSnapshot(NodeScoreSnapshotRequest) -> NodeScoreSnapshot; "
        "StreamSchedulingResults(stream SchedulingResult) -> StreamResponse"
    ),
}

_SCALARS = {
    "string": FDP.TYPE_STRING,
    "bool": FDP.TYPE_BOOL,
    "double": FDP.TYPE_DOUBLE,
    "float": FDP.TYPE_FLOAT,
    "int32": FDP.TYPE_INT32,
    "int64": FDP.TYPE_INT64,
}


@dataclass(frozen=True)
class FieldSpec:
    number: int
    name: str
    type: str  # scalar name, message/enum name, "Timestamp" or "map<k,v>"
    repeated: bool


@dataclass(frozen=True)
class MethodSpec:
    name: str
    request: str
    response: str
    client_streaming: bool
    server_streaming: bool


def _parse_fields(spec: str) -> dict[int, FieldSpec]:
    fields: dict[int, FieldSpec] = {}
    for item in spec.split(";"):
        number, name, type_ = item.split()
        repeated = type_.startswith("[]")
        field = FieldSpec(int(number), name, type_.removeprefix("[]"), repeated)
        assert field.number not in fields, f"number {number} listed twice in: {spec}"
        fields[field.number] = field
    return fields


def _parse_enum(spec: str) -> dict[str, int]:
    return {name.strip(): int(number) for name, number in (item.split("=") for item in spec.split(","))}


_METHOD = re.compile(r"^(\w+)\((stream )?(\w+)\) -> (stream )?(\w+)$")


def _parse_methods(spec: str) -> dict[str, MethodSpec]:
    methods: dict[str, MethodSpec] = {}
    for item in spec.split(";"):
        match = _METHOD.match(item.strip())
        assert match, f"unparsable method spec: {item!r}"
        name, client_stream, request, server_stream, response = match.groups()
        methods[name] = MethodSpec(name, request, response, bool(client_stream), bool(server_stream))
    return methods


def _merged_messages() -> dict[str, dict[int, FieldSpec]]:
    merged = {name: _parse_fields(spec) for name, spec in SEED_MESSAGES.items()}
    for name, spec in EXTENSION_MESSAGES.items():
        extra = _parse_fields(spec)
        current = merged.setdefault(name, {})
        clash = set(current) & set(extra)
        assert not clash, f"extension reuses seed numbers {sorted(clash)} in {name}"
        current.update(extra)
    return merged


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    apollo_pb2.DESCRIPTOR.CopyToProto(proto)
    return proto


def _field_problems(message: descriptor_pb2.DescriptorProto, spec: FieldSpec, oneof_names: dict[int, str]) -> list[str]:
    where = f"{message.name}.{spec.name} (= {spec.number})"
    by_number = {field.number: field for field in message.field}
    field = by_number.get(spec.number)
    if field is None:
        return [f"{where}: missing"]
    problems: list[str] = []
    if field.name != spec.name:
        problems.append(f"{where}: field {spec.number} is named {field.name!r}")
    if field.proto3_optional:
        problems.append(f"{where}: declared `optional` (changes presence semantics)")
    expected_oneof = oneof_names.get(spec.number)
    actual_oneof = message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
    if actual_oneof != expected_oneof:
        problems.append(f"{where}: oneof {actual_oneof!r}, contract says {expected_oneof!r}")
    if spec.type.startswith("map<"):
        key_type, value_type = spec.type.removeprefix("map<").removesuffix(">").split(",")
        entry_name = field.type_name.rsplit(".", 1)[-1]
        entries = {nested.name: nested for nested in message.nested_type}
        entry = entries.get(entry_name)
        if field.label != FDP.LABEL_REPEATED or entry is None or not entry.options.map_entry:
            return [*problems, f"{where}: not a map field"]
        key, value = sorted(entry.field, key=lambda f: f.number)
        if (key.type, value.type) != (_SCALARS[key_type], _SCALARS[value_type]):
            problems.append(f"{where}: map types differ from {spec.type}")
        return problems
    expected_label = FDP.LABEL_REPEATED if spec.repeated else FDP.LABEL_OPTIONAL
    if field.label != expected_label:
        problems.append(f"{where}: label {FDP.Label.Name(field.label)}, expected {FDP.Label.Name(expected_label)}")
    if spec.type in _SCALARS:
        if field.type != _SCALARS[spec.type]:
            problems.append(f"{where}: type {FDP.Type.Name(field.type)}, expected {spec.type}")
    else:
        full = ".google.protobuf.Timestamp" if spec.type == "Timestamp" else f".apollo.{spec.type}"
        if field.type not in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM) or field.type_name != full:
            problems.append(f"{where}: type {FDP.Type.Name(field.type)} {field.type_name}, expected {full}")
        elif spec.type in SEED_ENUMS or spec.type in EXTENSION_ENUMS:
            if field.type != FDP.TYPE_ENUM:
                problems.append(f"{where}: expected enum {spec.type}")
        elif field.type != FDP.TYPE_MESSAGE:
            problems.append(f"{where}: expected message {spec.type}")
    return problems


def test_package_and_import_path() -> None:
    proto = _file_proto()
    assert proto.package == "apollo"
    assert proto.syntax == "proto3"
    assert list(proto.dependency) == ["google/protobuf/timestamp.proto"]
    # The gRPC module imports the messages package-qualified, not as a top-level `apollo_pb2`.
    assert getattr(apollo_pb2_grpc, "apollo__api_dot_v1_dot_apollo__pb2") is apollo_pb2  # noqa: B009 (untyped)


def test_seed_and_extension_fields_match_descriptors() -> None:
    proto = _file_proto()
    messages = {message.name: message for message in proto.message_type}
    expected = _merged_messages()
    problems: list[str] = []
    for name, fields in expected.items():
        message = messages.get(name)
        if message is None:
            problems.append(f"message {name}: missing")
            continue
        oneofs = {number: oneof for oneof, numbers in SEED_ONEOFS.get(name, {}).items() for number in numbers}
        for spec in fields.values():
            problems.extend(_field_problems(message, spec, oneofs))
        unlisted = sorted(f"{field.number} {field.name}" for field in message.field if field.number not in fields)
        if unlisted:
            problems.append(f"message {name}: fields not in the contract tables: {unlisted}")
        declared_oneofs = {decl.name for decl in message.oneof_decl}
        if declared_oneofs != set(SEED_ONEOFS.get(name, {})):
            problems.append(f"message {name}: oneofs {sorted(declared_oneofs)}")
    unlisted_messages = sorted(set(messages) - set(expected))
    if unlisted_messages:
        problems.append(f"messages not in the contract tables: {unlisted_messages}")
    assert not problems, "proto/apollo.proto breaks the contract:\n" + "\n".join(problems)


def test_enums_match() -> None:
    proto = _file_proto()
    actual = {enum.name: {value.name: value.number for value in enum.value} for enum in proto.enum_type}
    expected = {name: _parse_enum(spec) for name, spec in {**SEED_ENUMS, **EXTENSION_ENUMS}.items()}
    assert actual == expected


def test_services_match() -> None:
    proto = _file_proto()
    expected: dict[str, dict[str, MethodSpec]] = {name: _parse_methods(spec) for name, spec in SEED_SERVICES.items()}
    for name, spec in EXTENSION_SERVICES.items():
        extra = _parse_methods(spec)
        assert not set(extra) & set(expected[name])
        expected[name].update(extra)
    actual = {
        service.name: {
            method.name: MethodSpec(
                method.name,
                method.input_type.removeprefix(".apollo."),
                method.output_type.removeprefix(".apollo."),
                method.client_streaming,
                method.server_streaming,
            )
            for method in service.method
        }
        for service in proto.service
    }
    assert actual == expected


def test_wire_bytes_of_seed_fields() -> None:
    """Golden bytes: tag = (number << 3) | wire type, independent of any generated code."""
    request = apollo_pb2.SchedulingPolicyRequest(pod_name="p", pod_namespace="ns")
    assert request.SerializeToString(deterministic=True) == b"\x0a\x01p\x12\x02ns"
    policy = apollo_pb2.OrchestrationPolicy(
        request_id="r",
        migration=apollo_pb2.MigrationTarget(target_node="n"),
        priority=apollo_pb2.POLICY_PRIORITY_HIGH,
    )
    # 1 request_id (len), 3 migration{4 target_node} (len), 6 priority (varint)
    assert policy.SerializeToString(deterministic=True) == b"\x0a\x01r\x1a\x03\x22\x01n\x30\x03"
    metrics = apollo_pb2.ResourceMetrics()
    metrics.ParseFromString(b"\x09" + struct.pack("<d", 50.0))
    assert metrics.cpu_usage_percent == 50.0  # field 1, fixed64 double


def test_oneof_target() -> None:
    policy = apollo_pb2.OrchestrationPolicy(provisioning=apollo_pb2.ProvisioningTarget(pvc_name="c"))
    assert policy.WhichOneof("target") == "provisioning"
    policy.autoscaling.desired_replicas = 2
    assert policy.WhichOneof("target") == "autoscaling"
    assert not policy.HasField("provisioning")


def test_committed_stubs_are_up_to_date() -> None:
    """Byte-exact comparison with a fresh generation (hack/gen_proto.py --check)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_committed_descriptor_matches_proto_source() -> None:
    """Version-independent: the descriptor embedded in apollo_pb2.py equals a fresh compile of the .proto.

    This still catches an edited .proto with stale stubs when the byte-exact check above cannot agree on
    generator versions.
    """
    grpc_tools = pytest.importorskip("grpc_tools")
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "apollo.pb"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--proto_path=apollo_api/v1={ROOT / 'proto'}",
                f"--proto_path={include}",
                f"--descriptor_set_out={out}",
                "apollo_api/v1/apollo.proto",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(fresh.file) == 1
    source = fresh.file[0]
    _strip_json_names(source.message_type)  # protoc adds json_name only to descriptor sets, not to gencode
    embedded = descriptor_pb2.FileDescriptorProto.FromString(apollo_pb2.DESCRIPTOR.serialized_pb)
    assert source == embedded, "apollo_api/v1 stubs are stale: run `python hack/gen_proto.py`"


def _strip_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _strip_json_names(message.nested_type)


def test_seed_tables_are_a_faithful_copy_of_the_seed_document() -> None:
    """Guards the transcription above; skipped where shared/ is not checked out beside the repo."""
    seed = ROOT.parent / "shared" / "SEED-CONTRACT.md"
    if not seed.is_file():
        pytest.skip(f"{seed} not present")
    section = seed.read_text(encoding="utf-8").split("## gRPC (package `apollo`)")[1].split("## REST")[0]
    messages: dict[str, str] = {}
    enums: dict[str, str] = {}
    services: dict[str, str] = {}
    for line in section.strip().splitlines():
        item = line.removeprefix("- ")
        if match := re.match(r"enum \*\*(\w+)\*\*: (.*)$", item):
            enums[match[1]] = match[2]
        elif match := re.match(r"service \*\*(\w+)\*\*: (.*)$", item):
            services[match[1]] = match[2]
        elif match := re.match(r"\*\*(\w+)\*\*(?: \(oneof (\w+): fields (\d+)-(\d+)\))?: (.*)$", item):
            messages[match[1]] = match[5]
            if match[2]:
                numbers = tuple(range(int(match[3]), int(match[4]) + 1))
                assert SEED_ONEOFS[match[1]] == {match[2]: numbers}
        else:
            pytest.fail(f"unrecognised seed line: {line}")
    assert messages == SEED_MESSAGES
    assert enums == SEED_ENUMS
    assert services == SEED_SERVICES
    assert set(SEED_ONEOFS) <= set(messages)


class _SchedulingServicer(apollo_pb2_grpc.SchedulingPolicyServiceServicer):
    def GetSchedulingPolicy(
        self, request: apollo_pb2.SchedulingPolicyRequest, context: grpc.ServicerContext
    ) -> apollo_pb2.SchedulingPolicy:
        return apollo_pb2.SchedulingPolicy(pod_name=request.pod_name, decision=apollo_pb2.SCHEDULING_DECISION_ALLOW)

    def ReportSchedulingResult(
        self, request: apollo_pb2.SchedulingResult, context: grpc.ServicerContext
    ) -> apollo_pb2.ReportResponse:
        return apollo_pb2.ReportResponse(success=True)

    def GetNodeScoreSnapshot(
        self, request: apollo_pb2.NodeScoreSnapshotRequest, context: grpc.ServicerContext
    ) -> apollo_pb2.NodeScoreSnapshot:
        if request.known_generation == 7:
            return apollo_pb2.NodeScoreSnapshot(generation=7, not_modified=True)
        snapshot = apollo_pb2.NodeScoreSnapshot(generation=7, mode=apollo_pb2.FORECAST_MODE_PREDICTIVE)
        snapshot.nodes.add(node_name="n1", score=80, predicted_cpu_upper_percent=41.5)
        return snapshot

    def StreamSchedulingResults(
        self, request_iterator: Iterator[apollo_pb2.SchedulingResult], context: grpc.ServicerContext
    ) -> apollo_pb2.StreamResponse:
        received = sum(1 for _ in request_iterator)
        return apollo_pb2.StreamResponse(messages_received=received, messages_processed=received, status="ok")


class _InsightServicer(apollo_pb2_grpc.InsightServiceServicer):
    def ReportWorkloadSignature(
        self, request: apollo_pb2.WorkloadSignature, context: grpc.ServicerContext
    ) -> apollo_pb2.ReportResponse:
        return apollo_pb2.ReportResponse(success=True)

    def StreamWorkloadSignatures(
        self, request_iterator: Iterator[apollo_pb2.WorkloadSignature], context: grpc.ServicerContext
    ) -> apollo_pb2.StreamResponse:
        received = sum(1 for _ in request_iterator)
        return apollo_pb2.StreamResponse(messages_received=received, messages_processed=received, status="ok")

    def ReportClusterInsight(
        self, request: apollo_pb2.ClusterInsight, context: grpc.ServicerContext
    ) -> apollo_pb2.ReportResponse:
        return apollo_pb2.ReportResponse(success=True)

    def StreamClusterInsights(
        self, request_iterator: Iterator[apollo_pb2.ClusterInsight], context: grpc.ServicerContext
    ) -> apollo_pb2.StreamResponse:
        return apollo_pb2.StreamResponse(messages_received=sum(1 for _ in request_iterator))


def test_generated_grpc_modules_serve_and_call() -> None:
    """Smoke test over a real loopback channel: the generated stubs, method paths and streaming kinds work."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    apollo_pb2_grpc.add_SchedulingPolicyServiceServicer_to_server(_SchedulingServicer(), server)
    apollo_pb2_grpc.add_InsightServiceServicer_to_server(_InsightServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            scheduling = apollo_pb2_grpc.SchedulingPolicyServiceStub(channel)
            policy = scheduling.GetSchedulingPolicy(
                apollo_pb2.SchedulingPolicyRequest(pod_name="p", pod_namespace="ns"), timeout=10
            )
            assert (policy.pod_name, policy.decision) == ("p", apollo_pb2.SCHEDULING_DECISION_ALLOW)
            snapshot = scheduling.GetNodeScoreSnapshot(apollo_pb2.NodeScoreSnapshotRequest(), timeout=10)
            assert [(node.node_name, node.score) for node in snapshot.nodes] == [("n1", 80)]
            unchanged = scheduling.GetNodeScoreSnapshot(
                apollo_pb2.NodeScoreSnapshotRequest(known_generation=snapshot.generation), timeout=10
            )
            assert unchanged.not_modified
            assert len(unchanged.nodes) == 0
            insight = apollo_pb2_grpc.InsightServiceStub(channel)
            signatures = (apollo_pb2.WorkloadSignature(pod_name=f"p{i}", pod_namespace="ns") for i in range(3))
            response = insight.StreamWorkloadSignatures(signatures, timeout=10)
            assert (response.messages_received, response.status) == (3, "ok")
    finally:
        server.stop(grace=None)
