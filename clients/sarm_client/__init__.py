"""Thin client of the SARM reward service: scores of frame windows, live episode streams, video curves (gRPC), and
RA-BC weights of a dataset for a trainer (HTTP jobs API).

    from sarm_client import RabcJobs, SarmClient

    with SarmClient("localhost:50051") as client:
        with client.stream("pick up the cube", fps=10) as episode:
            for frame in camera:  # (H, W, 3) uint8 RGB at client.info().image_size
                [score] = episode.step(frame)

    weights = RabcJobs("http://localhost:8000", token=token).weights("pick-place", chunk_size=10)

    evaluation = evaluate_videos("localhost:50051", rollout_videos, "pick up the cube")  # progress, stage, success

    from sarm_client.rl import SarmReward  # SARM progress as a gymnasium env's dense reward
    env = SarmReward(env, "localhost:50051", "pick up the cube", reward=RewardConfig(fallback=0.0))

Needs only grpcio, protobuf and numpy (PyAV for videos: `sarm-client[video]`; pyarrow to read RA-BC weights:
`sarm-client[trainer]`; gymnasium for `sarm_client.rl`: `sarm-client[rl]`; matplotlib for the evaluation's curves
PNG: `sarm-client[plot]`); never torch (`sarm_client.training` uses the trainer's own).
"""

from sarm_client.aio import AsyncEpisodeStream, AsyncSarmClient
from sarm_client.client import EpisodeStream, SarmClient
from sarm_client.config import NO_RETRY, TLS, Retry, Timeout
from sarm_client.errors import (
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    JobFailed,
    NotFound,
    NotLive,
    Overloaded,
    PermissionDenied,
    SarmError,
    Unauthenticated,
    Unavailable,
)
from sarm_client.evaluate import EpisodeResult, Evaluation, evaluate_videos
from sarm_client.models import (
    DenseScore,
    Encoder,
    FrameScore,
    Image,
    Images,
    ModelInfo,
    Score,
    ScoringOptions,
    ServingStatus,
    State,
    Task,
    Window,
)
from sarm_client.rabc import RabcJob, RabcJobs, RabcWeights
from sarm_client.rewards import RewardConfig

__version__ = "0.1.0"
__all__ = [
    "NO_RETRY",
    "TLS",
    "AsyncEpisodeStream",
    "AsyncSarmClient",
    "Conflict",
    "DeadlineExceeded",
    "DenseScore",
    "Encoder",
    "EpisodeResult",
    "EpisodeStream",
    "Evaluation",
    "FrameScore",
    "Image",
    "Images",
    "InvalidArgument",
    "JobFailed",
    "ModelInfo",
    "NotFound",
    "NotLive",
    "Overloaded",
    "PermissionDenied",
    "RabcJob",
    "RabcJobs",
    "RabcWeights",
    "Retry",
    "RewardConfig",
    "SarmClient",
    "SarmError",
    "Score",
    "ScoringOptions",
    "ServingStatus",
    "State",
    "Task",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "Window",
    "__version__",
    "evaluate_videos",
]
