"""Binomial confidence intervals for success rates."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a success rate: unlike the normal approximation it stays inside [0, 1]
    and is not degenerate at 0 or n successes, which small rollout counts hit often."""
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or n successes one bound is exactly 0 or 1; rounding would otherwise put it a hair inside.
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == trials else centre + half
    return low, high


def newcombe_difference(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for the difference of two rates, b − a, built from
    each rate's Wilson interval; it excludes 0 when the two rates differ at the 5% level."""
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    low_a, high_a = wilson_interval(successes_a, trials_a, z)
    low_b, high_b = wilson_interval(successes_b, trials_b, z)
    difference = p_b - p_a
    return (difference - math.hypot(p_b - low_b, high_a - p_a), difference + math.hypot(high_b - p_b, p_a - low_a))
