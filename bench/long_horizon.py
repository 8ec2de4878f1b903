"""Quality where the fixed-stride window applies: the long-horizon pick-place-x3-v3 task (12 stages, 20–30 s).

Generates training and held-out demos (different seeds, default quality mix), embeds them, trains SARM and the
frame-index baseline with `sarm train --stride-seconds 1.0` (same seed and steps), evaluates both with `sarm eval`
and prints VOC, demo MSE, stage accuracy, AUROC and stage flicker (predicted vs annotated stage changes per
episode), with the share of scored frames whose window uses the fixed stride. Every step is the CLI a user runs.

Usage:
    .venv/bin/python bench/long_horizon.py [--episodes 12] [--heldout 4] [--steps 400] [--image 64]
        [--run runs/long_horizon] [--out bench/results/long_horizon.json]
Re-running reuses the generated and embedded data under --run (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

TASK = "pick-place-x3-v3"
ROOT = Path(__file__).resolve().parents[1]
# The venv's `sarm` beside this interpreter, else the one on PATH.
SARM = str(Path(sys.executable).with_name("sarm")) if Path(sys.executable).with_name("sarm").exists() else "sarm"


def _sarm(*args: str) -> float:
    """Runs one `sarm` command (failing loudly); returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([SARM, *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_dir: Path = args.run
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    for split, episodes, seed in (("train", args.episodes, 0), ("heldout", args.heldout, 1000)):
        data = run_dir / split
        if not (data / "meta/info.json").exists():
            seconds[f"generate_{split}"] = _sarm(
                "data", "generate", "--task", TASK, "--episodes", str(episodes), "--out", str(data),
                "--image-size", str(args.image), "--seed", str(seed),
            )  # fmt: skip
        seconds[f"embed_{split}"] = _sarm("embed", str(data), "--threads", str(args.threads))
    for labels in ("stage", "frame-index"):
        checkpoint = run_dir / labels
        shutil.rmtree(checkpoint, ignore_errors=True)
        seconds[f"train_{labels}"] = _sarm(
            "train", str(run_dir / "train"), "--out", str(checkpoint), "--labels", labels, "--steps", str(args.steps),
            "--stride-seconds", "1.0", "--seed", "0", "--eval-every", str(args.steps),
        )  # fmt: skip
    report_dir = run_dir / "report"
    seconds["eval"] = _sarm(
        "eval", str(run_dir / "stage"), str(run_dir / "frame-index"), "--data", str(run_dir / "heldout"),
        "--out", str(report_dir),
    )  # fmt: skip
    report = json.loads((report_dir / "metrics.json").read_text())
    return {
        "task": TASK,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "episodes": {"train": args.episodes, "heldout": report["episodes"]},
        "seconds": seconds,
        "load_average": os.getloadavg(),
        "checkpoints": report["checkpoints"],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def show(result: dict[str, Any]) -> None:
    table = Table(title=f"{TASK}: {result['episodes']['heldout']} held-out episodes, stride 1 s")
    for column in ("checkpoint", "VOC", "demo MSE", "stage acc", "AUROC", "changes pred/annot (ratio)", "fixed"):
        table.add_column(column)
    for name, m in result["checkpoints"].items():
        flicker = (m["stage_flicker"] or {}).get("overall")
        changes = (
            f"{flicker['predicted_changes']:.1f} / {flicker['annotated_changes']:.1f} ({_fmt(flicker['ratio'], 2)})"
            if flicker
            else "n/a"
        )
        table.add_row(
            name,
            _fmt(m["voc_mean"]),
            _fmt(m["demo_mse"], 4),
            _fmt(m["stage_accuracy"]),
            _fmt(m["success_auroc"]),
            changes,
            f"{m['fixed_stride_share']:.0%}",
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=12, help="training episodes")
    parser.add_argument("--heldout", type=int, default=4, help="held-out episodes")
    parser.add_argument("--steps", type=int, default=400, help="training steps (each model)")
    parser.add_argument("--image", type=int, default=64, help="image size in pixels")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for sarm embed")
    parser.add_argument("--run", type=Path, default=ROOT / "runs/long_horizon")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/long_horizon.json")
    args = parser.parse_args()
    result = run(args)
    show(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
