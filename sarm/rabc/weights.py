"""RA-BC sample weights from per-frame progress (SARM.md "RA-BC", paper eq. 8–9). numpy only: trainers and
the simulation experiment import this without torch.

    r = φ(t+Δ) − φ(t)                      future index clamped to the episode's last frame
    w̃ = clip((r − (μ − 2σ)) / (4σ + ε), 0, 1)
    w = 1 if r > κ;  w̃ if 0 ≤ r ≤ κ;  0 if r < 0
μ, σ: mean and (population) standard deviation of r, μ clamped at ≥ 0, either over the whole dataset
("global", as LeRobot) or running in dataset order ("running": each sample sees the statistics of every
sample up to and including itself, as an online trainer would).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np

Stats = Literal["global", "running"]
STATS: tuple[str, ...] = get_args(Stats)


@dataclass(frozen=True)
class RabcParams:
    chunk_size: int
    kappa: float = 0.01
    eps: float = 1e-6
    stats: Stats = "global"

    def __post_init__(self) -> None:
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int | np.integer):
            raise ValueError(f"chunk size must be an integer, got {self.chunk_size!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk size must be >= 1 frame, got {self.chunk_size}")
        if not np.isfinite(self.kappa) or self.kappa < 0:
            raise ValueError(f"kappa must be a finite number >= 0, got {self.kappa}")
        if not np.isfinite(self.eps) or self.eps <= 0:
            raise ValueError(f"eps must be a finite number > 0, got {self.eps}")
        if self.stats not in STATS:
            raise ValueError(f"stats must be one of {', '.join(STATS)}; got {self.stats!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def progress_deltas(progress: Sequence[np.ndarray], chunk_size: int) -> list[np.ndarray]:
    """Per episode, r_t = φ(min(t + chunk_size, T − 1)) − φ(t) (float64)."""
    RabcParams(chunk_size)  # validates the chunk size
    deltas = []
    for episode, phi in enumerate(progress):
        phi = np.asarray(phi, dtype=np.float64)
        if phi.ndim != 1:
            raise ValueError(f"episode {episode}: progress must be one value per frame, got shape {phi.shape}")
        if not np.isfinite(phi).all():
            raise ValueError(f"episode {episode}: progress holds NaN or infinite values")
        future = np.minimum(np.arange(len(phi)) + chunk_size, len(phi) - 1)
        deltas.append(phi[future] - phi)
    return deltas


def gain_statistics(deltas: np.ndarray, stats: Stats) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (μ clamped at 0, σ) for the flat, dataset-ordered gains `deltas`."""
    if len(deltas) == 0:
        return np.zeros(0), np.zeros(0)
    if stats == "global":
        return np.full(len(deltas), max(deltas.mean(), 0.0)), np.full(len(deltas), deltas.std())
    # Welford's update in vectorised form: M2_n = M2_{n-1} + (x_n − mean_{n-1})(x_n − mean_n).
    n = np.arange(1, len(deltas) + 1)
    mean = np.cumsum(deltas) / n
    previous_mean = np.concatenate([[0.0], mean[:-1]])
    m2 = np.cumsum((deltas - previous_mean) * (deltas - mean))
    return np.maximum(mean, 0.0), np.sqrt(np.maximum(m2, 0.0) / n)


def weights_from_deltas(
    deltas: np.ndarray, mu: np.ndarray | float, sigma: np.ndarray | float, kappa: float, eps: float
) -> np.ndarray:
    """Eq. 9 given the (already clamped) statistics."""
    soft = np.clip((deltas - (mu - 2.0 * sigma)) / (4.0 * sigma + eps), 0.0, 1.0)
    return np.where(deltas > kappa, 1.0, np.where(deltas < 0.0, 0.0, soft))


def rabc_weights(
    progress: Sequence[np.ndarray],
    chunk_size: int,
    kappa: float = 0.01,
    eps: float = 1e-6,
    stats: Stats = "global",
) -> list[np.ndarray]:
    """Per-episode, per-frame RA-BC weights in [0, 1] (float64); episodes in dataset order."""
    return compute(progress, RabcParams(chunk_size, kappa, eps, stats)).weights


@dataclass(frozen=True)
class RabcResult:
    deltas: list[np.ndarray]  # per episode, r per frame
    weights: list[np.ndarray]  # per episode, w per frame
    mu: float  # μ (clamped) used for the last sample: the dataset's for "global", the final running one otherwise
    sigma: float


def compute(progress: Sequence[np.ndarray], params: RabcParams) -> RabcResult:
    """Gains, weights and the statistics they used."""
    deltas = progress_deltas(progress, params.chunk_size)
    flat = np.concatenate(deltas) if deltas else np.zeros(0)
    mu, sigma = gain_statistics(flat, params.stats)
    weights = weights_from_deltas(flat, mu, sigma, params.kappa, params.eps)
    splits = np.cumsum([len(d) for d in deltas])[:-1]
    return RabcResult(
        deltas=deltas,
        weights=np.split(weights, splits) if deltas else [],
        mu=float(mu[-1]) if len(flat) else 0.0,
        sigma=float(sigma[-1]) if len(flat) else 0.0,
    )


@dataclass(frozen=True)
class RabcSummary:
    frames: int
    mean_weight: float
    zero_weight_share: float  # share of frames with weight exactly 0 (regressing gains)
    delta_mean: float
    delta_std: float
    mu: float
    sigma: float
    episode_mean_weights: dict[int, float]  # episode index -> mean weight of its frames

    def extremes(self, count: int = 3) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Up to `count` episodes with the lowest and with the highest mean weight, as (episode, mean) pairs;
        the two lists never share an episode (with few episodes the lower half goes to the first)."""
        ranked = sorted(self.episode_mean_weights.items(), key=lambda item: (item[1], item[0]))
        low = min(count, (len(ranked) + 1) // 2)
        return ranked[:low], ranked[low:][::-1][:count]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["episode_mean_weights"] = {str(k): v for k, v in self.episode_mean_weights.items()}
        return out


def summarize(result: RabcResult, episode_indices: Sequence[int]) -> RabcSummary:
    if len(episode_indices) != len(result.weights):
        raise ValueError(f"{len(episode_indices)} episode indices for {len(result.weights)} episodes")
    weights = np.concatenate(result.weights) if result.weights else np.zeros(0)
    deltas = np.concatenate(result.deltas) if result.deltas else np.zeros(0)
    if len(weights) == 0:
        raise ValueError("no frames to weight")
    return RabcSummary(
        frames=len(weights),
        mean_weight=float(weights.mean()),
        zero_weight_share=float((weights == 0.0).mean()),
        delta_mean=float(deltas.mean()),
        delta_std=float(deltas.std()),
        mu=result.mu,
        sigma=result.sigma,
        episode_mean_weights={
            int(e): float(w.mean()) for e, w in zip(episode_indices, result.weights, strict=True) if len(w)
        },
    )


def weighted_loss(losses: np.ndarray, weights: np.ndarray, eps: float = 1e-6) -> float:
    """Σ w·ℓ / (Σ w + ε) (eq. 9's loss): a batch whose weights are all 0 contributes 0, not NaN."""
    losses = np.asarray(losses, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if losses.shape != weights.shape:
        raise ValueError(f"losses {losses.shape} and weights {weights.shape} must have the same shape")
    return float((weights * losses).sum() / (weights.sum() + eps))
