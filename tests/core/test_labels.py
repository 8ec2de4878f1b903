"""Per-frame stage/τ labels (formula 2), their edge cases, and the stage+τ → progress map."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.data.annotations import AnnotationError, EpisodeAnnotation, Subtask, stage_proportions
from sarm.model.labels import (
    AFTER_LAST_TAU,
    REGRESS_COLUMN,
    frame_index_labels,
    progress_from_stage_tau,
    regress_labels,
    regress_start,
    stage_breakpoints,
    stage_tau_labels,
)
from sarm.model.windows import sequence_indices

VOCAB = ["reach", "grasp", "lift"]


def ann(*subtasks: tuple[str, int, int]) -> EpisodeAnnotation:
    return EpisodeAnnotation(tuple(Subtask(name, start, end) for name, start, end in subtasks))


def test_formula_2_with_before_first_and_after_last() -> None:
    labels = stage_tau_labels(ann(("reach", 2, 5), ("grasp", 5, 9), ("lift", 9, 11)), 12, VOCAB)
    # frames:               0  1  2  3    4    5  6    7   8    9  10   11
    assert labels.stage.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    expected_tau = [0, 0, 0, 1 / 3, 2 / 3, 0, 0.25, 0.5, 0.75, 0, 0.5, AFTER_LAST_TAU]
    np.testing.assert_allclose(labels.tau, expected_tau, rtol=1e-6)
    np.testing.assert_allclose(labels.target, labels.stage + labels.tau)
    assert labels.stage.dtype == np.int64 and labels.tau.dtype == np.float32


def test_contiguous_subtasks_give_a_continuous_target() -> None:
    # e is exclusive: y reaches k + 1 exactly where subtask k + 1 starts, never repeating a value.
    labels = stage_tau_labels(ann(("reach", 0, 4), ("grasp", 4, 8), ("lift", 8, 12)), 12, VOCAB)
    np.testing.assert_allclose(labels.target, np.arange(12) / 4)


def test_gap_between_subtasks_keeps_previous_stage_finished() -> None:
    labels = stage_tau_labels(ann(("reach", 0, 4), ("grasp", 6, 10)), 10, VOCAB)
    assert labels.stage.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(labels.tau, [0, 0.25, 0.5, 0.75, 1, 1, 0, 0.25, 0.5, 0.75])


def test_zero_length_subtask_is_done_at_once() -> None:
    # grasp [4, 4) owns no frame; the gap after it is "grasp finished".
    labels = stage_tau_labels(ann(("reach", 0, 4), ("grasp", 4, 4), ("lift", 6, 8)), 8, VOCAB)
    assert labels.stage.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(labels.tau, [0, 0.25, 0.5, 0.75, 1, 1, 0, 0.5])
    # Followed directly by the next subtask it leaves no trace.
    labels = stage_tau_labels(ann(("reach", 0, 4), ("grasp", 4, 4), ("lift", 4, 8)), 8, VOCAB)
    assert labels.stage.tolist() == [0, 0, 0, 0, 2, 2, 2, 2]


def test_annotation_ending_early_labels_the_tail_by_its_last_stage() -> None:
    # A failed demo annotated only up to "grasp": its tail is not labelled as the task's last stage.
    labels = stage_tau_labels(ann(("reach", 0, 2), ("grasp", 2, 4)), 6, VOCAB)
    assert labels.stage.tolist() == [0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(labels.tau[4:], [AFTER_LAST_TAU] * 2)


def test_repeated_stage_name_maps_to_one_class_and_progress_goes_back() -> None:
    regrasp = ann(("reach", 0, 2), ("grasp", 2, 4), ("lift", 4, 6), ("grasp", 6, 8), ("lift", 8, 10))
    labels = stage_tau_labels(regrasp, 10, VOCAB)
    assert labels.stage.tolist() == [0, 0, 1, 1, 2, 2, 1, 1, 2, 2]
    np.testing.assert_allclose(labels.tau, [0, 0.5] * 5)
    progress = progress_from_stage_tau(labels.stage, labels.tau, [0.2, 0.3, 0.5])
    np.testing.assert_allclose(progress, [0, 0.1, 0.2, 0.35, 0.5, 0.75, 0.2, 0.35, 0.5, 0.75])
    assert progress[6] < progress[5]  # the drop undoes work
    # Formula 1 adds both grasp segments of the episode: 4 of 10 frames.
    props = stage_proportions([(regrasp, 10)], VOCAB)
    assert props["grasp"] == pytest.approx(0.4)


def test_rewound_frames_carry_their_own_decreasing_targets() -> None:
    labels = stage_tau_labels(ann(("reach", 0, 100), ("grasp", 100, 300)), 300, VOCAB)
    seq = sequence_indices(299, stride=30, n_rewind=4)
    targets = labels.target[seq.indices[0, : seq.lengths[0]]]
    np.testing.assert_allclose(targets[8:], [1.995, 1.845, 1.695, 1.545, 1.395], rtol=1e-6)
    assert np.all(np.diff(targets[8:]) < 0)


def test_regress_plays_the_labels_backwards_from_its_first_frame() -> None:
    labels = stage_tau_labels(ann(("reach", 0, 10), ("grasp", 10, 20), ("lift", 20, 40)), 40, VOCAB)
    regressed = regress_labels(labels, 30)
    y, before = regressed.target, labels.target
    np.testing.assert_array_equal(y[:30], before[:30])
    # Frame 30 + j carries frame 29 − j's label: the rise of frames 10..29 undone over frames 30..39.
    np.testing.assert_array_equal(y[30:], before[29:19:-1])
    assert np.all(np.diff(y[30:]) < 0) and y[-1] == before[20]
    # A regress longer than the history before it bottoms out at frame 0's label.
    np.testing.assert_array_equal(regress_labels(labels, 5).target[10:], np.full(30, before[0]))
    assert regress_labels(labels, -1) is labels


def test_regress_never_undoes_an_earlier_drop() -> None:
    # reach, grasp, lift, then a drop (reach again), a re-grasp, and the give-up from frame 40.
    subtasks = (("reach", 0, 10), ("grasp", 10, 20), ("lift", 20, 30), ("reach", 30, 35), ("grasp", 35, 40))
    labels = stage_tau_labels(ann(*subtasks), 60, VOCAB)
    y = regress_labels(labels, 40).target
    assert np.all(np.diff(y[40:]) <= 0)
    np.testing.assert_array_equal(y[40:45], labels.target[39:34:-1])  # the re-grasp undone
    np.testing.assert_array_equal(y[45:50], labels.target[34:29:-1])  # the reach after the drop undone
    np.testing.assert_array_equal(y[50:], np.zeros(10))  # then it stays at τ = 0: the lift is not replayed


def test_regress_start_is_read_from_the_episode_row_and_checked() -> None:
    assert regress_start({REGRESS_COLUMN: 12}) == 12
    assert regress_start({}) == -1 and regress_start({REGRESS_COLUMN: None}) == -1
    labels = frame_index_labels(20)
    with pytest.raises(AnnotationError, match="regress_from_frame 20 is outside"):
        regress_labels(labels, 20)
    with pytest.raises(AnnotationError, match="regress_from_frame -3"):
        regress_labels(labels, -3)


def test_frame_index_labels_are_a_single_stage_spanning_the_episode() -> None:
    labels = frame_index_labels(4)
    assert labels.stage.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(labels.tau, [0, 0.25, 0.5, 0.75])
    same = stage_tau_labels(ann(("task", 0, 4)), 4, ["task"])
    np.testing.assert_array_equal(labels.tau, same.tau)


@pytest.mark.parametrize(
    ("annotation", "length", "match"),
    [
        (ann(("reach", 0, 5), ("grasp", 4, 8)), 8, "must not overlap"),
        (ann(("reach", 0, 9)), 8, "outside the episode"),
        (ann(("push", 0, 4)), 8, "not in the dataset's stage vocabulary"),
        (EpisodeAnnotation(()), 8, "no subtasks"),
        (ann(("reach", 0, 0)), 0, "length must be positive"),
    ],
)
def test_unusable_annotations_fail_fast(annotation: EpisodeAnnotation, length: int, match: str) -> None:
    with pytest.raises(AnnotationError, match=match):
        stage_tau_labels(annotation, length, VOCAB)


def test_progress_map_hits_the_breakpoints() -> None:
    props = [0.2, 0.3, 0.5]
    np.testing.assert_allclose(stage_breakpoints(props), [0, 0.2, 0.5, 1])
    stage = np.array([0, 1, 2, 2, 1, 0])
    tau = np.array([0, 0, 0, 1, 0.5, 1])
    np.testing.assert_allclose(progress_from_stage_tau(stage, tau, props), [0, 0.2, 0.5, 1, 0.35, 0.2])
    # The last breakpoint is pinned to 1 even when rounded proportions fall short.
    assert stage_breakpoints([0.333, 0.333, 0.333])[-1] == 1.0
    assert progress_from_stage_tau(1, 0.5, [0.25, 0.75]) == pytest.approx(0.625)


@pytest.mark.parametrize(("stage", "props"), [(3, [0.5, 0.5]), (-1, [0.5, 0.5]), (0.5, [1.0]), (0, [-0.1, 1.1])])
def test_progress_map_rejects_bad_input(stage: object, props: list[float]) -> None:
    with pytest.raises(ValueError):
        progress_from_stage_tau(stage, 0.0, props)  # type: ignore[arg-type]
