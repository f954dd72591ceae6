"""Validation of incoming APOLLO messages: pure functions that return precise field errors.

Why this module exists: protobuf accepts any bit pattern for a double and any integer for an int64, so a
misbehaving agent can send NaN, infinities or negative byte counts. One such value poisons a vectorised
forecast for every series it touches, so everything that enters the engine is checked here first. The
functions never raise on bad input and never touch gRPC: they return a list of :class:`FieldError` (empty
means valid) and leave the policy to the caller. The intended use in a servicer:

* identity errors (missing ``pod_name``, ``node_name``, ``subscriber_id``, ...) -> reject the call:
  :func:`require_valid` raises ``common.errors.InvalidArgument`` naming the field, which the servicers
  turn into ``INVALID_ARGUMENT`` through the one mapping (``common.grpc_status``);
* metric errors only (paths under ``current_metrics.``) -> accept, pass the metrics through
  :func:`sanitize_metrics` and count what it dropped, because one bad gauge should not discard a report.

Rules, decided once here so every component agrees:

* Every double / float field must be finite. Every numeric field must be >= 0 (they are usages, sizes,
  rates, latencies, counts, durations), except the few listed in ``_SIGNED`` (priorities can be negative).
* Percentages of a fixed capacity (pod CPU / memory / GPU usage, device and filesystem utilisation) must lie
  in [0, 100 + PERCENT_SLACK]. The slack exists because exporters compute these from counters sampled at
  slightly different instants (``rate()`` windows, cgroup accounting), which briefly overshoots 100; a band
  of 5 points absorbs that jitter yet still catches wrong units (a fraction scaled twice, per-core percent
  like 400). Values inside the band are kept as sent; consumers needing a strict ratio clamp them. Kueue
  ClusterQueue usage percentages are NOT bounded: they are relative to nominal quota and exceed 100 when a
  queue borrows.
* Probabilities: ``WorkloadSignature.confidence`` in [0, 1]. Request ``confidence_level`` is 0 (server
  default) or strictly between 0 and 1 (an interval of probability 1 is unbounded).
* Request ``horizon_minutes`` is 0 (server default) or 1..1440 (one day, the longest seasonality modelled).
* Required strings must be non-blank. Enum values are not checked: proto3 keeps unknown values and newer
  agents may send values this build does not know; the engine treats them as the 0 default.
* Resources with ``used > allocatable`` are NOT an error (overcommit and racing samples make it real).

Paths are dotted field names from the validated message, with ``[i]`` for repeated elements, e.g.
``storage_devices[2].utilization_percent``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from apollo_api.v1 import apollo_pb2
from common.errors import InvalidArgument

__all__ = [
    "MAX_HORIZON_MINUTES",
    "PERCENT_SLACK",
    "FieldError",
    "format_errors",
    "invalid",
    "require_valid",
    "sanitize_metrics",
    "validate_cluster_insight",
    "validate_cluster_prediction_request",
    "validate_execution_result",
    "validate_message",
    "validate_node_score_snapshot_request",
    "validate_orchestration_policy_request",
    "validate_policy_subscription",
    "validate_prediction_request",
    "validate_resource_metrics",
    "validate_scheduling_policy_request",
    "validate_scheduling_result",
    "validate_workload_signature",
]

PERCENT_SLACK = 5.0
"""Points tolerated above 100 for capacity percentages (counter-sampling jitter); see the module docstring."""

MAX_HORIZON_MINUTES = 1440
"""Longest forecast horizon a request may ask for: one day."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``path`` locates it in the message, ``reason`` says what was expected and got."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def format_errors(errors: Iterable[FieldError]) -> str:
    """Join errors into one line, e.g. for a gRPC ``INVALID_ARGUMENT`` status message."""
    return "; ".join(str(error) for error in errors)


def invalid(errors: Sequence[FieldError]) -> InvalidArgument:
    """The domain error for a rejected message: every bad field in the message, the first one named."""
    return InvalidArgument(format_errors(errors), field=errors[0].path if errors else "")


