"""The long-horizon Meta-World task: pick-place three times in one episode, the puck re-placed in between."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

# The generator first: it picks the headless GL backend before mujoco is imported (see test_metaworld_demos).
pytest.importorskip("sarm.sim.metaworld_demos")

from sarm.cli import app
from sarm.data.annotations import annotation_problems
from sarm.data.lerobot import LeRobotDataset
from sarm.data.validate import find_problems
from sarm.model.windows import WINDOW_FRAMES, stride_frames
from sarm.sim import metaworld_demos as md
from sarm.sim.stages import TASK_INSTRUCTIONS, Scene, repeated, task_stages

TASK = "pick-place-x3-v3"
STAGES = [f"{stage} {k}" for k in (1, 2, 3) for stage in ("reach", "grasp", "lift", "place")]


def test_stage_table_is_the_base_table_once_per_repetition() -> None:
    assert md.stage_names(TASK) == STAGES
    assert md.env_task(TASK) == "pick-place-v3" and md.repetitions(TASK) == 3
    table = task_stages(TASK)
    assert table.carry_stage == 6  # the middle repetition's lift: a forced drop lands mid-episode
    hand, puck, goal = np.array([0.0, 0.6, 0.2]), np.array([0.0, 0.6, 0.02]), np.array([0.1, 0.8, 0.2])
    far = Scene(hand, 1.0, puck, puck, goal, solved=False)
    at_puck = Scene(puck + np.array([0.0, 0.0, 0.03]), 1.0, puck, puck, goal, solved=False)
    # Stage k of repetition r is level 4r + k; a finished repetition's stages all hold.
    assert [table.level(replace(far, repetition=r)) for r in range(3)] == [0, 4, 8]
    assert table.level(replace(at_puck, repetition=1)) == 5
    assert table.level(replace(far, solved=True, repetition=2)) == 11
    with pytest.raises(ValueError, match="times"):
        repeated(task_stages("pick-place-v3"), 0)


def test_unknown_tasks_list_the_long_horizon_ones() -> None:
    with pytest.raises(ValueError, match=r"long-horizon: \['pick-place-x3-v3'\]"):
        md.generate_episodes("pick-place-x9-v3", 1)


@pytest.mark.slow
def test_generated_long_horizon_demo_is_ordered_long_and_lerobot_readable(tmp_path: Path) -> None:
    out = tmp_path / "long"
    result = CliRunner().invoke(
        app,
        ["data", "generate", "--task", TASK, "--episodes", "1", "--out", str(out), "--image-size", "16"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert find_problems(out) == []

    ds = LeRobotDataset(out)
    (meta,) = ds.episodes
    assert meta.task == TASK_INSTRUCTIONS[TASK]
    assert meta.row["quality"] == "clean" and meta.row["success"] is True
    ann = ds.require_annotation(0)
    # Twelve distinct stages, in order, tiling the episode.
    assert ann.names == STAGES and len(set(ann.names)) == 12
    assert annotation_problems(ann, meta.length, STAGES) == []
    assert [s.start for s in ann.subtasks] == sorted(s.start for s in ann.subtasks)
    assert ann.subtasks[0].start == 0 and ann.subtasks[-1].end == meta.length
    # Long enough that most frames' windows use the fixed 1 s stride (t >= 8 strides).
    stride = stride_frames(ds.fps, 1.0)
    assert meta.length - (WINDOW_FRAMES - 1) * stride > meta.length / 2
    # Written as LeRobot reads it: subtask columns (prefixed and legacy) and ᾱ over the 12 stages.
    row = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()[0]
    assert row["sparse_subtask_names"] == row["subtask_names"] == STAGES
    proportions = json.loads((out / "meta/temporal_proportions_sparse.json").read_text())
    assert list(proportions) == STAGES and sum(proportions.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_the_puck_is_re_placed_between_repetitions() -> None:
    (ep,) = md.generate_episodes(TASK, 1, image_size=16, seed=5, mix=md.parse_mix("clean=1"))
    ann = ep.annotations["sparse"]
    assert ann.names == STAGES
    puck = ep.state[:, 4:7]
    goal = ep.state[:, -3:]
    assert np.all(goal == goal[0])  # the goal stays
    for k in (4, 8):  # each new repetition starts with the puck back on the table, away from the goal
        start = ann.subtasks[k].start
        assert puck[start, 2] < 0.03
        assert np.linalg.norm(puck[start, :2] - goal[start, :2]) >= 0.15
        assert np.linalg.norm(puck[start - 1, :2] - goal[start - 1, :2]) < 0.07  # placed just before
    success = ep.frame_columns["next.success"]
    # next.success is the whole task's: first true on the step into the third placement (it reports s_{t+1}).
    placed = ann.subtasks[11].start
    assert success[placed - 1] and not success[: placed - 1].any()
    assert ep.episode_columns["success"] is True and ep.episode_columns["regress_from_frame"] == -1
