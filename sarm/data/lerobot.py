"""LeRobot v3.0 datasets: read a LeRobot user's dataset as it is, and write ones LeRobot reads.

Layout (relative to the dataset root):
    meta/info.json, meta/tasks.parquet, meta/stats.json,
    meta/episodes/chunk-XXX/file-YYY.parquet        one row per episode (+ SARM annotation columns)
    meta/temporal_proportions_{sparse,dense}.json   stage proportions ᾱ
    data/chunk-XXX/file-YYY.parquet                 one row per frame
    videos/<camera>/chunk-XXX/file-YYY.mp4          many episodes per file, located by timestamps
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sarm.data import video
from sarm.data.annotations import (
    SCHEMES,
    AnnotationError,
    EpisodeAnnotation,
    Subtask,
    stage_proportions,
    stage_vocabulary,
)
from sarm.data.episode import EpisodeData

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# Columns every frame row carries besides the features a dataset declares.
FRAME_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


class DatasetError(ValueError):
    """A dataset that does not follow the LeRobot v3.0 layout; the message says what to fix."""


def proportions_path(root: Path, scheme: str) -> Path:
    return root / "meta" / f"temporal_proportions_{scheme}.json"


def annotation_column(scheme: str, field: str, legacy: bool = False) -> str:
    """`sparse_subtask_names`, … as LeRobot's annotation tool writes them (`subtask_names` when legacy)."""
    return f"subtask_{field}" if legacy else f"{scheme}_subtask_{field}"


@dataclass(frozen=True)
class VideoLocation:
    path: Path
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class EpisodeMeta:
    index: int
    length: int
    tasks: list[str]
    dataset_from_index: int
    dataset_to_index: int
    videos: dict[str, VideoLocation]
    row: dict[str, Any]  # the whole episodes-table row, annotation and extra columns included

    @property
    def task(self) -> str:
        return self.tasks[0]


def parse_annotation(row: dict[str, Any], scheme: str, fps: float) -> EpisodeAnnotation | None:
    """The episode's annotation under `scheme`, or None when the episode has none.

    Frames are authoritative; when only times are stored (whole seconds in some LeRobot versions),
    frames are derived as round(time * fps). Sparse falls back to the unprefixed legacy columns.
    """
    legacy_options = (False, True) if scheme == "sparse" else (False,)
    for legacy in legacy_options:
        names = row.get(annotation_column(scheme, "names", legacy))
        if names is None:
            continue
        starts = row.get(annotation_column(scheme, "start_frames", legacy))
        ends = row.get(annotation_column(scheme, "end_frames", legacy))
        if starts is None or ends is None:
            start_times = row.get(annotation_column(scheme, "start_times", legacy))
            end_times = row.get(annotation_column(scheme, "end_times", legacy))
            if start_times is None or end_times is None:
                raise AnnotationError(
                    f"has {scheme} subtask names but neither start/end frames nor start/end times: "
                    "re-run the annotation tool"
                )
            starts = [round(t * fps) for t in start_times]
            ends = [round(t * fps) for t in end_times]
        if not len(names) == len(starts) == len(ends):
            raise AnnotationError(
                f"has {len(names)} {scheme} subtask names but {len(starts)} starts and {len(ends)} ends: "
                "each subtask needs a name, a start and an end"
            )
        subtasks = (Subtask(str(n), int(s), int(e)) for n, s, e in zip(names, starts, ends, strict=True))
        return EpisodeAnnotation(tuple(subtasks))
    return None


