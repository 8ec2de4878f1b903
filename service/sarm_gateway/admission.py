"""Backpressure: a bound on work in flight; beyond it, refuse at once (with a retry hint) instead of queueing.

Two bounds, both checked before any work starts: a count (`limit` units in flight), and time: the frames already
admitted plus the new call's, at the measured seconds per frame, must finish within `budget_s`, so that whatever
was admitted when SIGTERM comes can still finish within the drain. Once a drain has begun nothing new is admitted:
the caller gets UNAVAILABLE (HTTP 503) and goes to another replica.

Seconds per frame are measured end to end, on this admission's own units: busy time (some unit in flight) per frame
completed, after the first call (which pays for warming up). That is the quantity a drain waits on: decoding,
hashing, RPCs, batching and the CPU the process actually gets, all included. The engine's encoder and heads stage
timings alone missed a third of it in bench/gateway_shutdown.py on a loaded 2-core machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sarm_gateway.errors import BackendUnavailable, Overloaded


class Draining(BackendUnavailable):
    """This replica is shutting down: the work was not started, and another replica can take it."""


class Throughput:
    """Seconds per frame: an EWMA over samples of cumulative `totals()` — (busy seconds, frames completed) — taken
    at most every `every_s` seconds and over at least `min_frames` frames. None before the first sample."""

    def __init__(
        self, totals: Callable[[], tuple[float, float]], alpha: float = 0.3, min_frames: float = 8, every_s: float = 0.2
    ) -> None:
        self._totals = totals
        self.alpha = alpha
        self.min_frames = min_frames
        self.every_s = every_s
        self._seconds, self._frames = 0.0, 0.0  # the totals at the last sample
        self._read_at = -math.inf
        self.seconds_per_frame: float | None = None

    def estimate(self) -> float | None:
        now = time.monotonic()
        if now - self._read_at >= self.every_s:
            self._read_at = now
            seconds, frames = self._totals()
            if frames - self._frames >= self.min_frames:
                sample = (seconds - self._seconds) / (frames - self._frames)
                previous = self.seconds_per_frame
                self.seconds_per_frame = sample if previous is None else previous + self.alpha * (sample - previous)
                self._seconds, self._frames = seconds, frames
        return self.seconds_per_frame


class Admission:
    """Counts units of work (unary calls, or open streams) and the frames they bring. Used from one event loop, so
    no lock is needed. `budget_s` inf: the count bound alone."""

    def __init__(self, limit: int, retry_after_ms: int, what: str = "requests", budget_s: float = math.inf) -> None:
        self.limit = limit
        self.retry_after_ms = retry_after_ms
        self.what = what
        self.budget_s = budget_s
        self.in_flight = 0
        self.frames = 0  # frames of the units in flight
        self.draining = False
        self.throughput = Throughput(self._totals)
        self._unknown = 0  # units in flight whose frames are unknown (a video not yet read)
        self._busy_s = 0.0  # time with units in flight, all of known frames
        self._done_frames = 0
        self._warm = False  # the first completed call is not measured: it paid for warming up
        self._mark = time.monotonic()

    def _totals(self) -> tuple[float, float]:
        return self._busy_s, float(self._done_frames)

    def _account(self) -> None:
        """Add the time since the last change of what is in flight to the busy time, if it counts."""
        now = time.monotonic()
        if self.in_flight and not self._unknown:
            self._busy_s += now - self._mark
        self._mark = now

    def queue_seconds(self, frames: int = 0) -> float | None:
        """The estimated time to finish the frames in flight plus `frames`; None while throughput is unknown."""
        per_frame = self.throughput.estimate()
        return None if per_frame is None else (self.frames + frames) * per_frame

    @contextmanager
    def slot(self, frames: int = 0) -> Iterator[None]:
        """One unit of work bringing `frames` frames to encode (0: unknown, e.g. a video not yet read: it counts
        against `limit` only, and its time is left out of the measurement)."""
        if self.draining:
            raise Draining(
                f"draining: this server is shutting down and takes no new {self.what}; retry on another replica"
            )
        if self.in_flight >= self.limit:
            raise Overloaded(
                f"server busy: {self.in_flight} {self.what} in flight (limit {self.limit}); "
                f"retry after {self.retry_after_ms} ms",
                self.retry_after_ms,
            )
        queued = self.queue_seconds(frames) if self.in_flight and frames else None  # a lone call always goes
        if queued is not None and queued > self.budget_s:
            wait_ms = max(self.retry_after_ms, math.ceil((queued - self.budget_s) * 1000))
            raise Overloaded(
                f"server busy: the {self.what} in flight need ~{queued:.1f} s at the measured "
                f"throughput, over the {self.budget_s:g} s budget; retry after {wait_ms} ms",
                wait_ms,
            )
        self._account()
        self.in_flight += 1
        self.frames += frames
        self._unknown += not frames
        completed = False
        try:
            yield
            completed = True
        finally:
            self._account()
            self.in_flight -= 1
            self.frames -= frames
            self._unknown -= not frames
            if completed and frames and not self._warm:  # the first call also loaded sessions and the instruction
                self._warm, self._busy_s = True, 0.0
            elif completed:  # failed work (bad input, deadline) says nothing about throughput
                self._done_frames += frames
