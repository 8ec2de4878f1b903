"""Binomial confidence intervals for success rates and paired comparisons of two arms on the same layouts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p from the discordant pairs (a succeeded and b failed: `a_only`; the reverse:
    `b_only`): under no difference each discordant pair goes either way with probability 1/2, so
    p = min(1, 2·P(Binomial(a_only + b_only, 1/2) ≤ min(a_only, b_only))). No discordant pairs: p = 1."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be non-negative, got {a_only} and {b_only}")
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # exact in integers up to the one division
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """b − a on the same layouts: success-rate difference, its paired bootstrap interval, exact McNemar."""

    difference: float
    ci95: tuple[float, float]
    a_only: int  # pairs where only a succeeded
    b_only: int  # pairs where only b succeeded
    pairs: int
    p_mcnemar: float
    resamples: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        return out


def paired_comparison(
    a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> PairedComparison:
    """Compare two arms rolled out on the same layouts. `a`, `b`: (seeds, layouts) success outcomes, row s of both
    from BC seed s. The bootstrap resamples layouts (columns) with replacement and keeps every seed of a drawn
    layout, so the correlation between seeds on one layout (an easy layout is easy for every seed) stays in the
    interval; the percentile interval of the mean paired difference is returned."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"outcomes must be two equal, non-empty (seeds, layouts) arrays; got {a.shape} and {b.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and level in (0, 1), got {resamples} and {level}")
    per_layout = (b.astype(np.float64) - a).mean(axis=0)  # each layout's difference, averaged over its seeds
    draws = np.random.default_rng(seed).integers(0, len(per_layout), (resamples, len(per_layout)))
    means = per_layout[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    return PairedComparison(
        difference=float(per_layout.mean()),
        ci95=(float(low), float(high)),
        a_only=a_only,
        b_only=b_only,
        pairs=int(a.size),
        p_mcnemar=mcnemar_exact(a_only, b_only),
        resamples=resamples,
    )


def interval_verdict(low: float, high: float) -> str:
    """Where a difference's interval lies relative to 0, in words the report uses."""
    if low > 0:
        return "above 0"
    if high < 0:
        return "below 0"
    return "includes 0"
