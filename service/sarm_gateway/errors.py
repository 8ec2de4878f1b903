"""What the engine and auth raise; the front ends map each to a status code (INVALID_ARGUMENT, UNAUTHENTICATED, …).
The scoring errors are the core's (sarm.scoring.errors); authentication is the gateway's own."""

from __future__ import annotations

from sarm.scoring.errors import BackendUnavailable, DeadlineExceeded, InvalidInput, NotLive, Overloaded

__all__ = [
    "BackendUnavailable",
    "DeadlineExceeded",
    "InvalidInput",
    "NotLive",
    "Overloaded",
    "PermissionDenied",
    "Unauthenticated",
]


class Unauthenticated(PermissionError):
    """No bearer token, or one the server does not know."""


class PermissionDenied(PermissionError):
    """A known caller whose role may not call this operation."""
