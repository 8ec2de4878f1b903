"""RA-BC output files, written atomically into one directory:

sarm_progress.parquet   index, episode_index, frame_index, progress_sparse[, progress_dense] (float32):
                        LeRobot's schema, the one RA-BC trainers (and Robometer, TOPReward) read; dense for
                        models with a dense head; provenance in the schema metadata
rabc_weights.parquet    index, episode_index, frame_index, delta, weight (float32); parameters, μ, σ and
                        the progress provenance in the schema metadata
rabc_summary.json       parameters, summary figures, provenance
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sarm.rabc.progress import DatasetProgress, EpisodeProgress
from sarm.rabc.weights import RabcParams, RabcResult, RabcSummary

PROGRESS_FILE = "sarm_progress.parquet"
WEIGHTS_FILE = "rabc_weights.parquet"
SUMMARY_FILE = "rabc_summary.json"
PROVENANCE_KEY = b"sarm.provenance"
RABC_KEY = b"sarm.rabc"
KEY_COLUMNS = ("index", "episode_index", "frame_index")


def _write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` then rename: a reader (a trainer, the jobs API) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def _key_columns(progress: DatasetProgress) -> dict[str, np.ndarray]:
    episodes = progress.episodes
    return {
        "index": np.concatenate([e.index for e in episodes]),
        "episode_index": np.concatenate([np.full(len(e.progress), e.episode_index, np.int64) for e in episodes]),
        "frame_index": np.concatenate([e.frame_index for e in episodes]),
    }


def _schema(value_columns: tuple[str, ...], key: bytes, metadata: dict[str, Any]) -> pa.Schema:
    fields = [pa.field(c, pa.int64()) for c in KEY_COLUMNS] + [pa.field(c, pa.float32()) for c in value_columns]
    return pa.schema(fields, metadata={key: json.dumps(metadata)})


def progress_table(progress: DatasetProgress) -> pa.Table:
    """What `sarm_progress.parquet` holds (also served as a download by the gateway's video scoring)."""
    if not progress.episodes:
        raise ValueError("no episode to write")
    episodes = progress.episodes
    columns = _key_columns(progress) | {"progress_sparse": np.concatenate([e.progress for e in episodes])}
    if all(e.dense is not None for e in episodes):
        columns["progress_dense"] = np.concatenate([e.head("dense") for e in episodes])
    return pa.table(columns, schema=_schema(tuple(columns)[len(KEY_COLUMNS) :], PROVENANCE_KEY, progress.provenance))


def write_progress(progress: DatasetProgress, out_dir: Path) -> Path:
    return _write_atomic(out_dir / PROGRESS_FILE, partial(pq.write_table, progress_table(progress)))


def read_progress(path: Path) -> DatasetProgress:
    """A `sarm_progress.parquet` from us or any tool that writes LeRobot's schema (frames of each episode
    must run 0..T−1 without gaps; rows may come in any order)."""
    table = pq.read_table(path)
    missing = [c for c in (*KEY_COLUMNS, "progress_sparse") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}: not a sarm_progress.parquet")
    table = table.sort_by([("episode_index", "ascending"), ("frame_index", "ascending")])
    episode = table.column("episode_index").to_numpy()
    starts = np.flatnonzero(np.diff(episode, prepend=episode[:1] - 1))
    episodes = []
    for start, end in zip(starts, [*starts[1:], len(episode)], strict=True):
        rows = table.slice(start, end - start)
        frames = rows.column("frame_index").to_numpy()
        if not np.array_equal(frames, np.arange(len(frames))):
            raise ValueError(f"{path}: episode {episode[start]} does not hold frames 0..{len(frames) - 1} exactly")
        episodes.append(
            EpisodeProgress(
                int(episode[start]),
                rows.column("index").to_numpy().astype(np.int64),
                rows.column("progress_sparse").to_numpy().astype(np.float32),
                rows.column("progress_dense").to_numpy().astype(np.float32)
                if "progress_dense" in rows.column_names
                else None,
            )
        )
    metadata = table.schema.metadata or {}
    provenance = json.loads(metadata[PROVENANCE_KEY]) if PROVENANCE_KEY in metadata else {}
    return DatasetProgress(episodes, provenance)


def write_weights(progress: DatasetProgress, result: RabcResult, params: RabcParams, out_dir: Path) -> Path:
    columns = _key_columns(progress) | {
        "delta": np.concatenate(result.deltas).astype(np.float32),
        "weight": np.concatenate(result.weights).astype(np.float32),
    }
    metadata = {"params": params.to_dict(), "mu": result.mu, "sigma": result.sigma, "progress": progress.provenance}
    table = pa.table(columns, schema=_schema(("delta", "weight"), RABC_KEY, metadata))
    return _write_atomic(out_dir / WEIGHTS_FILE, partial(pq.write_table, table))


def write_summary(summary: RabcSummary, params: RabcParams, provenance: dict[str, Any], out_dir: Path) -> Path:
    report = {"params": params.to_dict(), "summary": summary.to_dict(), "progress": provenance}
    return _write_atomic(out_dir / SUMMARY_FILE, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
