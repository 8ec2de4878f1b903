"""Causal 9-frame windows and the rewind/padding layout of model input sequences."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.model.windows import causal_windows, rewindable, sequence_indices, stride_frames


@pytest.mark.parametrize(
    ("fps", "seconds", "stride"), [(30, 1.0, 30), (80, 1.0, 80), (50, 0.5, 25), (10, 0.04, 1), (29.97, 1.0, 30)]
)
def test_stride_from_fps(fps: float, seconds: float, stride: int) -> None:
    assert stride_frames(fps, seconds) == stride


def test_stride_rejects_non_positive() -> None:
    with pytest.raises(ValueError):
        stride_frames(0)


def test_episode_start_window_is_all_start() -> None:
    assert causal_windows(0, 30).tolist() == [[0] * 9]
    assert causal_windows(100, 30, start=100).tolist() == [[100] * 9]


def test_early_windows_spread_the_middle_frames_evenly() -> None:
    assert causal_windows(16, 30).tolist() == [[0, 2, 4, 6, 8, 10, 12, 14, 16]]
    # 5·k/8 = .625, 1.25, 1.875, 2.5, 3.125, 3.75, 4.375 rounded half up.
    assert causal_windows(5, 30).tolist() == [[0, 1, 1, 2, 3, 3, 4, 4, 5]]
    assert causal_windows(1005, 30, start=1000).tolist() == [[1000, 1001, 1001, 1002, 1003, 1003, 1004, 1004, 1005]]


def test_later_windows_use_the_stride_and_both_rules_meet_at_8g() -> None:
    assert causal_windows(240, 30).tolist() == [list(range(0, 241, 30))]
    assert causal_windows(1000, 30).tolist() == [[0, *range(790, 1001, 30)]]
    assert causal_windows(241, 30).tolist() == [[0, 31, 61, 91, 121, 151, 181, 211, 241]]


def test_episode_end_window_needs_no_future_frame() -> None:
    window = causal_windows(299, 30)[0]
    assert window[-1] == 299 and window.max() == 299
    assert window.tolist() == [0, 89, 119, 149, 179, 209, 239, 269, 299]


def test_vectorised_rows_match_scalar_calls_and_stay_causal() -> None:
    t = np.arange(0, 600, 7)
    starts = np.where(t > 300, 300, 0)
    windows = causal_windows(t, 30, start=starts)
    assert windows.shape == (len(t), 9) and windows.dtype == np.int64
    for row, ti, si in zip(windows, t, starts, strict=True):
        assert row.tolist() == causal_windows(int(ti), 30, start=int(si))[0].tolist()
        assert row[0] == si and row[-1] == ti
    assert np.all(np.diff(windows, axis=1) >= 0)


def test_window_rejects_t_before_start_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="episode start"):
        causal_windows(5, 30, start=10)
    with pytest.raises(ValueError):
        causal_windows(5, 0)
    with pytest.raises(ValueError):
        causal_windows([[1, 2]], 30)


def test_sequence_layout_window_then_rewinds_then_padding() -> None:
    seq = sequence_indices(1000, 30, n_rewind=2)
    assert seq.indices.tolist() == [[0, *range(790, 1001, 30), 970, 940, 940, 940]]
    assert seq.lengths.tolist() == [11]
    # Without rewinds the padding repeats frame t, the last valid position.
    seq = sequence_indices(1000, 30)
    assert seq.indices[0, 8:].tolist() == [1000] * 5 and seq.lengths.tolist() == [9]


def test_early_rewinds_step_back_along_the_windows_own_spacing() -> None:
    # t = 40 < 8g: the window is [0, 5, 10, …, 35, 40]; rewinds go 35, 30, 25, never clamped onto frame 0.
    seq = sequence_indices(40, 30, n_rewind=3)
    assert seq.indices[0, :9].tolist() == list(range(0, 41, 5))
    assert seq.indices[0, 9:].tolist() == [35, 30, 25, 25]
    seq = sequence_indices(140, 30, start=100, n_rewind=4)
    assert seq.indices[0, 9:].tolist() == [135, 130, 125, 120]


def test_rewinds_never_reach_the_start_frame_once_rewindable() -> None:
    t = np.arange(0, 640)
    seq = sequence_indices(t, 80, n_rewind=4)
    ok = rewindable(t)
    assert ok.tolist() == (t >= 8).tolist()
    rewound = seq.indices[ok, 9:]
    assert np.all(rewound > 0)
    # Each rewind step goes strictly back in time, starting below t.
    assert np.all(np.diff(np.concatenate([t[ok, None], rewound], axis=1), axis=1) < 0)


def test_inference_rows_are_the_window_then_t_repeated() -> None:
    # n_rewind = 0 is what the gateway, the CLI and RA-BC score with: it must not change with the rewind rule.
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2000, 500)
    starts = np.minimum(t, rng.integers(0, 300, 500))
    for stride in (1, 7, 30, 80):
        seq = sequence_indices(t, stride, start=starts)
        np.testing.assert_array_equal(seq.indices[:, :9], causal_windows(t, stride, start=starts))
        np.testing.assert_array_equal(seq.indices[:, 9:], np.repeat(t[:, None], 4, axis=1))
        assert seq.lengths.tolist() == [9] * 500


def test_sequence_rejects_rewinds_that_would_reach_the_start_position() -> None:
    with pytest.raises(ValueError, match="max_rewind"):
        sequence_indices(100, 10, frames=5, max_rewind=4)


def test_sequences_vectorise_over_t_start_and_rewinds() -> None:
    seq = sequence_indices([0, 500, 900], 30, start=[0, 0, 400], n_rewind=[1, 4, 0])
    assert seq.indices.shape == (3, 13)
    assert seq.lengths.tolist() == [10, 13, 9]
    assert seq.indices[1, 9:].tolist() == [470, 440, 410, 380]
    assert seq.indices[2, 0] == 400 and seq.indices[2, 8:].tolist() == [900] * 5


def test_sequence_rejects_too_many_rewinds() -> None:
    with pytest.raises(ValueError, match="n_rewind"):
        sequence_indices(1000, 30, n_rewind=5)
