"""Episode streams of one or many environments at once, for a synchronous environment loop (no gymnasium here).

The streams live on one asyncio client whose event loop runs in a thread of its own. `exchange` sends the new
frame of every listed environment at once and waits for all replies together: one round trip per vector step,
however many environments (the gateway batches the encodes of streams that are in flight together). The proto
has no message that carries several episodes' frames, so each environment keeps its own StreamEpisode call on the
one channel.

Every wait is bounded: a step by `Timeout.step`, the opening of an episode (with its retries) by `Timeout.call`,
and the synchronous side never waits longer than those plus a grace period, so a down, slow or overloaded gateway
surfaces as an error (Unavailable, Overloaded, DeadlineExceeded), never as a hang.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from sarm_client.aio import AsyncEpisodeStream, AsyncSarmClient
from sarm_client.config import TLS, Deadline, Retry, Timeout
from sarm_client.errors import DeadlineExceeded, SarmError
from sarm_client.frames import fit
from sarm_client.models import FrameScore, ModelInfo, ScoringOptions

T = TypeVar("T")
GRACE_S = 5.0  # beyond the streams' own deadlines, before the synchronous side gives up on the event loop
Result = FrameScore | SarmError  # one environment's answer: its frame's score, or why there is none


class EpisodePool:
    """`size` environments' episode streams on one gateway (see the module's docstring).

    `start` (an environment's reset) opens a new stream, closing its previous one, and scores the episode's first
    frame; an opening the server refuses for now (Overloaded, Unavailable) is tried again per `retry`, honouring
    the server's retry-after hint, within `Timeout.call`. `step` scores the next frame on the open stream. A stream
    that failed stays failed until its environment's next start: its later steps get the same error at once.
    """

    def __init__(
        self,
        target: str,
        instruction: str,
        fps: float,
        *,
        size: int = 1,
        token: str | None = None,
        tls: TLS | bool = False,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        smoothing: bool = False,
        resize: bool = True,
        episode_id: str = "",
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1 environment, not {size}")
        if timeout.step is None:
            raise ValueError("Timeout.step must be a number of seconds: an environment step must not wait forever")
        if not fps > 0:
            raise ValueError(f"fps must be the environment's frame rate (> 0), not {fps!r}")
        self.instruction, self.fps, self.size = instruction, float(fps), size
        self.timeout, self.retry, self.resize, self.episode_id = timeout, retry, resize, episode_id
        self.options = ScoringOptions(smoothing=smoothing)  # every frame scored: one reward per step
        self.info: ModelInfo | None = None  # fetched at the first start: a gateway down at construction is no error
        self._streams: list[AsyncEpisodeStream | None] = [None] * size
        self._episodes = [0] * size  # episodes started per environment, for episode ids
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sarm-episode-pool", daemon=True)
        self._thread.start()
        self._closed = False

        async def connect() -> AsyncSarmClient:  # grpc.aio channels belong to the loop they are made in
            return AsyncSarmClient(target, token=token, tls=tls, timeout=timeout, retry=retry, options=channel_options)

        self._client = self._wait(connect(), GRACE_S)

    def _wait(self, coroutine: Coroutine[Any, Any, T], seconds: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        done, _ = concurrent.futures.wait([future], seconds)
        if not done:  # the loop is stuck: the deadlines inside should have fired long before
            future.cancel()
            raise DeadlineExceeded(f"the gateway's client did not answer within {seconds:.1f} s")
        return future.result()

    def _open_budget(self) -> float:
        per_try = self.timeout.step or 0.0
        return (self.timeout.call or per_try * self.retry.attempts) + per_try + GRACE_S

    def exchange(self, start: Mapping[int, Any], step: Mapping[int, Any]) -> dict[int, Result]:
        """Start new episodes (environment index → its reset frame) and step open ones (index → the new frame),
        all in one round trip; each environment's score, or the error it got. Frames the client cannot send
        (not RGB uint8, or not resizable) raise InvalidArgument before anything is sent."""
        if self._closed:
            raise SarmError("the episode pool is closed")
        if set(start) & set(step):
            raise ValueError("an environment is either started or stepped in one exchange, not both")
        for index in (*start, *step):
            if not 0 <= index < self.size:
                raise ValueError(f"environment index {index} is outside 0..{self.size - 1}")
        seconds = (self._open_budget() if start else 0.0) + (self.timeout.step or 0.0) + GRACE_S
        return self._wait(self._exchange(dict(start), dict(step)), seconds)

    async def _exchange(self, start: dict[int, Any], step: dict[int, Any]) -> dict[int, Result]:
        if start and self.info is None:
            try:
                self.info = await self._client.info()
            except SarmError as error:  # no model info, no episode: every start gets the error
                await asyncio.gather(*(self._close_stream(i) for i in start))
                stepped = await asyncio.gather(*(self._step(i, frame) for i, frame in step.items()))
                return dict.fromkeys(start, error) | dict(zip(step, stepped, strict=True))
        starts = [self._start(i, self._fit(frame)) for i, frame in start.items()]
        steps = [self._step(i, frame) for i, frame in step.items()]
        results = await asyncio.gather(*starts, *steps)
        return dict(zip([*start, *step], results, strict=True))

    def _fit(self, frame: Any) -> Any:
        return frame if self.info is None else fit(frame, self.info.image_size, resize=self.resize)

    async def _close_stream(self, index: int) -> None:
        stream, self._streams[index] = self._streams[index], None
        if stream is not None:
            await stream.close()

    async def _start(self, index: int, frame: Any) -> Result:
        await self._close_stream(index)
        self._episodes[index] += 1
        episode_id = f"{self.episode_id}{index}-{self._episodes[index]}" if self.episode_id else ""
        deadline = Deadline(self.timeout.call)
        failures = 0
        while True:
            stream = self._client.stream(self.instruction, self.fps, options=self.options, episode_id=episode_id)
            result = await self._first(stream, frame)
            if not isinstance(result, SarmError):
                self._streams[index] = stream
                return result
            await stream.close()
            # Nothing of the episode has been entered yet, so opening it again is safe (unlike a repeated step).
            wait = self.retry.delay(failures, result, deadline.remaining())
            if wait is None:
                self._streams[index] = stream  # failed: its later steps get the same error
                return result
            failures += 1
            await asyncio.sleep(wait)

    @staticmethod
    async def _first(stream: AsyncEpisodeStream, frame: Any) -> Result:
        try:
            return _one(await stream.step(frame))
        except SarmError as error:
            return error

    async def _step(self, index: int, frame: Any) -> Result:
        stream = self._streams[index]
        if stream is None:
            return SarmError(f"environment {index} has no episode: reset it first")
        try:
            return _one(await stream.step(self._fit(frame)))
        except SarmError as error:
            return error

    def close(self) -> None:
        """Close every stream and the channel, and stop the event loop's thread."""
        if self._closed:
            return
        self._closed = True

        async def shut() -> None:
            await asyncio.gather(*(self._close_stream(i) for i in range(self.size)), return_exceptions=True)
            await self._client.close()

        try:
            self._wait(shut(), (self.timeout.step or 0.0) + GRACE_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(GRACE_S)


def _one(scores: list[FrameScore]) -> Result:
    # Every frame is scored (score_every 1) and each step sends one frame: exactly one score comes back.
    if len(scores) != 1:
        return SarmError(f"expected the score of one frame, got {len(scores)}")
    return scores[0]
