"""Training batches from stored embeddings: causal windows, rewinds and wrong instructions, all in numpy.

Everything lives in memory as arrays, so a batch is a handful of fancy-indexing operations: a training
step never decodes video or runs an encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from sarm.data.annotations import EpisodeAnnotation, stage_proportions, stage_vocabulary
from sarm.data.lerobot import DatasetError, LeRobotDataset
from sarm.embeddings import DatasetEmbeddings
from sarm.model.labels import FrameLabels, frame_index_labels, regress_labels, regress_start, stage_tau_labels
from sarm.model.windows import MAX_REWIND, WINDOW_FRAMES, rewindable, sequence_indices, stride_frames

LabelMode = Literal["stage", "frame-index"]
FRAME_INDEX_STAGE = "task"  # the single stage of the frame-index baseline
# The dataset feature a state-conditioned model reads; checkpoints name it in training["state_key"].
STATE_KEY = "observation.state"


@dataclass
class EpisodeArrays:
    dataset: str
    episode: int
    frames: np.ndarray  # (T, C, D_frame)
    text: np.ndarray  # (D_text,)
    labels: FrameLabels
    stride: int  # window stride g in frames
    success: bool | None
    quality: str | None
    state: np.ndarray | None = None  # (T, S) float32 raw joint state, when training with state

    @property
    def length(self) -> int:
        return len(self.frames)


@dataclass
class Batch:
    frames: torch.Tensor  # (B, L, C, D_frame)
    text: torch.Tensor  # (B, D_text)
    stage: torch.Tensor  # (B, L) int64
    tau: torch.Tensor  # (B, L) float32
    lengths: torch.Tensor  # (B,) valid positions
    state: torch.Tensor | None = None  # (B, L, S) raw joint state at the same positions as `frames`


def label_vocabulary(datasets: Sequence[LeRobotDataset], mode: LabelMode) -> tuple[list[str], list[dict[str, Any]]]:
    """The stage classes and the tasks (`SARMConfig.tasks` entries) of the datasets' episodes.

    Episodes are grouped by instruction, across and within datasets. Each task keeps its own stage order
    (its datasets' declared proportions order, restricted to the stages its episodes use, else the order
    stages first appear) and its own ᾱ over its own episodes; the classes are the union of the tasks'
    stages in first-seen order, so a stage name shared by tasks is one class.
    """
    if mode == "frame-index":
        instructions = dict.fromkeys(meta.task for ds in datasets for meta in ds.episodes)
        return [FRAME_INDEX_STAGE], [
            {"instruction": task, "stage_names": [FRAME_INDEX_STAGE], "proportions": [1.0]} for task in instructions
        ]
    episodes: dict[str, list[tuple[EpisodeAnnotation, int]]] = {}
    declared: dict[str, dict[str, None]] = {}  # instruction -> declared stage order of its datasets
    for ds in datasets:
        order = dict.fromkeys(ds.proportions() or {})
        for meta in ds.episodes:
            episodes.setdefault(meta.task, []).append((ds.require_annotation(meta.index), meta.length))
            declared.setdefault(meta.task, {}).update(order)
    tasks: list[dict[str, Any]] = []
    for task, pairs in episodes.items():
        used = stage_vocabulary(ann for ann, _ in pairs)
        # A stage used but not declared is left out, so stage_proportions names it in its error.
        vocabulary = [name for name in declared[task] if name in used] if declared[task] else used
        alpha = stage_proportions(pairs, vocabulary)
        tasks.append({"instruction": task, "stage_names": vocabulary, "proportions": [alpha[n] for n in vocabulary]})
    classes = list(dict.fromkeys(name for task in tasks for name in task["stage_names"]))
    return classes, tasks


def state_width(datasets: Sequence[LeRobotDataset], key: str = STATE_KEY) -> int:
    """The width S of the datasets' `key` feature; every dataset must declare it, all with one width."""
    widths: dict[str, int] = {}
    for ds in datasets:
        feature = ds.info.get("features", {}).get(key)
        if feature is None:
            raise DatasetError(f"{ds.root} has no {key!r} feature, which --state trains on: drop --state")
        shape = list(feature.get("shape") or [])
        if len(shape) != 1 or int(shape[0]) < 1:
            raise DatasetError(f"{ds.root}'s {key!r} feature has shape {shape}; --state needs one vector per frame")
        widths[str(ds.root)] = int(shape[0])
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"{root} ({width})" for root, width in widths.items())
        raise DatasetError(f"the datasets' {key!r} widths differ, so one model cannot read them all: {listed}")
    return next(iter(widths.values()))