def require_valid(message: Message) -> None:
    """Raise :class:`~common.errors.InvalidArgument` naming every bad field; return when the message is valid."""
    errors = validate_message(message)
    if errors:
        raise invalid(errors)


@dataclass(frozen=True, slots=True)
class _Range:
    """Accepted interval for a numeric field; ``None`` bounds are open. NaN and infinities never pass."""

    lo: float | None
    hi: float | None
    describe: str
    hi_inclusive: bool = True

    def accepts(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and value < self.lo:
            return False
        if self.hi is None:
            return True
        return value <= self.hi if self.hi_inclusive else value < self.hi


_NON_NEGATIVE = _Range(0.0, None, "finite and >= 0")
_FINITE = _Range(None, None, "finite")
_PERCENT = _Range(
    0.0,
    100.0 + PERCENT_SLACK,
    f"finite and in [0, 100] percent ({PERCENT_SLACK:g} points tolerated above 100)",
)
_UNIT = _Range(0.0, 1.0, "finite and in [0, 1]")
_HORIZON = _Range(0.0, float(MAX_HORIZON_MINUTES), f"0 (server default) or in [1, {MAX_HORIZON_MINUTES}] minutes")
_CONFIDENCE_LEVEL = _Range(0.0, 1.0, "0 (server default) or strictly between 0 and 1", hi_inclusive=False)

# Field-specific ranges by full protobuf name; every other numeric field gets _NON_NEGATIVE.
# tests/unit/test_validation.py checks that each name exists: a renamed field cannot silently lose its rule.
_SIGNED = ("apollo.KueueInfo.priority",)
_PERCENTAGES = (
    "apollo.ResourceMetrics.cpu_usage_percent",
    "apollo.ResourceMetrics.memory_usage_percent",
    "apollo.ResourceMetrics.gpu_usage_percent",
    "apollo.StorageDeviceStatus.utilization_percent",
    "apollo.DistributedFilesystemInfo.utilization_percent",
    "apollo.GPUStatus.utilization_percent",
)
_HORIZONS = (
    "apollo.SchedulingPolicyRequest.horizon_minutes",
    "apollo.PredictionRequest.horizon_minutes",
    "apollo.ClusterPredictionRequest.horizon_minutes",
)
_CONFIDENCE_LEVELS = (
    "apollo.PredictionRequest.confidence_level",
    "apollo.ClusterPredictionRequest.confidence_level",
)
_RANGES: dict[str, _Range] = {
    **dict.fromkeys(_SIGNED, _FINITE),
    **dict.fromkeys(_PERCENTAGES, _PERCENT),
    **dict.fromkeys(_HORIZONS, _HORIZON),
    **dict.fromkeys(_CONFIDENCE_LEVELS, _CONFIDENCE_LEVEL),
    "apollo.WorkloadSignature.confidence": _UNIT,
}

_NUMERIC_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_DOUBLE,
        FieldDescriptor.TYPE_FLOAT,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)


def _range_for(field: FieldDescriptor) -> _Range:
    return _RANGES.get(field.full_name, _NON_NEGATIVE)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_number(field: FieldDescriptor, value: float, path: str, errors: list[FieldError]) -> None:
    rule = _range_for(field)
    if not rule.accepts(value):
        errors.append(FieldError(path, f"must be {rule.describe}, got {value!r}"))


