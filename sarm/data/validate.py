"""Dataset validation: layout, schema, frame counts against videos, and SARM annotations.

Training calls the same checks (`require_valid`) and refuses bad data instead of training on silent zeros.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from sarm.data import video
from sarm.data.annotations import AnnotationError, annotation_problems
from sarm.data.lerobot import FRAME_INDEX_COLUMNS, DatasetError, LeRobotDataset, proportions_path

PROPORTION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Problem:
    message: str
    episode: int | None = None  # None: the problem concerns the whole dataset

    def __str__(self) -> str:
        return f"episode {self.episode}: {self.message}" if self.episode is not None else self.message


class InvalidDatasetError(DatasetError):
    def __init__(self, root: Path, problems: list[Problem]):
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{root} is not a valid SARM dataset ({len(problems)} problem(s)):\n{listed}{more}")


def _check_layout(ds: LeRobotDataset) -> list[Problem]:
    problems = []
    for relative in ("meta/tasks.parquet",):
        if not (ds.root / relative).is_file():
            problems.append(Problem(f"{relative} is missing: every LeRobot v3.0 dataset has it"))
    if not ds.camera_keys:
        problems.append(Problem("info.json declares no camera (a feature with dtype 'video'): SARM needs frames"))
    return problems


def _check_episodes_schema(ds: LeRobotDataset) -> list[Problem]:
    required = ["episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"]
    for key in ds.camera_keys:
        required += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    missing = [c for c in required if c not in ds.episodes_table.column_names]
    return [Problem(f"the episodes table lacks column {c!r}: re-export the dataset with LeRobot v3.0") for c in missing]


def _check_frames(ds: LeRobotDataset) -> list[Problem]:
    table = ds.frames_table
    declared = [k for k, f in ds.info["features"].items() if f.get("dtype") not in ("video", "image")]
    problems = [
        Problem(f"the data table lacks column {c!r} declared in meta/info.json")
        for c in dict.fromkeys([*declared, *FRAME_INDEX_COLUMNS])
        if c not in table.column_names
    ]
    if problems:
        return problems
    if len(table) != ds.info.get("total_frames", len(table)):
        problems.append(Problem(f"info.json says {ds.info['total_frames']} frames but the data table has {len(table)}"))
    episode_column = table.column("episode_index").to_numpy()
    frame_column = table.column("frame_index").to_numpy()
    for meta in ds.episodes:
        rows = slice(meta.dataset_from_index, meta.dataset_to_index)
        got = episode_column[rows]
        if meta.dataset_to_index - meta.dataset_from_index != meta.length or len(got) != meta.length:
            problems.append(Problem(f"has length {meta.length} but {len(got)} frame rows", meta.index))
        elif not (np.all(got == meta.index) and np.array_equal(frame_column[rows], np.arange(meta.length))):
            problems.append(Problem("its frame rows are not contiguous frames 0..length-1 of this episode", meta.index))
    return problems


def _check_videos(ds: LeRobotDataset) -> list[Problem]:
    """Each video opens, and the last frame of every episode decodes (catches truncated files)."""
    problems: list[Problem] = []
    by_file: dict[Path, list[tuple[int, float, int]]] = {}
    for meta in ds.episodes:
        for loc in meta.videos.values():
            by_file.setdefault(loc.path, []).append((meta.index, loc.from_timestamp, meta.length))
            expected = meta.length / ds.fps
            if not math.isclose(loc.to_timestamp - loc.from_timestamp, expected, abs_tol=1.5 / ds.fps):
                problems.append(
                    Problem(
                        f"video span {loc.to_timestamp - loc.from_timestamp:.3f}s of {loc.path.name} does not match "
                        f"its {meta.length} frames at {ds.fps} fps ({expected:.3f}s)",
                        meta.index,
                    )
                )
    for path, spans in by_file.items():
        try:
            video.probe(path)
        except video.VideoError as error:
            problems.append(Problem(str(error)))
            continue
        for episode, start, length in spans:
            try:
                video.read_frames(path, ds.fps, start, length, np.array([length - 1]))
            except video.VideoError as error:
                problems.append(Problem(f"{error}; restore or re-encode the video", episode))
    return problems


def _check_proportions(ds: LeRobotDataset, scheme: str) -> tuple[list[Problem], list[str] | None]:
    path = proportions_path(ds.root, scheme)
    try:
        proportions = ds.proportions(scheme)
    except (json.JSONDecodeError, ValueError, AttributeError) as error:
        return [Problem(f"{path} is not a JSON object of stage → proportion ({error})")], None
    if proportions is None:
        return [Problem(f"{path} is missing: `sarm data validate` needs the stage vocabulary and ᾱ it holds")], None
    problems = []
    if any(not math.isfinite(v) or v < 0 for v in proportions.values()):
        problems.append(Problem(f"{path} has negative or non-finite proportions: {proportions}"))
    total = sum(proportions.values())
    if not math.isclose(total, 1.0, abs_tol=PROPORTION_TOLERANCE):
        problems.append(Problem(f"{path} proportions sum to {total:.4f}, not 1: renormalise them"))
    return problems, list(proportions)


def _check_annotations(ds: LeRobotDataset, schemes: list[str]) -> list[Problem]:
    problems: list[Problem] = []
    for scheme in schemes:
        scheme_problems, vocabulary = _check_proportions(ds, scheme)
        problems += scheme_problems
        for meta in ds.episodes:
            try:
                ann = ds.annotation(meta.index, scheme)
            except AnnotationError as error:
                problems.append(Problem(str(error), meta.index))
                continue
            if ann is None:
                problems.append(Problem(f"has no {scheme} annotation: annotate it or drop the episode", meta.index))
                continue
            found = annotation_problems(ann, meta.length, vocabulary)
            problems += [Problem(f"{scheme}: {p}", meta.index) for p in found]
    return problems


def find_problems(root: str | Path, require_annotations: bool = True) -> list[Problem]:
    """Every problem found in the dataset at `root` (empty when it is valid)."""
    try:
        ds = LeRobotDataset(root)
        problems = _check_layout(ds) + _check_episodes_schema(ds)
        if problems:
            return problems
        checks: list[Callable[[LeRobotDataset], list[Problem]]] = [_check_frames, _check_videos]
        for check in checks:
            problems += check(ds)
        schemes = ds.schemes()
        if require_annotations and not schemes:
            problems.append(
                Problem(
                    "the episodes table has no SARM annotation columns (sparse_subtask_names, …): annotate the dataset "
                    "(LeRobot's subtask annotation tool, or `sarm data generate` for simulated demos)"
                )
            )
        problems += _check_annotations(ds, schemes)
    except (DatasetError, pa.ArrowException, OSError, KeyError, json.JSONDecodeError) as error:
        problems = [Problem(f"cannot be read: {error}")]
    return problems


def require_valid(root: str | Path) -> LeRobotDataset:
    """The dataset, or InvalidDatasetError listing every problem (what training and embedding call)."""
    problems = find_problems(root)
    if problems:
        raise InvalidDatasetError(Path(root), problems)
    return LeRobotDataset(root)
