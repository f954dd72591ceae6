"""Domain errors and what they mean on each protocol, in one place.

Services raise these from their pure logic; the HTTP layer (`common.http`) and the gRPC layer
(`common.grpc_status`) translate them. A new error kind is one class here and one row in each
table, so an error cannot be a 404 over REST and an INTERNAL over gRPC by accident.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A request the service understood and refuses, or cannot serve; `field` names the culprit."""

    reason: ClassVar[str] = "Internal"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(DomainError):
    """Malformed: not JSON, wrong type, missing or unknown field, out of range."""

    reason = "BadRequest"


class Unprocessable(DomainError):
    """Well-formed but not actionable as asked (a source equal to the target, a DaemonSet pod)."""

    reason = "Invalid"


class NotFound(DomainError):
    reason = "NotFound"


class Conflict(DomainError):
    """Clashes with current state (a pod already migrating)."""

    reason = "Conflict"


class Unauthenticated(DomainError):
    reason = "Unauthorized"


class PermissionDenied(DomainError):
    reason = "Forbidden"


class PayloadTooLarge(DomainError):
    reason = "RequestEntityTooLarge"


class TooManyRequests(DomainError):
    """A cap or budget says not now (concurrency caps, PDBs)."""

    reason = "TooManyRequests"


class Unavailable(DomainError):
    """A dependency is down; retrying later may succeed."""

    reason = "ServiceUnavailable"


class Unimplemented(DomainError):
    """A well-formed request for something this service does not offer (an action it only issues itself)."""

    reason = "NotImplemented"


HTTP_STATUS: dict[type[DomainError], int] = {
    InvalidArgument: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    Unprocessable: 422,
    TooManyRequests: 429,
    DomainError: 500,
    Unimplemented: 501,
    Unavailable: 503,
}


def http_status(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_document(status: int, reason: str, message: str, field: str = "") -> dict[str, object]:
    """The one error body every HTTP service answers with (shaped like a Kubernetes Status, trimmed)."""
    doc: dict[str, object] = {
        "kind": "Status",
        "status": "Failure",
        "code": status,
        "reason": reason,
        "message": message,
    }
    if field:
        doc["field"] = field
    return doc


def document_for(error: DomainError) -> dict[str, object]:
    return error_document(http_status(error), error.reason, error.message, error.field)
