"""RA-BC weights (paper eq. 8–9) against hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.rabc.weights import (
    RabcParams,
    RabcSummary,
    compute,
    progress_deltas,
    rabc_weights,
    summarize,
    weighted_loss,
)


def test_gain_is_progress_one_chunk_ahead_clamped_to_the_episode_end() -> None:
    phi = 0.1 * np.arange(10)
    np.testing.assert_allclose(progress_deltas([phi], 3)[0], [0.3] * 7 + [0.2, 0.1, 0.0], atol=1e-12)
    # A chunk longer than the episode compares every frame with the last one.
    np.testing.assert_allclose(progress_deltas([np.array([0.0, 0.5, 0.2])], 50)[0], [0.2, -0.3, 0.0])


def test_negative_gain_weighs_0_gain_above_kappa_1_and_between_the_soft_weight() -> None:
    # r = [0.06, -0.06, 0.08, -0.08, 0, 0, 0, 0] (the last frame of each episode gains 0):
    # μ = 0, σ² = (2·0.0036 + 2·0.0064) / 8 = 0.0025, so σ = 0.05, μ − 2σ = −0.1 and 4σ = 0.2.
    progress = [np.array([0.0, 0.06, 0.0, 0.08, 0.0]), np.array([0.0, 0.0]), np.array([0.0])]
    w = np.concatenate(rabc_weights(progress, chunk_size=1, kappa=0.01, eps=1e-6))
    soft_zero = 0.1 / (0.2 + 1e-6)  # r = 0 ≤ κ: (0 + 0.1) / (0.2 + ε)
    np.testing.assert_allclose(w, [1, 0, 1, 0, soft_zero, soft_zero, soft_zero, soft_zero], rtol=1e-9)
    # With κ = 0.1 the positive gains are soft too: (0.06 + 0.1) / 0.2 = 0.8, (0.08 + 0.1) / 0.2 = 0.9.
    w = np.concatenate(rabc_weights(progress, chunk_size=1, kappa=0.1, eps=1e-6))
    np.testing.assert_allclose(w[[0, 2]], [0.16 / (0.2 + 1e-6), 0.18 / (0.2 + 1e-6)], rtol=1e-9)
    np.testing.assert_array_equal(w[[1, 3]], [0.0, 0.0])
    # ε sits in the denominator: ε = 0.2 halves the soft weight of a zero gain.
    w = np.concatenate(rabc_weights(progress, chunk_size=1, eps=0.2))
    np.testing.assert_allclose(w[4:], [0.25] * 4, rtol=1e-9)


def test_soft_weight_is_clipped_to_0_and_1() -> None:
    # Linear progress, chunk 1: r = [0.1] * 9 + [0]; μ = 0.09, σ = 0.03, μ − 2σ = 0.03, 4σ = 0.12.
    # With κ = 1 every gain is soft: (0.1 − 0.03) / 0.12 = 7/12, and r = 0 gives −0.25, clipped to 0.
    w = rabc_weights([0.1 * np.arange(10)], chunk_size=1, kappa=1.0, eps=1e-12)[0]
    np.testing.assert_allclose(w, [7 / 12] * 9 + [0.0], rtol=1e-9)
    # r = ±0.3 once each and 16 zeros: μ = 0, σ = 0.1; (0.3 + 0.2) / 0.4 = 1.25 is clipped to 1.
    phi = np.array([0.0, 0.3, 0.0] + [0.0] * 15)
    w = rabc_weights([phi], chunk_size=1, kappa=1.0, eps=1e-12)[0]
    assert w[0] == 1.0 and w[1] == 0.0
    np.testing.assert_allclose(w[2:], 0.5, rtol=1e-9)


def test_mean_gain_below_zero_is_clamped_to_zero() -> None:
    # r = [−0.5, 0, 0, 0, 0]: mean −0.1, σ = 0.2. Clamped μ = 0 gives (0 + 0.4) / 0.8 = 0.5 for r = 0;
    # the unclamped mean would have given (0 + 0.5) / 0.8 = 0.625.
    result = compute([np.array([0.5, 0.0, 0.0, 0.0, 0.0])], RabcParams(chunk_size=1, eps=1e-12))
    np.testing.assert_allclose(result.weights[0], [0.0, 0.5, 0.5, 0.5, 0.5], rtol=1e-9)
    assert result.mu == 0.0
    assert result.sigma == pytest.approx(0.2)


def test_running_statistics_use_every_sample_up_to_and_including_itself() -> None:
    # Dataset order r = [0.1, 0 | −0.1, 0] (two episodes, chunk 1).
    progress = [np.array([0.0, 0.1]), np.array([0.5, 0.4])]
    params = {"chunk_size": 1, "eps": 1e-12}
    # Global: μ = 0, σ = √0.005, so a zero gain gets 2σ / 4σ = 0.5.
    np.testing.assert_allclose(np.concatenate(rabc_weights(progress, **params)), [1, 0.5, 0, 0.5], rtol=1e-9)
    # Running: the second sample sees mean 0.05 and σ 0.05: (0 − (0.05 − 0.1)) / 0.2 = 0.25. The fourth
    # sees all four samples, i.e. the global statistics, and matches the global weight.
    running = compute(progress, RabcParams(stats="running", **params))
    np.testing.assert_allclose(np.concatenate(running.weights), [1, 0.25, 0, 0.5], rtol=1e-9)
    assert running.mu == pytest.approx(0.0, abs=1e-15)
    assert running.sigma == pytest.approx(np.sqrt(0.005))


def test_running_statistics_match_a_welford_loop_on_random_gains() -> None:
    rng = np.random.default_rng(0)
    progress = [np.cumsum(rng.normal(0.01, 0.03, size=n)) for n in (40, 7, 1, 25)]
    got = np.concatenate(rabc_weights(progress, chunk_size=3, stats="running"))
    r = np.concatenate(progress_deltas(progress, 3))
    expected, mean, m2 = [], 0.0, 0.0
    for n, x in enumerate(r, start=1):
        previous, mean = mean, mean + (x - mean) / n
        m2 += (x - previous) * (x - mean)
        mu, sigma = max(mean, 0.0), np.sqrt(m2 / n)
        soft = min(max((x - (mu - 2 * sigma)) / (4 * sigma + 1e-6), 0.0), 1.0)
        expected.append(1.0 if x > 0.01 else 0.0 if x < 0 else soft)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_weights_keep_the_episode_shapes() -> None:
    progress = [np.linspace(0, 1, n) for n in (5, 1, 12)]
    weights = rabc_weights(progress, chunk_size=2)
    assert [len(w) for w in weights] == [5, 1, 12]
    assert all(((w >= 0) & (w <= 1)).all() for w in weights)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "chunk size"),
        ({"chunk_size": 2.5}, "chunk size"),
        ({"chunk_size": 2, "kappa": -0.1}, "kappa"),
        ({"chunk_size": 2, "eps": 0.0}, "eps"),
        ({"chunk_size": 2, "stats": "median"}, "stats"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rabc_weights([np.zeros(3)], **kwargs)


def test_bad_progress_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rabc_weights([np.array([0.0, np.nan])], chunk_size=1)
    with pytest.raises(ValueError, match="one value per frame"):
        rabc_weights([np.zeros((3, 2))], chunk_size=1)


def test_summary_figures() -> None:
    # Episode 7: r = [0.5, 0] -> w = [1, soft]; episode 9: r = [−0.5, 0] -> w = [0, soft]. μ = 0, σ = √0.125.
    result = compute([np.array([0.0, 0.5]), np.array([0.5, 0.0])], RabcParams(chunk_size=1, eps=1e-12))
    summary = summarize(result, [7, 9])
    assert summary.frames == 4
    assert summary.mean_weight == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert summary.zero_weight_share == 0.25
    assert summary.delta_mean == 0.0
    assert summary.delta_std == pytest.approx(np.sqrt(0.125))
    assert summary.episode_mean_weights == pytest.approx({7: 0.75, 9: 0.25})
    assert summary.to_dict()["episode_mean_weights"] == pytest.approx({"7": 0.75, "9": 0.25})


def test_extremes_never_list_an_episode_twice() -> None:
    def summary(means: dict[int, float]) -> RabcSummary:
        return RabcSummary(1, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, means)

    assert summary({0: 0.3, 1: 0.1, 2: 0.9}).extremes(3) == ([(1, 0.1), (0, 0.3)], [(2, 0.9)])
    many = summary({e: e / 10 for e in range(10)})
    assert many.extremes(2) == ([(0, 0.0), (1, 0.1)], [(9, 0.9), (8, 0.8)])


def test_weighted_loss() -> None:
    assert weighted_loss(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.5, 0.0])) == pytest.approx(2.0 / (1.5 + 1e-6))
    assert weighted_loss(np.ones(4), np.zeros(4)) == 0.0  # an all-zero batch adds nothing, not NaN
    with pytest.raises(ValueError, match="same shape"):
        weighted_loss(np.ones(3), np.ones(2))
