"""Video files → frames at the model's image size (PyAV, the optional `sarm-client[video]` extra)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sarm_client.errors import InvalidArgument, NotLive
from sarm_client.models import ModelInfo

STEP_BYTES = 256 * 1024  # frames per stream message: well under the gateway's message limit
Progress = Callable[[int, int], None]  # (frames scored so far, frames in all)


def _av() -> ModuleType:
    try:
        import av
    except ImportError as error:
        raise ImportError("decoding video needs PyAV: pip install 'sarm-client[video]'") from error
    return av


def _open(path: str | Path) -> Any:  # an av container
    av = _av()
    try:
        return av.open(str(path))
    except av.FFmpegError as error:
        if isinstance(error, FileNotFoundError):  # PyAV's is both: keep the builtin meaning
            raise
        raise InvalidArgument(f"{path}: cannot read: {error}") from error


def frame_rate(path: str | Path) -> float:
    """The frame rate the file states for its first video stream."""
    with _open(path) as container:
        if not container.streams.video or not container.streams.video[0].average_rate:
            raise InvalidArgument(f"{path}: the file does not say its frame rate: pass fps")
        return float(container.streams.video[0].average_rate)


def decode(path: str | Path, info: ModelInfo) -> np.ndarray:
    """All frames of the file's first video stream as (N, H, W, 3) uint8 RGB at the model's image size: the
    gateway never resizes, so the client does (a CLIP model, image_resize "clip", gets the file's own size)."""
    if info.num_cameras != 1:
        raise InvalidArgument(
            f"the model takes {info.num_cameras} cameras per time step and a video is one camera: "
            "decode each camera and call score_frames with time-major frames"
        )
    height, width = info.image_size if info.image_resize == "exact" else (0, 0)  # 0: the file's own size
    av = _av()
    with _open(path) as container:
        if not container.streams.video:
            raise InvalidArgument(f"{path}: no video stream")
        try:
            # AREA: the gateway's and the core's filter (sarm.data.video.RESIZE_INTERPOLATION), so a video scores
            # the same whoever decodes it.
            frames = [
                f.to_ndarray(format="rgb24", width=width or f.width, height=height or f.height, interpolation="AREA")
                for f in container.decode(container.streams.video[0])
            ]
        except av.FFmpegError as error:
            raise InvalidArgument(f"{path}: cannot decode: {error}") from error
    if not frames:
        raise InvalidArgument(f"{path}: the video has no frames")
    return np.stack(frames)


def chunks(frames: np.ndarray, max_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    """Consecutive runs of frames of at most `max_bytes` each (at least one frame), to stay under the gateway's
    message limit (SARM_MAX_MESSAGE_BYTES) however long the video; each with the count of frames up to its end."""
    per_chunk = max(1, max_bytes // max(1, frames[0].nbytes))
    for start in range(0, len(frames), per_chunk):
        piece = frames[start : start + per_chunk]
        yield start + len(piece), piece


def check_streamable(info: ModelInfo) -> None:
    """score_video streams the video: refuse a model that cannot score a stream, before anything is decoded."""
    if info.window.mode != "causal":
        raise NotLive(
            "this model's window is centred (frame t needs later frames), so a video cannot be streamed to it: "
            "call score_frames with the decoded frames, or upload the video over HTTP (POST /v1/videos:score)"
        )
    if info.state_dim:
        raise InvalidArgument(
            f"this model reads joint state ({info.state_dim} values per frame), which a video file does not hold: "
            "call score_frames with the frames and `state`"
        )
