"""What the client returns and takes: frozen dataclasses and plain numpy, no protobuf in the public surface."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sarm_client.errors import InvalidArgument

# One camera image: raw RGB pixels, an (H, W, 3) uint8 array at the model's image size (ModelInfo.image_size), or
# the bytes of a JPEG/PNG file.
Image = np.ndarray | bytes
# Several images: an (N, H, W, 3) uint8 array or a sequence of images. With several cameras they are time-major:
# every camera of one time step (in ModelInfo order), then the next time step.
Images = np.ndarray | Sequence[Image]
# Joint state for a model that reads it (ModelInfo.state_dim > 0): one row of state_dim numbers per time step, as a
# (T, state_dim) array or rows of numbers, or already flat (time-major).
State = np.ndarray | Sequence[float] | Sequence[Sequence[float]]


@dataclass(frozen=True)
class Score:
    """The model's answer for one window (its last frame)."""

    stage_index: int
    stage_name: str
    stage_probs: tuple[float, ...]  # one per ModelInfo.stage_names
    tau: float  # progress within the stage, [0, 1]
    progress: float  # normalised task progress, [0, 1]
    confidence: float  # probability of the predicted stage
    model_version: str
    # The known task the instruction matched (as the model knows it; "" for a model whose one task names none) and
    # how similar the two are; an instruction below ModelInfo.task_match_min is refused (InvalidArgument).
    matched_task: str = ""
    task_similarity: float = 1.0
    dense: DenseScore | None = None  # the dense head's answer, for a model that has one (ModelInfo.heads)


@dataclass(frozen=True)
class DenseScore:
    """A dense (fine-grained subtask) head's answer for the same window; stages are ModelInfo.dense_stage_names."""

    stage_index: int
    stage_name: str
    stage_probs: tuple[float, ...]
    tau: float
    progress: float


@dataclass(frozen=True)
class FrameScore:
    """The score of one frame of an episode (frame 0 = episode start)."""

    frame_index: int
    score: Score
    smoothed_progress: float | None = None  # set unless ScoringOptions.smoothing is off


@dataclass(frozen=True)
class ScoringOptions:
    """How an episode is scored (streams, score_frames, score_video)."""

    score_every: int = 1  # score every N-th frame (frame 0 always)
    smoothing: bool = True  # a causal filter's progress beside the raw one (FrameScore.smoothed_progress)
    smoothing_filter: str = "one-euro"  # or "history" (the official code's Σ c³·v / Σ c³ of the last scores)
    smoothing_history: int = 10  # history: scores remembered
    smoothing_min_confidence: float = 0.9  # history: scores below it are ignored
    smoothing_cutoff_hz: float = 1.0  # one-euro: the cut-off while progress holds
    smoothing_beta: float = 0.5  # one-euro: how fast the cut-off rises with progress's speed

    def __post_init__(self) -> None:
        if self.score_every < 1 or self.smoothing_history < 1:
            raise InvalidArgument("score_every and smoothing_history must be at least 1")
        if not 0 < self.smoothing_min_confidence <= 1:
            raise InvalidArgument("smoothing_min_confidence must be in (0, 1]")
        if self.smoothing_filter not in ("one-euro", "history"):
            raise InvalidArgument(f"smoothing_filter must be one-euro or history, not {self.smoothing_filter!r}")
        if not (math.isfinite(self.smoothing_cutoff_hz) and self.smoothing_cutoff_hz > 0):
            raise InvalidArgument("smoothing_cutoff_hz must be a frequency > 0")
        if not (math.isfinite(self.smoothing_beta) and self.smoothing_beta >= 0):
            raise InvalidArgument("smoothing_beta must be >= 0")


@dataclass(frozen=True)
class Task:
    instruction: str
    stage_names: tuple[str, ...]
    proportions: tuple[float, ...]  # ᾱ: each stage's share of the task's progress


@dataclass(frozen=True)
class Window:
    frames: int  # time steps in one causal window
    stride_seconds: float  # spacing of the window's frames
    max_rewind: int
    sequence_length: int
    mode: str = "causal"  # or "centered" (LeRobot's window, which needs frames after t)
    stride_frames: int = 0  # a centred window's gap in frames


@dataclass(frozen=True)
class Encoder:
    id: str
    version: str
    dim: int


@dataclass(frozen=True)
class ModelInfo:
    model_version: str
    stage_names: tuple[str, ...]
    tasks: tuple[Task, ...]
    window: Window
    num_cameras: int
    image_size: tuple[int, int]  # (height, width) every frame must have, unless image_resize is "clip"
    frame_encoder: Encoder
    text_encoder: Encoder
    backend: str
    task_match_min: float = 0.0  # instructions less similar than this to every task are refused
    heads: tuple[str, ...] = ("sparse",)  # progress heads: sparse, and dense where the model has one
    dense_stage_names: tuple[str, ...] = ()
    state_dim: int = 0  # joint-state values per time step the model reads (send `state` with the frames)
    architecture: str = "sarm"  # or "lerobot-sarm" (an imported LeRobot SARM)
    image_resize: str = "exact"  # "clip": frames of any size, cropped by the server as CLIPProcessor does


class ServingStatus(enum.Enum):
    """grpc.health.v1 statuses."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3
