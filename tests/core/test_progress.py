"""Causal filters on streamed progress scores: the official history smoother and the confidence-gated one-euro."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarm.model.progress import ConfidenceSmoother, OneEuroFilter


def test_smoothing_matches_a_hand_computation() -> None:
    smoother = ConfidenceSmoother()
    assert smoother.update(0, 0.2, 1.0) == pytest.approx(0.2)
    # weights c³: 1 and 0.95³ = 0.857375
    second = (0.2 * 1 + 0.5 * 0.857375) / (1 + 0.857375)
    assert smoother.update(1, 0.5, 0.95) == pytest.approx(second)
    assert smoother.update(2, 0.9, 0.5) == pytest.approx(second)  # below 0.9: ignored
    third = (0.2 + 0.5 * 0.857375 + 0.6 * 0.729) / (1 + 0.857375 + 0.729)
    assert smoother.update(3, 0.6, 0.9) == pytest.approx(third)


def test_low_confidence_before_any_accepted_value_passes_through_unremembered() -> None:
    smoother = ConfidenceSmoother()
    assert smoother.update(0, 0.7, 0.3) == 0.7
    assert smoother.update(1, 0.1, 0.99) == pytest.approx(0.1)


def test_only_the_last_ten_accepted_values_count() -> None:
    smoother = ConfidenceSmoother()
    smoother.update(0, 100.0, 1.0)
    for accepted in range(2, 11):
        assert smoother.update(accepted, 0.0, 1.0) == pytest.approx(100.0 / accepted)
    assert smoother.update(11, 0.0, 1.0) == 0.0


@pytest.mark.parametrize(("history", "min_confidence"), [(0, 0.9), (10, 0.0), (10, 1.5)])
def test_rejects_bad_settings(history: int, min_confidence: float) -> None:
    with pytest.raises(ValueError):
        ConfidenceSmoother(history, min_confidence)


def test_one_euro_matches_a_hand_computation() -> None:
    f = OneEuroFilter(fps=10.0, min_cutoff_hz=1.0, beta=0.5, derivative_cutoff_hz=1.0, confidence_power=2.0)
    assert f.update(0, 0.2, 0.3) == 0.2  # the first frame passes through
    dt = 0.2  # frame 2 at 10 fps
    a_d = 2 * math.pi * dt / (2 * math.pi * dt + 1)
    gain = 0.8**2
    speed = gain * a_d * (0.6 - 0.2) / dt
    cutoff = 1.0 + 0.5 * abs(speed)
    a = 2 * math.pi * cutoff * dt / (2 * math.pi * cutoff * dt + 1)
    assert f.update(2, 0.6, 0.8) == pytest.approx(0.2 + gain * a * 0.4)


def test_one_euro_holds_a_constant_and_settles_on_a_step_from_below() -> None:
    f = OneEuroFilter(fps=30.0)
    assert [f.update(t, 0.4, 0.9) for t in range(30)] == pytest.approx([0.4] * 30)
    after = np.array([f.update(t, 0.8, 0.9) for t in range(30, 150)])
    assert np.all(np.diff(after) > 0) and np.all(after < 0.8)  # no overshoot on a step
    assert after[-1] == pytest.approx(0.8, abs=0.01)


def test_one_euro_ignores_frames_of_zero_confidence() -> None:
    f = OneEuroFilter(fps=30.0)
    f.update(0, 0.5, 1.0)
    assert [f.update(t, 1.0, 0.0) for t in range(1, 20)] == [0.5] * 19


def test_one_euro_smooths_noise_and_follows_a_ramp() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(300)
    truth = t / 299
    noisy = truth + rng.normal(0, 0.08, len(t))
    f = OneEuroFilter(fps=30.0)
    smoothed = np.array([f.update(int(i), float(v), 1.0) for i, v in zip(t, noisy, strict=True)])
    assert np.mean((smoothed - truth) ** 2) < 0.5 * np.mean((noisy - truth) ** 2)
    assert abs(smoothed[-1] - truth[-1]) < 0.1  # lags a ramp by a fraction of a second, not seconds


def test_one_euro_reads_time_not_calls() -> None:
    """Scoring every 3rd frame gives nearly the curve scoring every frame gives at those frames."""
    signal = np.clip(np.linspace(-0.2, 1.2, 301), 0, 1)
    every, sparse = OneEuroFilter(fps=30.0), OneEuroFilter(fps=30.0)
    dense_curve = [every.update(i, float(v), 1.0) for i, v in enumerate(signal)]
    sparse_curve = [sparse.update(i, float(signal[i]), 1.0) for i in range(0, 301, 3)]
    assert np.max(np.abs(np.array(dense_curve[::3]) - sparse_curve)) < 0.03


def test_one_euro_with_an_enormous_cut_off_passes_values_through() -> None:
    f = OneEuroFilter(fps=30.0, min_cutoff_hz=1e308, beta=1e308)
    assert [f.update(t, v, 1.0) for t, v in enumerate([0.1, 0.9, 0.3])] == pytest.approx([0.1, 0.9, 0.3])


def test_one_euro_with_a_vanishing_cut_off_holds_its_first_value() -> None:
    f = OneEuroFilter(fps=30.0, min_cutoff_hz=5e-324, beta=0.0)
    assert [f.update(t, v, 1.0) for t, v in enumerate([0.1, 0.9, 0.3])] == [0.1, 0.1, 0.1]


def test_one_euro_refuses_frames_out_of_order() -> None:
    f = OneEuroFilter(fps=30.0)
    f.update(4, 0.1, 1.0)
    with pytest.raises(ValueError, match="in order"):
        f.update(4, 0.2, 1.0)


@pytest.mark.parametrize(
    "settings",
    [{"fps": 0.0}, {"fps": math.nan}, {"min_cutoff_hz": 0.0}, {"beta": -0.1}, {"derivative_cutoff_hz": -1.0}],
)
def test_one_euro_rejects_bad_settings(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        OneEuroFilter(**{"fps": 30.0, **settings})
