"""Per-frame SARM training targets (paper formula 2) and the stage+τ → task-progress map.

Frames follow `sarm.data.annotations`: subtask k covers [s_k, e_k) with e_k exclusive, so
τ_t = (t − s_k) / (e_k − s_k) rises by 1/L per frame, is 0 at the subtask's first frame and
(L − 1)/L at its last, and the target y = k + τ reaches k + 1 exactly where the next subtask starts:
contiguous subtasks give a continuous target with no repeated value. The frame-index baseline uses the
same convention (progress = t / T).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from sarm.data.annotations import AnnotationError, EpisodeAnnotation, annotation_problems

# After the last subtask the stage is finished but not "k + 1": keeping τ < 1 keeps floor(y) = k.
AFTER_LAST_TAU = 0.999
# Episodes-table column: the frame from which an episode undoes its progress (-1 or absent: never).
# Beside LeRobot's annotation columns, not in them: LeRobot reads the subtasks as they are and ignores it.
REGRESS_COLUMN = "regress_from_frame"


class FrameLabels(NamedTuple):
    stage: npt.NDArray[np.int64]  # (T,) stage class per frame
    tau: npt.NDArray[np.float32]  # (T,) progress within that stage, in [0, 1]

    @property
    def target(self) -> npt.NDArray[np.float32]:
        """y = k + τ: integer part the stage class, fraction the regression target."""
        return (self.stage + self.tau).astype(np.float32)


def stage_tau_labels(annotation: EpisodeAnnotation, episode_length: int, vocabulary: Sequence[str]) -> FrameLabels:
    """Stage class and τ for every frame of one episode.

    `vocabulary` lists the stage names in class order. The class is looked up by name, so a stage that
    repeats (a re-grasp after a drop) maps back to the same class and progress goes backwards.
    Edge cases (SARM.md): before the first subtask → (0, 0); in a gap → previous stage with τ = 1, which
    also covers the frames after a zero-length subtask (it has no frames of its own: done at once);
    after the last subtask → (its class, 0.999), the paper's (K − 1, 0.999) with K counted per episode.
    """
    if episode_length <= 0:
        raise AnnotationError(f"episode length must be positive, got {episode_length}")
    problems = annotation_problems(annotation, episode_length, vocabulary)
    if problems:
        raise AnnotationError("; ".join(problems))
    class_of = {name: k for k, name in enumerate(vocabulary)}
    stage = np.zeros(episode_length, dtype=np.int64)
    tau = np.zeros(episode_length, dtype=np.float32)
    subtasks = annotation.subtasks
    for j, sub in enumerate(subtasks):
        k = class_of[sub.name]
        stage[sub.start : sub.end] = k
        tau[sub.start : sub.end] = (np.arange(sub.start, sub.end) - sub.start) / max(sub.length, 1)
        is_last = j + 1 == len(subtasks)
        idle_end = episode_length if is_last else subtasks[j + 1].start
        stage[sub.end : idle_end] = k
        tau[sub.end : idle_end] = AFTER_LAST_TAU if is_last else 1.0
    return FrameLabels(stage, tau)


def regress_start(row: Mapping[str, Any]) -> int:
    """The REGRESS_COLUMN value of an episodes-table row, -1 where the column is absent or null."""
    value = row.get(REGRESS_COLUMN)
    return -1 if value is None else int(value)


def regress_labels(labels: FrameLabels, start: int) -> FrameLabels:
    """Labels of an episode that undoes its progress from frame `start` on (a failed demo's give-up retreat).

    Frame start + j takes the label of frame start − 1 − j (clamped at frame 0): the episode's own labels
    played backwards from where the regress begins. This is the form rewind augmentation gives its targets
    (a rewound frame carries an earlier frame's stage and τ), so progress falls back at the rate it rose,
    instead of the last stage's τ rising on while the robot backs away. Played backwards, a drop earlier in
    the episode would be undone (the label would jump back up to the carrying stage), so a frame keeps the
    lowest label met so far on the way back: the label never rises during a regress. "Lowest" ranks stages
    by the order in which the episode first reached them, then by τ. `start` = −1 means no regress.
    """
    length = len(labels.stage)
    if start == -1:
        return labels
    if not 0 <= start < length:
        raise AnnotationError(
            f"regress_from_frame {start} is outside the episode's frames 0..{length - 1} (-1 = no regress)"
        )
    source = np.maximum(2 * start - 1 - np.arange(start, length), 0)
    reached = list(dict.fromkeys(labels.stage[: max(start, 1)].tolist()))
    rank = {stage: r for r, stage in enumerate(reached)}
    key = np.array([rank.get(int(k), len(rank)) for k in labels.stage[source]]) + labels.tau[source]
    # Carry forward the latest source that holds the running minimum of the key.
    steps = np.arange(len(source))
    lowest = np.maximum.accumulate(np.where(key <= np.minimum.accumulate(key), steps, 0))
    frames = np.concatenate([np.arange(start), source[lowest]])
    return FrameLabels(labels.stage[frames], labels.tau[frames])


def frame_index_labels(episode_length: int) -> FrameLabels:
    """Baseline labels: one stage, progress = t / T (what SARM's stage-aware labels are compared with)."""
    if episode_length <= 0:
        raise AnnotationError(f"episode length must be positive, got {episode_length}")
    t = np.arange(episode_length)
    return FrameLabels(np.zeros(episode_length, dtype=np.int64), (t / episode_length).astype(np.float32))


def stage_breakpoints(proportions: Sequence[float]) -> npt.NDArray[np.float64]:
    """b_0 = 0, b_k = Σ_{j<k} ᾱ_j, b_K = 1 (pinned so rounding in ᾱ never leaves progress short of 1)."""
    alpha = np.asarray(proportions, dtype=np.float64)
    if alpha.ndim != 1 or alpha.size == 0 or np.any(alpha < 0):
        raise ValueError(f"proportions must be a non-empty list of non-negative numbers, got {proportions}")
    breakpoints = np.concatenate([[0.0], np.cumsum(alpha)])
    breakpoints[-1] = 1.0
    return breakpoints


def task_progress_map(
    stage_names: Sequence[str], proportions: Sequence[float], classes: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One task's progress interval [low_k, high_k) per global stage class k: the task's breakpoints
    around its stage named classes[k], and (0, 0) for classes that are not its stages (they add no
    progress). Progress of stage k at τ is low_k + (high_k − low_k)·τ."""
    b = stage_breakpoints(proportions)
    class_of = {name: k for k, name in enumerate(classes)}
    low, high = np.zeros(len(classes)), np.zeros(len(classes))
    for i, name in enumerate(stage_names):
        low[class_of[name]], high[class_of[name]] = b[i], b[i + 1]
    return low, high


def progress_from_stage_tau(
    stage: npt.ArrayLike, tau: npt.ArrayLike, proportions: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Normalised task progress b_k + ᾱ_k·τ: the piecewise-linear map of y = k + τ through the breakpoints."""
    b = stage_breakpoints(proportions)
    k = np.asarray(stage)
    if not np.issubdtype(k.dtype, np.integer) or np.any((k < 0) | (k >= b.size - 1)):
        raise ValueError(f"stage must hold integer classes in [0, {b.size - 2}], got {stage!r}")
    return b[k] + (b[k + 1] - b[k]) * np.asarray(tau, dtype=np.float64)
