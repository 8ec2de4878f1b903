"""RA-BC labelling on Ray: 1 against 2 workers, with the single-process run beside them as the reference.

One synthetic dataset (`--episodes` episodes of `--frames` frames of 128x128 video at 10 fps, the default model's
camera) is labelled by the default model (model_repo/default/checkpoint) from video, every frame scored:
- `single`: `dataset_progress` in this process (what `sarm rabc` runs without --ray);
- `ray-1`, `ray-2`: `label_on_ray` with 1 and 2 workers (what `sarm rabc --ray` runs), on a local Ray cluster this
  script starts on loopback (`ray.init(num_cpus=2)`) and stops at the end.
Each worker uses one intra-op thread, as does `single`. Per run: the wall time, the part spent before the first
worker was ready (its process, imports, checkpoint and encoders: paid once per worker), the labelling after that,
episodes and frames per second, and p50 / p99 of the seconds one episode took in its worker. Every run's progress
must equal `single`'s within 1e-6. Usage:
    .venv/bin/python bench/rabc_ray.py [--episodes 10] [--frames 40] [--workers 1 2]
Writes bench/results/rabc_ray.json. On a 2-core machine 2 workers can at best halve the labelling time, and less
when other work shares the cores (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets

# Ray on loopback only, no usage reports, and a token of this run's own (a local cluster turns token authentication
# on and would otherwise write ~/.ray/auth_token, which later `ray start`s pick up); read once by ray at import.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from rich.console import Console
from rich.table import Table

from sarm.data.episode import EpisodeData
from sarm.data.lerobot import LeRobotDataset, LeRobotWriter
from sarm.rabc.distributed import RayOptions, label_on_ray
from sarm.rabc.progress import DatasetProgress, EpisodeLabeller, dataset_progress

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "model_repo" / "default" / "checkpoint"
RESULTS = ROOT / "bench" / "results"
CAMERA = "observation.images.corner4"  # the default model's camera
SIDE = 128
FPS = 10


def write_dataset(root: Path, episodes: int, frames: int) -> LeRobotDataset:
    """Episodes whose frames move a block across the image (so each frame differs), with random state/action."""
    rng = np.random.default_rng(0)
    with LeRobotWriter(root, fps=FPS) as writer:
        for e in range(episodes):
            video = np.full((frames, SIDE, SIDE, 3), 30 + 10 * e, np.uint8)
            for t in range(frames):
                x = int(t / max(frames - 1, 1) * (SIDE - 16))
                video[t, 40:72, x : x + 16] = (200, 90, 40)
            writer.add_episode(
                EpisodeData(
                    task="Pick up the puck and place it at the goal.",
                    frames={CAMERA: video},
                    state=rng.normal(size=(frames, 4)).astype(np.float32),
                    action=rng.normal(size=(frames, 4)).astype(np.float32),
                )
            )
    return LeRobotDataset(root)


def timed(
    label: Callable[[Callable[[int, int], None]], DatasetProgress],
) -> tuple[DatasetProgress, float, float, list[float]]:
    """(progress, seconds until the inputs were checked and a scorer was ready, seconds in all, the seconds between
    one episode's end and the next's: one episode's time where a single process labels them in turn)."""
    start = time.perf_counter()
    marks: list[float] = []
    progress = label(lambda done, total: marks.append(time.perf_counter() - start))
    return progress, marks[0], time.perf_counter() - start, list(np.diff(marks))


def row(
    name: str, workers: int, ready: float, total: float, frames: int, episodes: int, seconds: list[float]
) -> dict[str, Any]:
    labelling = total - ready
    return {
        "run": name,
        "workers": workers,
        "wall_s": total,
        "startup_s": ready,
        "labelling_s": labelling,
        "episodes_per_s": episodes / labelling,
        "frames_per_s": frames / labelling,
        "episode_p50_s": float(np.percentile(seconds, 50)),
        "episode_p99_s": float(np.percentile(seconds, 99)),
    }


def same(progress: DatasetProgress, reference: DatasetProgress) -> float:
    """The largest |Δ progress| against the reference (asserting identical rows)."""
    worst = 0.0
    for got, want in zip(progress.episodes, reference.episodes, strict=True):
        assert got.episode_index == want.episode_index and np.array_equal(got.index, want.index)
        worst = max(worst, float(np.abs(got.progress - want.progress).max()))
    assert worst <= 1e-6, worst
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = args.episodes * args.frames
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rabc_ray_bench") as tmp:
        ds = write_dataset(Path(tmp) / "dataset", args.episodes, args.frames)
        labeller = EpisodeLabeller(ds.root, CHECKPOINT, 1, threads=1)

        def single(on_episode: Callable[[int, int], None]) -> DatasetProgress:
            return dataset_progress(ds, CHECKPOINT, 1, on_episode=on_episode)

        reference, ready, total, gaps = timed(single)
        rows = [row("single", 1, ready, total, frames, args.episodes, gaps) | {"max_abs_diff": 0.0}]

        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        try:
            for workers in args.workers:
                runs: list[Any] = []

                def on_ray(
                    on_episode: Callable[[int, int], None], workers: int = workers, runs: list[Any] = runs
                ) -> DatasetProgress:
                    run = label_on_ray(labeller, RayOptions("auto", workers), on_episode=on_episode)
                    runs.append(run)
                    return run.progress

                progress, ready, total, _ = timed(on_ray)
                result = row(
                    f"ray-{workers}", workers, ready, total, frames, args.episodes, list(runs[0].seconds.values())
                )
                rows.append(result | {"max_abs_diff": same(progress, reference)})
        finally:
            ray.shutdown()

    base = next((r for r in rows if r["run"] == "ray-1"), None)
    for r in rows:
        r["labelling_speedup_vs_ray1"] = base["labelling_s"] / r["labelling_s"] if base else None
        r["wall_speedup_vs_ray1"] = base["wall_s"] / r["wall_s"] if base else None
    table = Table(title=f"sarm rabc labelling: {args.episodes} episodes x {args.frames} frames, default model, video")
    columns = (
        "run",
        "wall s",
        "startup s",
        "labelling s",
        "frames/s",
        "episode p50 s",
        "episode p99 s",
        "speedup (labelling)",
        "speedup (wall)",
        "max |Δφ|",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["run"],
            f"{r['wall_s']:.1f}",
            f"{r['startup_s']:.1f}",
            f"{r['labelling_s']:.1f}",
            f"{r['frames_per_s']:.1f}",
            f"{r['episode_p50_s']:.2f}",
            f"{r['episode_p99_s']:.2f}",
            f"{r['labelling_speedup_vs_ray1']:.2f}x",
            f"{r['wall_speedup_vs_ray1']:.2f}x",
            f"{r['max_abs_diff']:.1e}",
        )
    Console(width=160).print(table)
    machine = {
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": load_at_start,
        "load_avg_1m_at_end": os.getloadavg()[0],
        "shared": True,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "rabc_ray.json"
    path.write_text(json.dumps({"args": vars(args), "machine": machine, "runs": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
