"""SARM model configuration: what a checkpoint needs to rebuild its networks and read its outputs."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

TASK_KEYS = ("instruction", "stage_names", "proportions")

# Sizes only; everything else comes from the dataset (stages, proportions, encoder widths, cameras).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's networks: ≈119 M trainable parameters for both with 512-d CLIP inputs.
    "paper": {"d_model": 768, "n_layers": 8, "n_heads": 12, "ffn_dim": 3072, "dropout": 0.1},
    # Trains on a CPU in minutes; the sequence is only 13 steps of a few tokens each.
    "small": {"d_model": 128, "n_layers": 2, "n_heads": 4, "ffn_dim": 512, "dropout": 0.1},
}


@dataclass
class SARMConfig:
    """Sizes, window and the tasks one model covers.

    `stage_names` are the classifier's classes: the union of every task's stages, so a stage name shared by
    tasks ("reach") is one class. Each entry of `tasks` is {"instruction": str, "stage_names": that task's
    stages in its own order, "proportions": their ᾱ (formula 1), summing to 1}; progress maps stage + τ
    through the ᾱ of the task the instruction selects. Single-task shorthand (and configs written before
    `tasks` existed): give `proportions` per class and no `tasks`, and the one task is built from them.
    `proportions` is otherwise derived: the first task's ᾱ per class (0 for classes it lacks), kept for
    readers of single-task manifests; progress never uses it.
    """

    stage_names: list[str]  # class order of the stage classifier
    proportions: list[float] = field(default_factory=list)  # ᾱ per class of the first task (see above)
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
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stage_names = [str(name) for name in self.stage_names]
        self.proportions = [float(p) for p in self.proportions]
        if not self.tasks and self.proportions:  # the single-task shorthand
            self.tasks = [{"instruction": "", "stage_names": self.stage_names, "proportions": self.proportions}]
        problems = self._stage_problems(self.stage_names, None, "") + self._task_problems() + self._size_problems()
        problems = list(dict.fromkeys(problems))  # the shorthand's task repeats stage_names' own problems
        if not problems:
            self.tasks = [
                {
                    "instruction": str(t["instruction"]),
                    "stage_names": [str(n) for n in t["stage_names"]],
                    "proportions": [float(p) for p in t["proportions"]],
                }
                for t in self.tasks
            ]
            first = self.class_proportions(0)
            same = len(self.proportions) == len(first) and all(
                math.isclose(a, b, abs_tol=1e-6) for a, b in zip(self.proportions, first, strict=True)
            )
            if self.proportions and not same:
                problems.append(f"proportions {self.proportions} are not the first task's ᾱ per class {first}")
            self.proportions = first
        if problems:
            raise ValueError("invalid SARMConfig: " + "; ".join(problems))

    @staticmethod
    def _stage_problems(names: Sequence[str], proportions: Sequence[float] | None, where: str) -> list[str]:
        """Problems of a stage list and (unless None) its ᾱ; `where` prefixes the messages."""
        problems: list[str] = []
        k = len(names)
        if k == 0:
            problems.append(f"{where}stage_names is empty: a model needs at least one stage")
        if len(set(names)) != k:
            problems.append(f"{where}stage_names has duplicates: {list(names)}")
        if proportions is None:
            return problems
        if len(proportions) != k:
            problems.append(f"{where}{len(proportions)} proportions for {k} stages")
        if any(not isinstance(p, numbers.Real) or not math.isfinite(p) or p < 0 for p in proportions):
            problems.append(f"{where}proportions must be finite and non-negative, got {list(proportions)}")
        elif proportions and abs(sum(proportions) - 1.0) > 1e-3:
            problems.append(f"{where}proportions must sum to 1, got {sum(proportions):.6f}")
        return problems

    def _task_problems(self) -> list[str]:
        if not self.tasks:
            return ["no tasks: give `tasks`, or `proportions` for a single-task model"]
        problems: list[str] = []
        for j, task in enumerate(self.tasks):
            where = "" if len(self.tasks) == 1 else f"task {j}: "
            if not isinstance(task, dict) or set(task) != set(TASK_KEYS):
                problems.append(f"task {j}: expected the keys {list(TASK_KEYS)}, got {task!r}")
                continue
            problems += self._stage_problems(list(task["stage_names"]), list(task["proportions"]), where)
            unknown = [name for name in task["stage_names"] if name not in self.stage_names]
            if unknown:
                problems.append(f"{where}stages {unknown} are not in stage_names {self.stage_names}")
        # The instruction embedding selects the task, so two tasks with one instruction would be ambiguous.
        instructions = [t["instruction"] for t in self.tasks if isinstance(t, dict) and "instruction" in t]
        if len(set(instructions)) != len(instructions):
            problems.append(f"tasks share an instruction: {instructions}")
        return problems

    def _size_problems(self) -> list[str]:
        problems: list[str] = []
        k = len(self.stage_names)
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
    def num_tasks(self) -> int:
        return len(self.tasks)

    def class_proportions(self, task: int) -> list[float]:
        """ᾱ of task `task` per stage class, 0 for classes that are not stages of that task."""
        alpha = dict(zip(self.tasks[task]["stage_names"], self.tasks[task]["proportions"], strict=True))
        return [float(alpha.get(name, 0.0)) for name in self.stage_names]

    @property
    def sequence_length(self) -> int:
        """Static model input length: the window plus room for the longest rewind."""
        return self.window_frames + self.max_rewind

    @classmethod
    def from_preset(
        cls, preset: str, stage_names: Sequence[str], proportions: Sequence[float] = (), **overrides: Any
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
