"""An episode held in memory, as a generator produces it and a dataset writer consumes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarm.data.annotations import EpisodeAnnotation


@dataclass
class EpisodeData:
    task: str  # the natural-language instruction
    frames: dict[str, np.ndarray]  # camera key (e.g. "observation.images.top") -> (T, H, W, 3) uint8
    state: np.ndarray  # (T, D_state) float32
    action: np.ndarray  # (T, D_action) float32
    annotations: dict[str, EpisodeAnnotation] = field(default_factory=dict)  # "sparse"/"dense" -> subtasks
    # Extra per-episode columns written to the episodes table (e.g. success: bool, quality: str).
    episode_columns: dict[str, Any] = field(default_factory=dict)
    # Extra per-frame columns written to the data table (e.g. "next.reward": (T,) float32).
    frame_columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {"state": len(self.state), "action": len(self.action)}
        lengths.update({f"frames[{k}]": len(v) for k, v in self.frames.items()})
        lengths.update({f"frame_columns[{k}]": len(v) for k, v in self.frame_columns.items()})
        if len(set(lengths.values())) != 1:
            raise ValueError(f"episode arrays disagree on the number of frames: {lengths}")
        if not self.frames:
            raise ValueError("an episode needs at least one camera")
        for key, video in self.frames.items():
            if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
                raise ValueError(f"camera {key!r}: expected (T, H, W, 3) uint8, got {video.shape} {video.dtype}")

    @property
    def length(self) -> int:
        return len(self.state)
