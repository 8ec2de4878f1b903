"""Per-frame progress φ of every episode of a dataset, scored by a checkpoint with causal windows.

Embeddings come from the dataset's store when `sarm embed` has filled it for the checkpoint's frame encoder
(no video, no encoder), else from the videos, encoding only the frames some scored window holds, each
once. With `stride` N every N-th frame and the last are scored and the frames between are interpolated
linearly: the windows of neighbouring frames overlap in all but one frame, so the curve is smooth at the
scale of a second and N-fold fewer windows (and, from video, fewer encoded frames) cost little accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sarm.data.lerobot import EpisodeMeta, LeRobotDataset
from sarm.embeddings import load_embeddings, require_same_encoders, store_path
from sarm.encoders.base import FrameEncoder, TextEncoder, check_encoder
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.model.modeling_sarm import SARM
from sarm.model.windows import sequence_indices, stride_frames
from sarm.scoring import score_embeddings
from sarm.training.checkpoint import CheckpointInfo, checkpoint_digest, load_checkpoint

OnEpisode = Callable[[int, int], None]  # (episodes done, episodes in total)
ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """`should_stop()` asked the computation to stop; nothing was written."""


@dataclass
class EpisodeProgress:
    episode_index: int
    index: np.ndarray  # (T,) int64 global frame index in the dataset
    progress: np.ndarray  # (T,) float32 φ per frame

    @property
    def frame_index(self) -> np.ndarray:
        return np.arange(len(self.progress), dtype=np.int64)


@dataclass
class DatasetProgress:
    episodes: list[EpisodeProgress]
    provenance: dict[str, Any] = field(default_factory=dict)  # which model, encoders, window, stride


def scored_frames(length: int, stride: int) -> np.ndarray:
    """Every `stride`-th frame from 0, and the last frame, so the curve's end is scored, never extrapolated."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1 frame, got {stride}")
    frames = np.arange(0, length, stride, dtype=np.int64)
    return frames if length == 0 or frames[-1] == length - 1 else np.append(frames, length - 1)


