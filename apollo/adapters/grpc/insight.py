"""InsightService: what agents report, validated, converted to domain values once, and stored.

Identity errors reject the report (INVALID_ARGUMENT naming the field); bad metric values are dropped and
counted, not the report, because one broken gauge should not discard what else the agent knows. In a
client stream a bad message is rejected alone and the stream goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from apollo.adapters.grpc.validation import FieldError, format_errors, invalid, sanitize_metrics, validate_message
from apollo.adapters.grpc.wire import insight_from_wire, signature_from_wire
from apollo.adapters.metrics import ApolloMetrics
from apollo.runtime.reports import ReportStore
from apollo_api.v1 import apollo_pb2 as pb
from apollo_api.v1 import apollo_pb2_grpc as pb_grpc
from common.grpc_status import domain_errors

M = TypeVar("M")


def drain(messages: Iterator[M], accept: Callable[[M], list[FieldError]]) -> pb.StreamResponse:
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


def _identity_errors(errors: list[FieldError]) -> list[FieldError]:
    return [e for e in errors if not e.path.startswith("current_metrics.")]


class InsightServicer(pb_grpc.InsightServiceServicer):
    """Stores what agents report; bad metric values are dropped (and counted), not the report."""

    def __init__(self, reports: ReportStore, metrics: ApolloMetrics) -> None:
        self.reports = reports
        self.metrics = metrics

    def _accept_signature(self, sig: pb.WorkloadSignature) -> list[FieldError]:
        identity = _identity_errors(validate_message(sig))
        if identity:
            self.metrics.rejected.labels("WorkloadSignature").inc()
            return identity
        if sig.HasField("current_metrics"):
            cleaned, dropped = sanitize_metrics(sig.current_metrics)
            if dropped:
                self.metrics.dropped_values.labels("grpc").inc(len(dropped))
                sig.current_metrics.CopyFrom(cleaned)
        self.reports.put_signature(sig.pod_namespace, sig.pod_name, signature_from_wire(sig))
        self.metrics.reports.labels("WorkloadSignature").inc()
        return []

    def _accept_insight(self, insight: pb.ClusterInsight) -> list[FieldError]:
        errors = validate_message(insight)
        if errors:
            self.metrics.rejected.labels("ClusterInsight").inc()
            return errors
        self.reports.put_insight(insight_from_wire(insight))
        self.metrics.reports.labels("ClusterInsight").inc()
        return []

    @domain_errors
    def ReportWorkloadSignature(
        self, request: pb.WorkloadSignature, context: grpc.ServicerContext
    ) -> pb.ReportResponse:
        errors = self._accept_signature(request)
        if errors:
            raise invalid(errors)
        return pb.ReportResponse(success=True, message="accepted", request_id=request.pod_uid)

    @domain_errors
    def ReportClusterInsight(self, request: pb.ClusterInsight, context: grpc.ServicerContext) -> pb.ReportResponse:
        errors = self._accept_insight(request)
        if errors:
            raise invalid(errors)
        return pb.ReportResponse(success=True, message="accepted", request_id=request.node_name)

    def StreamWorkloadSignatures(
        self, request_iterator: Iterator[pb.WorkloadSignature], context: grpc.ServicerContext
    ) -> pb.StreamResponse:
        return drain(request_iterator, self._accept_signature)

    def StreamClusterInsights(
        self, request_iterator: Iterator[pb.ClusterInsight], context: grpc.ServicerContext
    ) -> pb.StreamResponse:
        return drain(request_iterator, self._accept_insight)
