"""SchedulingPolicyService: the extender's score snapshot, per-pod policies, and placements reported back.

A thin servicer: validate (bad input raises `InvalidArgument`, mapped once by `common.grpc_status`), read
the engine's current immutable view, build the reply. Scores come from the core's per-pod scoring with
the settings in force (overload line, weights); when the view is stale every node scores neutral.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator

import grpc

from apollo.adapters.grpc.insight import drain
from apollo.adapters.grpc.validation import FieldError, require_valid, validate_message
from apollo.adapters.grpc.wire import snapshot_message, timestamp
from apollo.adapters.metrics import ApolloMetrics
from apollo.core.domain import NEUTRAL_SCORE, PodDemand
from apollo.core.scoring.pods import score_pod
from apollo.runtime.engine import Engine
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.grpc_status import domain_errors


class SchedulingServicer(pb_grpc.SchedulingPolicyServiceServicer):
    """Snapshot and per-pod policies from the engine's view; placements counted once each."""

    # Recent placements (pod UID, or namespace/name without one; node; success), to count each once: every
    # gunicorn worker of the extender watches bindings, and two that both scored a pod both report it.
    RECENT_RESULTS = 50_000

    def __init__(self, engine: Engine, metrics: ApolloMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._recent: OrderedDict[tuple[str, str, bool], None] = OrderedDict()
        self._recent_lock = threading.Lock()

    @domain_errors
    def GetNodeScoreSnapshot(
        self, request: pb.NodeScoreSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.NodeScoreSnapshot:
        require_valid(request)
        return snapshot_message(self.engine.view, request, self.engine.settings.forecast.horizon_minutes)

    @domain_errors
    def GetSchedulingPolicy(
        self, request: pb.SchedulingPolicyRequest, context: grpc.ServicerContext
    ) -> pb.SchedulingPolicy:
        """Per-pod scores 0-100 with reasons, from the risk-aware scoring over the pod's horizon."""
        require_valid(request)
        view = self.engine.view
        settings = self.engine.settings.forecast
        now = self.engine.clock()
        policy = pb.SchedulingPolicy(
            request_id=uuid.uuid4().hex,
            pod_name=request.pod_name,
            pod_namespace=request.pod_namespace,
            decision=pb.SCHEDULING_DECISION_PREFER,
            created_at=timestamp(now),
            expires_at=timestamp(now + settings.step_seconds),
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
                policy.node_preferences.add(node_name=node, score=NEUTRAL_SCORE, reason="neutral: no fresh forecast")
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
        scores = score_pod(
            demand,
            table,
            weights=self.engine.settings.scoring,
            threshold=self.engine.settings.policy.overload_threshold,
        )
        for node in list(request.candidate_nodes) or list(table.nodes):
            result = scores.result_for(node)
            if result is None:
                policy.node_preferences.add(node_name=node, score=NEUTRAL_SCORE, reason="unknown to APOLLO: neutral")
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

    @domain_errors
    def ReportSchedulingResult(self, request: pb.SchedulingResult, context: grpc.ServicerContext) -> pb.ReportResponse:
        require_valid(request)
        self._record_result(request)
        return pb.ReportResponse(success=True, message="recorded", request_id=request.request_id)

    def StreamSchedulingResults(
        self, request_iterator: Iterator[pb.SchedulingResult], context: grpc.ServicerContext
    ) -> pb.StreamResponse:
        return drain(request_iterator, self._accept_result)

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
