"""The client's exceptions: one tree, one class per status a caller handles differently.

    SarmError               anything the service refused or the client could not do (`.code`: the gRPC status,
    │                       `.http_status`: the HTTP one, whichever API answered)
    ├── InvalidArgument     the request cannot be served as sent; the message says what to change (a ValueError)
    ├── Unauthenticated     no token, or one the server does not accept
    ├── PermissionDenied    the token's role may not make this call (or the dataset is outside the data root)
    ├── NotFound            no such RA-BC job (unknown or expired), or this server runs no jobs (a LookupError)
    ├── Conflict            a job's results were asked for before it succeeded
    ├── JobFailed           the RA-BC job ended failed or cancelled (`.job`: its last status, `.job.error`: why)
    ├── Overloaded          the server refused the work for now; retry after `.retry_after` seconds
    ├── DeadlineExceeded    the call's deadline passed (a TimeoutError)
    └── Unavailable         the server cannot be reached, or its model backend is down

Other statuses (gRPC INTERNAL, HTTP 500, ...) raise `SarmError` itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from sarm_client.rabc import RabcJob

# The gateway's hint, in trailing metadata, of when a refused call is worth repeating.
RETRY_AFTER_KEY = "retry-after-ms"


class SarmError(Exception):
    """Base of every error the client raises; `code` is the gRPC status code when the error came from one,
    `http_status` the HTTP status when it came from the HTTP API."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class InvalidArgument(SarmError, ValueError):
    """The request cannot be served as sent (the server's or the client's check); the message says why."""


class Unauthenticated(SarmError):
    """The server wants a bearer token (`token=`), or did not accept the one sent."""


class PermissionDenied(SarmError):
    """The token is valid but its role may not make this call."""


class NotFound(SarmError, LookupError):
    """No such RA-BC job (never made, or expired after the server's SARM_JOB_TTL_S), or jobs are off there."""


class Conflict(SarmError):
    """The call does not fit the job's state: results are asked for before the job has succeeded."""


class JobFailed(SarmError):
    """The RA-BC job ended without results: `job.state` is "failed" (`job.error` says why) or "cancelled"."""

    def __init__(self, message: str, job: RabcJob) -> None:
        super().__init__(message)
        self.job = job


class Overloaded(SarmError):
    """The server has too much work in flight; `retry_after` (seconds) is its hint, None when it gave none."""

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        retry_after: float | None = None,
        *,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, code, http_status=http_status)
        self.retry_after = retry_after


class DeadlineExceeded(SarmError, TimeoutError):
    """The deadline of the call (or of a stream step) passed before the answer came."""


class Unavailable(SarmError):
    """The server cannot be reached, is shutting down, or its model backend is down; a later call may succeed."""


class NotLive(SarmError):
    """The model cannot score a live stream: its window is centred (LeRobot's), so frame t needs later frames. Score
    whole episodes instead (score_frames, or the HTTP video upload)."""


_BY_CODE: dict[grpc.StatusCode, type[SarmError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: NotLive,
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


_BY_HTTP_STATUS: dict[int, type[SarmError]] = {
    400: InvalidArgument,
    422: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    429: Overloaded,
    503: Unavailable,
    408: DeadlineExceeded,
    504: DeadlineExceeded,
}


def http_retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (the gateway sends delta-seconds), or None when absent or unreadable."""
    try:
        seconds = float(value) if value is not None else -1.0
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def from_http_error(status: int, message: str, retry_after_header: str | None = None) -> SarmError:
    """The exception for an HTTP error reply: `message` is the server's `detail`, `retry_after_header` its
    `Retry-After`."""
    kind = _BY_HTTP_STATUS.get(status, SarmError)
    if kind is Overloaded:
        return Overloaded(message, retry_after=http_retry_after(retry_after_header), http_status=status)
    return kind(message, http_status=status)
