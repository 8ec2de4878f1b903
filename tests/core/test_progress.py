"""Confidence-weighted smoothing of streamed progress scores."""

from __future__ import annotations

import pytest

from sarm.model.progress import ConfidenceSmoother


def test_smoothing_matches_a_hand_computation() -> None:
    smoother = ConfidenceSmoother()
    assert smoother.update(0.2, 1.0) == pytest.approx(0.2)
    # weights c³: 1 and 0.95³ = 0.857375
    second = (0.2 * 1 + 0.5 * 0.857375) / (1 + 0.857375)
    assert smoother.update(0.5, 0.95) == pytest.approx(second)
    assert smoother.update(0.9, 0.5) == pytest.approx(second)  # below 0.9: ignored
    third = (0.2 + 0.5 * 0.857375 + 0.6 * 0.729) / (1 + 0.857375 + 0.729)
    assert smoother.update(0.6, 0.9) == pytest.approx(third)


def test_low_confidence_before_any_accepted_value_passes_through_unremembered() -> None:
    smoother = ConfidenceSmoother()
    assert smoother.update(0.7, 0.3) == 0.7
    assert smoother.update(0.1, 0.99) == pytest.approx(0.1)


def test_only_the_last_ten_accepted_values_count_and_reset_forgets() -> None:
    smoother = ConfidenceSmoother()
    smoother.update(100.0, 1.0)
    for accepted in range(2, 11):
        assert smoother.update(0.0, 1.0) == pytest.approx(100.0 / accepted)
    assert smoother.update(0.0, 1.0) == 0.0
    smoother.reset()
    assert smoother.update(0.4, 0.2) == 0.4


@pytest.mark.parametrize(("history", "min_confidence"), [(0, 0.9), (10, 0.0), (10, 1.5)])
def test_rejects_bad_settings(history: int, min_confidence: float) -> None:
    with pytest.raises(ValueError):
        ConfidenceSmoother(history, min_confidence)
