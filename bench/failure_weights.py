"""RA-BC weights by demo segment: does a failed demo's give-up retreat lose its weight?

Scores every episode of each dataset with its own instruction (stored embeddings), computes RA-BC weights
(chunk Δ frames, global statistics over the dataset, as `sarm rabc`), and reports per segment (clean,
degraded, failed before the give-up, failed give-up retreat) the mean weight, the share of frames at weight
0 and the mean progress change per frame. Several checkpoints side by side, in one run.

The retreat starts at the episodes column `regress_from_frame`; datasets generated before it existed
give it in `perturbations` ("give_up@stageK+D:F": the last F frames).

Usage:
    .venv/bin/python bench/failure_weights.py --checkpoint before=A --checkpoint after=B DATASET... \\
        [--chunk 8] [--out bench/results/failure_weights]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from sarm.data.lerobot import EpisodeMeta
from sarm.data.validate import require_valid
from sarm.embeddings import load_embeddings
from sarm.model.labels import regress_start
from sarm.model.windows import stride_frames
from sarm.rabc.weights import RabcParams, compute
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import load_checkpoint

SEGMENTS = ("clean", "degraded", "failed before give-up", "failed: give-up retreat")
RESULTS = Path(__file__).with_name("results") / "failure_weights"


def retreat_start(meta: EpisodeMeta) -> int:
    start = regress_start(meta.row)
    if start >= 0:
        return start
    match = re.search(r"give_up@stage\d+\+\d+:(\d+)", str(meta.row.get("perturbations", "")))
    return meta.length - int(match.group(1)) if match and not meta.row.get("success") else -1


def measure(checkpoint: Path, root: Path, chunk: int) -> dict[str, dict[str, float]]:
    model, info = load_checkpoint(checkpoint)
    ds = require_valid(root)
    embeddings = load_embeddings(ds, info.frame_encoder["id"])
    stride = stride_frames(ds.fps, model.config.stride_seconds)
    progress = [
        score_embeddings(model, embeddings.frames[m.index], embeddings.text[m.task], stride).progress
        for m in ds.episodes
    ]
    result = compute(progress, RabcParams(chunk))
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {s: [] for s in SEGMENTS}
    for meta, w, r in zip(ds.episodes, result.weights, result.deltas, strict=True):
        quality = str(meta.row.get("quality", "clean"))
        if quality != "failed":
            parts[quality].append((w, r))
            continue
        start = retreat_start(meta)
        parts["failed before give-up"].append((w[:start], r[:start]))
        parts["failed: give-up retreat"].append((w[start:], r[start:]))
    table = {}
    for segment, pieces in parts.items():
        if not pieces:
            continue
        w = np.concatenate([p[0] for p in pieces])
        r = np.concatenate([p[1] for p in pieces])
        table[segment] = {
            "frames": len(w),
            "mean_weight": float(w.mean()),
            "zero_share": float(np.mean(w == 0)),
            "gain_per_frame": float(r.mean() / chunk),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--chunk", type=int, default=8, help="RA-BC chunk Δ in frames (the experiment's 8)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    results: dict[str, Any] = {
        name: {str(root): measure(Path(path), root, args.chunk) for root in args.datasets}
        for name, path in checkpoints.items()
    }
    names = list(results)
    table = Table(title=f"RA-BC weights by segment (chunk {args.chunk})")
    for column in ("data", "segment", "frames", *(f"{n}: w̄ / w=0 / Δφ per frame" for n in names)):
        table.add_column(column)
    lines = [
        "| data | segment | frames | " + " | ".join(f"{n}: mean w / w=0 share / Δφ per frame" for n in names) + " |",
        "| --- " * (3 + len(names)) + "|",
    ]
    for root in map(str, args.datasets):
        for segment in SEGMENTS:
            rows = [results[n][root].get(segment) for n in names]
            if rows[0] is None:
                continue
            cells = [f"{r['mean_weight']:.3f} / {r['zero_share']:.2f} / {r['gain_per_frame']:+.4f}" for r in rows]
            data = f"{Path(root).parent.name}/{Path(root).name}"
            table.add_row(data, segment, str(rows[0]["frames"]), *cells)
            lines.append(f"| {data} | {segment} | {rows[0]['frames']} | " + " | ".join(cells) + " |")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"checkpoints": checkpoints, "chunk": args.chunk, "results": results}, indent=2)
    )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
