"""Wire <-> core: protobuf messages to the decision core's plain values and back. Pure functions.

Kept apart from the servicers so the mapping (units, enum names, defaults) is tested on its own
and read in one place.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from apollo.core.domain import Action, NodeInsight, PodSignature, PolicyDecision, StorageDevice
from apollo_api.v1 import apollo_pb2 as pb

_ACTION_WIRE = {
    Action.MIGRATE: pb.ORCHESTRATION_ACTION_MIGRATE,
    Action.PROVISION: pb.ORCHESTRATION_ACTION_PROVISION,
    Action.SCALE_UP: pb.ORCHESTRATION_ACTION_SCALE_UP,
    Action.SCALE_DOWN: pb.ORCHESTRATION_ACTION_SCALE_DOWN,
}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def action_to_wire(action: Action) -> int:
    return _ACTION_WIRE[action]


def _enum_name(enum: Any, value: int) -> str:
    """The value's name; proto3 keeps unknown numbers from newer agents, which map to the 0 name."""
    return str(enum.Name(value if value in enum.values() else 0))


def signature_from_wire(sig: pb.WorkloadSignature) -> PodSignature:
    """Enum values become their seed names; CPU usage in cores is derived only when its basis is known."""
    m = sig.current_metrics
    cpu_cores = math.nan
    if sig.HasField("current_metrics") and m.cpu_request_cores > 0 and m.cpu_usage_percent > 0:
        # cpu_usage_percent is relative to the request when one is set (the agent's convention).
        cpu_cores = m.cpu_request_cores * m.cpu_usage_percent / 100.0
    mem_bytes = (
        float(m.memory_usage_bytes) if sig.HasField("current_metrics") and m.memory_usage_bytes > 0 else math.nan
    )
    rec = sig.storage_recommendation
    loc = sig.data_locality
    return PodSignature(
        workload_type=_enum_name(pb.WorkloadType, sig.workload_type),
        pipeline_stage=_enum_name(pb.PipelineStage, sig.current_stage),
        io_pattern=_enum_name(pb.IOPattern, sig.io_pattern),
        is_gpu_workload=sig.is_gpu_workload,
        storage_class=_enum_name(pb.StorageClass, rec.recommended_class),
        storage_iops=max(0, rec.recommended_iops),
        storage_throughput_mbps=max(0, rec.recommended_throughput_mbps),
        data_nodes=tuple(loc.data_nodes),
        cache_nodes=tuple(loc.cache_nodes),
        primary_node=loc.primary_node,
        locality_score=min(1.0, max(0.0, loc.locality_score)) if math.isfinite(loc.locality_score) else 0.0,
        cpu_usage_cores=cpu_cores,
        memory_usage_bytes=mem_bytes,
    )


def insight_from_wire(insight: pb.ClusterInsight) -> NodeInsight:
    r = insight.node_resources
    gpus_free = sum(1 for g in insight.gpu_devices if g.is_available) if insight.gpu_devices else r.gpu_available
    return NodeInsight(
        node=insight.node_name,
        gpus_available=max(0, gpus_free),
        gpus_total=max(len(insight.gpu_devices), r.gpu_allocatable, 0),
        csd_available=sum(1 for c in insight.csd_devices if c.is_available),
        storage=tuple(
            StorageDevice(
                name=d.device_name,
                device_type=d.device_type,
                total_bytes=max(0, d.total_bytes),
                available_bytes=max(0, d.available_bytes),
                max_iops=max(0, d.max_iops),
                max_throughput_mbps=max(0.0, d.max_throughput_mbps),
            )
            for d in insight.storage_devices
        ),
        network_bandwidth_mbps=max(0.0, insight.network_status.bandwidth_mbps),
    )


def policy_to_wire(decision: PolicyDecision) -> pb.OrchestrationPolicy:
    """One decision as an OrchestrationPolicy; the target goes into the matching branch of the oneof."""
    msg = pb.OrchestrationPolicy(
        request_id=decision.request_id,
        action=action_to_wire(decision.action),  # type: ignore[arg-type]
        priority=int(decision.priority),  # type: ignore[arg-type]
        reason=decision.reason,
        contributing_factors=list(decision.contributing_factors),
        created_at=timestamp(decision.created_at),
        deadline=timestamp(decision.created_at + decision.deadline_seconds),
    )
    msg.constraints.timeout_seconds = decision.deadline_seconds
    msg.constraints.allow_disruption = not decision.dry_run
    msg.constraints.max_retries = 0
    if decision.migration is not None:
        t = decision.migration
        msg.migration.CopyFrom(
            pb.MigrationTarget(
                pod_name=t.pod_name,
                pod_namespace=t.namespace,
                source_node=t.source_node,
                target_node=t.target_node,
                preserve_pv=t.preserve_pv,
                timeout_seconds=t.timeout_seconds,
            )
        )
    elif decision.autoscaling is not None:
        a = decision.autoscaling
        msg.autoscaling.CopyFrom(
            pb.AutoscalingTarget(
                workload_name=a.workload_name,
                workload_namespace=a.namespace,
                workload_kind=a.workload_kind,
                current_replicas=a.current_replicas,
                desired_replicas=a.desired_replicas,
                scaling_reason=a.scaling_reason,
            )
        )
    elif decision.provisioning is not None:
        p = decision.provisioning
        msg.provisioning.CopyFrom(
            pb.ProvisioningTarget(
                pvc_name=p.pvc_name,
                namespace=p.namespace,
                storage_class=pb.StorageClass.Value(p.storage_class)
                if p.storage_class in pb.StorageClass.keys()  # noqa: SIM118 - EnumTypeWrapper is not a dict
                else pb.STORAGE_CLASS_UNSPECIFIED,
                size_bytes=p.size_bytes,
                iops=p.iops,
                throughput_mbps=p.throughput_mbps,
                access_mode=p.access_mode,
            )
        )
    return msg


def policy_namespace(decision: PolicyDecision) -> str:
    if decision.migration is not None:
        return decision.migration.namespace
    if decision.autoscaling is not None:
        return decision.autoscaling.namespace
    if decision.provisioning is not None:
        return decision.provisioning.namespace
    return ""