class LeRobotDataset:
    """Read access to a LeRobot v3.0 dataset; tables load lazily, videos decode per episode."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root} is not a LeRobot dataset: {info_path} is missing")
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(
                f"{self.root} is a LeRobot {version} dataset; only {CODEBASE_VERSION} is supported: convert it with "
                "LeRobot's conversion script"
            )

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, f in self.info["features"].items() if f.get("dtype") in ("video", "image")]

    @cached_property
    def tasks(self) -> dict[int, str]:
        table = pq.read_table(self.root / "meta" / "tasks.parquet")
        return dict(zip(table.column("task_index").to_pylist(), table.column("task").to_pylist(), strict=True))

    @cached_property
    def episodes_table(self) -> pa.Table:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.root}/meta/episodes holds no parquet file: the episodes table is missing")
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        return table.sort_by("episode_index")

    @cached_property
    def episodes(self) -> list[EpisodeMeta]:
        return [self._episode_meta(row) for row in self.episodes_table.to_pylist()]

    def _episode_meta(self, row: dict[str, Any]) -> EpisodeMeta:
        videos = {}
        for key in self.camera_keys:
            prefix = f"videos/{key}/"
            path = self.root / self.info.get("video_path", VIDEO_PATH).format(
                video_key=key, chunk_index=row[prefix + "chunk_index"], file_index=row[prefix + "file_index"]
            )
            span = float(row[prefix + "from_timestamp"]), float(row[prefix + "to_timestamp"])
            videos[key] = VideoLocation(path, *span)
        return EpisodeMeta(
            index=int(row["episode_index"]),
            length=int(row["length"]),
            tasks=list(row["tasks"]),
            dataset_from_index=int(row["dataset_from_index"]),
            dataset_to_index=int(row["dataset_to_index"]),
            videos=videos,
            row=row,
        )

    @cached_property
    def _episodes_by_index(self) -> dict[int, EpisodeMeta]:
        return {meta.index: meta for meta in self.episodes}

    def episode(self, index: int) -> EpisodeMeta:
        """One episode's metadata (a dict lookup: called once per episode by every per-episode loop)."""
        try:
            return self._episodes_by_index[index]
        except KeyError:
            known = list(self._episodes_by_index)
            raise KeyError(f"episode {index} is not in {self.root} (episodes: {known})") from None

    @cached_property
    def frames_table(self) -> pa.Table:
        files = sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.root}/data holds no parquet file: the frame table is missing")
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").sort_by("index")

    def frame_rows(self, episode: int) -> pa.Table:
        """The data-table rows of one episode, in frame order."""
        meta = self.episode(episode)
        return self.frames_table.slice(meta.dataset_from_index, meta.length)

    def column(self, episode: int, name: str) -> np.ndarray:
        """A per-frame feature (e.g. observation.state) of one episode as a (T, ...) array."""
        column = self.frame_rows(episode).column(name)
        if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
            return np.asarray(column.to_pylist(), dtype=np.float32)
        return column.to_numpy()

    def frames(self, episode: int, camera: str | None = None, indices: np.ndarray | None = None) -> np.ndarray:
        """Decoded frames (N, H, W, 3) uint8 of one episode and camera; `indices` selects frames."""
        meta = self.episode(episode)
        key = camera or self.camera_keys[0]
        if key not in meta.videos:
            raise KeyError(f"camera {key!r} is not in this dataset; cameras: {self.camera_keys}")
        location = meta.videos[key]
        return video.read_frames(location.path, self.fps, location.from_timestamp, meta.length, indices)

    def schemes(self) -> list[str]:
        """Annotation schemes present (columns in the episodes table)."""
        columns = set(self.episodes_table.column_names)
        legacy = annotation_column("sparse", "names", legacy=True)
        return [s for s in SCHEMES if annotation_column(s, "names") in columns or (s == "sparse" and legacy in columns)]

    def annotation(self, episode: int, scheme: str = "sparse") -> EpisodeAnnotation | None:
        return parse_annotation(self.episode(episode).row, scheme, self.fps)

    def require_annotation(self, episode: int, scheme: str = "sparse") -> EpisodeAnnotation:
        """The episode's annotation, or AnnotationError: what training and evaluation need for every episode."""
        ann = self.annotation(episode, scheme)
        if ann is None:
            raise AnnotationError(f"{self.root} episode {episode} has no {scheme} annotation: annotate it")
        return ann

    def proportions(self, scheme: str = "sparse") -> dict[str, float] | None:
        path = proportions_path(self.root, scheme)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return {str(k): float(v) for k, v in data.items()}


def _feature(dtype: str, shape: list[int], names: list[str] | None = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "names": names}


