"""Thin gRPC servicers: validate, translate to/from the engine's plain data, answer.

Decisions live in the engine and the pure modules; a servicer only checks the message (identity
errors -> INVALID_ARGUMENT naming the field; bad metric values -> dropped and counted), reads the
engine's current immutable view, and builds the reply.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from apollo.adapters.grpc.validation import FieldError, format_errors, sanitize_metrics, validate_message
from apollo.adapters.metrics import ApolloMetrics
from apollo.core.domain import PodDemand
from apollo.core.scoring.nodes import NodeScores
from apollo.core.scoring.pods import score_pod
from apollo.runtime.engine import Engine, EngineView
from apollo.runtime.reports import ReportStore
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

log = logging.getLogger("apollo.grpc")
M = TypeVar("M")


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _identity_errors(errors: list[FieldError]) -> list[FieldError]:
    return [e for e in errors if not e.path.startswith("current_metrics.")]


def _abort_invalid(context: grpc.ServicerContext, errors: list[FieldError]) -> None:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, format_errors(errors))


def require_valid(message: Message, context: grpc.ServicerContext) -> None:
    """End the call with INVALID_ARGUMENT naming every bad field; return when the message is valid."""
    errors = validate_message(message)
    if errors:
        _abort_invalid(context, errors)


class InsightServicer(pb_grpc.InsightServiceServicer):
    """Stores what agents report; bad metric values are dropped (and counted), not the report."""

    def __init__(self, reports: ReportStore, metrics: ApolloMetrics) -> None:
        self.reports = reports
        self.metrics = metrics

    def _accept_signature(self, sig: pb.WorkloadSignature) -> list[FieldError]:
        errors = validate_message(sig)
        identity = _identity_errors(errors)
        if identity:
            self.metrics.rejected.labels("WorkloadSignature").inc()
            return identity
        if sig.HasField("current_metrics"):
            cleaned, dropped = sanitize_metrics(sig.current_metrics)
            if dropped:
                self.metrics.dropped_values.labels("grpc").inc(len(dropped))
                sig.current_metrics.CopyFrom(cleaned)
        self.reports.put_signature(sig)
        self.metrics.reports.labels("WorkloadSignature").inc()
        return []

    def _accept_insight(self, insight: pb.ClusterInsight) -> list[FieldError]:
        errors = validate_message(insight)
        if errors:
            self.metrics.rejected.labels("ClusterInsight").inc()
            return errors
        self.reports.put_insight(insight)
        self.metrics.reports.labels("ClusterInsight").inc()
        return []

    def ReportWorkloadSignature(
        self, request: pb.WorkloadSignature, context: grpc.ServicerContext
    ) -> pb.ReportResponse:
        errors = self._accept_signature(request)
        if errors:
            _abort_invalid(context, errors)
        return pb.ReportResponse(success=True, message="accepted", request_id=request.pod_uid)

    def ReportClusterInsight(self, request: pb.ClusterInsight, context: grpc.ServicerContext) -> pb.ReportResponse:
        errors = self._accept_insight(request)
        if errors:
            _abort_invalid(context, errors)
        return pb.ReportResponse(success=True, message="accepted", request_id=request.node_name)

    def StreamWorkloadSignatures(
        self, request_iterator: Iterator[pb.WorkloadSignature], context: grpc.ServicerContext
    ) -> pb.StreamResponse:
        return _drain(request_iterator, self._accept_signature)

    def StreamClusterInsights(
        self, request_iterator: Iterator[pb.ClusterInsight], context: grpc.ServicerContext
    ) -> pb.StreamResponse:
        return _drain(request_iterator, self._accept_insight)


def _drain(messages: Iterator[M], accept: Callable[[M], list[FieldError]]) -> pb.StreamResponse:
    """Accept a client stream message by message: a bad one is rejected alone, the stream goes on."""
    received = processed = 0
    last_error = ""
    for message in messages:
        received += 1
        errors = accept(message)
        if errors:
            last_error = format_errors(errors)
        else:
            processed += 1
    status = "ok" if processed == received else f"rejected {received - processed}: {last_error}"
    return pb.StreamResponse(messages_received=received, messages_processed=processed, status=status)


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
        created_at=_ts(view.created_at),
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
            score=50 if view.stale else int(s.score[i]),
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
        columns.score.extend([50] * len(rows))
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


class SchedulingServicer(pb_grpc.SchedulingPolicyServiceServicer):
    # Recent placements (pod UID, or namespace/name without one; node; success), to count each once: every
    # gunicorn worker of the extender watches bindings, and two that both scored a pod both report it.
    RECENT_RESULTS = 50_000

    def __init__(self, engine: Engine, metrics: ApolloMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._recent: OrderedDict[tuple[str, str, bool], None] = OrderedDict()
        self._recent_lock = threading.Lock()

    def GetNodeScoreSnapshot(
        self, request: pb.NodeScoreSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.NodeScoreSnapshot:
        require_valid(request, context)
        return snapshot_message(self.engine.view, request, self.engine.settings.forecast.horizon_minutes)

    def GetSchedulingPolicy(
        self, request: pb.SchedulingPolicyRequest, context: grpc.ServicerContext
    ) -> pb.SchedulingPolicy:
        """Per-pod scores 0-100 with reasons, from the risk-aware scoring over the pod's horizon."""
        require_valid(request, context)
        view = self.engine.view
        settings = self.engine.settings.forecast
        now = self.engine.clock()
        policy = pb.SchedulingPolicy(
            request_id=uuid.uuid4().hex,
            pod_name=request.pod_name,
            pod_namespace=request.pod_namespace,
            decision=pb.SCHEDULING_DECISION_PREFER,
            created_at=_ts(now),
            expires_at=_ts(now + settings.step_seconds),
        )
        policy.resource_requirements.cpu_cores = request.cpu_request_cores
        policy.resource_requirements.memory_bytes = request.memory_request_bytes
        policy.resource_requirements.gpu_count = request.gpu_request
        table = view.table
        if table is None or view.stale:
            policy.decision = pb.SCHEDULING_DECISION_ALLOW
            policy.reason = "no fresh forecast: neutral scores" + (
                f" ({view.stale_reason})" if view.stale_reason else ""
            )
            for node in request.candidate_nodes:
                policy.node_preferences.add(node_name=node, score=50, reason="neutral: no fresh forecast")
            return policy
        horizon_min = request.horizon_minutes or settings.horizon_minutes
        demand = PodDemand(
            namespace=request.pod_namespace,
            name=request.pod_name,
            cpu_cores=max(0.0, request.cpu_request_cores),
            memory_bytes=float(max(0, request.memory_request_bytes)),
            gpus=max(0, request.gpu_request),
            horizon_steps=max(1, min(table.horizon, math.ceil(horizon_min * 60 / settings.step_seconds))),
            labels=dict(request.pod_labels),
            annotations=dict(request.pod_annotations),
            signature=self.engine.signature(request.pod_namespace, request.pod_name),
        )
        scores = score_pod(demand, table, threshold=settings.overload_threshold)
        for node in list(request.candidate_nodes) or list(table.nodes):
            result = scores.result_for(node)
            if result is None:
                policy.node_preferences.add(node_name=node, score=50, reason="unknown to APOLLO: neutral")
                continue
            # Only a missing capability is "infeasible" (unresolvable); predicted load just scores 0,
            # so the extender's load rules (pinned nodes, never filter every node) stay in charge.
            policy.node_preferences.add(
                node_name=node,
                score=result.score,
                reason=result.reason,
                infeasible=bool(scores.gpu_shortfall[table.index[node]]),
            )
        if demand.signature is not None and demand.signature.io_heavy:
            policy.storage_requirements.expected_io_pattern = pb.IOPattern.Value(demand.signature.io_pattern)
        policy.reason = f"risk-aware predicted headroom over {horizon_min} min, fit from insights"
        return policy

    def ReportSchedulingResult(self, request: pb.SchedulingResult, context: grpc.ServicerContext) -> pb.ReportResponse:
        require_valid(request, context)
        self._record_result(request)
        return pb.ReportResponse(success=True, message="recorded", request_id=request.request_id)

    def StreamSchedulingResults(
        self, request_iterator: Iterator[pb.SchedulingResult], context: grpc.ServicerContext
    ) -> pb.StreamResponse:
        return _drain(request_iterator, self._accept_result)

    def _accept_result(self, result: pb.SchedulingResult) -> list[FieldError]:
        errors = validate_message(result)
        if not errors:
            self._record_result(result)
        return errors

    def _record_result(self, result: pb.SchedulingResult) -> None:
        pod = result.pod_uid or f"{result.pod_namespace}/{result.pod_name}"
        key = (pod, result.scheduled_node, result.success)
        with self._recent_lock:
            if key in self._recent:
                self.metrics.scheduling_results.labels("duplicate").inc()
                return
            self._recent[key] = None
            if len(self._recent) > self.RECENT_RESULTS:
                self._recent.popitem(last=False)
        self.metrics.scheduling_results.labels("success" if result.success else "failure").inc()
