"""`sarm eval`'s figures of the served (smoothed) progress, on hand-made curves."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.evaluation import EpisodeResult, curve_metrics, served_progress
from sarm.model.progress import OneEuroFilter
from sarm.scoring.pytorch import EpisodeScores


def scores(progress: list[float], confidence: float = 0.9) -> EpisodeScores:
    n = len(progress)
    return EpisodeScores(
        frame_index=np.arange(n),
        stage=np.zeros(n, np.int64),
        stage_probs=np.ones((n, 1), np.float32),
        tau=np.zeros(n, np.float32),
        progress=np.array(progress, np.float32),
        confidence=np.full(n, confidence, np.float32),
    )


def result(episode: int, progress: list[float], truth: list[float], success: bool, quality: str) -> EpisodeResult:
    n = len(progress)
    return EpisodeResult(episode, quality, success, np.array(truth), np.zeros(n, np.int64), scores(progress), "task")


def test_served_progress_is_the_default_filter_at_the_datasets_frame_rate() -> None:
    raw = [0.0, 0.3, 0.1, 0.5, 0.4, 0.9]
    expected_filter = OneEuroFilter(fps=10.0)
    expected = [expected_filter.update(t, v, 0.9) for t, v in enumerate(raw)]
    np.testing.assert_allclose(served_progress(scores(raw), 10.0), expected, rtol=1e-6)
    assert not np.allclose(served_progress(scores(raw), 10.0), served_progress(scores(raw), 50.0))


def test_curve_metrics_voc_mse_and_auroc() -> None:
    results = [
        result(0, [0.1, 0.2, 0.3], [0.0, 0.5, 1.0], True, "clean"),
        result(1, [0.1, 0.3, 0.2], [0.0, 0.5, 1.0], True, "degraded"),
        result(2, [0.1, 0.1, 0.05], [0.0, 0.2, 0.1], False, "failed"),
    ]
    curves = {r.episode: r.scores.progress.astype(np.float64) for r in results}
    m = curve_metrics(results, curves)
    assert m["voc_mean"] == pytest.approx(0.75) and m["voc_episodes"] == 2  # VOCs 1.0 and 0.5
    assert m["voc_clean"] == pytest.approx(1.0) and m["voc_clean_episodes"] == 1
    per_episode = [np.mean((curves[r.episode] - r.true_progress) ** 2) for r in results]
    assert m["demo_mse"] == pytest.approx(np.mean(per_episode))
    assert m["success_auroc"] == 1.0  # both successful demos end above the failed one