class LeRobotWriter:
    """Writes episodes into a new LeRobot v3.0 dataset (one chunk and file per table and camera).

    Use as a context manager or call `finalize()`: tables, stats and proportions are written at the end,
    video frames as each episode arrives.
    """

    def __init__(self, root: str | Path, fps: int, robot_type: str = "unknown", codec: str = "h264"):
        self.root = Path(root)
        if (self.root / "meta" / "info.json").exists():
            raise DatasetError(f"{self.root} already holds a dataset: choose an empty directory")
        self.fps, self.robot_type, self.codec = fps, robot_type, codec
        self._videos: dict[str, video.VideoWriter] = {}
        self._frame_tables: list[pa.Table] = []
        self._episode_rows: list[dict[str, Any]] = []
        self._annotations: dict[str, list[tuple[EpisodeAnnotation, int]]] = {}  # for ᾱ at the end
        self._tasks: dict[str, int] = {}
        self._features: dict[str, dict[str, Any]] | None = None
        self._frames_total = 0

    def _declare_features(self, ep: EpisodeData) -> dict[str, dict[str, Any]]:
        features: dict[str, dict[str, Any]] = {}
        for key, frames in ep.frames.items():
            height, width = frames.shape[1:3]
            features[key] = _feature("video", [height, width, 3], ["height", "width", "channels"])
            features[key]["info"] = {
                "video.height": height,
                "video.width": width,
                "video.codec": self.codec,
                "video.pix_fmt": "yuv420p",
                "video.fps": self.fps,
                "video.channels": 3,
                "has_audio": False,
            }
        for name, values, letter in (("observation.state", ep.state, "s"), ("action", ep.action, "a")):
            features[name] = _feature("float32", [values.shape[1]], [f"{letter}{i}" for i in range(values.shape[1])])
        for name, values in ep.frame_columns.items():
            features[name] = _feature(str(values.dtype), [1])
        for name, dtype in (("timestamp", "float32"), *((n, "int64") for n in FRAME_INDEX_COLUMNS[1:])):
            features[name] = _feature(dtype, [1])
        return features

    def add_episode(self, ep: EpisodeData) -> int:
        if self._features is None:
            self._features = self._declare_features(ep)
        declared = {k for k, f in self._features.items() if f["dtype"] == "video"}
        if set(ep.frames) != declared:
            raise ValueError(f"episode cameras {sorted(ep.frames)} differ from the dataset's {sorted(declared)}")
        index = len(self._episode_rows)
        task_index = self._tasks.setdefault(ep.task, len(self._tasks))
        start = self._frames_total
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [ep.task],
            "length": ep.length,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + ep.length,
        }
        for key, frames in ep.frames.items():
            writer = self._videos.get(key)
            if writer is None:
                path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                height, width = frames.shape[1:3]
                writer = self._videos[key] = video.VideoWriter(path, self.fps, width, height, self.codec)
            row |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": writer.frames_written / self.fps,
                f"videos/{key}/to_timestamp": (writer.frames_written + ep.length) / self.fps,
            }
            writer.append(frames)
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        row |= self._annotation_columns(ep)
        row |= ep.episode_columns
        self._episode_rows.append(row)
        self._frame_tables.append(self._frame_table(ep, index, task_index, start))
        for scheme, ann in ep.annotations.items():
            self._annotations.setdefault(scheme, []).append((ann, ep.length))
        self._frames_total += ep.length
        return index

    def _annotation_columns(self, ep: EpisodeData) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for scheme, ann in ep.annotations.items():
            # LeRobot's tool writes the sparse scheme twice: prefixed and as unprefixed legacy columns.
            for legacy in (False, True) if scheme == "sparse" else (False,):
                col = lambda field, legacy=legacy, scheme=scheme: annotation_column(scheme, field, legacy)  # noqa: E731
                columns[col("names")] = [s.name for s in ann.subtasks]
                columns[col("start_times")] = [s.start / self.fps for s in ann.subtasks]
                columns[col("end_times")] = [s.end / self.fps for s in ann.subtasks]
                columns[col("start_frames")] = [s.start for s in ann.subtasks]
                columns[col("end_frames")] = [s.end for s in ann.subtasks]
        return columns

    def _frame_table(self, ep: EpisodeData, episode_index: int, task_index: int, start: int) -> pa.Table:
        frames = np.arange(ep.length)

        def fixed(values: np.ndarray) -> pa.Array:
            flat = pa.array(values.astype(np.float32).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])

        columns: dict[str, pa.Array] = {"observation.state": fixed(ep.state), "action": fixed(ep.action)}
        columns |= {name: pa.array(values) for name, values in ep.frame_columns.items()}
        columns |= {
            "timestamp": pa.array((frames / self.fps).astype(np.float32)),
            "frame_index": pa.array(frames, pa.int64()),
            "episode_index": pa.array(np.full(ep.length, episode_index), pa.int64()),
            "index": pa.array(start + frames, pa.int64()),
            "task_index": pa.array(np.full(ep.length, task_index), pa.int64()),
        }
        return pa.table(columns)

    def finalize(self) -> Path:
        if self._features is None:
            raise DatasetError("no episode was added: a dataset needs at least one episode")
        for writer in self._videos.values():
            writer.close()
        frames = pa.concat_tables(self._frame_tables)
        data_path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(frames, data_path)
        episodes_path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episode_rows), episodes_path)
        pq.write_table(
            pa.table({"task_index": pa.array(list(self._tasks.values()), pa.int64()), "task": list(self._tasks)}),
            self.root / "meta" / "tasks.parquet",
        )
        self._write_info()
        self._write_stats(frames)
        for scheme, annotated in self._annotations.items():
            vocabulary = stage_vocabulary(ann for ann, _ in annotated)
            proportions = stage_proportions(annotated, vocabulary)
            proportions_path(self.root, scheme).write_text(json.dumps(proportions, indent=2))
        return self.root

    def _write_info(self) -> None:
        n = len(self._episode_rows)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": self.fps,
            "features": self._features,
            "total_episodes": n,
            "total_frames": self._frames_total,
            "total_tasks": len(self._tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "robot_type": self.robot_type,
            "splits": {"train": f"0:{n}"},
        }
        (self.root / "meta" / "info.json").write_text(json.dumps(info, indent=4))

    def _write_stats(self, frames: pa.Table) -> None:
        """Global min/max/mean/std/count of numeric features (LeRobot normalises with these)."""
        stats: dict[str, dict[str, list[float]]] = {}
        for name in frames.column_names:
            column = frames.column(name)
            values = np.asarray(column.to_pylist(), dtype=np.float64)
            values = values.reshape(len(values), -1)
            stats[name] = {
                "min": values.min(0).tolist(),
                "max": values.max(0).tolist(),
                "mean": values.mean(0).tolist(),
                "std": values.std(0).tolist(),
                "count": [len(values)],
            }
        (self.root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.finalize()
        else:
            for writer in self._videos.values():
                writer.close()
