"""Thin client of the SARM reward service (gRPC): scores of frame windows, live episode streams, video curves.

    from sarm_client import SarmClient

    with SarmClient("localhost:50051") as client:
        with client.stream("pick up the cube", fps=10) as episode:
            for frame in camera:  # (H, W, 3) uint8 RGB at client.info().image_size
                [score] = episode.step(frame)

Needs only grpcio, protobuf and numpy (PyAV for videos: `sarm-client[video]`); never torch.
"""

from sarm_client.aio import AsyncEpisodeStream, AsyncSarmClient
from sarm_client.client import EpisodeStream, SarmClient
from sarm_client.config import NO_RETRY, TLS, Retry, Timeout
from sarm_client.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    SarmError,
    Unauthenticated,
    Unavailable,
)
from sarm_client.models import (
    Encoder,
    FrameScore,
    Image,
    Images,
    ModelInfo,
    Score,
    ScoringOptions,
    ServingStatus,
    Task,
    Window,
)

__version__ = "0.1.0"
__all__ = [
    "NO_RETRY",
    "TLS",
    "AsyncEpisodeStream",
    "AsyncSarmClient",
    "DeadlineExceeded",
    "Encoder",
    "EpisodeStream",
    "FrameScore",
    "Image",
    "Images",
    "InvalidArgument",
    "ModelInfo",
    "Overloaded",
    "PermissionDenied",
    "Retry",
    "SarmClient",
    "SarmError",
    "Score",
    "ScoringOptions",
    "ServingStatus",
    "Task",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "Window",
    "__version__",
]
