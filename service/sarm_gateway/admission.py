"""Backpressure: a bound on work in flight; beyond it, refuse at once (with a retry hint) instead of queueing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sarm_gateway.errors import Overloaded


class Admission:
    """Counts units of work (unary calls, or open streams). Used from one event loop, so no lock is needed."""

    def __init__(self, limit: int, retry_after_ms: int, what: str = "requests") -> None:
        self.limit = limit
        self.retry_after_ms = retry_after_ms
        self.what = what
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            raise Overloaded(f"server busy: {self.in_flight} {self.what} in flight (limit {self.limit}); "
                             f"retry after {self.retry_after_ms} ms", self.retry_after_ms)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
