"""Window scores by content: a window the heads have already scored is answered from the cache instead of the heads.

A window's key covers everything the heads see: the model version (checkpoint digest), the instruction (text encoder
id@version and text), the number of valid positions, and the content key (frame bytes and frame encoder id@version)
of the frame at each of its positions, padding included, camera by camera. A value is what the heads returned for
that key, so a hit is bit-identical to the score it replaces. In Redis a score is a float32 vector: stage
probabilities, τ, progress, confidence (the heads return float32, so nothing is lost).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class WindowScore:
    stage_index: int
    stage_name: str
    stage_probs: np.ndarray  # (K,)
    tau: float
    progress: float
    confidence: float

    @classmethod
    def of(
        cls, stage_probs: np.ndarray, tau: float, progress: float, confidence: float, stage_names: Sequence[str]
    ) -> WindowScore:
        stage = int(stage_probs.argmax())
        return cls(stage, stage_names[stage], stage_probs, float(tau), float(progress), float(confidence))

    def to_vector(self) -> np.ndarray:
        return np.array([*self.stage_probs, self.tau, self.progress, self.confidence], np.float32)

    @classmethod
    def from_vector(cls, vector: np.ndarray, stage_names: Sequence[str]) -> WindowScore:
        return cls.of(vector[:-3], vector[-3], vector[-2], vector[-1], stage_names)


def window_keys(version: str, instruction_key: str, frame_keys: np.ndarray, lengths: np.ndarray) -> list[str]:
    """One key per window from its frames' content keys (N, L, C) and valid positions `lengths` (N,)."""
    prefix = f"{version}|{instruction_key}|"
    return [
        hashlib.sha256(f"{prefix}{length}|{'|'.join(keys.ravel())}".encode()).hexdigest()
        for keys, length in zip(frame_keys, lengths.tolist(), strict=True)
    ]
