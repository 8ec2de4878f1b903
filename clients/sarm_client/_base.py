"""What the sync and asyncio clients share: configuration, channels, the retry decision, stream bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import grpc

from sarm_client import _wire
from sarm_client.config import TLS, Deadline, Retry, Timeout
from sarm_client.errors import DeadlineExceeded, SarmError
from sarm_client.models import FrameScore, Image, Images, State
from sarm_client.v1 import sarm_pb2 as pb


class ClientConfig:
    """Deadlines, retries and the metadata sent with every call."""

    def __init__(self, token: str | None, timeout: Timeout, retry: Retry) -> None:
        if token is not None and not token.strip():
            raise ValueError("token is empty: pass None to send no token")
        # Sent as plain metadata (not call credentials) so that it also works on the insecure channels of local
        # development; use TLS wherever the token crosses a network.
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retry = retry

    def deadline(self, timeout: float | None) -> Deadline:
        """A call's deadline: `timeout` seconds, or the configured call timeout when None."""
        return Deadline(self.timeout.call if timeout is None else timeout)

    def stream_timeouts(self, step_timeout: float | None, timeout: float | None) -> tuple[float | None, float | None]:
        """(each step's, the whole episode's) deadline for a stream, defaults filled in."""
        return (
            self.timeout.step if step_timeout is None else step_timeout,
            self.timeout.episode if timeout is None else timeout,
        )


def open_channel(
    api: ModuleType, target: str | None, channel: Any, tls: TLS | bool, options: Sequence[tuple[str, Any]]
) -> tuple[Any, bool]:
    """The client's channel and whether the client made it (and so closes it). `api` is `grpc` or `grpc.aio`,
    whose channel constructors take the same arguments."""
    if (target is None) == (channel is None):
        raise ValueError("pass a target ('host:port') or a channel, not both")
    if channel is not None:
        if tls or options:
            raise ValueError("tls and options configure a channel the client makes, not an injected one")
        return channel, False
    if not tls:
        return api.insecure_channel(target, list(options)), True
    settings = TLS() if tls is True else tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.root_certificates,
        private_key=settings.private_key,
        certificate_chain=settings.certificate_chain,
    )
    return api.secure_channel(target, credentials, list(options)), True


class Attempts:
    """The retry decision for one call: after each failure, how long to wait, or the exception to raise."""

    def __init__(self, retry: Retry, deadline: Deadline) -> None:
        self.retry = retry
        self.deadline = deadline
        self.failures = 0

    def failed(self, error: SarmError, cause: BaseException | None) -> float:
        """Seconds to wait before trying again; raises `error` (from `cause`, what the transport raised) when the
        call must not be retried."""
        wait = self.retry.delay(self.failures, error, self.deadline.remaining())
        if wait is None:
            raise error from cause
        self.failures += 1
        return wait


class EpisodeBase:
    """Bookkeeping of one episode stream: a step that fails or times out ends the stream (its reply, if it came
    later, would be taken for the next step's), and every later step raises that error again."""

    def __init__(self, step_timeout: float | None) -> None:
        self.step_timeout = step_timeout
        self._failure: SarmError | None = None
        self._closed = False
        self.steps = 0  # steps answered

    def _step_request(self, frames: Image | Images, state: State | None) -> pb.StreamEpisodeRequest:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise SarmError("the stream is closed: open a new one for the next episode")
        return _wire.step_request(frames, state)  # bad frames raise here, before anything is sent

    def _fail(self, error: SarmError) -> SarmError:
        self._failure = error
        return error

    def _timed_out(self, seconds: float | None) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"no reply to step {self.steps} within {seconds} s; the stream is closed", grpc.StatusCode.DEADLINE_EXCEEDED
        )

    def _ended(self) -> SarmError:
        return SarmError(f"the server ended the stream before answering step {self.steps}")

    def _answer(self, reply: pb.StreamEpisodeResponse) -> list[FrameScore]:
        self.steps += 1
        return [_wire.frame_score(s) for s in reply.scores]
