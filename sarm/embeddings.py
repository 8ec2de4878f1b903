"""Frozen embeddings stored beside a dataset, so training and evaluation never touch video.

Layout, under `<dataset>/sarm_embeddings/<frame encoder id>/`:
    manifest.json                      encoders (id + version; frame_encoder.quantization for INT8 embeddings),
                                       cameras, dims, tasks, distractors
    text.npy                           (num tasks, D_text), rows in manifest["tasks"] order
    distractors.npy                    (num distractors, D_text): unrelated instructions (augmentation)
    <camera>/episode_000042.npy        (T, D_frame) float32, one file per episode, written atomically

Each episode file is written once; a rerun skips what exists, so `sarm embed` resumes after a stop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sarm.data.lerobot import LeRobotDataset
from sarm.encoders.base import EncoderMismatchError, TextEncoder

STORE_DIR = "sarm_embeddings"
# Instructions unrelated to any manipulation task we generate: the wrong-instruction augmentation swaps
# one of these in and trains all targets to 0 (SARM.md, "Training").
DISTRACTORS = (
    "water the plants on the balcony",
    "sing a song about the ocean",
    "write a letter to your grandmother",
    "count the clouds in the sky",
    "bake a chocolate cake",
    "tie your shoelaces",
    "paint the fence blue",
    "read the newspaper aloud",
    "walk the dog around the park",
    "fold the laundry into the drawer",
    "sweep the kitchen floor",
    "play the piano softly",
    "turn off the television",
    "feed the cat at noon",
    "purple elephant quietly seventeen",
    "banana telescope under the rain",
)


def store_path(dataset_root: Path, frame_encoder_id: str) -> Path:
    return dataset_root / STORE_DIR / frame_encoder_id


def _episode_file(store: Path, camera: str, episode: int) -> Path:
    return store / camera / f"episode_{episode:06d}.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class FrameEncoding(Protocol):
    """What embedding a dataset needs of a frame encoder: a torch FrameEncoder or an OnnxFrameEncoder."""

    encoder_id: str
    version: str
    dim: int

    def encode_frames(self, frames: np.ndarray, batch_size: int = 8) -> np.ndarray: ...


def encoder_identity(frame_encoder: FrameEncoding) -> dict[str, Any]:
    """id, version and dim, plus `quantization` for an INT8 encoder (absent: float)."""
    identity = getattr(frame_encoder, "identity", None)
    if callable(identity):
        return dict(identity())
    return {"id": frame_encoder.encoder_id, "version": frame_encoder.version, "dim": frame_encoder.dim}


def quantization_mode(encoder: dict[str, Any]) -> str:
    """ "float", or the quantization mode an encoder record names (e.g. "int8-qdq-per-channel")."""
    return str(encoder.get("quantization", {}).get("mode", "float"))


def embed_dataset(
    ds: LeRobotDataset,
    frame_encoder: FrameEncoding,
    text_encoder: TextEncoder,
    batch_size: int = 32,
    on_episode: Callable[[int, int], None] | None = None,
) -> Path:
    """Encode every frame of every camera once (skipping episodes already stored); returns the store.

    `on_episode(episode_index, frames_encoded)` reports progress (frames_encoded is 0 when skipped).
    """
    store = store_path(ds.root, frame_encoder.encoder_id)
    tasks = list(ds.tasks.values())
    manifest: dict[str, Any] = {
        "frame_encoder": encoder_identity(frame_encoder),
        "text_encoder": {"id": text_encoder.encoder_id, "version": text_encoder.version, "dim": text_encoder.dim},
        "cameras": ds.camera_keys,
        "tasks": tasks,
        "distractors": list(DISTRACTORS),
    }
    manifest_file = store / "manifest.json"
    if manifest_file.exists():
        previous = json.loads(manifest_file.read_text())
        encoders = ("frame_encoder", "text_encoder")
        if [previous[k] for k in encoders] != [manifest[k] for k in encoders]:
            raise EncoderMismatchError(
                f"{store} holds embeddings from {previous['frame_encoder']} / {previous['text_encoder']}; "
                "delete it to re-embed with the current encoders"
            )
    store.mkdir(parents=True, exist_ok=True)
    _save_atomic(store / "text.npy", text_encoder.encode(tasks))
    _save_atomic(store / "distractors.npy", text_encoder.encode(list(DISTRACTORS)))
    manifest_file.write_text(json.dumps(manifest, indent=2))
    for meta in ds.episodes:
        encoded = 0
        for camera in ds.camera_keys:
            path = _episode_file(store, camera, meta.index)
            if path.exists():
                continue
            frames = ds.frames(meta.index, camera)
            _save_atomic(path, frame_encoder.encode_frames(frames, batch_size=batch_size))
            encoded += len(frames)
        if on_episode is not None:
            on_episode(meta.index, encoded)
    return store


@dataclass
class DatasetEmbeddings:
    """Everything training needs from one dataset, in memory: no video, no encoder."""

    root: Path
    manifest: dict[str, Any]
    frames: dict[int, np.ndarray]  # episode -> (T, num_cameras, D_frame)
    text: dict[str, np.ndarray]  # task instruction -> (D_text,)
    distractors: np.ndarray  # (num distractors, D_text)

    @property
    def frame_encoder(self) -> dict[str, Any]:
        return dict(self.manifest["frame_encoder"])

    @property
    def text_encoder(self) -> dict[str, Any]:
        return dict(self.manifest["text_encoder"])


def load_embeddings(ds: LeRobotDataset, frame_encoder_id: str | None = None) -> DatasetEmbeddings:
    """The stored embeddings of `ds`; a clear error names the command to run when any are missing."""
    root = ds.root / STORE_DIR
    candidates = [frame_encoder_id] if frame_encoder_id else sorted(p.name for p in root.glob("*") if p.is_dir())
    if not candidates or not (root / candidates[0] / "manifest.json").is_file():
        raise FileNotFoundError(f"{ds.root} has no stored embeddings: run `sarm embed {ds.root}` first")
    if len(candidates) > 1:
        raise ValueError(f"{root} holds embeddings of several encoders {candidates}: name one")
    store = root / candidates[0]
    manifest = json.loads((store / "manifest.json").read_text())
    frames = {}
    for meta in ds.episodes:
        paths = [_episode_file(store, camera, meta.index) for camera in manifest["cameras"]]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} is missing: `sarm embed {ds.root}` was interrupted; rerun it")
        frames[meta.index] = np.stack([np.load(p) for p in paths], axis=1)
        if len(frames[meta.index]) != meta.length:
            raise ValueError(f"{paths[0]} has {len(frames[meta.index])} rows for an episode of {meta.length} frames")
    text = dict(zip(manifest["tasks"], np.load(store / "text.npy"), strict=True))
    return DatasetEmbeddings(ds.root, manifest, frames, text, np.load(store / "distractors.npy"))


def require_same_encoders(
    embeddings: DatasetEmbeddings, frame_encoder: dict[str, Any], text_encoder: dict[str, Any]
) -> None:
    """Refuse data embedded with other encoders than a checkpoint's: ids, versions and quantization must match
    (INT8 embeddings differ from float ones by a few percent, which a float checkpoint must not take silently)."""
    pairs = (("frame", frame_encoder, embeddings.frame_encoder), ("text", text_encoder, embeddings.text_encoder))
    for kind, expected, got in pairs:
        if (expected["id"], expected["version"]) != (got["id"], got["version"]):
            raise EncoderMismatchError(
                f"{embeddings.root} was embedded with {kind} encoder {got['id']}@{got['version']} but the checkpoint "
                f"expects {expected['id']}@{expected['version']}: re-embed the dataset with the checkpoint's encoder"
            )
        if quantization_mode(expected) != quantization_mode(got):
            raise EncoderMismatchError(
                f"{embeddings.root} was embedded with the {quantization_mode(got)} {kind} encoder but the checkpoint "
                f"expects the {quantization_mode(expected)} one: re-embed the dataset "
                f"({'without' if quantization_mode(expected) == 'float' else 'with'} `sarm embed --quantize int8`)"
            )
