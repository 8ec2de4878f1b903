"""Cross-task progress: what a checkpoint says when a video is scored under another task's instruction.

For every held-out dataset (one task each) and every instruction (each dataset's own, and unrelated
probes), scores every episode from stored embeddings and reports the mean progress at the middle frame
and at the last frame, over successful demos. The own instruction should reach ~1 at the end; every
other instruction should stay near 0. Several checkpoints are measured side by side, in one run.

Usage:
    .venv/bin/python bench/cross_task.py --checkpoint before=model_repo/default/checkpoint \\
        --checkpoint after=runs/x14/after runs/x14/*/heldout [--out bench/results/cross_task]
Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from sarm.data.validate import require_valid
from sarm.embeddings import load_embeddings, require_same_encoders
from sarm.encoders.registry import load_text_encoder
from sarm.model.windows import stride_frames
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import load_checkpoint, load_info
from sarm.training.negatives import generate_phrases

# Instructions of no trained task. "Open the drawer." is the example; none of these phrases is in
# the generated distractor pool (test_probes_are_not_training_distractors checks the first 4096).
PROBES = ("Open the drawer.", "Fold the t-shirt.", "Press the button.", "Water the plants.")
RESULTS = Path(__file__).with_name("results") / "cross_task"


def measure(checkpoint: Path, datasets: list[Path], tasks: list[str], probes: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per (dataset, instruction): mean mid-episode and final progress over successful demos.

    `tasks` are the task instructions of every checkpoint measured, so all of them get the same rows.
    """
    model, info = load_checkpoint(checkpoint)
    text_encoder = load_text_encoder(info.text_encoder["id"])
    trained = {t["instruction"] for t in model.config.tasks}
    rows = []
    for root in datasets:
        ds = require_valid(root)
        embeddings = load_embeddings(ds, info.frame_encoder["id"])
        require_same_encoders(embeddings, info.frame_encoder, info.text_encoder)
        own = sorted(embeddings.text)
        instructions = {t: embeddings.text[t] for t in own}
        extra = [i for i in dict.fromkeys([*tasks, *probes]) if i not in instructions]
        instructions |= dict(zip(extra, text_encoder.encode(extra), strict=True))
        stride = stride_frames(ds.fps, model.config.stride_seconds)
        successful = [m for m in ds.episodes if "success" not in m.row or bool(m.row["success"])]
        for instruction, text in instructions.items():
            mid, final = [], []
            for meta in successful:
                # Only the two frames reported: each is scored from its own causal window, as when every frame is.
                frames = np.array([meta.length // 2, meta.length - 1])
                progress = score_embeddings(model, embeddings.frames[meta.index], text, stride, frames).progress
                mid.append(float(progress[0]))
                final.append(float(progress[1]))
            kind = "own" if instruction in own else "other task" if instruction in tasks else "probe"
            rows.append(
                {
                    "dataset": str(root),
                    "instruction": instruction,
                    "kind": kind,
                    "trained_on": instruction in trained,
                    "episodes": len(final),
                    "mid_progress": float(np.mean(mid)),
                    "final_progress": float(np.mean(final)),
                    "final_progress_max": float(np.max(final)),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path, help="embedded held-out datasets, one task each")
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output path without suffix")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    tasks = list(dict.fromkeys(t["instruction"] for p in checkpoints.values() for t in load_info(Path(p)).model.tasks))
    results = {name: measure(Path(path), args.datasets, tasks, PROBES) for name, path in checkpoints.items()}
    names = list(results)
    table = Table(title="cross-task progress (mean over successful held-out demos)")
    for column in ("video", "instruction", "kind", *(f"{n} mid / final" for n in names)):
        table.add_column(column)
    lines = [
        "| video | instruction | kind | " + " | ".join(f"{n} mid / final" for n in names) + " |",
        "| --- " * (3 + len(names)) + "|",
    ]
    for i, row in enumerate(results[names[0]]):
        cells = [
            f"{results[n][i]['mid_progress']:.3f} / {results[n][i]['final_progress']:.3f}"
            + ("" if results[n][i]["trained_on"] or row["kind"] == "probe" else " (untrained task)")
            for n in names
        ]
        video = Path(row["dataset"]).parent.name or row["dataset"]
        table.add_row(video, row["instruction"], row["kind"], *cells)
        lines.append(f"| {video} | {row['instruction']} | {row['kind']} | " + " | ".join(cells) + " |")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"checkpoints": checkpoints, "probes": list(PROBES), "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


def probes_in_pool(n: int = 4096, seeds: range = range(4)) -> list[str]:
    """Probes that the generated distractor pool of these seeds contains (should be none)."""
    pool = {p.lower().strip(".") for seed in seeds for p in generate_phrases(n, seed)}
    return [p for p in PROBES if p.lower().strip(".") in pool]


if __name__ == "__main__":
    main()
