"""What the engine and auth raise; the front ends map each to a status code (INVALID_ARGUMENT, UNAUTHENTICATED, …)."""

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


class Unauthenticated(PermissionError):
    """No bearer token, or one the server does not know."""


class PermissionDenied(PermissionError):
    """A known caller whose role may not call this operation."""
