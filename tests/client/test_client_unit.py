"""sarm-client logic without a network: status → exception mapping, retry/backoff decisions, deadlines, input
checks and stream rules, through an injected fake channel that plays back scripted outcomes."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from sarm_client import (
    NO_RETRY,
    AsyncSarmClient,
    DeadlineExceeded,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    Retry,
    SarmClient,
    SarmError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from sarm_client.errors import from_rpc_error, retry_after
from sarm_client.v1 import sarm_pb2 as pb

WINDOW = np.zeros((9, 4, 6, 3), np.uint8)
SCORE = pb.ScoreWindowResponse(
    score=pb.Score(
        stage_index=1,
        stage_name="grasp",
        stage_probs=[0.2, 0.8],
        tau=0.5,
        progress=0.6,
        confidence=0.8,
        model_version="abc",
    )
)
FAST = Retry(attempts=4, backoff=0.001, multiplier=2.0, max_backoff=0.01, jitter=0.0)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "", trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


class Recorded:
    def __init__(self, method: str, request: Any, timeout: Any, metadata: Any) -> None:
        self.method, self.request, self.timeout, self.metadata = method, request, timeout, metadata


class FakeChannel:
    """Answers each unary call with the next scripted outcome (an exception is raised, anything else returned)."""

    def __init__(self, outcomes: list[Any] | None = None, stream: Callable[[Iterator[Any]], Any] | None = None) -> None:
        self.outcomes = list(outcomes or [])
        self.calls: list[Recorded] = []
        self.stream = stream

    def _answer(self, method: str, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
        self.calls.append(Recorded(method, request, timeout, metadata))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def unary_unary(self, method: str, **_: Any) -> Callable[..., Any]:
        return lambda request, **kw: self._answer(method, request, **kw)

    def unary_stream(self, method: str, **_: Any) -> Callable[..., Any]:
        return lambda request, **kw: iter(self._answer(method, request, **kw))

    def stream_stream(self, method: str, **_: Any) -> Callable[..., Any]:
        def start(requests: Iterator[Any], **kw: Any) -> Any:
            self.calls.append(Recorded(method, None, kw.get("timeout"), kw.get("metadata")))
            assert self.stream is not None
            return self.stream(requests)

        return start


def unavailable() -> FakeRpcError:
    return FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")


def busy(retry_after_ms: str | None = "100") -> FakeRpcError:
    trailers = (("retry-after-ms", retry_after_ms),) if retry_after_ms is not None else ()
    return FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "server busy", trailers)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Overloaded),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.INTERNAL, SarmError),
        (grpc.StatusCode.NOT_FOUND, SarmError),
    ],
)
def test_status_codes_map_to_the_exception_tree(code: grpc.StatusCode, kind: type[SarmError]) -> None:
    error = from_rpc_error(FakeRpcError(code, "what happened"))
    assert type(error) is kind and isinstance(error, SarmError)
    assert str(error) == "what happened" and error.code == code


def test_exceptions_are_also_the_builtin_kinds_and_fall_back_to_the_code_name() -> None:
    assert isinstance(from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)), ValueError)
    assert isinstance(from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED)), TimeoutError)
    assert str(from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL))) == "INTERNAL"


@pytest.mark.parametrize(
    ("trailers", "seconds"),
    [
        ((("retry-after-ms", "250"),), 0.25),
        ((("other", "1"), ("retry-after-ms", "0")), 0.0),
        ((), None),
        ((("retry-after-ms", "soon"),), None),
        ((("retry-after-ms", "-5"),), None),
    ],
)
def test_retry_after_hint(trailers: tuple[tuple[str, str], ...], seconds: float | None) -> None:
    assert retry_after(trailers) == seconds
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailers))
    assert isinstance(error, Overloaded) and error.retry_after == seconds


def test_backoff_grows_exponentially_up_to_its_cap_and_stops_after_the_attempts() -> None:
    retry = Retry(attempts=6, backoff=0.1, multiplier=2.0, max_backoff=0.5, jitter=0.0)
    error = Unavailable("down")
    assert [retry.delay(n, error, None) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, None])
    assert NO_RETRY.delay(0, error, None) is None


def test_only_unavailable_and_overloaded_are_retried() -> None:
    retry = Retry(jitter=0.0)
    for error in (
        InvalidArgument("bad"),
        DeadlineExceeded("late"),
        Unauthenticated("who"),
        PermissionDenied("no"),
        SarmError("internal"),
    ):
        assert retry.delay(0, error, None) is None, type(error)
    assert retry.delay(0, Overloaded("busy"), None) == pytest.approx(0.1)


def test_server_hint_is_a_floor_jitter_only_shortens_and_the_deadline_caps_the_wait() -> None:
    retry = Retry(backoff=0.1, jitter=0.5)
    assert retry.delay(0, Overloaded("busy", retry_after=0.3), None, rand=lambda: 1.0) == pytest.approx(0.3)
    assert retry.delay(0, Overloaded("busy", retry_after=0.01), None, rand=lambda: 1.0) == pytest.approx(0.05)
    assert retry.delay(0, Unavailable("down"), None, rand=lambda: 0.0) == pytest.approx(0.1)
    # A wait that would outlast the call's deadline is not worth starting: give up now.
    assert retry.delay(0, Overloaded("busy", retry_after=0.3), remaining=0.2) is None
    assert retry.delay(0, Unavailable("down"), remaining=0.0) is None


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"backoff": -1}, {"multiplier": 0.5}, {"jitter": 2}])
def test_retry_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Retry(**bad)  # type: ignore[arg-type]


def test_timeouts_are_checked() -> None:
    with pytest.raises(ValueError, match=re.escape("Timeout.step")):
        Timeout(step=0)
    assert Timeout(call=None).call is None


def test_unavailable_is_retried_with_the_token_on_every_attempt_within_one_deadline() -> None:
    channel = FakeChannel([unavailable(), unavailable(), SCORE])
    client = SarmClient(channel=channel, token="s3cret", retry=FAST, timeout=Timeout(call=5.0))
    score = client.score_window("pick", WINDOW)
    assert (score.stage_name, score.stage_probs, score.progress) == (
        "grasp",
        pytest.approx((0.2, 0.8)),
        pytest.approx(0.6),
    )
    assert [c.method for c in channel.calls] == ["/sarm.v1.RewardService/ScoreWindow"] * 3
    assert all(c.metadata == (("authorization", "Bearer s3cret"),) for c in channel.calls)
    timeouts = [c.timeout for c in channel.calls]
    assert 4.5 < timeouts[0] <= 5.0 and timeouts == sorted(timeouts, reverse=True)  # one budget, shrinking
    assert len(channel.calls[0].request.frames) == 9


def test_no_token_sends_no_authorization_and_a_per_call_timeout_overrides_the_default() -> None:
    channel = FakeChannel([pb.ModelInfo(model_version="v", stage_names=["a"])])
    info = SarmClient(channel=channel).info(timeout=0.5)
    assert info.model_version == "v" and info.stage_names == ("a",)
    assert channel.calls[0].metadata == () and channel.calls[0].timeout <= 0.5


def test_overloaded_waits_at_least_the_servers_retry_after() -> None:
    channel = FakeChannel([busy("150"), SCORE])
    started = time.monotonic()
    SarmClient(channel=channel, retry=FAST).score_window("pick", WINDOW)
    assert time.monotonic() - started >= 0.15 and len(channel.calls) == 2


def test_a_retry_after_beyond_the_deadline_raises_overloaded_at_once() -> None:
    channel = FakeChannel([busy("5000"), SCORE])
    started = time.monotonic()
    with pytest.raises(Overloaded) as caught:
        SarmClient(channel=channel, retry=FAST).score_window("pick", WINDOW, timeout=1.0)
    assert caught.value.retry_after == 5.0 and time.monotonic() - started < 0.5 and len(channel.calls) == 1


def test_retries_run_out_with_the_last_error_raised_from_the_grpc_one() -> None:
    errors = [unavailable() for _ in range(4)]
    channel = FakeChannel(list(errors))
    with pytest.raises(Unavailable, match="connection refused") as caught:
        SarmClient(channel=channel, retry=FAST).health()
    assert len(channel.calls) == 4 and caught.value.__cause__ is errors[-1]


def test_invalid_argument_is_not_retried_and_keeps_the_servers_message() -> None:
    channel = FakeChannel([FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "the window has 8 time steps"), SCORE])
    with pytest.raises(InvalidArgument, match="the window has 8 time steps"):
        SarmClient(channel=channel, retry=FAST).score_window("pick", WINDOW[:8])
    assert len(channel.calls) == 1


def test_score_frames_is_retried_as_a_whole() -> None:
    frames = [pb.FrameScore(frame_index=i, score=SCORE.score) for i in range(3)]
    channel = FakeChannel([busy("0"), frames])
    scores = SarmClient(channel=channel, retry=FAST).score_frames("pick", WINDOW, fps=10)
    assert [s.frame_index for s in scores] == [0, 1, 2] and all(s.smoothed_progress is None for s in scores)
    assert channel.calls[1].request.fps == 10 and len(channel.calls) == 2


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((9, 4, 6, 3), np.float32), "frame 0: float32 array of shape (4, 6, 3)"),
        ([np.zeros((4, 6), np.uint8)] * 9, "frame 0: uint8 array of shape (4, 6)"),
        ([*WINDOW[:8], "frame.png"], "frame 8: str"),
        ([*WINDOW[:8], b""], "frame 8: empty bytes"),
    ],
)
def test_bad_frames_are_refused_before_anything_is_sent(frames: Any, message: str) -> None:
    channel = FakeChannel([SCORE])
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        SarmClient(channel=channel).score_window("pick", frames)
    assert channel.calls == []


def test_frames_may_mix_raw_pixels_and_encoded_bytes() -> None:
    channel = FakeChannel([SCORE])
    SarmClient(channel=channel).score_window("pick", [*WINDOW[:8], b"\x89PNG..."])
    sent = channel.calls[0].request.frames
    assert [f.WhichOneof("image") for f in sent] == ["raw"] * 8 + ["encoded"]
    assert (sent[0].raw.height, sent[0].raw.width, sent[0].raw.channels) == (4, 6, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "a target"),
        ({"target": "h:1", "channel": FakeChannel()}, "a target"),
        ({"channel": FakeChannel(), "tls": True}, "injected"),
        ({"target": "h:1", "token": " "}, "token is empty"),
    ],
)
def test_client_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SarmClient(**kwargs)


class FakeStream:
    """A StreamEpisode call: answers each step with `answer(step_number)` (None: never answer)."""

    def __init__(self, requests: Iterator[Any], answer: Callable[[int], Any]) -> None:
        self.requests, self.answer = requests, answer
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        steps = (r for r in self.requests if r.WhichOneof("message") == "step")
        for number, _ in enumerate(steps):
            outcome = self.answer(number)
            if outcome is None:
                self.cancelled.wait()
                raise FakeRpcError(grpc.StatusCode.CANCELLED, "cancelled")
            if isinstance(outcome, BaseException):
                raise outcome
            yield outcome

    def cancel(self) -> None:
        self.cancelled.set()


def reply(number: int) -> pb.StreamEpisodeResponse:
    return pb.StreamEpisodeResponse(scores=[pb.FrameScore(frame_index=number, score=SCORE.score)])


def test_a_stream_is_never_retried_and_stays_failed() -> None:
    calls: list[FakeStream] = []

    def start(requests: Iterator[Any]) -> FakeStream:
        calls.append(FakeStream(requests, lambda n: reply(n) if n == 0 else unavailable()))
        return calls[-1]

    channel = FakeChannel(stream=start)
    with SarmClient(channel=channel, retry=FAST).stream("pick", fps=10) as episode:
        assert [s.frame_index for s in episode.step(WINDOW[0])] == [0]
        with pytest.raises(Unavailable):
            episode.step(WINDOW[1])
        with pytest.raises(Unavailable):  # the same failure again: no silent re-opening mid-episode
            episode.step(WINDOW[2])
    assert len(calls) == 1 and len(channel.calls) == 1


def test_a_step_that_times_out_cancels_the_stream() -> None:
    calls: list[FakeStream] = []

    def start(requests: Iterator[Any]) -> FakeStream:
        calls.append(FakeStream(requests, lambda n: reply(n) if n == 0 else None))
        return calls[-1]

    client = SarmClient(channel=FakeChannel(stream=start), timeout=Timeout(step=5.0, episode=30.0))
    episode = client.stream("pick", fps=10)
    assert len(episode.step(WINDOW[0])) == 1
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=re.escape("no reply to step 1 within 0.1 s")):
        episode.step(WINDOW[1], timeout=0.1)
    assert time.monotonic() - started < 2.0 and calls[0].cancelled.is_set()
    with pytest.raises(DeadlineExceeded):
        episode.step(WINDOW[2])
    episode.close()


def test_stream_deadlines_and_bad_input() -> None:
    channel = FakeChannel(stream=lambda requests: FakeStream(requests, reply))
    client = SarmClient(channel=channel, token="t", timeout=Timeout(episode=60.0))
    with pytest.raises(InvalidArgument, match="fps"):
        client.stream("pick", fps=0)
    with client.stream("pick", fps=10, episode_id="ep") as episode:
        with pytest.raises(InvalidArgument, match="frame 0"):  # refused before sending: the stream goes on
            episode.step(np.zeros((4, 6, 3), np.int64))
        assert [s.frame_index for s in episode.step(WINDOW[0], state=[0.5])] == [0]
    assert channel.calls[0].timeout == 60.0 and channel.calls[0].metadata == (("authorization", "Bearer t"),)
    with pytest.raises(SarmError, match="closed"):
        episode.step(WINDOW[1])


class FakeAioChannel(FakeChannel):
    def unary_unary(self, method: str, **_: Any) -> Callable[..., Any]:
        async def call(request: Any, **kw: Any) -> Any:
            return self._answer(method, request, **kw)

        return call


def test_the_asyncio_client_retries_the_same_way() -> None:
    channel = FakeAioChannel([busy("20"), unavailable(), SCORE, FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "who")])

    async def run() -> None:
        client = AsyncSarmClient(channel=channel, token="s3cret", retry=FAST)
        assert (await client.score_window("pick", WINDOW)).stage_index == 1
        with pytest.raises(Unauthenticated, match="who"):
            await client.info()

    asyncio.run(run())
    assert len(channel.calls) == 4 and channel.calls[-1].metadata == (("authorization", "Bearer s3cret"),)
