"""Episode streams of one or many environments at once, for a synchronous environment loop (no gymnasium here).

`exchange` sends the new frame of every listed environment at once and waits for all replies together: one round
trip per vector step, however many environments (the gateway batches the encodes of streams in flight together).
The proto has no message that carries several episodes' frames, so each environment keeps its own StreamEpisode
call on one channel, and a worker thread per environment waits for its reply.

The blocking client is used, not the asyncio one, because the environment loop it serves is synchronous. (Both now
report a stream refused at open as Overloaded with the server's retry-after hint; see `AsyncEpisodeStream._finished`
for the grpc.aio race that used to turn it into INTERNAL.)

Every wait is bounded: a step by `Timeout.step`, the opening of an episode (with its retries) by `Timeout.call`, so
a down, slow or overloaded gateway surfaces as an error (Unavailable, Overloaded, DeadlineExceeded), never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sarm_client.client import EpisodeStream, SarmClient
from sarm_client.config import TLS, Deadline, Retry, Timeout
from sarm_client.errors import SarmError
from sarm_client.frames import fit
from sarm_client.models import FrameScore, ModelInfo, ScoringOptions

Result = FrameScore | SarmError  # one environment's answer: its frame's score, or why there is none


class EpisodePool:
    """`size` environments' episode streams on one gateway (see the module's docstring).

    Starting an environment (its reset) opens a new stream, closing its previous one, and scores the episode's
    first frame; an opening the server refuses for now (Overloaded, Unavailable) is tried again per `retry`,
    honouring the server's retry-after hint, within `Timeout.call`. Stepping scores the next frame on the open
    stream. A stream that failed stays failed until its environment's next start: its later steps get the same
    error at once. Not thread-safe: one environment loop drives it.
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
        smoothing: bool = True,
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
        self._client = SarmClient(target, token=token, tls=tls, timeout=timeout, retry=retry, options=channel_options)
        self._streams: list[EpisodeStream | None] = [None] * size
        self._failed: list[SarmError | None] = [None] * size  # why an environment's episode has no stream
        self._episodes = [0] * size  # episodes started per environment, for episode ids
        self._workers = ThreadPoolExecutor(size, thread_name_prefix="sarm-episode") if size > 1 else None
        self._closed = False

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
        if start and self.info is None:
            try:
                self.info = self._client.info()
            except SarmError as error:  # no model info, no episode: every start gets the error
                for i in start:
                    self._close_stream(i)
                    self._failed[i] = error
                return dict.fromkeys(start, error) | {i: self._step(i, frame) for i, frame in step.items()}
        calls = [(self._start, i, self._fit(frame)) for i, frame in start.items()]
        calls += [(self._step, i, self._fit(frame)) for i, frame in step.items()]
        if self._workers is None or len(calls) == 1:
            return {i: call(i, frame) for call, i, frame in calls}
        futures = {i: self._workers.submit(call, i, frame) for call, i, frame in calls}
        return {i: future.result() for i, future in futures.items()}  # each call is bounded by its deadlines

    def _fit(self, frame: Any) -> Any:
        return frame if self.info is None else fit(frame, self.info.image_size, resize=self.resize)

    def _close_stream(self, index: int) -> None:
        stream, self._streams[index] = self._streams[index], None
        if stream is not None:
            stream.close()

    def _start(self, index: int, frame: Any) -> Result:
        self._close_stream(index)
        self._failed[index] = None
        self._episodes[index] += 1
        episode_id = f"{self.episode_id}{index}-{self._episodes[index]}" if self.episode_id else ""
        deadline = Deadline(self.timeout.call)
        failures = 0
        while True:
            stream = self._client.stream(self.instruction, self.fps, options=self.options, episode_id=episode_id)
            result = _first(stream, frame)
            if not isinstance(result, SarmError):
                self._streams[index] = stream
                return result
            stream.close()
            # Nothing of the episode has been entered yet, so opening it again is safe (unlike a repeated step).
            wait = self.retry.delay(failures, result, deadline.remaining())
            if wait is None:
                self._failed[index] = result  # its later steps get the same error
                return result
            failures += 1
            time.sleep(wait)

    def _step(self, index: int, frame: Any) -> Result:
        stream = self._streams[index]
        if stream is None:
            return self._failed[index] or SarmError(f"environment {index} has no episode: reset it first")
        try:
            return _one(stream.step(frame))
        except SarmError as error:
            return error

    def close(self) -> None:
        """Close every stream, the worker threads and the channel."""
        if self._closed:
            return
        self._closed = True
        try:
            for index in range(self.size):
                self._close_stream(index)
        finally:
            if self._workers is not None:
                self._workers.shutdown(wait=False, cancel_futures=True)
            self._client.close()


def _first(stream: EpisodeStream, frame: Any) -> Result:
    try:
        return _one(stream.step(frame))
    except SarmError as error:
        return error


def _one(scores: list[FrameScore]) -> Result:
    # Every frame is scored (score_every 1) and each step sends one frame: exactly one score comes back.
    if len(scores) != 1:
        return SarmError(f"expected the score of one frame, got {len(scores)}")
    return scores[0]
