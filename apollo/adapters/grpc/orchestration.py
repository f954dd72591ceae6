"""OrchestrationPolicyService: the policy stream, on-demand policies and execution feedback."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc

from apollo.adapters.grpc.scheduling import require_valid
from apollo.adapters.grpc.wire import policy_to_wire
from apollo.adapters.metrics import ApolloMetrics
from apollo.core.domain import Action, MigrationTarget, PolicyDecision, Priority
from apollo.core.policy.engine import request_id
from apollo.core.scoring.pods import score_pod
from apollo.runtime.engine import Engine
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc

log = logging.getLogger("apollo.orchestration")


class OrchestrationServicer(pb_grpc.OrchestrationPolicyServiceServicer):
    def __init__(self, engine: Engine, metrics: ApolloMetrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def SubscribePolicies(
        self, request: pb.PolicySubscription, context: grpc.ServicerContext
    ) -> Iterator[pb.OrchestrationPolicy]:
        require_valid(request, context)
        sub = self.engine.broker.subscribe(
            request.subscriber_id, frozenset(request.action_filters), frozenset(request.namespace_filters)
        )
        log.info("subscriber connected", extra={"subscriber": request.subscriber_id})
        try:
            for policy in sub.stream(context.is_active):
                self.metrics.policies_emitted.labels(pb.OrchestrationAction.Name(policy.action)).inc()
                yield policy
        finally:
            self.engine.broker.unsubscribe(sub)
            log.info("subscriber gone", extra={"subscriber": request.subscriber_id, "dropped": sub.dropped})

    def GetOrchestrationPolicy(
        self, request: pb.OrchestrationPolicyRequest, context: grpc.ServicerContext
    ) -> pb.OrchestrationPolicy:
        """Advice for one pod now (MIGRATE: the best target); not counted against the policy's caps."""
        require_valid(request, context)
        if request.requested_action not in (pb.ORCHESTRATION_ACTION_UNSPECIFIED, pb.ORCHESTRATION_ACTION_MIGRATE):
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"requested_action {pb.OrchestrationAction.Name(request.requested_action)} is only issued "
                "proactively on SubscribePolicies; on demand APOLLO answers MIGRATE",
            )
        view = self.engine.view
        if view.table is None or view.stale:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"no fresh forecast: {view.stale_reason or 'no data'}")
        assert view.table is not None
        pod = next(
            (p for p in view.cluster.pods if p.namespace == request.pod_namespace and p.name == request.pod_name),
            None,
        )
        if pod is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"pod {request.pod_namespace}/{request.pod_name} is not running on a node APOLLO reads",
            )
        assert pod is not None
        settings = self.engine.settings
        scores = score_pod(pod.as_demand(), view.table, threshold=settings.forecast.overload_threshold)
        best = next((r for r in scores.top(len(view.table)) if r.node != pod.node and r.feasible), None)
        if best is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no feasible target node for this pod")
        assert best is not None
        now = self.engine.clock()
        decision = PolicyDecision(
            request_id=request_id(Action.MIGRATE, f"{pod.key}->{best.node}", now, 60.0),
            action=Action.MIGRATE,
            priority=Priority.MEDIUM,
            reason=f"on request: best target {best.node} ({best.reason})",
            contributing_factors=(f"target_score={best.score}", f"source={pod.node}"),
            created_at=now,
            deadline_seconds=settings.policy.migration_timeout_seconds,
            migration=MigrationTarget(
                pod_name=pod.name,
                namespace=pod.namespace,
                source_node=pod.node,
                target_node=best.node,
                preserve_pv=True,
                timeout_seconds=settings.policy.migration_timeout_seconds,
            ),
        )
        return policy_to_wire(decision)

    def ReportExecutionResult(self, request: pb.ExecutionResult, context: grpc.ServicerContext) -> pb.ReportResponse:
        require_valid(request, context)
        known = self.engine.record_result(request.request_id, request.success)
        log.info(
            "execution result",
            extra={
                "id": request.request_id,
                "success": request.success,
                "reason": request.failure_reason,
                "ms": request.execution_duration_ms,
                "known": known,
                "at": time.time(),
            },
        )
        message = "recorded" if known else "recorded; request_id was not in flight (already expired or unknown)"
        return pb.ReportResponse(success=True, message=message, request_id=request.request_id)
