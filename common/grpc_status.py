"""Domain errors as gRPC status codes: the one mapping every servicer uses."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar, cast

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
    Unimplemented,
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
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
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


F = TypeVar("F", bound=Callable[..., Any])


def domain_errors(method: F) -> F:
    """Servicer method decorator: a DomainError raised inside ends the call through `abort`.

    Works for unary and client-streaming methods (which return) and server-streaming ones (generators,
    which may raise while the stream is open), so a servicer raises errors and never calls
    `context.abort` itself. The context is the method's last positional argument, as gRPC calls it.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except DomainError as exc:
                abort(context, exc)

        return cast(F, stream)

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except DomainError as exc:
            abort(context, exc)

    return cast(F, unary)
