"""The caller's deadline, visible to everything a call runs (a backend passes what is left on to Triton)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("sarm_deadline", default=None)  # time.monotonic() value


@contextmanager
def budget(seconds: float | None) -> Iterator[None]:
    token = _DEADLINE.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left to the current call's deadline (never negative), or None when it has none."""
    deadline = _DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())
