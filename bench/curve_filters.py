"""Would a causal filter make SARM's per-frame curves steadier without making them wrong?

Scores every frame of held-out demos with `sarm eval`'s own path (sarm.evaluation.evaluate_checkpoint) and
compares the raw curve with causal filters a streaming server could run (each step sees only the past), all of them
sarm.model.progress filters run as the gateway runs them:
- the official code's history smoother (Σ c³·v / Σ c³ over the last 10 scores of confidence ≥ 0.9);
- a first-order low-pass with time constant τ (seconds);
- the one-euro filter (adaptive cut-off: smooth when the curve is still, quick when it moves), with its gain scaled by
  the confidence squared or not; the scaled one at 1 Hz, β 0.5 is what the gateway serves by default;
- for the stage: hysteresis (the reported stage switches only after the new argmax has held for `hold` seconds), and
  the stage the served progress falls in (the task's cumulative ᾱ).

Per task it prints and writes: VOC on all successful demos (the issue's metric), the annotation's own VOC on the
same demos (its ceiling: degraded demos contain forced drops, where the true progress goes back), VOC on clean
demos (whose truth is monotone), demo MSE against the annotation, success AUROC of the final progress, the lag at
a successful demo's end and how many successful demos reach progress 0.9 (the RL client's success threshold), and
the stage flicker (predicted changes per episode / annotated) with stage accuracy. Usage:
    PYTHONPATH=. .venv/bin/python bench/curve_filters.py CHECKPOINT DATASET [DATASET ...]
        [--out bench/results/curve_filters.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

from sarm.data.lerobot import LeRobotDataset
from sarm.evaluation import (
    EpisodeResult,
    checkpoint_classes,
    curve_metrics,
    evaluate_checkpoint,
    filtered_progress,
    served_progress,
    stage_changes,
    value_order_correlation,
)
from sarm.model.progress import ConfidenceSmoother, OneEuroFilter, ProgressFilter
from sarm.training.checkpoint import load_info

Curve = Callable[[EpisodeResult, float], np.ndarray]
SUCCESS_THRESHOLD = 0.9  # the RL client's default success_threshold (sarm_client.rewards)


def filtered(make: Callable[[float], ProgressFilter]) -> Curve:
    """The curve a filter made by `make(fps)` gives over an episode's scored frames, as the gateway runs it."""
    return lambda r, fps: filtered_progress(r.scores, make(fps))


def low_pass(tau_s: float) -> Callable[[float], ProgressFilter]:
    """A first-order low-pass with time constant τ: the one-euro filter without its speed term or confidence."""
    return lambda fps: OneEuroFilter(fps, 1.0 / (2 * np.pi * tau_s), beta=0.0, confidence_power=0.0)


FILTERS: dict[str, Curve] = {
    "raw": lambda r, fps: r.scores.progress.astype(np.float64),
    "history (official: 10 scores, c ≥ 0.9)": filtered(lambda fps: ConfidenceSmoother()),
    "low-pass τ 0.1 s": filtered(low_pass(0.1)),
    "low-pass τ 0.2 s": filtered(low_pass(0.2)),
    "one-euro 1 Hz, β 0.5": filtered(lambda fps: OneEuroFilter(fps, confidence_power=0.0)),
    "one-euro 1 Hz, β 0.5, × c² (served)": lambda r, fps: served_progress(r.scores, fps),
    "one-euro 1 Hz, β 0.2, × c²": filtered(lambda fps: OneEuroFilter(fps, beta=0.2)),
}
HOLDS_S = (0.0, 0.05, 0.1)  # stage hysteresis holds compared (0: the raw argmax)


def hysteresis_stages(probs: np.ndarray, hold: int) -> np.ndarray:
    """The argmax stage, switching only after a new argmax has held for `hold` consecutive frames."""
    current, candidate, run, out = int(probs[0].argmax()), -1, 0, []
    for p in probs:
        best = int(p.argmax())
        if best == current:
            candidate, run = -1, 0
        else:
            run = run + 1 if best == candidate else 1
            candidate = best
            if run >= hold:
                current, candidate, run = best, -1, 0
        out.append(current)
    return np.asarray(out)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def progress_rows(results: list[EpisodeResult], fps: float) -> dict[str, dict[str, Any]]:
    successes = [r for r in results if r.success]
    rows = {}
    for name, curve in FILTERS.items():
        curves = {r.episode: curve(r, fps) for r in results}
        rows[name] = {
            **curve_metrics(results, curves),
            # What the lag costs where it shows: at a demo's end, which stops right after success.
            "end_lag": _mean([float(r.scores.progress[-1] - curves[r.episode][-1]) for r in successes]),
            "successes_reaching_threshold": sum(bool(curves[r.episode].max() >= SUCCESS_THRESHOLD) for r in successes),
            "successes": len(successes),
        }
    return rows


