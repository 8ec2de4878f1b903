"""A PNG for people: the weight histogram and the progress curves of the lowest- and highest-weighted episodes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from sarm.rabc.files import PROGRESS_FILE, WEIGHTS_FILE, read_progress
from sarm.rabc.weights import RabcSummary

PLOT_FILE = "rabc_weights.png"


def plot_rabc(out_dir: Path, summary: RabcSummary, episodes_each: int = 2) -> Path:
    """Reads the files `run_rabc` wrote in `out_dir`; writes OUT/rabc_weights.png."""
    weights = pq.read_table(out_dir / WEIGHTS_FILE, columns=["weight"]).column("weight").to_numpy()
    curves = {e.episode_index: e.progress for e in read_progress(out_dir / PROGRESS_FILE).episodes}
    lowest, highest = summary.extremes(episodes_each)
    fig, (hist, lines) = plt.subplots(1, 2, figsize=(11, 3.8))
    hist.hist(weights, bins=np.linspace(0, 1, 21), color="tab:blue")
    hist.set(
        xlabel="RA-BC weight",
        ylabel="frames",
        title=f"mean {summary.mean_weight:.2f}, zero {summary.zero_weight_share:.0%}",
    )
    for (episode, mean), color in [*((e, "tab:red") for e in lowest), *((e, "tab:green") for e in highest)]:
        lines.plot(curves[episode], color=color, lw=1.2, label=f"episode {episode} (mean w {mean:.2f})")
    lines.set(xlabel="frame", ylabel="progress φ", ylim=(-0.02, 1.02), title="lowest (red) and highest (green)")
    lines.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = out_dir / PLOT_FILE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
