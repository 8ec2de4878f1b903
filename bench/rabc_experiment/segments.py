"""Where inside the demos the RA-BC weight went: the give-up retreat of failed demos versus everything else.

`python -m bench.rabc_experiment.segments OUT` reads the per-task weights a run saved (OUT/<task>_rabc.npz)
and its datasets (OUT/data/<task>) and prints a markdown table. A failed demo ends with the operator
pulling the hand back for exactly the give-up event's frame count (`give_up@stage…+delay:FRAMES`), so those
last frames are the clearest "bad actions" in the data.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from bench.rabc_experiment.data import load_demos
from sarm.sim.metaworld_demos import MAX_STEPS

GIVE_UP = re.compile(r"give_up@stage\d+\+\d+:(\d+)")


def retreat_frames(perturbations: str, length: int) -> int:
    """Frames of give-up retreat at the end of a demo (0 if it never gave up, e.g. ran out of steps)."""
    match = GIVE_UP.search(perturbations)
    return int(match.group(1)) if match and length < MAX_STEPS else 0


def segment_table(out: Path) -> str:
    lines = [
        "| task | segment | frames | mean weight | w = 0 share | mean progress change per frame |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for npz in sorted(out.glob("*_rabc.npz")):
        task = npz.name.removesuffix("_rabc.npz")
        saved = np.load(npz)
        splits = np.cumsum(saved["lengths"])[:-1]
        progress, weights = np.split(saved["progress"], splits), np.split(saved["weights"], splits)
        demos = load_demos(task, out / "data" / task)
        segments: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}  # name -> (weights, gains)
        for i, (quality, flaws) in enumerate(zip(demos.quality, demos.perturbations, strict=True)):
            length = len(weights[i])
            retreat = retreat_frames(flaws, length) if quality == "failed" else 0
            gains = np.append(np.diff(progress[i]), 0.0)  # per frame: the trend, not RA-BC's chunk gain
            for name, part in (
                (f"{quality} before give-up" if retreat else quality, slice(0, length - retreat)),
                ("failed: give-up retreat", slice(length - retreat, length)),
            ):
                if part.stop > part.start:
                    seg_weights, seg_gains = segments.setdefault(name, ([], []))
                    seg_weights.append(weights[i][part])
                    seg_gains.append(gains[part])
        for name in sorted(segments):
            w, g = (np.concatenate(parts) for parts in segments[name])
            lines.append(f"| {task} | {name} | {len(w)} | {w.mean():.3f} | {(w == 0).mean():.2f} | {g.mean():+.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(segment_table(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/rabc/main")))
