"""Window scores by content: a window the heads have already scored is answered from the cache instead of the heads.

A window's key covers everything the heads see: the model version (checkpoint digest), the instruction (text encoder
id@version and text), the number of valid positions, and the content key (frame bytes and frame encoder id@version)
of the frame at each of its positions, padding included, camera by camera. A value is what the heads returned for
that key, so a hit is bit-identical to the score it replaces. In Redis a score is a float32 vector: stage
probabilities, τ, progress, confidence, then (for a model with a dense head) the dense stage probabilities, τ and
progress (the heads return float32, so nothing is lost).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DenseScore:
    """A dense (fine-grained subtask) head's answer for the same window."""

    stage_index: int
    stage_name: str
    stage_probs: np.ndarray  # (K_dense,)
    tau: float
    progress: float

    @classmethod
    def of(cls, stage_probs: np.ndarray, tau: float, progress: float, stage_names: Sequence[str]) -> DenseScore:
        stage = int(stage_probs.argmax())
        return cls(stage, stage_names[stage], stage_probs, float(tau), float(progress))


@dataclass(frozen=True, slots=True)
class WindowScore:
    stage_index: int
    stage_name: str
    stage_probs: np.ndarray  # (K,)
    tau: float
    progress: float
    confidence: float
    dense: DenseScore | None = None

    @classmethod
    def of(
        cls,
        stage_probs: np.ndarray,
        tau: float,
        progress: float,
        confidence: float,
        stage_names: Sequence[str],
        dense: DenseScore | None = None,
    ) -> WindowScore:
        stage = int(stage_probs.argmax())
        return cls(stage, stage_names[stage], stage_probs, float(tau), float(progress), float(confidence), dense)

    def to_vector(self) -> np.ndarray:
        values = [*self.stage_probs, self.tau, self.progress, self.confidence]
        if self.dense is not None:
            values += [*self.dense.stage_probs, self.dense.tau, self.dense.progress]
        return np.array(values, np.float32)

    @classmethod
    def from_vector(
        cls, vector: np.ndarray, stage_names: Sequence[str], dense_stage_names: Sequence[str] = ()
    ) -> WindowScore:
        k = len(stage_names)
        dense = None
        if dense_stage_names:
            d = vector[k + 3 :]
            dense = DenseScore.of(d[:-2], d[-2], d[-1], dense_stage_names)
        return cls.of(vector[:k], vector[k], vector[k + 1], vector[k + 2], stage_names, dense)

    @staticmethod
    def vector_size(stages: int, dense_stages: int) -> int:
        return stages + 3 + (dense_stages + 2 if dense_stages else 0)


def window_keys(version: str, instruction_key: str, frame_keys: np.ndarray, lengths: np.ndarray) -> list[str]:
    """One key per window from its frames' content keys (N, L, C) and valid positions `lengths` (N,)."""
    prefix = f"{version}|{instruction_key}|"
    return [
        hashlib.sha256(f"{prefix}{length}|{'|'.join(keys.ravel())}".encode()).hexdigest()
        for keys, length in zip(frame_keys, lengths.tolist(), strict=True)
    ]
