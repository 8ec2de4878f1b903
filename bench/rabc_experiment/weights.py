"""What the RA-BC weights did to one task's demos: statistics per demo quality and the most down-weighted demos."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.rabc_experiment.data import Demos
from sarm.rabc.weights import RabcResult
from sarm.sim.metaworld_demos import QUALITIES


def weight_report(demos: Demos, progress: list[np.ndarray], rabc: RabcResult, lowest: int = 8) -> dict[str, Any]:
    all_weights = np.concatenate(rabc.weights)
    total_mass = float(all_weights.sum())
    by_quality: dict[str, Any] = {}
    for quality in [q for q in QUALITIES if q in demos.quality]:
        picks = [i for i, q in enumerate(demos.quality) if q == quality]
        w = np.concatenate([rabc.weights[i] for i in picks])
        deltas = np.concatenate([rabc.deltas[i] for i in picks])
        by_quality[quality] = {
            "episodes": len(picks),
            "frames": len(w),
            "frame_share": len(w) / len(all_weights),
            "mean_weight": float(w.mean()),
            "zero_weight_share": float((w == 0).mean()),
            "full_weight_share": float((w == 1).mean()),
            "weight_mass_share": float(w.sum()) / total_mass if total_mass else 0.0,  # share of the loss it drives
            "mean_progress_gain": float(deltas.mean()),
            "final_progress_mean": float(np.mean([progress[i][-1] for i in picks])),
            "episode_mean_weights": [float(rabc.weights[i].mean()) for i in picks],
        }
    means = [float(w.mean()) for w in rabc.weights]
    order = np.argsort(means, kind="stable")[:lowest]
    return {
        "frames": len(all_weights),
        "mean_weight": float(all_weights.mean()),
        "zero_weight_share": float((all_weights == 0).mean()),
        "mu": rabc.mu,
        "sigma": rabc.sigma,
        "by_quality": by_quality,
        "most_down_weighted": [
            {
                "episode": demos.episodes[i],
                "quality": demos.quality[i],
                "success": demos.success[i],
                "mean_weight": means[i],
                "perturbations": demos.perturbations[i],
            }
            for i in order
        ],
    }
