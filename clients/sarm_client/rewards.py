"""SARM scores → an RL reward, one episode at a time (what `sarm_client.rl`'s wrappers compute; no gymnasium here).

Modes:
- "delta" (default): the increase of task progress since the previous step, so an episode's rewards add up to its
  progress gained; a regression (a dropped object) is a negative reward.
- "progress": the task progress of the new frame itself, in [0, 1].
- "success_bonus": the progress plus `success_bonus` on every step whose progress reaches `success_threshold`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from sarm_client.errors import InvalidArgument, PermissionDenied, SarmError, Unauthenticated
from sarm_client.models import FrameScore

RewardMode = Literal["delta", "progress", "success_bonus"]
MODES: tuple[RewardMode, ...] = ("delta", "progress", "success_bonus")
# The keys every step's info carries (NaN / "" / -1 when the gateway did not answer and the fallback was used).
INFO_KEYS = ("sarm_stage", "sarm_stage_index", "sarm_tau", "sarm_progress", "sarm_confidence", "sarm_success")
ERROR_KEY = "sarm_error"  # set, with the error's one-line text, on steps that got the fallback reward
_NEVER_FALLBACK = (InvalidArgument, Unauthenticated, PermissionDenied)


@dataclass(frozen=True)
class RewardConfig:
    """How scores become rewards, and what a step gets when the gateway cannot answer in time.

    `fallback` None: a failed step raises the client's error (Unavailable, Overloaded, DeadlineExceeded, ...).
    A number: that step, and the rest of its episode (a failed stream cannot be resumed), get this reward and the
    info says why (`sarm_error`); the next reset opens a new stream. Requests the gateway can never serve (bad
    frames, a wrong token) raise either way.
    """

    mode: RewardMode = "delta"
    success_threshold: float = 0.9  # progress at or above it counts as (predicted) success
    success_bonus: float = 1.0
    fallback: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"reward mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not 0 < self.success_threshold <= 1:
            raise ValueError(f"success_threshold must be in (0, 1], not {self.success_threshold!r}")
        if not math.isfinite(self.success_bonus):
            raise ValueError(f"success_bonus must be a finite number, not {self.success_bonus!r}")
        if self.fallback is not None and not math.isfinite(self.fallback):
            raise ValueError(f"fallback must be a finite reward or None (raise), not {self.fallback!r}")


def progress_of(frame: FrameScore) -> float:
    """The progress a reward is made of: the smoothed one when the stream smooths."""
    return frame.score.progress if frame.smoothed_progress is None else frame.smoothed_progress


def score_info(frame: FrameScore, config: RewardConfig) -> dict[str, Any]:
    score = frame.score
    return {
        "sarm_stage": score.stage_name,
        "sarm_stage_index": score.stage_index,
        "sarm_tau": score.tau,
        "sarm_progress": progress_of(frame),
        "sarm_confidence": score.confidence,
        "sarm_success": progress_of(frame) >= config.success_threshold,
    }


def missing_info(error: SarmError) -> dict[str, Any]:
    return {
        "sarm_stage": "",
        "sarm_stage_index": -1,
        "sarm_tau": math.nan,
        "sarm_progress": math.nan,
        "sarm_confidence": math.nan,
        "sarm_success": False,
        ERROR_KEY: one_line(error),
    }


def one_line(error: BaseException) -> str:
    kind = getattr(error, "code", None)
    what = kind.name if kind is not None else type(error).__name__
    return f"{what}: {' '.join(str(error).split())}"


class EpisodeReward:
    """The reward state of one episode: the last progress (for "delta"), and the error that ended its stream."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self.progress = 0.0
        self.error: SarmError | None = None

    def start(self, first: FrameScore | SarmError) -> dict[str, Any]:
        """The episode's first frame (its reset) was scored, or failed: the reset's info."""
        self.error = None
        self.progress = 0.0
        return self._failed(first) if isinstance(first, SarmError) else self._scored(first)[1]

    def step(self, scored: FrameScore | SarmError) -> tuple[float, dict[str, Any]]:
        """A step's reward and info, from its frame's score or the error that step (or an earlier one) got."""
        if isinstance(scored, SarmError):
            info = self._failed(scored)
            assert self.config.fallback is not None  # _failed raised otherwise
            return self.config.fallback, info
        return self._scored(scored)

    def _scored(self, frame: FrameScore) -> tuple[float, dict[str, Any]]:
        progress = progress_of(frame)
        if self.config.mode == "delta":
            reward = progress - self.progress
        elif self.config.mode == "progress":
            reward = progress
        else:
            reward = progress + (self.config.success_bonus if progress >= self.config.success_threshold else 0.0)
        self.progress = progress
        return float(reward), score_info(frame, self.config)

    def _failed(self, error: SarmError) -> dict[str, Any]:
        self.error = error
        # A fallback stands in for a gateway that is down, slow or overloaded, not for a request it can never serve.
        if self.config.fallback is None or isinstance(error, _NEVER_FALLBACK):
            raise error
        return missing_info(error)
