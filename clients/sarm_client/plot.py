"""One PNG with every evaluated rollout's progress curve (matplotlib: the optional `sarm-client[plot]` extra)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sarm_client.evaluate import Evaluation

MAX_LEGEND = 12  # more rollouts than this: colours say success, no per-video legend


def available() -> bool:
    try:
        _pyplot()
    except ImportError:
        return False
    return True


def _pyplot() -> ModuleType:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the curves PNG needs matplotlib: pip install 'sarm-client[plot]'") from error
    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(evaluation: Evaluation, path: Path) -> None:
    """Progress over time of every scored rollout, green when predicted successful, red otherwise, with the
    threshold as a dashed line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
    try:
        scored = evaluation.scored
        for episode in scored:
            seconds = [i / episode.fps for i in range(len(episode.curve))]
            axes.plot(
                seconds,
                episode.curve,
                color="tab:green" if episode.success else "tab:red",
                alpha=0.7,
                linewidth=1.2,
                label=Path(episode.video).name if len(scored) <= MAX_LEGEND else None,
            )
        axes.axhline(
            evaluation.threshold,
            color="grey",
            linestyle="--",
            linewidth=1,
            label=f"success threshold {evaluation.threshold:g}",
        )
        succeeded = sum(e.success for e in scored)
        axes.set(
            xlabel="time (s)",
            ylabel="task progress",
            ylim=(-0.02, 1.02),
            title=f"{evaluation.instruction}\n{succeeded}/{len(scored)} predicted successful "
            f"(model {evaluation.model_version})",
        )
        axes.legend(fontsize=7, loc="lower right")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
