"""Wire <-> core: protobuf messages to the decision core's plain values and back. Pure functions.

Kept apart from the servicers so the mapping (units, enum names, defaults) is tested on its own and
read in one place: reports become domain values once, when they arrive; decisions and the score
snapshot become messages once, when they leave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from apollo.core.decisions import Action, PolicyDecision
from apollo.core.domain import NEUTRAL_SCORE, NodeCapacity, NodeInsight, PodSignature, StorageDevice
from apollo.core.scoring.snapshot import NodeScores
from apollo.runtime.engine import EngineView
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
    """Free devices and, when the agent sent node_resources, its allocatable capacity (negatives floored)."""
    r = insight.node_resources
    gpus_free = sum(1 for g in insight.gpu_devices if g.is_available) if insight.gpu_devices else r.gpu_available
    allocatable = (
        NodeCapacity(
            max(0.0, r.cpu_allocatable_cores), float(max(0, r.memory_allocatable_bytes)), max(0, r.gpu_allocatable)
        )
        if insight.HasField("node_resources")
        else None
    )
    return NodeInsight(
        node=insight.node_name,
        allocatable=allocatable,
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


def _int64(value: float) -> int:
    """Clamp to the wire's int64: a runaway forecast must degrade a number, not fail the RPC."""
    return int(max(-(2**63), min(2**63 - 1, value)))


def snapshot_message(
    view: EngineView, request: pb.NodeScoreSnapshotRequest, horizon_minutes: int
) -> pb.NodeScoreSnapshot:
    """The compact per-node snapshot; neutral (and flagged stale) when the engine has no fresh data."""
    mode = pb.FORECAST_MODE_REACTIVE if view.reactive else pb.FORECAST_MODE_PREDICTIVE
    reply = pb.NodeScoreSnapshot(
        generation=view.generation,
        created_at=timestamp(view.created_at),
        stale=view.stale,
        stale_reason=view.stale_reason,
        horizon_minutes=horizon_minutes,
        mode=mode,
    )
    if request.known_generation and request.known_generation == view.generation:
        reply.not_modified = True
        return reply
    s = view.scores
    if s is None:
        return reply
    if request.columnar:
        _fill_columns(reply.columns, s, view.stale, request.node_names)
        return reply
    wanted = set(request.node_names)
    for i, node in enumerate(s.nodes):
        if wanted and node not in wanted:
            continue
        entry = reply.nodes.add(
            node_name=node,
            score=NEUTRAL_SCORE if view.stale else int(s.score[i]),
            reason="stale: " + view.stale_reason if view.stale else s.reasons[i],
            predicted_overload=bool(s.overload[i]) and not view.stale,
        )
        if math.isfinite(s.cpu_peak[i]):
            entry.predicted_cpu_upper_percent = float(s.cpu_peak[i] * 100)
        if math.isfinite(s.memory_peak[i]):
            entry.predicted_memory_upper_percent = float(s.memory_peak[i] * 100)
        if math.isfinite(s.cpu_headroom_cores[i]):
            entry.cpu_headroom_cores = float(s.cpu_headroom_cores[i])
            entry.cpu_allocatable_cores = float(s.cpu_allocatable[i])
        if math.isfinite(s.memory_headroom_bytes[i]):
            entry.memory_headroom_bytes = _int64(s.memory_headroom_bytes[i])
            entry.memory_allocatable_bytes = _int64(s.memory_allocatable[i])
    return reply


def _fill_columns(columns: pb.NodeScoreColumns, s: NodeScores, stale: bool, only: Sequence[str]) -> None:
    """The columnar answer: whole arrays at once, NaN for unknowns, neutral and unflagged when stale."""
    rows = np.arange(len(s.nodes))
    if only:
        position = {name: i for i, name in enumerate(s.nodes)}
        rows = np.array(sorted({position[n] for n in only if n in position}), dtype=np.int64)
    names = [s.nodes[i] for i in rows.tolist()]
    columns.node_names.extend(names)
    if stale:
        columns.score.extend([NEUTRAL_SCORE] * len(rows))
        columns.predicted_overload.extend([False] * len(rows))
    else:
        columns.score.extend(s.score[rows].astype(np.int64).tolist())
        overload = s.overload[rows]
        columns.predicted_overload.extend(overload.tolist())
        for i in np.flatnonzero(overload).tolist():
            columns.overload_reasons[names[i]] = s.reasons[int(rows[i])]
    cpu_known = np.isfinite(s.cpu_headroom_cores[rows])
    memory_known = np.isfinite(s.memory_headroom_bytes[rows])
    columns.cpu_headroom_cores.extend(s.cpu_headroom_cores[rows].tolist())
    columns.memory_headroom_bytes.extend(s.memory_headroom_bytes[rows].tolist())
    # Allocatable is only meaningful with a headroom (as in the per-node form, where 0 = unknown).
    columns.cpu_allocatable_cores.extend(np.where(cpu_known, s.cpu_allocatable[rows], np.nan).tolist())
    columns.memory_allocatable_bytes.extend(np.where(memory_known, s.memory_allocatable[rows], np.nan).tolist())
    columns.predicted_cpu_upper_percent.extend((s.cpu_peak[rows] * 100).tolist())
    columns.predicted_memory_upper_percent.extend((s.memory_peak[rows] * 100).tolist())