def episode_state(ds: LeRobotDataset, episode: int, length: int, key: str, width: int) -> np.ndarray:
    """(T, S) float32 joint state of one episode, checked against its length and the declared width."""
    values = np.asarray(ds.column(episode, key), dtype=np.float32)
    if values.shape != (length, width):
        raise DatasetError(
            f"{ds.root} episode {episode}: {key!r} has shape {values.shape}, expected ({length}, {width})"
        )
    if not np.all(np.isfinite(values)):
        raise DatasetError(f"{ds.root} episode {episode}: {key!r} holds NaN or infinite values")
    return values


def state_statistics(episodes: Sequence[EpisodeArrays]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of the joint state over every frame of `episodes`, in float64 then float32."""
    states = [e.state for e in episodes if e.state is not None]
    if len(states) != len(episodes) or not states:
        raise ValueError("state statistics need the joint state of every episode")
    rows = np.concatenate(states).astype(np.float64)
    return rows.mean(axis=0).astype(np.float32), rows.std(axis=0).astype(np.float32)


def episode_arrays(
    ds: LeRobotDataset,
    embeddings: DatasetEmbeddings,
    vocabulary: Sequence[str],
    mode: LabelMode,
    stride_seconds: float = 1.0,
    state_key: str | None = None,
) -> list[EpisodeArrays]:
    """One EpisodeArrays per episode; with `state_key`, each also holds that feature's raw values."""
    stride = stride_frames(ds.fps, stride_seconds)
    width = state_width([ds], state_key) if state_key else 0
    columns = set(ds.episodes_table.column_names)
    episodes = []
    for meta in ds.episodes:
        if mode == "stage":
            labels = stage_tau_labels(ds.require_annotation(meta.index), meta.length, vocabulary)
            labels = regress_labels(labels, regress_start(meta.row))
        else:
            labels = frame_index_labels(meta.length)
        episodes.append(
            EpisodeArrays(
                dataset=str(ds.root),
                episode=meta.index,
                frames=embeddings.frames[meta.index],
                text=embeddings.text[meta.task],
                labels=labels,
                stride=stride,
                success=bool(meta.row["success"]) if "success" in columns else None,
                quality=str(meta.row["quality"]) if "quality" in columns else None,
                state=episode_state(ds, meta.index, meta.length, state_key, width) if state_key else None,
            )
        )
    return episodes


def split_episodes(
    episodes: list[EpisodeArrays], val_fraction: float, seed: int
) -> tuple[list[EpisodeArrays], list[EpisodeArrays]]:
    """Split by episode (never by frame: neighbouring frames of one demo would leak into validation)."""
    order = np.random.default_rng(seed).permutation(len(episodes))
    n_val = round(len(episodes) * val_fraction) if len(episodes) > 1 else 0
    val = {int(i) for i in order[:n_val]}
    return [e for i, e in enumerate(episodes) if i not in val], [e for i, e in enumerate(episodes) if i in val]


class WindowSampler:
    """Draws training windows uniformly over frames, with SARM's augmentations (SARM.md, "Training").

    Wrong instructions come from two sources: `distractors` (phrases unrelated to every task, see
    training.negatives) and, when the episodes hold several tasks, the other tasks' own instructions
    (share `cross_task_p` of the wrong-instruction windows): a pick-place video under the peg-insert
    instruction is the negative the model meets in a multi-task deployment. Each window draws its own.
    """

    def __init__(
        self,
        episodes: list[EpisodeArrays],
        distractors: np.ndarray,
        rewind_p: float = 0.8,
        wrong_instruction_p: float = 0.2,
        window_frames: int = WINDOW_FRAMES,
        max_rewind: int = MAX_REWIND,
        cross_task_p: float = 0.5,
    ):
        if not episodes:
            raise ValueError("no training episodes")
        if len(distractors) == 0:
            raise ValueError("no distractor instructions for the wrong-instruction augmentation")
        with_state = {e.state is not None for e in episodes}
        if len(with_state) > 1:
            raise ValueError("either every episode carries joint state or none does")
        self.episodes = episodes
        self.with_state = with_state == {True}
        self.rewind_p, self.wrong_instruction_p, self.cross_task_p = rewind_p, wrong_instruction_p, cross_task_p
        self.window_frames, self.max_rewind = window_frames, max_rewind
        lengths = np.array([e.length for e in episodes])
        self._episode_weights = lengths / lengths.sum()
        # Negatives: the distractors, then one row per distinct instruction of the episodes.
        instructions, self._task_of = np.unique(np.stack([e.text for e in episodes]), axis=0, return_inverse=True)
        self._task_of = self._task_of.reshape(-1)
        self.num_distractors = len(distractors)
        self.negatives = np.concatenate([distractors, instructions.astype(distractors.dtype)])

    @property
    def num_tasks(self) -> int:
        return len(self.negatives) - self.num_distractors

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        picks = rng.choice(len(self.episodes), size=batch_size, p=self._episode_weights)
        t = np.array([rng.integers(self.episodes[i].length) for i in picks])
        # Only windows with distinct middle frames rewind (t ≥ 8 frames), so every rewound frame is earlier.
        rewinds = np.where(
            (rng.random(batch_size) < self.rewind_p) & rewindable(t, 0, self.window_frames),
            rng.integers(1, self.max_rewind + 1, batch_size),
            0,
        )
        wrong = rng.random(batch_size) < self.wrong_instruction_p
        distractor = np.where(wrong, rng.integers(self.num_distractors, size=batch_size), -1)
        if self.num_tasks > 1:
            # Another task's instruction: draw among the other tasks by skipping over the episode's own.
            own = self._task_of[picks]
            other = rng.integers(self.num_tasks - 1, size=batch_size)
            other = other + (other >= own)
            cross = wrong & (rng.random(batch_size) < self.cross_task_p)
            distractor = np.where(cross, self.num_distractors + other, distractor)
        return self.batch(picks, t, rewinds, distractor)

    def batch(self, picks: np.ndarray, t: np.ndarray, rewinds: np.ndarray, distractor: np.ndarray) -> Batch:
        """Windows ending at frame t[i] of episode picks[i]; distractor[i] ≥ 0 swaps in row distractor[i] of
        `negatives` (a distractor, or another task's instruction) and sets every target to 0, -1 keeps the
        episode's own instruction."""
        own = self.num_distractors + self._task_of[np.asarray(picks, dtype=np.int64)]
        if np.any(np.asarray(distractor) == own):
            raise ValueError("a wrong-instruction window cannot use the episode's own instruction")
        frames, texts, stages, taus, states = [], [], [], [], []
        lengths = np.empty(len(picks), dtype=np.int64)
        for row, (i, ti, n, d) in enumerate(zip(picks, t, rewinds, distractor, strict=True)):
            ep = self.episodes[int(i)]
            seq = sequence_indices(ti, ep.stride, 0, n, self.window_frames, self.max_rewind)
            index = seq.indices[0]
            lengths[row] = seq.lengths[0]
            frames.append(ep.frames[index])
            if ep.state is not None:
                states.append(ep.state[index])  # the same positions as the frames: rewinds and padding alike
            if d >= 0:
                texts.append(self.negatives[d])
                stages.append(np.zeros(len(index), np.int64))
                taus.append(np.zeros(len(index), np.float32))
            else:
                texts.append(ep.text)
                stages.append(ep.labels.stage[index])
                taus.append(ep.labels.tau[index])
        return Batch(
            frames=torch.from_numpy(np.stack(frames)).float(),
            text=torch.from_numpy(np.stack(texts)).float(),
            stage=torch.from_numpy(np.stack(stages)),
            tau=torch.from_numpy(np.stack(taus)).float(),
            lengths=torch.from_numpy(lengths),
            state=torch.from_numpy(np.stack(states)).float() if self.with_state else None,
        )
