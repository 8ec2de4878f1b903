"""Meta-World demo generation: quality mixes, stage annotations, determinism and rendered frames."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

# Import the generator before anything else imports mujoco: it picks the headless GL backend (MUJOCO_GL),
# which mujoco reads once, at import. Skips where the optional `sim` extra is not installed.
pytest.importorskip("sarm.sim.metaworld_demos")

from sarm.data.annotations import annotation_problems
from sarm.data.episode import EpisodeData
from sarm.model.labels import REGRESS_COLUMN, regress_labels, stage_tau_labels
from sarm.sim import metaworld_demos as md
from sarm.sim.metaworld_demos import (
    CAMERA_KEY,
    HOLD_FRAMES,
    QualityMix,
    generate_episodes,
    parse_mix,
    stage_names,
)
from sarm.sim.stages import segment, task_stages

TASK = "pick-place-v3"
MIX = QualityMix(clean=0.4, degraded=0.4, failed=0.2)
SIZE = 32


@pytest.fixture(scope="module")
def demos() -> list[EpisodeData]:
    return list(generate_episodes(TASK, 5, image_size=SIZE, seed=3, mix=MIX))


def _table_fraction(image: np.ndarray) -> tuple[float, float]:
    """Share of wood-coloured pixels (the table top) in the upper and the lower half of the image."""
    r, g, b = (image[..., c].astype(int) for c in range(3))
    wood = (r > 60) & (g > 0.45 * r) & (g < 0.85 * r) & (b < g)
    half = len(image) // 2
    return float(wood[:half].mean()), float(wood[half:].mean())


# --- quality mixes -------------------------------------------------------------------------------------


def test_parse_mix_reads_fractions_and_defaults_missing_ones_to_zero() -> None:
    assert parse_mix("clean=0.5,degraded=0.3,failed=0.2") == QualityMix(0.5, 0.3, 0.2)
    assert parse_mix(" clean = 1 ") == QualityMix(1.0, 0.0, 0.0)
    assert parse_mix("failed=0.25,clean=0.75") == QualityMix(0.75, 0.0, 0.25)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty quality mix"),
        ("clean=0.5", "sum to 1"),
        ("clean=half,failed=0.5", "not a number"),
        ("good=1", "expected name=fraction"),
        ("clean", "expected name=fraction"),
        ("clean=0.5,clean=0.5", "given twice"),
        ("clean=1.5,failed=-0.5", r"in \[0, 1\]"),
        ("clean=nan,failed=1", r"in \[0, 1\]"),
    ],
)
def test_parse_mix_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_mix_counts_add_up_by_largest_remainder() -> None:
    assert QualityMix(0.5, 0.3, 0.2).counts(10) == {"clean": 5, "degraded": 3, "failed": 2}
    assert QualityMix(0.5, 0.3, 0.2).counts(7) == {"clean": 4, "degraded": 2, "failed": 1}
    assert sum(QualityMix(1 / 3, 1 / 3, 1 / 3).counts(100).values()) == 100


# --- tasks ---------------------------------------------------------------------------------------------


def test_unknown_task_fails_at_call_time_listing_valid_tasks() -> None:
    with pytest.raises(ValueError, match=r"unknown Meta-World task 'pick-place-v9'.*'pick-place-v3'"):
        generate_episodes("pick-place-v9", 1)
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        stage_names("not-a-task")


def test_task_without_expert_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(md.ENV_POLICY_MAP, "reach-v3")
    with pytest.raises(ValueError, match="no scripted expert"):
        generate_episodes("reach-v3", 1)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="episodes"):
        generate_episodes(TASK, -1)
    with pytest.raises(ValueError, match="image_size"):
        generate_episodes(TASK, 1, image_size=1000)


def test_stage_tables() -> None:
    assert stage_names("pick-place-v3") == ["reach", "grasp", "lift", "place"]
    assert stage_names("assembly-v3") == ["reach", "grasp", "lift", "move", "insert"]
    assert stage_names("peg-insert-side-v3") == ["reach", "grasp", "lift", "insert"]
    assert stage_names("drawer-open-v3") == ["approach", "manipulate", "finish"]


def test_segment_absorbs_blips_and_keeps_real_regressions() -> None:
    names = ["reach", "grasp", "lift"]
    levels = [1, 0, 0, 0, 0, 1, 1, 1, 1, 2, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0]
    ann = segment(levels, names)
    assert [(s.name, s.start, s.end) for s in ann.subtasks] == [
        ("reach", 0, 5),
        ("grasp", 5, 11),
        ("lift", 11, 15),
        ("reach", 15, 20),
    ]


# --- generated episodes --------------------------------------------------------------------------------


@pytest.mark.slow
def test_episode_shapes_and_dtypes(demos: list[EpisodeData]) -> None:
    for ep in demos:
        t = ep.length
        assert ep.task == "Pick up the puck and place it at the goal."
        assert ep.frames[CAMERA_KEY].shape == (t, SIZE, SIZE, 3) and ep.frames[CAMERA_KEY].dtype == np.uint8
        assert ep.state.shape == (t, len(md.STATE_NAMES)) and ep.state.dtype == np.float32
        assert ep.action.shape == (t, 4) and ep.action.dtype == np.float32
        assert np.abs(ep.action).max() <= 1.0
        assert ep.frame_columns["next.reward"].dtype == np.float32
        assert ep.frame_columns["next.success"].dtype == np.bool_
        assert 0 < t <= md.MAX_STEPS


@pytest.mark.slow
def test_annotations_are_valid_and_cover_every_frame(demos: list[EpisodeData]) -> None:
    for ep in demos:
        ann = ep.annotations["sparse"]
        assert annotation_problems(ann, ep.length, stage_names(TASK)) == []
        starts = [s.start for s in ann.subtasks]
        ends = [s.end for s in ann.subtasks]
        assert starts[0] == 0 and ends[-1] == ep.length and starts[1:] == ends[:-1]
        assert all(s.length > 0 for s in ann.subtasks)


@pytest.mark.slow
def test_quality_mix_is_honoured_and_success_matches_quality(demos: list[EpisodeData]) -> None:
    assert Counter(ep.episode_columns["quality"] for ep in demos) == {"clean": 2, "degraded": 2, "failed": 1}
    for ep in demos:
        succeeded = ep.episode_columns["quality"] != "failed"
        assert ep.episode_columns["success"] is succeeded
        assert bool(ep.frame_columns["next.success"].any()) is succeeded


@pytest.mark.slow
def test_clean_demos_go_through_every_stage_and_stop_soon_after_success(demos: list[EpisodeData]) -> None:
    for ep in (ep for ep in demos if ep.episode_columns["quality"] == "clean"):
        assert ep.annotations["sparse"].names == stage_names(TASK)
        first_success = int(np.argmax(ep.frame_columns["next.success"]))
        assert ep.length == first_success + 1 + HOLD_FRAMES


@pytest.mark.slow
def test_failed_demos_end_in_a_stage_before_the_last(demos: list[EpisodeData]) -> None:
    for ep in (ep for ep in demos if ep.episode_columns["quality"] == "failed"):
        assert ep.annotations["sparse"].names[-1] != stage_names(TASK)[-1]
        assert "give_up" in ep.episode_columns["perturbations"]


@pytest.mark.slow
def test_failed_demos_mark_their_retreat_and_its_labels_fall_back(demos: list[EpisodeData]) -> None:
    failed = [ep for ep in demos if ep.episode_columns["quality"] == "failed"]
    assert failed
    for ep in demos:
        start = ep.episode_columns[REGRESS_COLUMN]
        if ep.episode_columns["quality"] != "failed":
            assert start == -1
            continue
        # The retreat runs RETREAT_FRAMES to the end; the hand moves back towards where it started.
        assert md.RETREAT_FRAMES[0] <= ep.length - start <= md.RETREAT_FRAMES[1]
        hand = ep.state[:, :3]
        home = hand[0]
        assert np.linalg.norm(hand[-1] - home) < np.linalg.norm(hand[start] - home)
        labels = stage_tau_labels(ep.annotations["sparse"], ep.length, stage_names(TASK))
        y = regress_labels(labels, start).target
        assert np.all(np.diff(y[start:]) <= 0) and y[-1] < y[start - 1]
        # Without the column the last stage's τ would keep rising through the retreat.
        assert labels.target[-1] > labels.target[start]


@pytest.mark.slow
def test_same_seed_same_arrays_other_seed_other_arrays(demos: list[EpisodeData]) -> None:
    again = list(generate_episodes(TASK, 5, image_size=SIZE, seed=3, mix=MIX))
    for a, b in zip(demos, again, strict=True):
        assert np.array_equal(a.frames[CAMERA_KEY], b.frames[CAMERA_KEY])
        assert np.array_equal(a.state, b.state) and np.array_equal(a.action, b.action)
        assert a.annotations == b.annotations and a.episode_columns == b.episode_columns
    other = next(generate_episodes(TASK, 1, image_size=SIZE, seed=4, mix=QualityMix(1, 0, 0)))
    assert not np.array_equal(other.state[0], demos[0].state[0])


@pytest.mark.slow
def test_images_are_upright(demos: list[EpisodeData]) -> None:
    for ep in demos:
        for image in ep.frames[CAMERA_KEY][[0, -1]]:
            assert not np.array_equal(image, image[::-1])
            upper, lower = _table_fraction(image)
            assert lower > 0.4 and upper < 0.15, (upper, lower)  # the table top fills the lower half


@pytest.mark.slow
def test_forced_drop_sends_progress_back_and_the_expert_regrasps() -> None:
    env = md.make_env(TASK)
    stages = task_stages(TASK)
    plan = md.Plan("degraded", 0.0, (md.Event("drop", stage=2, delay=4, frames=12),))
    record = md._rollout(env, md.ENV_POLICY_MAP[TASK](), stages, plan, seed=11, rng=np.random.default_rng(11))
    names = segment(record.level, stages.names).names
    assert record.succeeded
    first_lift = names.index("lift")
    assert {"reach", "grasp"} & set(names[first_lift + 1 : -2])  # went back before lifting again
    assert names[-2:] == ["lift", "place"]


@pytest.mark.slow
# handle-press: its success flag drops again as the handle overshoots; window-open: the hand passes the
# handle on its way down. Both must still give one pass through the stages.
@pytest.mark.parametrize("task", ["assembly-v3", "peg-insert-side-v3", "handle-press-v3", "window-open-v3"])
def test_clean_demos_of_other_tasks_succeed_through_their_stages(task: str) -> None:
    (ep,) = generate_episodes(task, 1, image_size=SIZE, seed=0, mix=parse_mix("clean=1"))
    # A clean demo has no give-up retreat: regress_from_frame -1.
    assert ep.episode_columns == {
        "success": True,
        "quality": "clean",
        "perturbations": "noise=0.00",
        "regress_from_frame": -1,
    }
    assert ep.annotations["sparse"].names == stage_names(task)
    assert annotation_problems(ep.annotations["sparse"], ep.length) == []
