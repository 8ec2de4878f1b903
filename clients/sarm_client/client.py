"""The blocking client, and the episode stream a control loop feeds frame by frame."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sarm_client import _wire, video
from sarm_client._base import Attempts, ClientConfig, EpisodeBase, open_channel
from sarm_client.config import TLS, Retry, Timeout
from sarm_client.errors import SarmError, from_rpc_error
from sarm_client.models import FrameScore, Image, Images, ModelInfo, Score, ScoringOptions, ServingStatus, State
from sarm_client.v1 import sarm_pb2 as pb
from sarm_client.v1 import sarm_pb2_grpc as pb_grpc

T = TypeVar("T")
_END = object()  # ends the request iterator, and marks the end of the replies


class EpisodeStream(EpisodeBase):
    """One live episode on a StreamEpisode call. `step()` sends the new frame(s) and returns their scores.

    Use it as a context manager (or call `close()`); one control loop steps it (not thread-safe). Each step waits
    at most `step_timeout` for its reply; a step that fails or times out ends the stream, which is never retried:
    open a new stream for a new episode.
    """

    def __init__(
        self, start: Callable[[Iterator[Any]], Any], opening: pb.StreamEpisodeRequest, step_timeout: float | None
    ) -> None:
        super().__init__(step_timeout)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._replies: queue.Queue[Any] = queue.Queue()
        self._requests.put(opening)
        self._call = start(iter(self._requests.get, _END))
        # grpc's sync reply iterator cannot wait with a timeout: a thread reads, steps wait on a queue.
        self._reader = threading.Thread(target=self._read, name="sarm-episode-replies", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._replies.put(reply)
        except grpc.RpcError as error:
            self._replies.put(from_rpc_error(error))
        finally:
            self._replies.put(_END)

    def step(
        self, frames: Image | Images, state: State | None = None, *, timeout: float | None = None
    ) -> list[FrameScore]:
        """Send the next time step(s) (one image per camera per step) and the robot state, if any; returns the
        scores of the frames the stream's ScoringOptions score (an empty list when `score_every` skips them)."""
        self._requests.put(self._step_request(frames, state))
        wait = self.step_timeout if timeout is None else timeout
        try:
            reply = self._replies.get(timeout=wait)
        except queue.Empty:
            self._call.cancel()
            raise self._fail(self._timed_out(wait)) from None
        if isinstance(reply, SarmError):
            raise self._fail(reply)
        if reply is _END:
            raise self._fail(self._ended())
        return self._answer(reply)

    def close(self) -> None:
        """End the episode: the server finishes the call once the steps sent are answered."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_END)
        self._reader.join(self.step_timeout)
        if self._reader.is_alive():
            self._call.cancel()

    def __enter__(self) -> EpisodeStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:  # the control loop failed: do not wait for the server to finish the episode
            self._call.cancel()
        self.close()


class SarmClient:
    """A blocking client of the SARM reward service.

    Pass a `target` ("host:port") and optionally `tls` (True: verify the server with the system's roots, or
    `TLS.from_files(ca_file, cert_file, key_file)`), or an already made `channel` (tests, custom interceptors; the
    client then leaves closing it to you). A bearer `token` goes with every call either way. `timeout` holds the
    default deadlines; every method takes `timeout=` seconds to override it for one call. Idempotent calls are
    retried per `retry`; streams never are.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TLS | bool = False,
        timeout: Timeout = Timeout(),
        retry: Retry = Retry(),
        channel: grpc.Channel | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._config = ClientConfig(token, timeout, retry)
        self._channel, self._owns_channel = open_channel(grpc, target, channel, tls, options)
        self._stub = pb_grpc.RewardServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _unary(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        deadline = self._config.deadline(timeout)
        attempts = Attempts(self._config.retry, deadline)
        while True:
            try:
                return method(request, timeout=deadline.remaining(), metadata=self._config.metadata)
            except grpc.RpcError as error:
                wait = attempts.failed(from_rpc_error(error), error)
            time.sleep(wait)

    def score_window(
        self, instruction: str, frames: Images, *, state: State | None = None, timeout: float | None = None
    ) -> Score:
        """Score one window of `ModelInfo.window.frames` time steps: causal [episode start, t−7g, …, t−g, t], or for
        a centred model [t−(n/2)g, …, t, …, t+(n/2)g], scored at its centre. `state`: the joint state of each time
        step, for a model that reads it (ModelInfo.state_dim)."""
        request = _wire.window_request(instruction, frames, state)
        return _wire.score(self._unary(self._stub.ScoreWindow, request, timeout).score)

    def score_frames(
        self,
        instruction: str,
        frames: Images,
        fps: float,
        *,
        options: ScoringOptions | None = None,
        state: State | None = None,
        timeout: float | None = None,
    ) -> list[FrameScore]:
        """The per-frame curve of a whole episode (frame 0 = its start), sent as one message; `state`: each time
        step's joint state, for a model that reads it (ModelInfo.state_dim)."""
        request = _wire.frames_request(instruction, frames, fps, options, state)
        replies = self._unary(lambda r, **kw: list(self._stub.ScoreFrames(r, **kw)), request, timeout)
        return [_wire.frame_score(m) for m in replies]

    def score_video(
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
        """The per-frame curve of a video file, decoded at the model's image size (needs `sarm-client[video]`).

        A video is usually larger than one message may be, so it goes as an episode stream in pieces of at most
        `step_bytes` (same scores as score_frames); `timeout` bounds the whole video (default Timeout.episode)
        and each piece waits at most Timeout.call. `fps` defaults to the file's frame rate.
        """
        info = self.info(timeout=timeout)
        video.check_streamable(info)
        frames = video.decode(path, info)
        fps = video.frame_rate(path) if fps is None else fps
        scores: list[FrameScore] = []
        with self.stream(
            instruction, fps, options=options, timeout=timeout, step_timeout=self._config.timeout.call
        ) as episode:
            for sent, piece in video.chunks(frames, step_bytes):
                scores += episode.step(piece)
                if on_progress is not None:
                    on_progress(sent, len(frames))
        return scores

    def info(self, *, timeout: float | None = None) -> ModelInfo:
        return _wire.model_info(self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> ServingStatus:
        """grpc.health.v1 status of the server ("") or of one service ("sarm.v1.RewardService")."""
        reply = self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
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
    ) -> EpisodeStream:
        """Open an episode: `fps` is the camera's frame rate (it sets the window stride). `step_timeout` bounds each
        step's reply (default Timeout.step); `timeout` the whole episode (default Timeout.episode). Errors the
        server raises on opening (e.g. Overloaded when too many streams are open) surface at the first step."""
        opening = _wire.open_request(instruction, fps, options, episode_id, cameras)
        step_timeout, episode_timeout = self._config.stream_timeouts(step_timeout, timeout)

        def start(requests: Iterator[Any]) -> Any:
            return self._stub.StreamEpisode(requests, timeout=episode_timeout, metadata=self._config.metadata)

        return EpisodeStream(start, opening, step_timeout)

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> SarmClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
