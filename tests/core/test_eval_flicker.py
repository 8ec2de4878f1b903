"""Stage flicker in `sarm eval`: stage changes per episode, predicted vs annotated, on hand-made sequences."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.evaluation import fixed_stride_share, flicker_summary, stage_changes, stage_flicker


@pytest.mark.parametrize(
    ("stages", "changes"),
    [
        ([], 0),
        ([2], 0),
        ([0, 0, 0, 0], 0),
        ([0, 0, 1, 1, 2, 2, 3], 3),  # a clean pass through four stages
        ([0, 1, 0, 1, 0, 1, 2], 6),  # flicker between two stages, then the third
        ([0, 1, 2, 1, 2, 3], 5),  # a real regression counts as two changes, as in the annotation
        ([3, 3, 2, 2, 1, 0], 3),  # a retreat played backwards
    ],
)
def test_stage_changes_counts_frames_that_differ_from_the_frame_before(stages: list[int], changes: int) -> None:
    assert stage_changes(np.array(stages, dtype=np.int64)) == changes


def test_flicker_summary_means_and_ratio() -> None:
    # Two episodes annotated with 3 changes each; the model changes 9 and 3 times: 6 on average, twice the truth.
    summary = flicker_summary([9, 3], [3, 3])
    assert summary == {"episodes": 2, "predicted_changes": 6.0, "annotated_changes": 3.0, "ratio": 2.0}
    assert flicker_summary([3, 3], [3, 3])["ratio"] == 1.0


def test_flicker_summary_without_annotated_changes_or_episodes() -> None:
    # A single-stage truth: the model's changes are all flicker, but there is no ratio to take.
    assert flicker_summary([2], [0]) == {
        "episodes": 1,
        "predicted_changes": 2.0,
        "annotated_changes": 0.0,
        "ratio": None,
    }
    empty = flicker_summary([], [])
    assert empty["episodes"] == 0 and empty["ratio"] is None and empty["predicted_changes"] is None
    with pytest.raises(ValueError, match="2 predicted and 1 annotated"):
        flicker_summary([1, 2], [1])


def test_stage_flicker_per_task_and_overall() -> None:
    predicted_runs = [
        [0, 1, 0, 1, 2, 3],  # pick: 5 changes
        [0, 0, 1, 2, 3, 3],  # pick: 3
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],  # long: 11
    ]
    annotated_runs = [[0, 0, 1, 2, 3, 3], [0, 1, 1, 2, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    tasks = ["pick", "pick", "long"]
    report = stage_flicker(
        tasks,
        [stage_changes(np.array(s)) for s in predicted_runs],
        [stage_changes(np.array(s)) for s in annotated_runs],
    )
    assert list(report["by_task"]) == ["pick", "long"]
    assert report["by_task"]["pick"] == {
        "episodes": 2,
        "predicted_changes": 4.0,
        "annotated_changes": 3.0,
        "ratio": 4 / 3,
    }
    assert report["by_task"]["long"]["ratio"] == 1.0
    overall = report["overall"]
    assert overall["episodes"] == 3 and overall["predicted_changes"] == pytest.approx(19 / 3)
    assert overall["ratio"] == pytest.approx(19 / 17)


def test_fixed_stride_share_counts_frames_past_eight_strides() -> None:
    # stride 10: frames t >= 80 use the fixed stride. 100 frames: 20 of them; 50 frames: none.
    assert fixed_stride_share([100, 50], 10) == pytest.approx(20 / 150)
    assert fixed_stride_share([80], 10) == 0.0
    assert fixed_stride_share([], 10) == 0.0


def test_report_shows_flicker_next_to_voc_and_per_task() -> None:
    from sarm.evaluation import _markdown

    flicker = flicker_summary([4, 4], [3, 3])
    row = {
        "labels": "stage",
        "in_sample": False,
        "voc_mean": 0.9,
        "voc_episodes": 2,
        "voc_annotation": 0.95,
        "voc_clean": 0.99,
        "voc_clean_episodes": 1,
        "demo_mse": 0.01,
        "stage_accuracy": 0.8,
        "success_auroc": None,
        "stage_flicker": {"overall": flicker, "by_task": {"Pick it.": flicker}},
        "fixed_stride_share": 0.6,
        "stride_frames": 80,
        "demo_mse_by_quality": {"clean": 0.01},
    }
    baseline = row | {"labels": "frame-index", "stage_flicker": None, "stage_accuracy": None}
    report = _markdown({"data": "d", "episodes": 2, "checkpoints": {"sarm": row, "baseline": baseline}}, [])
    assert "| 4.00 vs 3.00 (1.33x) | 60% (stride 80 frames) |" in report
    assert "| Pick it. | 2 | 4.00 vs 3.00 (1.33x) |" in report
    # The baseline has one stage class: no flicker figure, and each checkpoint keeps one row per table.
    assert (
        "| baseline | frame-index | held out | 0.9000 (n=2) | 0.9500 | 0.9900 (n=1) | 0.0100 | n/a | n/a | n/a |"
        in report
    )
    assert report.count("| sarm |") == 2
