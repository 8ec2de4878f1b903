"""`sarm data validate` and the checks training relies on: valid data passes, corrupted data is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.annotations import AnnotationError, EpisodeAnnotation, Subtask, annotation_problems, stage_proportions
from sarm.data.validate import InvalidDatasetError, find_problems, require_valid
from sarm.data.video import VideoWriter
from tests.conftest import rewrite_episodes

runner = CliRunner()
VIDEO = "videos/observation.images.top/chunk-000/file-000.mp4"


def messages(root: Path) -> str:
    return "\n".join(str(p) for p in find_problems(root))


def test_valid_datasets_pass(dataset: Path, lerobot_fixture: Path) -> None:
    assert find_problems(dataset) == []
    assert find_problems(lerobot_fixture) == []
    result = runner.invoke(app, ["data", "validate", str(dataset)])
    assert result.exit_code == 0 and "valid" in result.output


def test_truncated_video_is_rejected(dataset: Path) -> None:
    path = dataset / VIDEO
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in messages(dataset)
    result = runner.invoke(app, ["data", "validate", str(dataset)])
    assert result.exit_code == 1 and "invalid" in result.output


def test_video_shorter_than_episodes_is_rejected(dataset: Path) -> None:
    # A well-formed mp4 that stops 10 frames early: the last episode's tail is missing.
    with VideoWriter(dataset / VIDEO, fps=10, width=48, height=32) as writer:
        writer.append(np.zeros((30 + 21 + 34, 32, 48, 3), np.uint8))
    found = find_problems(dataset)
    assert [p.episode for p in found] == [2]
    assert "not in the video" in str(found[0])


def test_missing_annotation_column_is_rejected(dataset: Path) -> None:
    ends = tuple(f"{prefix}subtask_end_{unit}" for prefix in ("sparse_", "") for unit in ("frames", "times"))
    rewrite_episodes(dataset, drop=ends)
    found = find_problems(dataset)
    assert {p.episode for p in found} == {0, 1, 2}
    assert "neither start/end frames nor start/end times" in str(found[0])


def test_no_annotations_at_all_is_rejected(dataset: Path) -> None:
    fields = ("names", "start_frames", "end_frames", "start_times", "end_times")
    columns = [f"{prefix}subtask_{field}" for prefix in ("sparse_", "") for field in fields]
    rewrite_episodes(dataset, drop=tuple(columns))
    assert "no SARM annotation columns" in messages(dataset)
    assert find_problems(dataset, require_annotations=False) == []


def test_overlapping_subtasks_are_rejected_with_the_episode(dataset: Path) -> None:
    rewrite_episodes(dataset, sparse_subtask_start_frames=[[0, 10, 20], [0, 5, 14], [0, 15, 29]])
    found = find_problems(dataset)
    assert [p.episode for p in found] == [1]
    assert "before subtask 0 ('reach') ends at frame 7" in str(found[0])
    with pytest.raises(InvalidDatasetError, match="episode 1"):
        require_valid(dataset)


def test_subtask_beyond_episode_and_unknown_name_are_rejected(dataset: Path) -> None:
    rewrite_episodes(
        dataset,
        sparse_subtask_end_frames=[[10, 20, 30], [7, 14, 25], [15, 29, 44]],
        sparse_subtask_names=[["reach", "grasp", "lift"], ["reach", "grasp", "lift"], ["reach", "grab", "lift"]],
    )
    text = messages(dataset)
    assert "episode 1: sparse: subtask 2 ('lift') spans frames [14, 25) outside the episode's 21 frames" in text
    assert "episode 2: sparse: subtask 1 ('grab') is not in the dataset's stage vocabulary" in text


def test_bad_proportions_are_rejected(dataset: Path) -> None:
    path = dataset / "meta/temporal_proportions_sparse.json"
    path.write_text(json.dumps({"reach": 0.5, "grasp": 0.3, "lift": 0.1}))
    assert "sum to 0.9000, not 1" in messages(dataset)
    path.unlink()
    assert "temporal_proportions_sparse.json is missing" in messages(dataset)


def test_frame_rows_must_match_episode_lengths(dataset: Path) -> None:
    rewrite_episodes(dataset, length=[30, 22, 44])
    assert "episode 1: has length 22 but" in messages(dataset)


def test_not_a_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 1 and "meta/info.json is missing" in result.output


def test_annotation_problems_hand_cases() -> None:
    ok = EpisodeAnnotation((Subtask("a", 0, 5), Subtask("b", 7, 10)))  # a gap is allowed
    assert annotation_problems(ok, 10) == []
    backwards = EpisodeAnnotation((Subtask("a", 5, 3),))
    assert "ends (frame 3) before it starts (frame 5)" in annotation_problems(backwards, 10)[0]
    assert "no subtasks" in annotation_problems(EpisodeAnnotation(()), 10)[0]


def test_stage_proportions_formula_one() -> None:
    # Demo 1: a=4/10, b=6/10. Demo 2: a=2/4, b=2/4, c absent. Demo 3: only c, 3/3.
    episodes = [
        (EpisodeAnnotation((Subtask("a", 0, 4), Subtask("b", 4, 10))), 10),
        (EpisodeAnnotation((Subtask("a", 0, 2), Subtask("b", 2, 4))), 4),
        (EpisodeAnnotation((Subtask("c", 0, 3),)), 3),
    ]
    # Means over the demos containing each stage: a=0.45, b=0.55, c=1.0; renormalised by 2.0.
    assert stage_proportions(episodes, ["a", "b", "c"]) == pytest.approx({"a": 0.225, "b": 0.275, "c": 0.5})
    # A repeated stage (re-grasp) adds its durations within the demo.
    regrasp = (Subtask("a", 0, 2), Subtask("b", 2, 5), Subtask("a", 5, 8), Subtask("b", 8, 10))
    repeat = [(EpisodeAnnotation(regrasp), 10)]
    assert stage_proportions(repeat, ["a", "b"]) == pytest.approx({"a": 0.5, "b": 0.5})
    with pytest.raises(AnnotationError, match="not in the vocabulary"):
        stage_proportions(episodes, ["a", "b"])
