"""What the scoring core raises; every front end maps each to its status code (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED, UNAVAILABLE, FAILED_PRECONDITION; HTTP 422, 429, 504, 503, 409) and the CLI to a one-line
error."""

from __future__ import annotations


class InvalidInput(ValueError):
    """The request cannot be served as sent; the message says what to change."""


class Overloaded(RuntimeError):
    """Too much work in flight: the caller should retry after `retry_after_ms`."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExceeded(TimeoutError):
    """The caller's deadline passed before the work was done (the work has been cancelled)."""


class BackendUnavailable(RuntimeError):
    """The model server cannot be reached or failed; the call may succeed once it is back."""


class NotLive(RuntimeError):
    """The model cannot score live: its window is centred, so frame t needs frames that have not happened yet."""
