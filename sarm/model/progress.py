"""Causal filters on a stream of progress scores: what a live episode's smoothed progress is made of.

Each filter sees one scored frame at a time (its index, progress and stage confidence) and returns the smoothed
progress; nothing after the frame is used, so a stream and a whole-episode call give the same values.
- `OneEuroFilter`, the default: the one-euro filter (Casiez et al., CHI 2012), a low-pass whose cut-off rises with
  the curve's speed (steady while progress holds, quick while it moves), with its gain scaled by confidence^p so that
  an ambiguous frame moves the curve less. Time-aware: it reads the gap between scored frames, so it behaves the same
  at any frame rate or scoring interval.
- `ConfidenceSmoother`: the official code's Σ c³·v / Σ c³ over the last 10 confident scores (SARM.md "Inference over
  an episode").
`bench/curve_filters.py` measures both against the raw curve on held-out demos.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol


class ProgressFilter(Protocol):
    def update(self, frame_index: int, value: float, confidence: float) -> float:
        """The smoothed progress at `frame_index` (increasing from call to call) given its raw score."""
        ...


class ConfidenceSmoother:
    """Σ c^p·v / Σ c^p over the last `history` accepted (value, confidence) pairs, p = 3 by default.

    Updates whose stage confidence is below `min_confidence` are not remembered: a glance at an ambiguous
    frame should not move the curve. Until something has been accepted the raw value passes through, so a
    stream always gets a number back. It counts scores, not time: its lag grows with the scoring interval.
    """

    def __init__(self, history: int = 10, min_confidence: float = 0.9, power: float = 3.0) -> None:
        if history < 1 or not 0.0 < min_confidence <= 1.0:
            raise ValueError(f"need history >= 1 and min_confidence in (0, 1], got {history}, {min_confidence}")
        self.min_confidence = min_confidence
        self.power = power
        self._pairs: deque[tuple[float, float]] = deque(maxlen=history)

    def update(self, frame_index: int, value: float, confidence: float) -> float:
        if confidence >= self.min_confidence:
            self._pairs.append((value, confidence))
        if not self._pairs:
            return value
        weights = [c**self.power for _, c in self._pairs]
        return sum(w * v for w, (v, _) in zip(weights, self._pairs, strict=True)) / sum(weights)


def _smoothing_factor(cutoff_hz: float, seconds: float) -> float:
    """The exponential smoothing factor of a first-order low-pass at `cutoff_hz` over a step of `seconds`."""
    r = 2.0 * math.pi * cutoff_hz * seconds
    return 1.0 if math.isinf(r) else r / (r + 1.0)  # a cut-off so high that r overflows passes values through


class OneEuroFilter:
    """The one-euro filter on progress, each step's gain scaled by the frame's confidence^`confidence_power`.

    Per scored frame, dt seconds after the previous one: the speed estimate follows (x − y)/dt through a low-pass at
    `derivative_cutoff_hz`; the value follows x through a low-pass at `min_cutoff_hz` + `beta`·|speed|. The first
    frame passes through. Defaults are the ones measured best on held-out demos (docs/model.md).
    """

    def __init__(
        self,
        fps: float,
        min_cutoff_hz: float = 1.0,
        beta: float = 0.5,
        derivative_cutoff_hz: float = 1.0,
        confidence_power: float = 2.0,
    ) -> None:
        finite = all(math.isfinite(v) for v in (fps, min_cutoff_hz, beta, derivative_cutoff_hz, confidence_power))
        if not finite or fps <= 0 or min_cutoff_hz <= 0 or derivative_cutoff_hz <= 0 or beta < 0:
            raise ValueError(
                f"need fps, cut-offs > 0 and beta >= 0 (finite), got fps {fps}, min_cutoff_hz {min_cutoff_hz}, "
                f"beta {beta}, derivative_cutoff_hz {derivative_cutoff_hz}"
            )
        self.fps, self.min_cutoff_hz, self.beta = fps, min_cutoff_hz, beta
        self.derivative_cutoff_hz, self.confidence_power = derivative_cutoff_hz, confidence_power
        self._last: tuple[int, float, float] | None = None  # (frame index, value, speed per second)

    def update(self, frame_index: int, value: float, confidence: float) -> float:
        if self._last is None:
            self._last = (frame_index, value, 0.0)
            return value
        last_index, y, speed = self._last
        if frame_index <= last_index:
            raise ValueError(f"frames must come in order: {frame_index} after {last_index}")
        dt = (frame_index - last_index) / self.fps
        gain = max(0.0, min(1.0, confidence)) ** self.confidence_power
        speed += gain * _smoothing_factor(self.derivative_cutoff_hz, dt) * ((value - y) / dt - speed)
        y += gain * _smoothing_factor(self.min_cutoff_hz + self.beta * abs(speed), dt) * (value - y)
        self._last = (frame_index, y, speed)
        return y
