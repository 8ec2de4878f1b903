"""Per-frame progress φ of every episode of a dataset, scored through the scoring engine (sarm.scoring) on the
checkpoint's exported graphs: ONNX Runtime in this process, or Triton.

Embeddings come from the dataset's store when `sarm embed` has filled it for the model's frame encoder (no video,
no encoder), else from the videos, encoding only the frames some scored window holds, each once. Which frames are
scored, and the interpolation between them, is the one rule of sarm.scoring.curve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from sarm.data.lerobot import EpisodeMeta, LeRobotDataset
from sarm.data.video import resize_frames
from sarm.device import CPU_PROVIDER, DeviceError, onnx_providers
from sarm.embeddings import DatasetEmbeddings, load_embeddings, require_same_encoders, store_path
from sarm.encoders.base import TextEncoder
from sarm.manifest import Manifest, read_manifest
from sarm.scoring.backends import LocalBackend
from sarm.scoring.curve import interpolate, scored_frames
from sarm.scoring.engine import Encoded, Engine, Instruction, instruction_key
from sarm.scoring.images import FrameData
from sarm.scoring.options import EngineOptions
from sarm.scoring.repository import repository_for

OnEpisode = Callable[[int, int], None]  # (episodes done, episodes in total)
ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """`should_stop()` asked the computation to stop; nothing was written."""


@dataclass
class EpisodeProgress:
    episode_index: int
    index: np.ndarray  # (T,) int64 global frame index in the dataset
    progress: np.ndarray  # (T,) float32 φ per frame: the sparse head's (progress_sparse)
    dense: np.ndarray | None = None  # (T,) float32 the dense head's, for models that have one (progress_dense)

    def head(self, name: str) -> np.ndarray:
        """The progress of head `name` (sparse or dense)."""
        if name == "sparse":
            return self.progress
        if name == "dense" and self.dense is not None:
            return self.dense
        raise ValueError(
            f"episode {self.episode_index} has no {name!r} progress: the model's heads are "
            f"{'sparse, dense' if self.dense is not None else 'sparse'}"
        )

    @property
    def frame_index(self) -> np.ndarray:
        return np.arange(len(self.progress), dtype=np.int64)


@dataclass
class DatasetProgress:
    episodes: list[EpisodeProgress]
    provenance: dict[str, Any] = field(default_factory=dict)  # which model, encoders, window, stride


class EngineHandle:
    """A scoring engine and the way to run its coroutines from this (synchronous) thread: on a loop of its own
    (`EngineHandle.open`, a CLI run or a Ray worker), or on the loop the engine lives on (a gateway's jobs thread)."""

    def __init__(
        self, engine: Engine, run: Callable[[Coroutine[Any, Any, Any]], Any], close: Callable[[], None] | None = None
    ) -> None:
        self.engine, self.run, self._close = engine, run, close

    @classmethod
    def open(
        cls,
        checkpoint: Path,
        options: EngineOptions,
        text_encoder: TextEncoder | None = None,
        providers: Sequence[str] | None = None,
    ) -> EngineHandle:
        """An engine over the checkpoint's exported repository (exported once, cached) on a loop of its own. Labelling
        reads each frame once, so only the instruction cache is kept. `providers` (sarm.device.onnx_providers) place
        the local backend's sessions (default: the CPU)."""
        options = replace(options, frame_cache_entries=0, score_cache_entries=0, redis_url=None)
        repo = repository_for(checkpoint)

        async def opened() -> Engine:  # on its loop: an asyncio client (Triton's) binds to the loop it is made on
            backend = None  # the engine's own (make_backend): the CPU, or Triton
            if providers is not None and list(providers) != [CPU_PROVIDER] and options.backend == "local":
                manifest = read_manifest(repo)
                threads, workers = options.intra_op_threads, options.inference_workers
                backend = LocalBackend(repo, manifest, threads, workers, providers=providers)
            return Engine.open(repo, options, text_encoder=text_encoder, backend=backend)

        loop = asyncio.new_event_loop()
        try:
            engine = loop.run_until_complete(opened())
        except BaseException:  # no engine, no handle: nothing else would close the loop
            loop.close()
            raise

        def close() -> None:
            loop.run_until_complete(engine.close())
            loop.close()

        return cls(engine, loop.run_until_complete, close)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def _stored_source(ds: LeRobotDataset, manifest: Manifest) -> DatasetEmbeddings | None:
    """The dataset's embedding store when `sarm embed` filled it with the model's encoders, else None (video)."""
    frame, text = manifest.frame_encoder, manifest.text_encoder
    if manifest.architecture != "sarm":  # an imported model reads CLIP features of its own kind: from the video
        return None
    if not (store_path(ds.root, frame.id) / "manifest.json").is_file():
        return None
    store = load_embeddings(ds, frame.id)
    require_same_encoders(store, {"id": frame.id, "version": frame.version}, {"id": text.id, "version": text.version})
    return store


def dataset_progress(
    ds: LeRobotDataset,
    checkpoint: Path,
    stride: int = 1,
    on_episode: OnEpisode | None = None,
    should_stop: ShouldStop | None = None,
    options: EngineOptions | None = None,
    engine: EngineHandle | None = None,
    device: str = "cpu",
) -> DatasetProgress:
    """φ per frame of every episode, in episode order.

    `on_episode(done, total)` is called once the inputs are checked and loaded (done = 0), then after each
    episode; `should_stop()` is checked before each episode and raises Cancelled when true. Scores come from
    `engine` (a gateway's jobs pass the one it serves with) or else from an engine this call opens on the
    checkpoint's exported repository with `options` (backend local or triton) on `device` (sarm.device).
    """
    labeller = EpisodeLabeller(ds.root, checkpoint, stride, options=options or EngineOptions(), device=device)
    scorer = labeller.scorer(ds, engine)
    try:
        total = len(scorer.episodes)
        if on_episode is not None:
            on_episode(0, total)
        episodes = []
        order = scorer.episodes
        for done, episode_index in enumerate(order):
            if should_stop is not None and should_stop():
                raise Cancelled(f"stopped after {done} of {total} episodes")
            # The next episode's frames decode on a thread while this one is encoded and scored.
            episodes.append(scorer.label(episode_index, then=order[done + 1] if done + 1 < total else None))
            if on_episode is not None:
                on_episode(done + 1, total)
        return labeller.assemble(episodes, scorer.provenance, scorer.episodes)
    finally:
        scorer.close()  # its decoding thread, and the engine when it opened one


@dataclass(frozen=True)
class EpisodeLabeller:
    """What scoring a dataset's episodes takes, as plain values: picklable, so that each process that labels
    (this one, or a Ray worker) builds its own scorer from it once, on its first `label`, and every path
    (`dataset_progress`, sarm.rabc.distributed) assembles the same DatasetProgress."""

    dataset: Path
    checkpoint: Path
    stride: int = 1  # score every N-th frame (and the last), interpolate between
    threads: int | None = None  # inference threads of the process that builds the scorer; None: the options'
    options: EngineOptions = field(default_factory=EngineOptions)  # backend (local or triton) and its settings
    # auto, cpu or cuda (sarm.device), resolved by the process that builds the scorer: ONNX Runtime's providers for
    # the local backend, the torch device for imported LeRobot models. Triton places its models itself.
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1 frame, got {self.stride}")

    def scorer(self, ds: LeRobotDataset | None = None, engine: EngineHandle | None = None) -> EpisodeScorer:
        """A new scorer (an engine on the checkpoint's repository unless given, the embeddings source); `ds` if
        already open."""
        return EpisodeScorer(self, ds, engine)

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
    """One process's means to score episodes: the engine, the dataset and its embeddings source, loaded once."""

    def __init__(self, spec: EpisodeLabeller, ds: LeRobotDataset | None, engine: EngineHandle | None) -> None:
        ds = ds if ds is not None else LeRobotDataset(spec.dataset)
        self._owned: EngineHandle | None = None
        if engine is None:
            options = spec.options
            if spec.threads is not None:
                options = replace(options, intra_op_threads=spec.threads)
            engine = EngineHandle.open(spec.checkpoint, options, providers=_providers(options, spec.device))
            self._owned = engine
        self._handle = engine
        manifest = engine.engine.manifest
        self._store = _stored_source(ds, manifest)
        cameras = list(self._store.manifest["cameras"]) if self._store is not None else ds.camera_keys
        if manifest.camera_keys:
            missing = [key for key in manifest.camera_keys if key not in ds.camera_keys]
            if missing:
                raise ValueError(f"{ds.root} has no camera {missing} (the model reads {list(manifest.camera_keys)})")
            cameras = list(manifest.camera_keys)
        if len(cameras) != manifest.num_cameras:
            raise ValueError(
                f"{ds.root} has {len(cameras)} camera(s) {cameras}; the model takes {manifest.num_cameras}"
            )
        if manifest.state_dim and manifest.state_key not in ds.info.get("features", {}):
            raise ValueError(f"{ds.root} has no {manifest.state_key!r} column, which this model reads (its state)")
        self._ds, self._cameras, self._stride = ds, cameras, spec.stride
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="sarm-rabc-decode")
        self._decoding: dict[int, Future[np.ndarray]] = {}  # episode -> its frames, decoding ahead
        self._window_stride = manifest.window.stride(ds.fps)
        self._meta = {meta.index: meta for meta in ds.episodes}
        self.episodes = list(self._meta)  # in dataset order
        self.provenance = {
            "dataset": str(ds.root),
            "checkpoint": str(spec.checkpoint),
            # The same digest as the checkpoint's in an exported model repository's manifest.
            "checkpoint_sha256": manifest.checkpoint.sha256,
            "labels": manifest.checkpoint.labels,
            "frame_encoder": {"id": manifest.frame_encoder.id, "version": manifest.frame_encoder.version},
            "text_encoder": {"id": manifest.text_encoder.id, "version": manifest.text_encoder.version},
            "embeddings": "video" if self._store is None else "embedding-store",
            "architecture": manifest.architecture,
            "heads": list(manifest.heads),
            "cameras": cameras,
            **({"state": manifest.state_key} if manifest.state_dim else {}),
            "window": {
                "mode": manifest.window.mode,
                "frames": manifest.window.frames,
                **({"stride_seconds": manifest.window.stride_seconds} if manifest.window.live else {}),
                "stride_frames": self._window_stride,
            },
            "fps": ds.fps,
            "score_stride": spec.stride,
            "interpolation": "linear" if spec.stride > 1 else "none",
        }

    def label(self, episode_index: int, then: int | None = None) -> EpisodeProgress:
        """φ of one episode; `then`: the episode labelled next, whose frames start decoding now (videos only)."""
        if episode_index not in self._meta:
            raise ValueError(f"the dataset has no episode {episode_index}")
        meta = self._meta[episode_index]
        decoding = self._decoding.pop(episode_index, None)
        if then is not None and self._store is None and then in self._meta and then not in self._decoding:
            self._decoding[then] = self._decoder.submit(self._decode, self._meta[then])
        images = decoding.result() if decoding is not None else None
        progress: EpisodeProgress = self._handle.run(self._label(meta, images))
        return progress

    def close(self) -> None:
        self._decoder.shutdown(wait=True, cancel_futures=True)
        if self._owned is not None:
            self._owned.close()

    def _scored(self, meta: EpisodeMeta) -> tuple[np.ndarray, np.ndarray]:
        """The episode's scored frames and the frames their windows read (sorted, unique)."""
        scored = scored_frames(meta.length, self._stride)
        windows, _ = self._handle.engine.windows(scored, self._window_stride, meta.length)
        return scored, np.unique(windows)

    def _decode(self, meta: EpisodeMeta) -> np.ndarray:
        """The frames the episode's windows read, (N, C, H, W, 3): decoded, and resized to the model's image size
        (a CLIP model crops frames of any size itself, as CLIPProcessor does: they stay as decoded)."""
        engine = self._handle.engine
        (height, width), resize = engine.image_size, engine.manifest.image_resize == "exact"
        needed = self._scored(meta)[1]
        return np.stack(
            [
                resize_frames(frames, height, width) if resize else frames
                for frames in (self._ds.frames(meta.index, camera, needed) for camera in self._cameras)
            ],
            axis=1,
        )

    async def _label(self, meta: EpisodeMeta, images: np.ndarray | None) -> EpisodeProgress:
        index = meta.dataset_from_index + np.arange(meta.length, dtype=np.int64)
        if meta.length == 0:
            return EpisodeProgress(meta.index, index, np.zeros(0, np.float32))
        engine = self._handle.engine
        scored, needed = self._scored(meta)
        frames, instruction = await self._inputs(meta, needed, images)
        scores = await engine.score_at(frames, scored.tolist(), self._window_stride, instruction, meta.length)
        sparse = interpolate(scored, np.array([s.progress for s in scores]), meta.length)
        dense = None
        if "dense" in engine.manifest.heads:
            dense = interpolate(scored, np.array([s.dense.progress for s in scores if s.dense]), meta.length)
        return EpisodeProgress(meta.index, index, sparse, dense)

    async def _inputs(
        self, meta: EpisodeMeta, needed: np.ndarray, images: np.ndarray | None
    ) -> tuple[Encoded, Instruction]:
        """The episode's time steps (T, C) as a FrameSource, filled at the `needed` frames (`images`, when already
        decoded), and its instruction."""
        engine, cameras = self._handle.engine, len(self._cameras)
        state = None
        if engine.manifest.state_dim:
            values = np.asarray(self._ds.column(meta.index, engine.manifest.state_key), np.float32)
            state = engine.state(values, meta.length, f"episode {meta.index}'s {engine.manifest.state_key}")
        if self._store is not None:
            key = instruction_key(engine.manifest.text_encoder.fingerprint, meta.task)
            return (
                Encoded.stored(self._store.frames[meta.index], f"{self._ds.root}|{meta.index}").with_state(state),
                Instruction(self._store.text[meta.task], key),
            )
        if images is None:
            images = await engine.offload(self._decode, meta)
        encoded = await engine.encode(
            [FrameData(image.tobytes(), image.shape) for image in images.reshape(-1, *images.shape[2:])]
        )
        embeddings = np.zeros((meta.length, cameras, engine.frame_dim), np.float32)
        keys = np.full((meta.length, cameras), "", dtype=object)  # rows no window reads are never looked at
        embeddings[needed] = encoded.embeddings.reshape(len(needed), cameras, -1)
        keys[needed] = encoded.keys.reshape(len(needed), cameras)
        return Encoded(embeddings, keys).with_state(state), await engine.embed_instruction(meta.task)


def _providers(options: EngineOptions, device: str) -> list[str] | None:
    """ONNX Runtime providers of the local backend for `device`; None for Triton, which places its models itself."""
    if options.backend == "local":
        return onnx_providers(device)
    if device == "cuda":
        raise DeviceError(
            "--device cuda applies to --backend local: Triton places the models by its repository's instance groups "
            "(drop --device, or export a GPU repository)"
        )
    return None
