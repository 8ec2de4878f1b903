"""Accuracy of the INT8 frame encoder against the float one, on held-out demos of every development task.

The same checkpoint's heads (PyTorch, float) score every frame of every held-out episode twice: on embeddings from
the float encoder graph and from the INT8 one (both ONNX Runtime). Per task: progress MAE between the two
(target <= 0.01), VOC on successful demos and success AUROC of final progress (sarm.evaluation; targets: within
0.005 of float), demo MSE against the ground truth, embedding cosine; and both encoders' images/s side by side.
Usage:
    .venv/bin/python bench/int8_accuracy.py --heldout DIR [DIR ...] --calibration DIR [DIR ...] \
        [--checkpoint model_repo/default/checkpoint] [--threads 1]
Held-out and calibration demos must be distinct (e.g. `sarm data generate --seed 1000` vs `--seed 0`).
Writes bench/results/int8_accuracy.json and prints the table in the markdown of the model card.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from sarm.data.lerobot import EpisodeMeta, LeRobotDataset
from sarm.encoders.registry import load_text_encoder
from sarm.evaluation import ground_truth_progress, success_auroc, value_order_correlation
from sarm.export.model_repo import export_model_repository, onnx_path, read_manifest
from sarm.export.session import cpu_session_options
from sarm.model.windows import stride_frames
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import load_checkpoint

RESULTS = Path(__file__).with_name("results") / "int8_accuracy.json"
BOUNDS = {"progress_mae": 0.01, "voc_delta": 0.005, "auroc_delta": 0.005}


def session(path: Path, threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), cpu_session_options(threads), providers=["CPUExecutionProvider"])


def encode(run: ort.InferenceSession, frames: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([run.run(None, {"images": frames[i : i + batch]})[0] for i in range(0, len(frames), batch)])


def images_per_s(run: ort.InferenceSession, frames: np.ndarray, batch: int, seconds: float = 2.0) -> float:
    chunk = frames[:batch]
    run.run(None, {"images": chunk})
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run.run(None, {"images": chunk})
        count += len(chunk)
    return count / (time.perf_counter() - start)


def pick_episodes(ds: LeRobotDataset, count: int | None) -> list[EpisodeMeta]:
    """The first `count` episodes, with up to half of them failed demos so that AUROC stays defined."""
    if count is None or count >= len(ds.episodes):
        return list(ds.episodes)
    failed = [m for m in ds.episodes if "success" in m.row and not m.row["success"]][: count // 2]
    others = [m for m in ds.episodes if m not in failed][: count - len(failed)]
    return sorted(failed + others, key=lambda m: m.index)


def task_metrics(
    ds: LeRobotDataset, model: Any, text: np.ndarray, stride: int, embeddings: dict[str, dict[int, np.ndarray]]
) -> dict[str, Any]:
    proportions = ds.proportions() or {}
    columns = set(ds.episodes_table.column_names)
    episodes = [m for m in ds.episodes if m.index in embeddings["float"]]
    out: dict[str, Any] = {"episodes": len(episodes)}
    progress: dict[str, dict[int, np.ndarray]] = {name: {} for name in embeddings}
    for meta in episodes:
        for name, per_episode in embeddings.items():
            progress[name][meta.index] = score_embeddings(model, per_episode[meta.index], text, stride).progress
    success = np.array([bool(m.row["success"]) if "success" in columns else True for m in episodes])
    truth = {m.index: ground_truth_progress(ds, m.index, proportions)[0] for m in episodes}
    for name, curves in progress.items():
        successful = [curves[m.index] for m, ok in zip(episodes, success, strict=True) if ok]
        out[name] = {
            "voc": float(np.mean([value_order_correlation(c) for c in successful])),
            "auroc": success_auroc(np.array([curves[m.index][-1] for m in episodes]), success),
            "demo_mse": float(np.mean([np.mean((curves[m.index] - truth[m.index]) ** 2) for m in episodes])),
        }
    diffs = np.concatenate([np.abs(progress["int8"][i] - progress["float"][i]) for i in progress["float"]])
    out["progress_mae"] = float(diffs.mean())
    out["progress_max_abs"] = float(diffs.max())
    a = np.concatenate(list(embeddings["float"].values()))[:, 0]
    b = np.concatenate(list(embeddings["int8"].values()))[:, 0]
    out["embedding_cosine_mean"] = float(
        np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    )
    out["frames"] = len(a)
    out["successful"], out["failed"] = int(success.sum()), int((~success).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", type=Path, nargs="+", required=True)
    parser.add_argument("--calibration", type=Path, nargs="+", required=True)
    parser.add_argument("--checkpoint", type=Path, default=Path("model_repo/default/checkpoint"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--episodes", type=int, help="per task (default all); up to half of them failed demos")
    parser.add_argument("--cache", type=Path, default=Path(".cache/int8_accuracy"), help="float embeddings cache")
    args = parser.parse_args()
    cache: Path = args.cache
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="int8_accuracy_"))
    repos = {"float": work / "float", "int8": work / "int8"}
    started = time.perf_counter()
    export_model_repository(args.checkpoint, repos["float"], "cpu")
    export_model_repository(args.checkpoint, repos["int8"], "cpu", calibration=args.calibration)
    export_s = time.perf_counter() - started
    manifests = {name: read_manifest(repo) for name, repo in repos.items()}
    runs = {name: session(onnx_path(repos[name], m, "encoder"), args.threads) for name, m in manifests.items()}
    model, _ = load_checkpoint(args.checkpoint)
    text_encoder = load_text_encoder()

    tasks: dict[str, Any] = {}
    speed_frames = None
    for root in args.heldout:
        ds = LeRobotDataset(root)
        embeddings: dict[str, dict[int, np.ndarray]] = {name: {} for name in runs}
        for meta in pick_episodes(ds, args.episodes):
            frames = ds.frames(meta.index)
            speed_frames = frames if speed_frames is None else speed_frames
            for name, run in runs.items():
                # Float embeddings depend only on the float graph: cached across runs (the INT8 ones never are).
                cached = cache / manifests[name].onnx_sha256["encoder"][:12] / f"{root.name}_{meta.index}.npy"
                if name == "float" and cached.is_file():
                    embeddings[name][meta.index] = np.load(cached)
                    continue
                embeddings[name][meta.index] = encode(run, frames)[:, None]
                if name == "float":
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    np.save(cached, embeddings[name][meta.index])
        instruction = ds.episodes[0].task
        text = text_encoder.encode([instruction])[0]
        stride = stride_frames(ds.fps, model.config.stride_seconds)
        tasks[root.name] = task_metrics(ds, model, text, stride, embeddings)
        print(f"{root.name}: {json.dumps(tasks[root.name])}", flush=True)

    assert speed_frames is not None
    speed = {
        f"batch_{b}": {
            name: statistics.median(images_per_s(run, speed_frames, b) for _ in range(3)) for name, run in runs.items()
        }
        for b in (1, 8)
    }
    passed = {
        task: {
            "progress_mae": m["progress_mae"] <= BOUNDS["progress_mae"],
            "voc": abs(m["int8"]["voc"] - m["float"]["voc"]) <= BOUNDS["voc_delta"],
            "auroc": m["float"]["auroc"] is None
            or abs(m["int8"]["auroc"] - m["float"]["auroc"]) <= BOUNDS["auroc_delta"],
        }
        for task, m in tasks.items()
    }
    report = {
        "checkpoint": str(args.checkpoint),
        "quantization": manifests["int8"].frame_encoder.extra["quantization"],
        "threads": args.threads,
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
        "export_seconds_both": export_s,
        "bounds": BOUNDS,
        "tasks": tasks,
        "passed": passed,
        "all_passed": all(all(p.values()) for p in passed.values()),
        "encoder_images_per_s": speed,
    }
    lines = [
        "| task | episodes (ok/failed) | progress MAE int8 vs float | max abs | VOC float / int8 | "
        "AUROC float / int8 | demo MSE float / int8 | embedding cosine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, m in tasks.items():
        f, q = m["float"], m["int8"]
        auroc = "n/a" if f["auroc"] is None else f"{f['auroc']:.3f} / {q['auroc']:.3f}"
        lines.append(
            f"| {task} | {m['episodes']} ({m['successful']}/{m['failed']}) | {m['progress_mae']:.4f} | "
            f"{m['progress_max_abs']:.3f} | {f['voc']:.4f} / {q['voc']:.4f} | {auroc} | "
            f"{f['demo_mse']:.4f} / {q['demo_mse']:.4f} | {m['embedding_cosine_mean']:.4f} |"
        )
    lines.append("")
    lines.append("| encoder | " + " | ".join(f"{k.replace('_', ' ')} img/s" for k in speed) + " |")
    lines.append("| --- " * (1 + len(speed)) + "|")
    for name in runs:
        lines.append(f"| {name} | " + " | ".join(f"{speed[k][name]:.1f}" for k in speed) + " |")
    print("\n".join(lines))
    print(
        f"bounds met on every task: {report['all_passed']} (load average {load[0]:.2f} at start, "
        f"{report['load_average_at_end'][0]:.2f} at end, {args.threads} thread(s))"
    )
    report["table_markdown"] = "\n".join(lines)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
