"""Would a causal filter make SARM's per-frame curves steadier without making them wrong?

Scores every frame of held-out demos with `sarm eval`'s own path (sarm.evaluation.evaluate_checkpoint) and
compares the raw curve with causal filters a streaming server could run (each step sees only the past):
- EMA with time constant τ (seconds), optionally with its gain scaled by the model's confidence;
- the one-euro filter (adaptive cut-off: smooth when the curve is still, quick when it moves);
- stage hysteresis: the reported stage switches only after the new argmax has held for `hold` seconds.

Per task it prints and writes: VOC on all successful demos (the issue's metric), the annotation's own VOC on the
same demos (its ceiling: degraded demos contain forced drops, where the true progress goes back), VOC on clean
demos (whose truth is monotone), demo MSE against the annotation, success AUROC of the final progress, and the
stage flicker (predicted changes per episode / annotated) with stage accuracy. Usage:
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

import numpy as np
from rich.console import Console
from rich.table import Table

from sarm.data.lerobot import LeRobotDataset
from sarm.evaluation import (
    EpisodeResult,
    checkpoint_classes,
    evaluate_checkpoint,
    stage_changes,
    success_auroc,
    value_order_correlation,
)
from sarm.training.checkpoint import load_info

Curve = Callable[[EpisodeResult, float], np.ndarray]


def ema(values: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """y_t = y_{t-1} + g_t (x_t − y_{t-1}), starting at the first value."""
    out = np.empty(len(values), np.float64)
    y = float(values[0])
    for i, (x, g) in enumerate(zip(values, gains, strict=True)):
        y += float(g) * (float(x) - y)
        out[i] = y
    return out


def ema_curve(tau_s: float, confidence_gated: bool) -> Curve:
    def curve(r: EpisodeResult, fps: float) -> np.ndarray:
        gain = 1.0 - np.exp(-1.0 / (fps * tau_s))
        gains = gain * (r.scores.confidence if confidence_gated else np.ones(len(r.scores.progress)))
        return ema(r.scores.progress, gains)

    return curve


def one_euro_curve(min_cutoff_hz: float, beta: float, derivative_cutoff_hz: float = 1.0) -> Curve:
    def alpha(cutoff: float, dt: float) -> float:
        r = 2 * np.pi * cutoff * dt
        return r / (r + 1)

    def curve(r: EpisodeResult, fps: float) -> np.ndarray:
        dt, x = 1.0 / fps, r.scores.progress
        y, dy, out = float(x[0]), 0.0, np.empty(len(x), np.float64)
        for i, value in enumerate(x):
            if i:
                dy += alpha(derivative_cutoff_hz, dt) * ((float(value) - y) / dt - dy)
                y += alpha(min_cutoff_hz + beta * abs(dy), dt) * (float(value) - y)
            out[i] = y
        return out

    return curve


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


FILTERS: dict[str, Curve] = {
    "raw": lambda r, fps: r.scores.progress.astype(np.float64),
    "EMA τ 0.1 s": ema_curve(0.1, confidence_gated=False),
    "EMA τ 0.1 s × confidence": ema_curve(0.1, confidence_gated=True),
    "EMA τ 0.2 s": ema_curve(0.2, confidence_gated=False),
    "one-euro 1 Hz, β 0.5": one_euro_curve(1.0, 0.5),
}
HOLDS_S = (0.0, 0.05, 0.1)  # stage hysteresis holds compared (0: the raw argmax)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def progress_rows(results: list[EpisodeResult], fps: float) -> dict[str, dict[str, Any]]:
    successful = [r for r in results if r.success is not False]
    clean = [r for r in successful if r.quality == "clean"]
    labelled = [r for r in results if r.success is not None]
    rows = {}
    for name, curve in FILTERS.items():
        curves = {r.episode: curve(r, fps) for r in results}
        rows[name] = {
            "voc_successful": _mean([value_order_correlation(curves[r.episode]) for r in successful]),
            "voc_clean": _mean([value_order_correlation(curves[r.episode]) for r in clean]),
            "demo_mse": _mean([float(np.mean((curves[r.episode] - r.true_progress) ** 2)) for r in results]),
            "success_auroc": success_auroc(
                np.array([curves[r.episode][-1] for r in labelled]), np.array([bool(r.success) for r in labelled])
            ),
        }
    return rows


def stage_rows(results: list[EpisodeResult], fps: float, class_of: np.ndarray) -> dict[str, dict[str, Any]]:
    annotated = _mean([float(stage_changes(r.true_stage)) for r in results])
    rows = {}
    for hold_s in HOLDS_S:
        hold = max(1, round(hold_s * fps))
        stages = {r.episode: hysteresis_stages(r.scores.stage_probs, hold) for r in results}
        predicted = _mean([float(stage_changes(stages[r.episode])) for r in results])
        correct = sum(int((stages[r.episode] == class_of[r.true_stage]).sum()) for r in results)
        rows[f"hold {hold_s:g} s"] = {
            "predicted_changes": predicted,
            "annotated_changes": annotated,
            "flicker_ratio": predicted / annotated if predicted is not None and annotated else None,
            "stage_accuracy": correct / sum(len(r.true_stage) for r in results),
        }
    return rows


def measure(checkpoint: Path, root: Path) -> dict[str, Any]:
    ds = LeRobotDataset(root)
    _, results = evaluate_checkpoint(checkpoint, ds)
    vocabulary, classes = list(ds.proportions() or {}), load_info(checkpoint).model.stage_names
    class_of = checkpoint_classes(classes, vocabulary)
    if len(class_of) != len(vocabulary):
        raise ValueError(f"{root}'s stages {vocabulary} are not all among the checkpoint's {classes}")
    successful = [r for r in results if r.success is not False]
    return {
        "dataset": str(root),
        "episodes": len(results),
        "successful": len(successful),
        "clean": sum(r.quality == "clean" for r in successful),
        "annotation_voc_successful": _mean([value_order_correlation(r.true_progress) for r in successful]),
        "progress": progress_rows(results, float(ds.fps)),
        "stages": stage_rows(results, float(ds.fps), class_of),
    }


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_tables(report: dict[str, Any]) -> None:
    console = Console()
    progress = Table(title="Causal filters on the progress curve (held-out demos)")
    for column in ("task", "filter", "VOC successful", "annotation VOC", "VOC clean", "demo MSE", "AUROC"):
        progress.add_column(column)
    stages = Table(title="Stage hysteresis")
    for column in ("task", "hold", "stage changes / episode", "annotated", "ratio", "stage accuracy"):
        stages.add_column(column)
    for task, m in report["tasks"].items():
        for name, row in m["progress"].items():
            progress.add_row(
                task,
                name,
                _cell(row["voc_successful"]),
                _cell(m["annotation_voc_successful"]),
                _cell(row["voc_clean"]),
                _cell(row["demo_mse"], 4),
                _cell(row["success_auroc"]),
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
    for root in args.datasets:  # runs/quality/<task>/heldout is named by its task
        tasks[root.parent.name if root.name in ("heldout", "train") else root.name] = measure(args.checkpoint, root)
    report = {"checkpoint": str(args.checkpoint), "tasks": tasks, "wall_s": time.perf_counter() - start}
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
