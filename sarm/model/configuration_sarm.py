"""SARM model configuration: what a checkpoint needs to rebuild its networks and read its outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

# Sizes only; everything else comes from the dataset (stages, proportions, encoder widths, cameras).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's networks: ≈119 M trainable parameters for both with 512-d CLIP inputs.
    "paper": {"d_model": 768, "n_layers": 8, "n_heads": 12, "ffn_dim": 3072, "dropout": 0.1},
    # Trains on a CPU in minutes; the sequence is only 13 steps of a few tokens each.
    "small": {"d_model": 128, "n_layers": 2, "n_heads": 4, "ffn_dim": 512, "dropout": 0.1},
}


@dataclass
class SARMConfig:
    stage_names: list[str]  # class order of the stage classifier
    proportions: list[float]  # ᾱ_k per stage (formula 1), same order, sums to 1
    frame_dim: int = 512  # frame-encoder embedding width
    text_dim: int = 512  # instruction-encoder embedding width
    state_dim: int = 0  # joint-state width; 0 = no state stream
    num_cameras: int = 1
    d_model: int = 768
    n_layers: int = 8
    n_heads: int = 12
    ffn_dim: int = 3072
    dropout: float = 0.1
    window_frames: int = 9
    max_rewind: int = 4
    stride_seconds: float = 1.0
    # Probability that the subtask net is fed the true stage in training (else the stage net's argmax).
    # LeRobot's 0.75 rather than the official 0.5: the τ target stays the true τ even when the predicted
    # stage is wrong, so mostly-true conditioning limits that label noise while a quarter of the windows
    # still expose the subtask net to the stage net's mistakes it will see at inference.
    teacher_forcing: float = 0.75

    def __post_init__(self) -> None:
        self.stage_names = [str(name) for name in self.stage_names]
        self.proportions = [float(p) for p in self.proportions]
        problems = self._problems()
        if problems:
            raise ValueError("invalid SARMConfig: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems: list[str] = []
        k = len(self.stage_names)
        if k == 0:
            problems.append("stage_names is empty: a model needs at least one stage")
        if len(set(self.stage_names)) != k:
            problems.append(f"stage_names has duplicates: {self.stage_names}")
        if len(self.proportions) != k:
            problems.append(f"{len(self.proportions)} proportions for {k} stages")
        if any(not math.isfinite(p) or p < 0 for p in self.proportions):
            problems.append(f"proportions must be finite and non-negative, got {self.proportions}")
        elif self.proportions and abs(sum(self.proportions) - 1.0) > 1e-3:
            problems.append(f"proportions must sum to 1, got {sum(self.proportions):.6f}")
        for name in ("frame_dim", "text_dim", "num_cameras", "d_model", "n_layers", "n_heads", "ffn_dim"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.state_dim < 0:
            problems.append(f"state_dim must be >= 0 (0 = no joint state), got {self.state_dim}")
        if self.n_heads >= 1 and self.d_model % self.n_heads:
            problems.append(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if k > self.d_model:
            problems.append(f"{k} stages do not fit a one-hot padded to d_model {self.d_model}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.window_frames < 2:
            problems.append(f"window_frames must be >= 2 (start frame and t), got {self.window_frames}")
        # Rewinds replay the window's own history backwards, so they cannot outnumber its middle frames.
        if not 0 <= self.max_rewind < self.window_frames - 1:
            problems.append(f"max_rewind must be in [0, window_frames - 1), got {self.max_rewind}")
        if not self.stride_seconds > 0:
            problems.append(f"stride_seconds must be positive, got {self.stride_seconds}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            problems.append(f"teacher_forcing must be a probability, got {self.teacher_forcing}")
        return problems

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)

    @property
    def sequence_length(self) -> int:
        """Static model input length: the window plus room for the longest rewind."""
        return self.window_frames + self.max_rewind

    @classmethod
    def from_preset(
        cls, preset: str, stage_names: Sequence[str], proportions: Sequence[float], **overrides: Any
    ) -> SARMConfig:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
        return cls(list(stage_names), list(proportions), **{**PRESETS[preset], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SARMConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SARMConfig keys {sorted(unknown)}: written by a newer version?")
        return cls(**data)
