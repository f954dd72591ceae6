"""OrchestrationPolicyService: the policy stream, on-demand advice and execution feedback.

Decisions are the core's values until they leave: each is turned into an `OrchestrationPolicy` as it is
sent. On-demand advice goes through the migrate planner's own target rules (one home for target choice);
refusals are domain errors, mapped to gRPC codes in one place (`common.grpc_status`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc

from apollo.adapters.grpc.validation import require_valid
from apollo.adapters.grpc.wire import policy_to_wire
from apollo.adapters.metrics import ApolloMetrics
from apollo.core.decisions import PolicyDecision
from apollo.runtime.engine import Engine
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.errors import NotFound, Unavailable, Unimplemented, Unprocessable
from common.grpc_status import domain_errors

log = logging.getLogger("apollo.orchestration")


class OrchestrationServicer(pb_grpc.OrchestrationPolicyServiceServicer):
    def __init__(self, engine: Engine, metrics: ApolloMetrics) -> None:
        self.engine = engine
        self.metrics = metrics

    @domain_errors
    def SubscribePolicies(
        self, request: pb.PolicySubscription, context: grpc.ServicerContext
    ) -> Iterator[pb.OrchestrationPolicy]:
        require_valid(request)
        sub = self.engine.broker.subscribe(
            request.subscriber_id, frozenset(request.action_filters), frozenset(request.namespace_filters)
        )
        log.info("subscriber connected", extra={"subscriber": request.subscriber_id})
        try:
            for decision in sub.stream(context.is_active):
                policy = policy_to_wire(decision)
                self.metrics.policies_emitted.labels(pb.OrchestrationAction.Name(policy.action)).inc()
                yield policy
        finally:
            self.engine.broker.unsubscribe(sub)
            log.info("subscriber gone", extra={"subscriber": request.subscriber_id, "dropped": sub.dropped})

    @domain_errors
    def GetOrchestrationPolicy(
        self, request: pb.OrchestrationPolicyRequest, context: grpc.ServicerContext
    ) -> pb.OrchestrationPolicy:
        """Advice for one pod now (MIGRATE: the best target); not counted against the policy's caps."""
        require_valid(request)
        if request.requested_action not in (pb.ORCHESTRATION_ACTION_UNSPECIFIED, pb.ORCHESTRATION_ACTION_MIGRATE):
            raise Unimplemented(
                f"{pb.OrchestrationAction.Name(request.requested_action)} is only issued proactively on "
                "SubscribePolicies; on demand APOLLO answers MIGRATE",
                field="requested_action",
            )
        view = self.engine.view
        if view.table is None or view.stale:
            raise Unavailable(f"no fresh forecast: {view.stale_reason or 'no data'}")
        pod = next(
            (p for p in view.cluster.pods if p.namespace == request.pod_namespace and p.name == request.pod_name),
            None,
        )
        if pod is None:
            raise NotFound(f"pod {request.pod_namespace}/{request.pod_name} is not running on a node APOLLO reads")
        with self.engine.lock:  # the planner's confirmed nodes and the ledger are the tick thread's too
            advice = self.engine.policy.advise_migration(pod, view.table, self.engine.clock())
        if not isinstance(advice, PolicyDecision):
            raise Unprocessable(f"no target for {pod.key}: {advice.reason}")
        return policy_to_wire(advice)

    @domain_errors
    def ReportExecutionResult(self, request: pb.ExecutionResult, context: grpc.ServicerContext) -> pb.ReportResponse:
        require_valid(request)
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