def interpolate(frames: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    """Values at every frame 0..length-1 from those at the sorted `frames` (linear in between)."""
    return np.interp(np.arange(length), frames, values).astype(np.float32)


class _Embeddings(Protocol):
    """Per-episode (T, cameras, D) frame embeddings (at least the `needed` rows) and instruction embeddings."""

    source: str  # recorded in the provenance
    cameras: list[str]

    def frames(self, meta: EpisodeMeta, needed: np.ndarray) -> np.ndarray: ...

    def text(self, task: str) -> np.ndarray: ...


class _StoredEmbeddings:
    source = "embedding-store"

    def __init__(self, ds: LeRobotDataset, info: CheckpointInfo) -> None:
        self._store = load_embeddings(ds, info.frame_encoder["id"])
        require_same_encoders(self._store, info.frame_encoder, info.text_encoder)
        self.cameras = list(self._store.manifest["cameras"])

    def frames(self, meta: EpisodeMeta, needed: np.ndarray) -> np.ndarray:
        return self._store.frames[meta.index]

    def text(self, task: str) -> np.ndarray:
        return self._store.text[task]


class _VideoEmbeddings:
    source = "video"

    def __init__(self, ds: LeRobotDataset, frame_encoder: FrameEncoder, text_encoder: TextEncoder) -> None:
        self._ds, self._frame_encoder, self._text_encoder = ds, frame_encoder, text_encoder
        self.cameras = ds.camera_keys
        self._texts: dict[str, np.ndarray] = {}

    def frames(self, meta: EpisodeMeta, needed: np.ndarray) -> np.ndarray:
        # Rows no window reads stay zero: they are never looked at, so they are never decoded or encoded.
        out = np.zeros((meta.length, len(self.cameras), self._frame_encoder.dim), np.float32)
        for c, camera in enumerate(self.cameras):
            out[needed, c] = self._frame_encoder.encode_frames(self._ds.frames(meta.index, camera, needed))
        return out

    def text(self, task: str) -> np.ndarray:
        if task not in self._texts:
            self._texts[task] = self._text_encoder.encode([task])[0]
        return self._texts[task]


def _embeddings(
    ds: LeRobotDataset, info: CheckpointInfo, frame_encoder: FrameEncoder | None, text_encoder: TextEncoder | None
) -> _Embeddings:
    if (store_path(ds.root, info.frame_encoder["id"]) / "manifest.json").is_file():
        return _StoredEmbeddings(ds, info)
    frame_encoder = frame_encoder or load_frame_encoder(info.frame_encoder["id"])
    text_encoder = text_encoder or load_text_encoder(info.text_encoder["id"])
    check_encoder(frame_encoder, info.frame_encoder["id"], info.frame_encoder["version"])
    check_encoder(text_encoder, info.text_encoder["id"], info.text_encoder["version"])
    return _VideoEmbeddings(ds, frame_encoder, text_encoder)


def dataset_progress(
    ds: LeRobotDataset,
    checkpoint: Path,
    stride: int = 1,
    on_episode: OnEpisode | None = None,
    should_stop: ShouldStop | None = None,
    frame_encoder: FrameEncoder | None = None,
    text_encoder: TextEncoder | None = None,
) -> DatasetProgress:
    """φ per frame of every episode, in episode order.

    `on_episode(done, total)` is called once the inputs are checked and loaded (done = 0), then after each
    episode; `should_stop()` is checked before each episode and raises Cancelled when true. Encoders are
    loaded from the registry by the checkpoint's ids unless given (a service passes the ones it holds); they
    are only needed when the dataset has no embedding store.
    """
    labeller = EpisodeLabeller(ds.root, checkpoint, stride)
    scorer = labeller.scorer(frame_encoder, text_encoder, ds)
    total = len(scorer.episodes)
    if on_episode is not None:
        on_episode(0, total)
    episodes = []
    for done, episode_index in enumerate(scorer.episodes):
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped after {done} of {total} episodes")
        episodes.append(scorer.label(episode_index))
        if on_episode is not None:
            on_episode(done + 1, total)
    return labeller.assemble(episodes, scorer.provenance, scorer.episodes)


@dataclass(frozen=True)
class EpisodeLabeller:
    """What scoring a dataset's episodes takes, as plain values: picklable, so that each process that labels
    (this one, or a Ray worker) builds its own scorer from it once, on its first `label`, and every path
    (`dataset_progress`, sarm.rabc.distributed) assembles the same DatasetProgress."""

    dataset: Path
    checkpoint: Path
    stride: int = 1  # score every N-th frame (and the last), interpolate between
    threads: int | None = None  # torch intra-op threads of the process that builds the scorer; None keeps them

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1 frame, got {self.stride}")

    def scorer(
        self,
        frame_encoder: FrameEncoder | None = None,
        text_encoder: TextEncoder | None = None,
        ds: LeRobotDataset | None = None,
    ) -> EpisodeScorer:
        """A new scorer (checkpoint, embeddings source, encoders loaded and checked); `ds` if already open."""
        return EpisodeScorer(self, frame_encoder, text_encoder, ds)

    @cached_property
    def _scorer(self) -> EpisodeScorer:  # cached_property writes __dict__ directly: fine on a frozen dataclass
        return self.scorer()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_scorer"}  # the scorer never travels

    def label(self, episode_index: int) -> EpisodeProgress:
        """φ of one episode, by this process's scorer (built on the first call)."""
        return self._scorer.label(episode_index)

    def provenance(self) -> dict[str, Any]:
        return self._scorer.provenance

    def assemble(
        self, episodes: Iterable[EpisodeProgress], provenance: dict[str, Any], expected: Sequence[int]
    ) -> DatasetProgress:
        """The episodes (in any order) as one DatasetProgress in `expected` order; refuses missing or extra ones."""
        by_index: dict[int, EpisodeProgress] = {}
        for episode in episodes:
            if episode.episode_index in by_index:
                raise ValueError(f"episode {episode.episode_index} was labelled twice")
            by_index[episode.episode_index] = episode
        missing = [i for i in expected if i not in by_index]
        extra = sorted(set(by_index) - set(expected))
        if missing or extra:
            raise ValueError(f"labels of {self.dataset} incomplete: missing episodes {missing}, unexpected {extra}")
        return DatasetProgress([by_index[i] for i in expected], provenance)


class EpisodeScorer:
    """One process's means to score episodes: the model, the dataset and its embeddings source, loaded once."""

    def __init__(
        self,
        spec: EpisodeLabeller,
        frame_encoder: FrameEncoder | None,
        text_encoder: TextEncoder | None,
        ds: LeRobotDataset | None,
    ) -> None:
        if spec.threads is not None:
            torch.set_num_threads(spec.threads)
        ds = ds if ds is not None else LeRobotDataset(spec.dataset)
        model, info = load_checkpoint(spec.checkpoint)
        source = _embeddings(ds, info, frame_encoder, text_encoder)
        if len(source.cameras) != model.config.num_cameras:
            raise ValueError(
                f"{ds.root} has {len(source.cameras)} camera(s) {source.cameras}; the checkpoint was trained on "
                f"{model.config.num_cameras}"
            )
        if model.config.state_dim:
            raise ValueError("the checkpoint reads joint state; scoring datasets with state is not supported yet")
        self._model, self._source, self._stride = model, source, spec.stride
        self._window_stride = stride_frames(ds.fps, model.config.stride_seconds)
        self._meta = {meta.index: meta for meta in ds.episodes}
        self.episodes = list(self._meta)  # in dataset order
        self.provenance = {
            "dataset": str(ds.root),
            "checkpoint": str(spec.checkpoint),
            # The same digest as the checkpoint's in an exported model repository's manifest.
            "checkpoint_sha256": checkpoint_digest(spec.checkpoint),
            "labels": info.labels,
            "frame_encoder": {k: info.frame_encoder[k] for k in ("id", "version")},
            "text_encoder": {k: info.text_encoder[k] for k in ("id", "version")},
            "embeddings": source.source,
            "cameras": source.cameras,
            "window": {
                "mode": "causal",
                "frames": model.config.window_frames,
                "stride_seconds": model.config.stride_seconds,
                "stride_frames": self._window_stride,
            },
            "fps": ds.fps,
            "score_stride": spec.stride,
            "interpolation": "linear" if spec.stride > 1 else "none",
        }

    def label(self, episode_index: int) -> EpisodeProgress:
        if episode_index not in self._meta:
            raise ValueError(f"the dataset has no episode {episode_index}")
        meta = self._meta[episode_index]
        return _episode_progress(self._model, self._source, meta, self._window_stride, self._stride)


def _episode_progress(
    model: SARM, source: _Embeddings, meta: EpisodeMeta, window_stride: int, stride: int
) -> EpisodeProgress:
    index = meta.dataset_from_index + np.arange(meta.length, dtype=np.int64)
    if meta.length == 0:
        return EpisodeProgress(meta.index, index, np.zeros(0, np.float32))
    scored = scored_frames(meta.length, stride)
    windows = sequence_indices(scored, window_stride, 0, 0, model.config.window_frames, model.config.max_rewind)
    frames = source.frames(meta, np.unique(windows.indices))
    scores = score_embeddings(model, frames, source.text(meta.task), window_stride, scored)
    return EpisodeProgress(meta.index, index, interpolate(scored, scores.progress, meta.length))
