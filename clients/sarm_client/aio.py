"""The asyncio client (grpc.aio): the same calls as `SarmClient`, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sarm_client import _wire, video
from sarm_client._base import Attempts, ClientConfig, EpisodeBase, open_channel
from sarm_client.config import TLS, Retry, Timeout
from sarm_client.errors import from_rpc_error
from sarm_client.models import FrameScore, Image, Images, ModelInfo, Score, ScoringOptions, ServingStatus, State
from sarm_client.v1 import sarm_pb2 as pb
from sarm_client.v1 import sarm_pb2_grpc as pb_grpc

T = TypeVar("T")
_END = object()


class AsyncEpisodeStream(EpisodeBase):
    """`EpisodeStream` for asyncio: `async with client.stream(...) as episode: await episode.step(frame)`."""

    def __init__(
        self, start: Callable[[AsyncIterator[Any]], Any], opening: pb.StreamEpisodeRequest, step_timeout: float | None
    ) -> None:
        super().__init__(step_timeout)
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._requests.put_nowait(opening)
        self._call = start(self._outgoing())
        self._status: grpc.aio.AioRpcError | None = None  # the first status the call got (see `_finished`)
        self._call.add_done_callback(self._finished)

    def _finished(self, call: Any) -> None:
        """Keep the call's first status, and end the request iterator (nothing more can be sent).

        A write in flight when the server ends the call (e.g. refuses the stream at open: too many streams) fails
        in grpc.aio, which then replaces the call's status with its own INTERNAL "Internal error from Core"; the
        server's status (RESOURCE_EXHAUSTED and its retry-after hint) is only seen here, when it arrives first."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: a call collected after asyncio.run() ended
            self._requests.put_nowait(_END)
        if self._status is None:
            code, details, trailing = _now(call.code()), _now(call.details()), _now(call.trailing_metadata())
            if code is not None:
                self._status = grpc.aio.AioRpcError(code, None, trailing, details)

    async def _outgoing(self) -> AsyncIterator[Any]:
        opened = False
        while (request := await self._requests.get()) is not _END:
            yield request
            if not opened:
                # Steps wait for the server's initial metadata (the stream is admitted) or the end of the call (a
                # refusal): a step written while a refusal ends the call would lose the server's status.
                opened = True
                await self._call.initial_metadata()
                if self._call.done():
                    return

    async def step(
        self, frames: Image | Images, state: State | None = None, *, timeout: float | None = None
    ) -> list[FrameScore]:
        """Send the next time step(s) and the robot state, if any; returns the scores of the scored frames."""
        self._requests.put_nowait(self._step_request(frames, state))
        wait = self.step_timeout if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(self._call.read(), wait)
        except TimeoutError:
            self._call.cancel()
            raise self._fail(self._timed_out(wait)) from None
        except grpc.RpcError as error:
            raise self._fail(from_rpc_error(self._status or error)) from error
        if reply is grpc.aio.EOF:
            raise self._fail(self._ended())
        return self._answer(reply)

    async def close(self) -> None:
        """End the episode: the server finishes the call once the steps sent are answered."""
        if self._closed:
            return
        self._closed = True
        self._requests.put_nowait(_END)
        try:
            await asyncio.wait_for(self._call.code(), self.step_timeout)
        except TimeoutError:
            self._call.cancel()

    async def __aenter__(self) -> AsyncEpisodeStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None:
            self._call.cancel()
        await self.close()


def _now(getter: Coroutine[Any, Any, T]) -> T | None:
    """The value of a finished call's status getter (`code()`, `details()`, ...), read at once: they return without
    waiting once the call has its status. None (the getter closed) if one ever has to wait."""
    try:
        getter.send(None)
    except StopIteration as returned:
        return cast(T, returned.value)
    getter.close()
    return None


class AsyncSarmClient:
    """`SarmClient` for asyncio (same arguments; an injected channel must be a `grpc.aio.Channel`)."""

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TLS | bool = False,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        channel: grpc.aio.Channel | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._config = ClientConfig(token, timeout, retry)
        self._channel, self._owns_channel = open_channel(grpc.aio, target, channel, tls, options)
        self._stub = pb_grpc.RewardServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def _unary(self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None) -> T:
        deadline = self._config.deadline(timeout)
        attempts = Attempts(self._config.retry, deadline)
        while True:
            try:
                return await method(request, timeout=deadline.remaining(), metadata=self._config.metadata)
            except grpc.RpcError as error:
                wait = attempts.failed(from_rpc_error(error), error)
            await asyncio.sleep(wait)

    async def _collect_frames(self, request: pb.ScoreFramesRequest, **kwargs: Any) -> list[pb.FrameScore]:
        return [message async for message in self._stub.ScoreFrames(request, **kwargs)]

    async def score_window(
        self, instruction: str, frames: Images, *, state: State | None = None, timeout: float | None = None
    ) -> Score:
        request = _wire.window_request(instruction, frames, state)
        return _wire.score((await self._unary(self._stub.ScoreWindow, request, timeout)).score)

    async def score_frames(
        self,
        instruction: str,
        frames: Images,
        fps: float,
        *,
        options: ScoringOptions | None = None,
        state: State | None = None,
        timeout: float | None = None,
    ) -> list[FrameScore]:
        request = _wire.frames_request(instruction, frames, fps, options, state)
        return [_wire.frame_score(m) for m in await self._unary(self._collect_frames, request, timeout)]

    async def score_video(
        self,
        path: str | Path,
        instruction: str,
        *,
        fps: float | None = None,
        options: ScoringOptions | None = None,
        timeout: float | None = None,
        step_bytes: int = video.STEP_BYTES,
        on_progress: video.Progress | None = None,
    ) -> list[FrameScore]:
        """See `SarmClient.score_video`; decoding runs in a worker thread, off the event loop."""
        info = await self.info(timeout=timeout)
        video.check_streamable(info)
        frames = await asyncio.to_thread(video.decode, path, info)
        fps = await asyncio.to_thread(video.frame_rate, path) if fps is None else fps
        scores: list[FrameScore] = []
        async with self.stream(
            instruction, fps, options=options, timeout=timeout, step_timeout=self._config.timeout.call
        ) as episode:
            for sent, piece in video.chunks(frames, step_bytes):
                scores += await episode.step(piece)
                if on_progress is not None:
                    on_progress(sent, len(frames))
        return scores

    async def info(self, *, timeout: float | None = None) -> ModelInfo:
        return _wire.model_info(await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    async def health(self, service: str = "", *, timeout: float | None = None) -> ServingStatus:
        reply = await self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return ServingStatus(reply.status)

    def stream(
        self,
        instruction: str,
        fps: float,
        *,
        options: ScoringOptions | None = None,
        episode_id: str = "",
        cameras: Sequence[str] = (),
        step_timeout: float | None = None,
        timeout: float | None = None,
    ) -> AsyncEpisodeStream:
        """See `SarmClient.stream`. Call it inside the event loop that steps the stream."""
        opening = _wire.open_request(instruction, fps, options, episode_id, cameras)
        step_timeout, episode_timeout = self._config.stream_timeouts(step_timeout, timeout)

        def start(requests: AsyncIterator[Any]) -> Any:
            return self._stub.StreamEpisode(requests, timeout=episode_timeout, metadata=self._config.metadata)

        return AsyncEpisodeStream(start, opening, step_timeout)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncSarmClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
