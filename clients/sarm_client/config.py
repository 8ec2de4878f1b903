"""How a client calls: deadlines, retries, TLS. Frozen values, checked when made."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sarm_client.errors import Overloaded, SarmError, Unavailable


def _check_seconds(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None (no deadline), not {value!r}")


@dataclass(frozen=True)
class Timeout:
    """Deadlines in seconds (None: none). A call's deadline covers its retries and the waits between them."""

    call: float | None = 10.0  # score_window, score_frames, info, health; each step of score_video
    step: float | None = 2.0  # waiting for the reply to one stream step (a control loop's per-frame deadline)
    episode: float | None = None  # a whole stream (StreamEpisode's gRPC deadline), and a whole score_video

    def __post_init__(self) -> None:
        for name in ("call", "step", "episode"):
            _check_seconds(f"Timeout.{name}", getattr(self, name))


class Deadline:
    """A point in time that a call and its retries must finish by."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())


@dataclass(frozen=True)
class Retry:
    """Retries of idempotent calls (score_window, score_frames, info, health; RA-BC job status, cancel, download)
    the server refused with UNAVAILABLE or RESOURCE_EXHAUSTED (HTTP 503 or 429), or could not be reached. Streams
    and job submissions are never retried: a repeated step would enter the episode twice, a submit start two jobs.

    The n-th retry waits backoff · multiplier^(n−1), at most max_backoff, and never less than the server's
    `retry-after-ms` (HTTP: `Retry-After`) hint. Each wait is shortened by a random fraction up to `jitter`, so
    that clients refused together do not come back together (the server's hint is a floor, never shortened).
    """

    attempts: int = 3  # calls in all, the first included; 1: no retries
    backoff: float = 0.1
    multiplier: float = 2.0
    max_backoff: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry.attempts counts the first call too: at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("Retry needs backoff, max_backoff >= 0, multiplier >= 1 and jitter in [0, 1]")

    def delay(
        self, attempt: int, error: SarmError, remaining: float | None, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before another try after failed try number `attempt` (from 0), or None: give up
        (not retryable, no tries left, or the wait would outlast the deadline)."""
        if not isinstance(error, Overloaded | Unavailable) or attempt + 1 >= self.attempts:
            return None
        wait = min(self.max_backoff, self.backoff * self.multiplier**attempt) * (1 - self.jitter * rand())
        if isinstance(error, Overloaded) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        if remaining is not None and wait >= remaining:
            return None
        return wait


NO_RETRY = Retry(attempts=1)


@dataclass(frozen=True)
class TLS:
    """A TLS channel. `root_certificates` (PEM) verify the server; None: the system's trusted roots. A client
    certificate chain and its private key (PEM, both or neither) answer a server that asks for one (mutual TLS)."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and a key its certificate")

    @classmethod
    def from_files(
        cls, ca_file: str | Path | None = None, cert_file: str | Path | None = None, key_file: str | Path | None = None
    ) -> TLS:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(ca_file), read(cert_file), read(key_file))
