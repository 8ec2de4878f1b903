"""Camera videos with PyAV: one mp4 holds many episodes back to back, located by timestamps.

Writing appends episodes to an open stream, so a dataset never holds all its frames in memory.
Reading seeks to the keyframe before an episode and decodes only that episode's frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import numpy as np

# Codec name in info.json -> PyAV encoder. LeRobot defaults to AV1; H.264 encodes ~10x faster here.
ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}


class VideoError(RuntimeError):
    """A video that cannot be opened or does not hold the frames the dataset says it holds."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    frames: int  # from the container; 0 when the container does not say
    duration_s: float


class VideoWriter:
    """Appends (T, H, W, 3) uint8 frames to one mp4; pts count frames, so timestamps are exact."""

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str = "h264", crf: int = 18):
        if codec not in ENCODERS:
            raise ValueError(f"unknown video codec {codec!r}: choose one of {sorted(ENCODERS)}")
        if width % 2 or height % 2:
            raise ValueError(f"video frames must have even width and height for yuv420p, got {width}x{height}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w")
        stream = cast(av.VideoStream, self._container.add_stream(ENCODERS[codec], rate=fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        # A keyframe every second keeps seeks to one episode cheap.
        stream.codec_context.gop_size = fps
        stream.options = {"crf": str(crf)}
        self._stream = stream
        self._shape = (height, width, 3)
        self.frames_written = 0

    def append(self, frames: np.ndarray) -> None:
        if frames.shape[1:] != self._shape or frames.dtype != np.uint8:
            raise ValueError(f"expected frames of shape (T, {self._shape}) uint8, got {frames.shape} {frames.dtype}")
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoError(f"{path} cannot be opened as a video ({error}): the file is missing or truncated") from error


def _time_base(stream: av.VideoStream) -> Fraction:
    if stream.time_base is None:
        raise VideoError("the video stream has no time base: its frames cannot be located in time")
    return stream.time_base


def probe(path: Path) -> VideoInfo:
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        duration = float(stream.duration * _time_base(stream)) if stream.duration else 0.0
        return VideoInfo(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(stream.average_rate or 0),
            frames=int(stream.frames),
            duration_s=duration,
        )


def read_frames(
    path: Path, fps: float, from_timestamp: float, num_frames: int, indices: np.ndarray | None = None
) -> np.ndarray:
    """Frames [from_timestamp, from_timestamp + num_frames / fps) of `path` as (N, H, W, 3) uint8.

    `indices` (episode-relative, any order, repeats allowed) selects frames; decoding stops after the
    last one needed. Frames are matched to indices by their presentation time, so files written by any
    tool with exact timestamps (LeRobot's, ours) read back frame-exactly.
    """
    wanted = np.arange(num_frames) if indices is None else np.asarray(indices, dtype=np.int64)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= num_frames):
        raise IndexError(f"frame indices must lie in [0, {num_frames}), got [{wanted.min()}, {wanted.max()}]")
    if wanted.size == 0:
        raise ValueError("no frames requested")
    first, last = int(wanted.min()), int(wanted.max())
    found: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start_s = from_timestamp + first / fps
        time_base = _time_base(stream)
        container.seek(int(start_s / time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            index = round((float(frame.pts * time_base) - from_timestamp) * fps)
            if index > last:
                break
            if index >= first:
                found[index] = frame.to_ndarray(format="rgb24")
    missing = sorted(set(range(first, last + 1)) - set(found))
    if missing:
        raise VideoError(
            f"{path}: {len(missing)} frame(s) of the episode starting at {from_timestamp:.3f}s are not in the "
            f"video (first missing: episode frame {missing[0]}); the video is shorter than the dataset says"
        )
    return np.stack([found[int(i)] for i in wanted])


# The one resize filter of every path that fits frames to a model's image size (uploads, datasets, the client):
# AREA averages the pixels it shrinks, as the encoders' antialiased resize does. libswscale does the work.
RESIZE_INTERPOLATION = "AREA"


def to_rgb(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """A decoded frame as (height, width, 3) uint8 RGB, resized by libswscale with the one filter."""
    return frame.to_ndarray(width=width, height=height, format="rgb24", interpolation=RESIZE_INTERPOLATION)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W, 3) uint8 frames at (N, height, width, 3), by the same filter; unchanged when already that size."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i, image in enumerate(frames):
        out[i] = to_rgb(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"), height, width)
    return out
