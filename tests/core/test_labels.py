"""Per-frame stage/τ labels (formula 2), their edge cases, and the stage+τ → progress map."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.data.annotations import AnnotationError, EpisodeAnnotation, Subtask, stage_proportions
from sarm.model.labels import (
    AFTER_LAST_TAU,
    frame_index_labels,
    progress_from_stage_tau,
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
