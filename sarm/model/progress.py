"""Confidence-weighted smoothing of a stream of progress scores (SARM.md "Inference over an episode")."""

from __future__ import annotations

from collections import deque


class ConfidenceSmoother:
    """Σ c^p·v / Σ c^p over the last `history` accepted (value, confidence) pairs, p = 3 by default.

    Updates whose stage confidence is below `min_confidence` are not remembered: a glance at an ambiguous
    frame should not move the curve. Until something has been accepted the raw value passes through, so a
    stream always gets a number back.
    """

    def __init__(self, history: int = 10, min_confidence: float = 0.9, power: float = 3.0) -> None:
        if history < 1 or not 0.0 < min_confidence <= 1.0:
            raise ValueError(f"need history >= 1 and min_confidence in (0, 1], got {history}, {min_confidence}")
        self.min_confidence = min_confidence
        self.power = power
        self._pairs: deque[tuple[float, float]] = deque(maxlen=history)

    def update(self, value: float, confidence: float) -> float:
        if confidence >= self.min_confidence:
            self._pairs.append((value, confidence))
        if not self._pairs:
            return value
        weights = [c**self.power for _, c in self._pairs]
        return sum(w * v for w, (v, _) in zip(weights, self._pairs, strict=True)) / sum(weights)

    def reset(self) -> None:
        """Forget the history: call at the start of each episode."""
        self._pairs.clear()
