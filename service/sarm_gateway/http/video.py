"""Uploaded videos with PyAV: frames in decode order, resized to the model's image size, a chunk at a time.

The limits are checked from the container's header when it states them, and again while decoding (a header may
understate). Only common video containers are opened and only local files are read: FFmpeg's playlist and concat
demuxers would otherwise follow references inside an upload to other files or hosts.
Everything here blocks: call it from worker threads (Engine.offload), never from the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sarm.data.video import to_rgb
from sarm_gateway.errors import InvalidInput

CONTAINERS = "mov,matroska,avi,mpegts,ivf,h264,hevc,gif"  # demuxer names: mp4/mov, mkv/webm, AVI, MPEG-TS, raw streams
OPEN_OPTIONS = {"format_whitelist": CONTAINERS, "protocol_whitelist": "file"}


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float
    max_frames: int
    max_pixels: int


class VideoReader:
    """Frames of one video file as (k, height, width, 3) uint8 chunks (height and width None: the video's own size);
    `fps` overrides the container's rate."""

    def __init__(
        self, path: Path, height: int | None, width: int | None, limits: VideoLimits, fps: float | None = None
    ) -> None:
        self.limits = limits
        self.decoded = 0
        self._lock = threading.Lock()  # close() waits for a read in progress on another thread
        try:
            self._container = av.open(str(path), options=OPEN_OPTIONS)
        except (av.error.FFmpegError, OSError) as error:
            # strerror, not str(error): that would name our temp file
            raise InvalidInput(
                f"the upload cannot be read as a video: it is not one, or it is corrupt or truncated "
                f"({error.strerror}); send an mp4/mov, mkv/webm, avi, MPEG-TS, IVF or GIF file"
            ) from error
        try:
            if not self._container.streams.video:
                raise InvalidInput("the upload has no video stream")
            self._stream = stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            native = float(stream.average_rate or stream.guessed_rate or 0)
            if not (fps or native):
                raise InvalidInput("the video does not state its frame rate: send the `fps` field")
            self.fps = float(fps or native)
            self._check_resolution(stream.codec_context.width, stream.codec_context.height)
            self.height = height or stream.codec_context.height
            self.width = width or stream.codec_context.width
            duration = self._container.duration / av.time_base if self._container.duration else 0.0
            self._check_duration(duration, "the video's header says it lasts")
            self._check_frames(stream.frames or round(duration * native), "the video's header says it holds")
            self._frames = self._container.decode(stream)
        except BaseException:
            self._container.close()
            raise

    def _check_resolution(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise InvalidInput(
                f"the video is {width}x{height} ({width * height} pixels); the limit is "
                f"{self.limits.max_pixels} pixels per frame (SARM_MAX_VIDEO_PIXELS)"
            )

    def _check_duration(self, seconds: float, what: str) -> None:
        if seconds > self.limits.max_seconds:
            raise InvalidInput(
                f"{what} {seconds:.1f} s; the limit is {self.limits.max_seconds:g} s (SARM_MAX_VIDEO_SECONDS)"
            )

    def _check_frames(self, frames: int, what: str) -> None:
        if frames > self.limits.max_frames:
            raise InvalidInput(
                f"{what} {frames} frames; the limit is {self.limits.max_frames} frames (SARM_MAX_VIDEO_FRAMES)"
            )

    def read(self, n: int) -> np.ndarray:
        """Up to `n` next frames; fewer only at the end of the video (none: the end)."""
        out = np.empty((n, self.height, self.width, 3), np.uint8)
        k = 0
        with self._lock:
            while k < n:
                try:
                    frame = next(self._frames, None)
                except av.error.FFmpegError as error:
                    raise InvalidInput(
                        f"the video is corrupt or truncated after {self.decoded} frames ({error.strerror})"
                    ) from error
                if frame is None:
                    break
                self._check_resolution(frame.width, frame.height)  # the size may change mid-stream
                self._check_frames(self.decoded + 1, "the video has at least")
                self._check_duration(self.decoded / self.fps, "the video lasts at least")
                out[k] = to_rgb(frame, self.height, self.width)
                self.decoded += 1
                k += 1
        if self.decoded == 0:
            raise InvalidInput("the video has no frames that can be decoded")
        return out[:k]

    def close(self) -> None:
        with self._lock:
            self._container.close()