def _check_numbers(message: Message, prefix: str, errors: list[FieldError]) -> None:
    """Apply the numeric rules to every set numeric field of ``message`` and its sub-messages.

    ``ListFields`` only yields fields that are set (proto3: non-zero), which is enough because 0 satisfies
    every rule. Well-known types (Timestamp) and maps (string to string here) carry no numeric rules.
    """
    for field, value in message.ListFields():
        path = _join(prefix, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub_type = field.message_type
            if sub_type is None or sub_type.GetOptions().map_entry or sub_type.full_name.startswith("google.protobuf."):
                continue
            if field.is_repeated:
                for index, item in enumerate(value):
                    _check_numbers(item, f"{path}[{index}]", errors)
            else:
                _check_numbers(value, path, errors)
        elif field.type in _NUMERIC_TYPES:
            if field.is_repeated:
                for index, item in enumerate(value):
                    _check_number(field, item, f"{path}[{index}]", errors)
            else:
                _check_number(field, value, path, errors)


def _require(value: str, path: str, errors: list[FieldError]) -> None:
    if not value.strip():
        errors.append(FieldError(path, f"is required, got {value!r}"))


def _require_each(values: Sequence[str], path: str, errors: list[FieldError]) -> None:
    """Entries of a name list (node or namespace filters) must be non-blank: a blank one is a caller bug."""
    for index, value in enumerate(values):
        if not value.strip():
            errors.append(FieldError(f"{path}[{index}]", f"must be a non-empty name, got {value!r}"))


def validate_resource_metrics(metrics: apollo_pb2.ResourceMetrics, prefix: str = "") -> list[FieldError]:
    """Check one ResourceMetrics; ``prefix`` is prepended to paths (e.g. ``"current_metrics"``)."""
    errors: list[FieldError] = []
    _check_numbers(metrics, prefix, errors)
    return errors


def sanitize_metrics(
    metrics: apollo_pb2.ResourceMetrics,
) -> tuple[apollo_pb2.ResourceMetrics, tuple[str, ...]]:
    """Return a copy of ``metrics`` with every invalid value cleared, and the names of the cleared fields.

    A field is dropped exactly when :func:`validate_resource_metrics` reports it (NaN, infinities,
    negatives, percentages above 100 + PERCENT_SLACK). Dropping means clearing it to the proto3 default 0,
    which the engine reads as "not reported", so a single broken gauge costs one value, not the report.
    The input is not modified; names come in field-number order so callers can count them per field.
    """
    cleaned = apollo_pb2.ResourceMetrics()
    cleaned.CopyFrom(metrics)
    writable: Message = cleaned  # ClearField by a runtime field name (the typed stub wants literals)
    dropped: list[str] = []
    for field, value in metrics.ListFields():
        if field.type in _NUMERIC_TYPES and not field.is_repeated and not _range_for(field).accepts(value):
            writable.ClearField(field.name)
            dropped.append(field.name)
    return cleaned, tuple(dropped)


def validate_workload_signature(signature: apollo_pb2.WorkloadSignature) -> list[FieldError]:
    """A sidecar's report: the pod must be identified; every number must be sane (see module rules)."""
    errors: list[FieldError] = []
    _require(signature.pod_name, "pod_name", errors)
    _require(signature.pod_namespace, "pod_namespace", errors)
    _check_numbers(signature, "", errors)
    return errors


def validate_cluster_insight(insight: apollo_pb2.ClusterInsight) -> list[FieldError]:
    """A node's report: ``node_name`` keys every series; resources finite and non-negative.

    ``used > allocatable`` is accepted on purpose (overcommit, samples taken at different instants).
    """
    errors: list[FieldError] = []
    _require(insight.node_name, "node_name", errors)
    _check_numbers(insight, "", errors)
    return errors


def validate_scheduling_policy_request(request: apollo_pb2.SchedulingPolicyRequest) -> list[FieldError]:
    """The pod must be identified; its requests non-negative; horizon 0 or 1..1440; no blank candidates."""
    errors: list[FieldError] = []
    _require(request.pod_name, "pod_name", errors)
    _require(request.pod_namespace, "pod_namespace", errors)
    _check_numbers(request, "", errors)
    _require_each(request.candidate_nodes, "candidate_nodes", errors)
    return errors


def validate_scheduling_result(result: apollo_pb2.SchedulingResult) -> list[FieldError]:
    """The scheduled pod must be identified and the duration non-negative.

    ``request_id`` is optional: a scheduler may report placements it made without asking for a policy.
    """
    errors: list[FieldError] = []
    _require(result.pod_name, "pod_name", errors)
    _require(result.pod_namespace, "pod_namespace", errors)
    _check_numbers(result, "", errors)
    return errors


def validate_node_score_snapshot_request(request: apollo_pb2.NodeScoreSnapshotRequest) -> list[FieldError]:
    """No blank node names; ``known_generation`` non-negative (0 = the caller holds no snapshot)."""
    errors: list[FieldError] = []
    _require_each(request.node_names, "node_names", errors)
    _check_numbers(request, "", errors)
    return errors


def validate_prediction_request(request: apollo_pb2.PredictionRequest) -> list[FieldError]:
    """``node_name`` required; horizon 0 or 1..1440 minutes; confidence_level 0 or strictly in (0, 1)."""
    errors: list[FieldError] = []
    _require(request.node_name, "node_name", errors)
    _check_numbers(request, "", errors)
    return errors


def validate_cluster_prediction_request(request: apollo_pb2.ClusterPredictionRequest) -> list[FieldError]:
    """Horizon and confidence_level as for PredictionRequest; no blank node filters."""
    errors: list[FieldError] = []
    _check_numbers(request, "", errors)
    _require_each(request.node_filters, "node_filters", errors)
    return errors


def validate_policy_subscription(subscription: apollo_pb2.PolicySubscription) -> list[FieldError]:
    """``subscriber_id`` names the stream in logs and metrics; namespace filters must not be blank."""
    errors: list[FieldError] = []
    _require(subscription.subscriber_id, "subscriber_id", errors)
    _require_each(subscription.namespace_filters, "namespace_filters", errors)
    return errors


def validate_orchestration_policy_request(request: apollo_pb2.OrchestrationPolicyRequest) -> list[FieldError]:
    """The answer is a policy about one pod, so the pod must be identified."""
    errors: list[FieldError] = []
    _require(request.pod_name, "pod_name", errors)
    _require(request.pod_namespace, "pod_namespace", errors)
    return errors


def validate_execution_result(result: apollo_pb2.ExecutionResult) -> list[FieldError]:
    """``request_id`` ties the outcome to the policy it answers; the duration must be non-negative."""
    errors: list[FieldError] = []
    _require(result.request_id, "request_id", errors)
    _check_numbers(result, "", errors)
    return errors


def validate_message(message: Message) -> list[FieldError]:
    """Dispatch to the validator for ``message``'s type; raises TypeError for a type with no validator."""
    if isinstance(message, apollo_pb2.WorkloadSignature):
        return validate_workload_signature(message)
    if isinstance(message, apollo_pb2.ClusterInsight):
        return validate_cluster_insight(message)
    if isinstance(message, apollo_pb2.SchedulingPolicyRequest):
        return validate_scheduling_policy_request(message)
    if isinstance(message, apollo_pb2.SchedulingResult):
        return validate_scheduling_result(message)
    if isinstance(message, apollo_pb2.NodeScoreSnapshotRequest):
        return validate_node_score_snapshot_request(message)
    if isinstance(message, apollo_pb2.PredictionRequest):
        return validate_prediction_request(message)
    if isinstance(message, apollo_pb2.ClusterPredictionRequest):
        return validate_cluster_prediction_request(message)
    if isinstance(message, apollo_pb2.PolicySubscription):
        return validate_policy_subscription(message)
    if isinstance(message, apollo_pb2.OrchestrationPolicyRequest):
        return validate_orchestration_policy_request(message)
    if isinstance(message, apollo_pb2.ExecutionResult):
        return validate_execution_result(message)
    if isinstance(message, apollo_pb2.ResourceMetrics):
        return validate_resource_metrics(message)
    raise TypeError(f"no validator for {message.DESCRIPTOR.full_name}")
