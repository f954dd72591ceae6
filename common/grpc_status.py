"""Domain errors as gRPC status codes: the one mapping every servicer uses."""

from __future__ import annotations

from typing import NoReturn

import grpc

from common.errors import (
    Conflict,
    DomainError,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    Unprocessable,
)

GRPC_CODE: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Unprocessable: grpc.StatusCode.FAILED_PRECONDITION,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TooManyRequests: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DomainError: grpc.StatusCode.INTERNAL,
}


def grpc_code(error: DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in GRPC_CODE:
            return GRPC_CODE[cls]
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, error: DomainError) -> NoReturn:
    """End the call with the error's status; the message names the field when there is one."""
    detail = (
        f"{error.field}: {error.message}"
        if error.field and not error.message.startswith(error.field)
        else error.message
    )
    context.abort(grpc_code(error), detail)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
