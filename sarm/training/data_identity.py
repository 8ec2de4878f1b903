"""Which data a checkpoint was trained on, recorded so that `sarm eval` can tell held-out data from it.

A dataset's identity is its resolved root, a digest of meta/info.json and the episodes table files (a
byte-for-byte copy elsewhere has the same digest), and one fingerprint per episode: a digest of its task,
length and per-frame actions and states. Fingerprints catch partial overlap, e.g. held-out demos that
are a subset or a re-packing of training demos; they cannot catch the same scene re-recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sarm.data.lerobot import LeRobotDataset

# Per-frame columns that make an episode's fingerprint (those present are used).
CONTENT_COLUMNS = ("action", "observation.state")


@dataclass(frozen=True)
class DatasetIdentity:
    root: str
    digest: str
    episodes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "digest": self.digest, "episodes": list(self.episodes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetIdentity:
        return cls(str(data["root"]), str(data["digest"]), tuple(str(e) for e in data.get("episodes", ())))


def dataset_identity(ds: LeRobotDataset) -> DatasetIdentity:
    meta = ds.root / "meta"
    digest = hashlib.sha256()
    for path in [meta / "info.json", *sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))]:
        digest.update(path.relative_to(ds.root).as_posix().encode() + b"\0" + path.read_bytes())
    return DatasetIdentity(str(ds.root.resolve()), digest.hexdigest()[:32], tuple(episode_fingerprints(ds)))


def episode_fingerprints(ds: LeRobotDataset) -> list[str]:
    frames = ds.frames_table
    columns = [c for c in CONTENT_COLUMNS if c in frames.column_names]
    prints = []
    for meta in ds.episodes:
        h = hashlib.sha256(f"{meta.task}\0{meta.length}\0".encode())
        rows = frames.slice(meta.dataset_from_index, meta.length)
        for name in columns:
            h.update(name.encode() + b"\0" + _column_bytes(rows.column(name)))
        prints.append(h.hexdigest()[:24])
    return prints


def _column_bytes(column: pa.ChunkedArray) -> bytes:
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        return np.asarray(column.to_pylist(), dtype=np.float32).tobytes()
    return np.asarray(column.to_numpy(zero_copy_only=False)).tobytes()


@dataclass(frozen=True)
class Overlap:
    """How `data` relates to a checkpoint's training data."""

    checked: str  # "identity" (recorded at training), "paths" (older checkpoints: roots only), "none"
    same_dataset: str | None  # the training dataset `data` is (same root or same digest), if any
    shared_episodes: int  # episodes of `data` whose fingerprint is a training episode's
    episodes: int

    @property
    def in_sample(self) -> bool:
        return self.same_dataset is not None or self.shared_episodes > 0

    def describe(self) -> str:
        if self.same_dataset is not None:
            return f"it is training dataset {self.same_dataset}"
        return f"{self.shared_episodes} of its {self.episodes} episodes are training episodes"


def training_overlap(training: dict[str, Any], ds: LeRobotDataset, identity: DatasetIdentity | None = None) -> Overlap:
    """Overlap of `ds` with the data recorded in a checkpoint's `training` provenance."""
    identity = identity or dataset_identity(ds)
    recorded = [DatasetIdentity.from_dict(d) for d in training.get("data_identity", [])]
    if recorded:
        same = next((r.root for r in recorded if identity.root == r.root or identity.digest == r.digest), None)
        seen = {fp for r in recorded for fp in r.episodes}
        shared = sum(fp in seen for fp in identity.episodes)
        return Overlap("identity", same, shared, len(identity.episodes))
    paths = [str(Path(p).resolve()) for p in training.get("datasets", [])]
    if paths:
        return Overlap("paths", identity.root if identity.root in paths else None, 0, len(identity.episodes))
    return Overlap("none", None, 0, len(identity.episodes))