def stage_rows(
    results: list[EpisodeResult], fps: float, class_of: np.ndarray, proportions: list[float]
) -> dict[str, dict[str, Any]]:
    """Per way of reporting the stage: its changes per episode against the annotation's, and its accuracy. Stages
    are compared as checkpoint classes (`class_of` maps the dataset's)."""
    annotated = _mean([float(stage_changes(r.true_stage)) for r in results])
    bounds = np.cumsum(proportions)[:-1]  # a progress value's stage: how many stage ends it has passed
    ways: dict[str, dict[int, np.ndarray]] = {
        f"hold {hold_s:g} s": {
            r.episode: hysteresis_stages(r.scores.stage_probs, max(1, round(hold_s * fps))) for r in results
        }
        for hold_s in HOLDS_S
    }
    ways["stage of the served progress"] = {
        r.episode: class_of[np.searchsorted(bounds, served_progress(r.scores, fps), side="right")] for r in results
    }
    rows = {}
    for name, stages in ways.items():
        predicted = _mean([float(stage_changes(stages[r.episode])) for r in results])
        correct = sum(int((stages[r.episode] == class_of[r.true_stage]).sum()) for r in results)
        rows[name] = {
            "predicted_changes": predicted,
            "annotated_changes": annotated,
            "flicker_ratio": predicted / annotated if predicted is not None and annotated else None,
            "stage_accuracy": correct / sum(len(r.true_stage) for r in results),
        }
    return rows


def plot_examples(axes: Any, task: str, results: list[EpisodeResult], fps: float) -> None:
    """A clean and a degraded successful demo: the truth, the raw curve and the served one."""
    for ax, quality in zip(axes, ("clean", "degraded"), strict=True):
        r = next((r for r in results if r.success and r.quality == quality), None)
        if r is None:
            ax.set_axis_off()
            continue
        seconds = np.arange(len(r.true_progress)) / fps
        ax.plot(seconds, r.true_progress, color="black", lw=2, label="annotation")
        ax.plot(seconds, r.scores.progress, lw=1, alpha=0.8, label="raw")
        ax.plot(seconds, served_progress(r.scores, fps), lw=1.5, label="served (one-euro × c²)")
        ax.set(
            title=f"{task}: episode {r.episode} ({quality})", xlabel="time (s)", ylabel="progress", ylim=(-0.02, 1.02)
        )
        ax.legend(loc="upper left", fontsize=7)


def task_name(root: Path) -> str:
    """runs/quality/<task>/heldout is named by its task."""
    return root.parent.name if root.name in ("heldout", "train") else root.name


def measure(checkpoint: Path, root: Path, axes: Any) -> dict[str, Any]:
    ds = LeRobotDataset(root)
    _, results = evaluate_checkpoint(checkpoint, ds)
    proportions = ds.proportions() or {}
    vocabulary, classes = list(proportions), load_info(checkpoint).model.stage_names
    class_of = checkpoint_classes(classes, vocabulary)
    if len(class_of) != len(vocabulary):
        raise ValueError(f"{root}'s stages {vocabulary} are not all among the checkpoint's {classes}")
    plot_examples(axes, task_name(root), results, float(ds.fps))
    successful = [r for r in results if r.success is not False]
    return {
        "dataset": str(root),
        "episodes": len(results),
        "successful": len(successful),
        "clean": sum(r.quality == "clean" for r in successful),
        "annotation_voc_successful": _mean([value_order_correlation(r.true_progress) for r in successful]),
        "progress": progress_rows(results, float(ds.fps)),
        "stages": stage_rows(results, float(ds.fps), class_of, list(proportions.values())),
    }


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_tables(report: dict[str, Any]) -> None:
    console = Console(width=200)  # wide tables stay readable in a log
    progress = Table(title="Causal filters on the progress curve (held-out demos)")
    columns = ("task", "filter", "VOC successful", "annotation VOC", "VOC clean", "demo MSE", "AUROC", "end lag")
    for column in (*columns, f"successes reaching {SUCCESS_THRESHOLD}"):
        progress.add_column(column)
    stages = Table(title="Stage hysteresis")
    for column in ("task", "hold", "stage changes / episode", "annotated", "ratio", "stage accuracy"):
        stages.add_column(column)
    for task, m in report["tasks"].items():
        for name, row in m["progress"].items():
            progress.add_row(
                task,
                name,
                _cell(row["voc_mean"]),
                _cell(m["annotation_voc_successful"]),
                _cell(row["voc_clean"]),
                _cell(row["demo_mse"], 4),
                _cell(row["success_auroc"]),
                _cell(row["end_lag"]),
                f"{row['successes_reaching_threshold']}/{row['successes']}",
            )
        for name, row in m["stages"].items():
            stages.add_row(
                task,
                name,
                _cell(row["predicted_changes"], 2),
                _cell(row["annotated_changes"], 2),
                _cell(row["flicker_ratio"], 2),
                _cell(row["stage_accuracy"]),
            )
    console.print(progress)
    console.print(stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("datasets", type=Path, nargs="+", help="held-out datasets (embedded)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/curve_filters.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    tasks = {}
    figure, axes = plt.subplots(len(args.datasets), 2, figsize=(11, 3.2 * len(args.datasets)), squeeze=False)
    for root, row in zip(args.datasets, axes, strict=True):
        tasks[task_name(root)] = measure(args.checkpoint, root, row)
    report = {"checkpoint": str(args.checkpoint), "tasks": tasks, "wall_s": time.perf_counter() - start}
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    figure.tight_layout()
    figure.savefig(args.out.with_suffix(".png"), dpi=100)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
