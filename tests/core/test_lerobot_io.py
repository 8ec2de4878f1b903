"""Round trips through our LeRobot v3.0 writer and reader, and reading a dataset LeRobot itself wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sarm.data.annotations import EpisodeAnnotation, Subtask, stage_proportions
from sarm.data.episode import EpisodeData
from sarm.data.lerobot import DatasetError, LeRobotDataset, LeRobotWriter
from tests.conftest import CAMERA, rewrite_episodes


def test_round_trip_tables_are_identical(dataset: Path, episodes: list[EpisodeData]) -> None:
    ds = LeRobotDataset(dataset)
    assert ds.fps == 10 and ds.camera_keys == [CAMERA] and ds.tasks == {0: "pick up the cube"}
    assert [e.length for e in ds.episodes] == [ep.length for ep in episodes]
    for meta, ep in zip(ds.episodes, episodes, strict=True):
        np.testing.assert_array_equal(ds.column(meta.index, "observation.state"), ep.state)
        np.testing.assert_array_equal(ds.column(meta.index, "action"), ep.action)
        np.testing.assert_array_equal(ds.column(meta.index, "next.reward"), ep.frame_columns["next.reward"])
        np.testing.assert_array_equal(ds.column(meta.index, "frame_index"), np.arange(ep.length))
        assert meta.row["success"] == ep.episode_columns["success"] and meta.row["quality"] == "clean"
        assert ds.annotation(meta.index) == ep.annotations["sparse"]


def test_round_trip_frames_are_near_identical(dataset: Path, episodes: list[EpisodeData]) -> None:
    ds = LeRobotDataset(dataset)
    for meta, ep in zip(ds.episodes, episodes, strict=True):
        decoded = ds.frames(meta.index).astype(np.int16)
        original = ep.frames[CAMERA].astype(np.int16)
        assert decoded.shape == original.shape
        # Lossy H.264 (crf 18, yuv420p): ≥ 30 dB PSNR even on this saturated, sharp-edged test pattern.
        psnr = 10 * np.log10(255**2 / np.mean((decoded - original) ** 2))
        assert psnr > 30
        # The moving bar sits where it was written in every frame: no frame is shifted or swapped.
        bar_columns = (decoded[:, 16, :, 0] > 130).argmax(axis=1)
        np.testing.assert_allclose(bar_columns, (original[:, 16, :, 0] > 130).argmax(axis=1), atol=1)


def test_random_access_decodes_requested_frames_only(dataset: Path, episodes: list[EpisodeData]) -> None:
    ds = LeRobotDataset(dataset)
    every = ds.frames(2)
    picked = ds.frames(2, indices=np.array([40, 3, 3, 0]))
    np.testing.assert_array_equal(picked, every[[40, 3, 3, 0]])
    with pytest.raises(IndexError, match=r"\[0, 44\)"):
        ds.frames(2, indices=np.array([44]))


def test_proportions_written_from_annotations(dataset: Path, episodes: list[EpisodeData]) -> None:
    written = json.loads((dataset / "meta" / "temporal_proportions_sparse.json").read_text())
    expected = stage_proportions([(ep.annotations["sparse"], ep.length) for ep in episodes], ["reach", "grasp", "lift"])
    assert written == pytest.approx(expected)
    assert sum(written.values()) == pytest.approx(1.0)


def test_annotations_written_like_lerobot(dataset: Path) -> None:
    row = pq.read_table(dataset / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[1]
    # Both the prefixed columns and LeRobot's unprefixed legacy copies, frames and float-second times.
    assert row["sparse_subtask_names"] == row["subtask_names"] == ["reach", "grasp", "lift"]
    assert row["sparse_subtask_start_frames"] == [0, 7, 14] and row["sparse_subtask_end_frames"] == [7, 14, 21]
    assert row["sparse_subtask_start_times"] == pytest.approx([0.0, 0.7, 1.4])
    assert row["videos/observation.images.top/from_timestamp"] == pytest.approx(3.0)


def test_reads_a_dataset_lerobot_wrote(lerobot_fixture: Path) -> None:
    ds = LeRobotDataset(lerobot_fixture)
    assert ds.fps == 50 and ds.camera_keys == ["observation.images.top"] and len(ds.episodes) == 8
    meta = ds.episode(1)
    frames = ds.frames(1)
    assert frames.shape == (meta.length, 128, 128, 3)
    # Episode boundaries come from the shared mp4's timestamps: episode 1's last frame is not episode 2's first.
    assert not np.array_equal(frames[-1], ds.frames(2, indices=np.array([0]))[0])
    ann = ds.annotation(1)
    assert ann is not None and ann.names == ["reach_objects", "grasp_both", "lift_and_align", "insert", "hold"]
    assert ann.subtasks[-1].end == meta.length
    written = json.loads((lerobot_fixture / "meta/temporal_proportions_sparse.json").read_text())
    assert ds.proportions() == pytest.approx(written)
    assert ds.column(1, "observation.state").shape == (meta.length, 14)


def test_legacy_only_annotation_columns_load(dataset: Path) -> None:
    prefixed = tuple(f"sparse_subtask_{f}" for f in ("names", "start_frames", "end_frames", "start_times", "end_times"))
    rewrite_episodes(dataset, drop=prefixed)
    ds = LeRobotDataset(dataset)
    assert ds.schemes() == ["sparse"]
    expected = (Subtask("reach", 0, 10), Subtask("grasp", 10, 20), Subtask("lift", 20, 30))
    assert ds.annotation(0) == EpisodeAnnotation(expected)


def test_times_only_annotations_derive_frames(dataset: Path) -> None:
    frame_columns = tuple(f"{p}subtask_{f}" for p in ("sparse_", "") for f in ("start_frames", "end_frames"))
    rewrite_episodes(dataset, drop=frame_columns)
    ann = LeRobotDataset(dataset).annotation(2)
    assert ann is not None and [(s.start, s.end) for s in ann.subtasks] == [(0, 15), (15, 29), (29, 44)]


def test_writer_refuses_an_existing_dataset_and_mixed_cameras(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="already holds a dataset"):
        LeRobotWriter(dataset, fps=10)
    writer = LeRobotWriter(tmp_path / "new", fps=10)
    from tests.conftest import synthetic_episode

    writer.add_episode(synthetic_episode(12, 0))
    other = synthetic_episode(12, 1)
    other.frames = {"observation.images.wrist": other.frames[CAMERA]}
    with pytest.raises(ValueError, match="cameras"):
        writer.add_episode(other)


def test_not_a_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"meta/info\.json is missing"):
        LeRobotDataset(tmp_path)
