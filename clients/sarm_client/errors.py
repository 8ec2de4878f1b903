"""The client's exceptions: one tree, one class per status a caller handles differently.

    SarmError               anything the service refused or the client could not do (`.code`: the gRPC status)
    ├── InvalidArgument     the request cannot be served as sent; the message says what to change (a ValueError)
    ├── Unauthenticated     no token, or one the server does not accept
    ├── PermissionDenied    the token's role may not make this call
    ├── Overloaded          the server refused the work for now; retry after `.retry_after` seconds
    ├── DeadlineExceeded    the call's deadline passed (a TimeoutError)
    └── Unavailable         the server cannot be reached, or its model backend is down

Other status codes (INTERNAL, NOT_FOUND, ...) raise `SarmError` itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

# The gateway's hint, in trailing metadata, of when a refused call is worth repeating.
RETRY_AFTER_KEY = "retry-after-ms"


class SarmError(Exception):
    """Base of every error the client raises; `code` is the gRPC status code when the error came from one."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidArgument(SarmError, ValueError):
    """The request cannot be served as sent (the server's or the client's check); the message says why."""


class Unauthenticated(SarmError):
    """The server wants a bearer token (`token=`), or did not accept the one sent."""


class PermissionDenied(SarmError):
    """The token is valid but its role may not make this call."""


class Overloaded(SarmError):
    """The server has too much work in flight; `retry_after` (seconds) is its hint, None when it gave none."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class DeadlineExceeded(SarmError, TimeoutError):
    """The deadline of the call (or of a stream step) passed before the answer came."""


class Unavailable(SarmError):
    """The server cannot be reached, is shutting down, or its model backend is down; a later call may succeed."""


_BY_CODE: dict[grpc.StatusCode, type[SarmError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def retry_after(metadata: Iterable[tuple[str, Any]] | None) -> float | None:
    """The server's `retry-after-ms` hint in seconds, or None when absent or unreadable."""
    for key, value in metadata or ():
        if key == RETRY_AFTER_KEY:
            try:
                milliseconds = float(value)
            except (TypeError, ValueError):
                return None
            return milliseconds / 1000 if milliseconds >= 0 else None
    return None


def from_rpc_error(error: grpc.RpcError) -> SarmError:
    """The exception for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`: both are grpc.Call-like)."""
    code: grpc.StatusCode = error.code()
    message = error.details() or code.name
    kind = _BY_CODE.get(code, SarmError)
    if kind is Overloaded:
        return Overloaded(message, code, retry_after(error.trailing_metadata()))
    return kind(message, code)
