"""Helpers of the sarm-client tests: where a harness gateway listens, and a camera-like video file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tests.gateway_harness import RunningGateway

CLIENT_ROOT = Path(__file__).resolve().parents[1] / "clients"  # holds the sarm_client package


def target(running: RunningGateway) -> str:
    return f"127.0.0.1:{running.gateway.port}"


def write_video(path: Path, frames: np.ndarray, fps: int) -> Path:
    """An H.264 mp4, as a camera would record it."""
    import av  # the client's [video] extra

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
