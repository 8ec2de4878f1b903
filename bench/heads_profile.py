"""Why the ONNX Runtime heads lag PyTorch at some batch sizes, and what fixes it.

One process, interleaved rounds, the default model's heads (model_repo/default/checkpoint): PyTorch eager against
ONNX Runtime sessions made with different options over the same exported graph, at batch 1/8/32/64. Then
onnxruntime's profiler (JSON trace) of the baseline and of the tuned session at batch 32: time per op type and the
top nodes. Usage:
    .venv/bin/python bench/heads_profile.py [--threads 2] [--rounds 5] [--checkpoint DIR]
Writes bench/results/heads_profile.json (heads_profile_threads1.json with --threads 1); the raw traces (chrome://tracing)
go to .cache/heads_profile/.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from sarm.export.onnx_heads import INPUTS, OUTPUTS, export_heads
from sarm.export.session import cpu_session_options
from sarm.training.checkpoint import load_checkpoint

BATCHES = (1, 8, 32, 64)
RESULTS = Path(__file__).with_name("results") / "heads_profile.json"
TRACES = Path(__file__).resolve().parents[1] / ".cache" / "heads_profile"  # raw traces (MBs): not committed


def rate(fn: Callable[[], object], items: int, min_seconds: float = 0.4) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or calls < 3:
        fn()
        calls += 1
    return calls * items / elapsed


def baseline_options(threads: int) -> ort.SessionOptions:
    """What the backends used before: thread counts only, everything else onnxruntime's default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def op_profile(path: Path, options: ort.SessionOptions, feeds: dict[str, np.ndarray], out: Path) -> dict[str, Any]:
    """Run 30 times under onnxruntime's profiler; time per op type and the ten slowest nodes (microseconds/run)."""
    options.enable_profiling = True
    options.profile_file_prefix = str(out.with_suffix(""))
    run = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runs = 30
    for _ in range(runs):
        run.run(list(OUTPUTS), feeds)
    trace = Path(run.end_profiling())
    shutil.move(trace, out)
    by_type: collections.Counter[str] = collections.Counter()
    by_node: collections.Counter[str] = collections.Counter()
    for event in json.loads(out.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_type[op] += event["dur"] / runs
            by_node[f"{event['name'].removesuffix('_kernel_time')} ({op})"] += event["dur"] / runs
    return {
        "total_us": sum(by_type.values()),
        "by_op_type_us": dict(by_type.most_common()),
        "top_nodes_us": dict(by_node.most_common(10)),
        "nodes": sum(1 for _ in by_node),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checkpoint", type=Path, default=Path("model_repo/default/checkpoint"))
    args = parser.parse_args()
    results = RESULTS if args.threads == 2 else RESULTS.with_name(f"heads_profile_threads{args.threads}.json")
    load = os.getloadavg()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    path = export_heads(model, Path(tempfile.mkdtemp()) / "heads.onnx")
    config = model.config
    sessions = {
        "ort baseline": ort.InferenceSession(
            str(path), baseline_options(args.threads), providers=["CPUExecutionProvider"]
        ),
        "ort tuned": ort.InferenceSession(
            str(path), cpu_session_options(args.threads), providers=["CPUExecutionProvider"]
        ),
    }
    rng = np.random.default_rng(0)
    cases: dict[int, dict[str, Callable[[], object]]] = {}
    feeds_by_batch = {}
    for batch in BATCHES:
        frames = rng.normal(size=(batch, config.sequence_length, config.num_cameras, config.frame_dim))
        feeds: dict[str, np.ndarray] = {
            "frames": frames.astype(np.float32),
            "text": rng.normal(size=(batch, config.text_dim)).astype(np.float32),
            "lengths": np.full((batch, 1), config.window_frames, np.int64),
        }
        feeds_by_batch[batch] = feeds
        tf, tt, tl = (torch.from_numpy(feeds[k]) for k in INPUTS)

        def pytorch(f: torch.Tensor = tf, t: torch.Tensor = tt, n: torch.Tensor = tl) -> object:
            with torch.inference_mode():
                return model.predict(f, t, n[:, 0])

        cases[batch] = {"pytorch": pytorch}
        for name, run in sessions.items():

            def onnxruntime(run: ort.InferenceSession = run, feeds: dict[str, np.ndarray] = feeds) -> object:
                return run.run(list(OUTPUTS), feeds)

            cases[batch][name] = onnxruntime
    samples: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
    for _ in range(args.rounds):
        for batch, engines in cases.items():
            for engine, fn in engines.items():
                samples[batch, engine].append(rate(fn, batch))
    rows = []
    table = Table(
        title=f"SARM heads, windows/s (median of {args.rounds} rounds, {args.threads} threads, "
        f"load average {load[0]:.2f} at start)"
    )
    for column in ("batch", "pytorch", "ort baseline", "ort tuned", "baseline / pytorch", "tuned / pytorch"):
        table.add_column(column, justify="right")
    for batch in BATCHES:
        medians = {engine: statistics.median(samples[batch, engine]) for engine in cases[batch]}
        row = {
            "batch": batch,
            **medians,
            "baseline_ratio": medians["ort baseline"] / medians["pytorch"],
            "tuned_ratio": medians["ort tuned"] / medians["pytorch"],
        }
        rows.append(row)
        table.add_row(
            str(batch),
            *(f"{medians[e]:.0f}" for e in cases[batch]),
            f"{row['baseline_ratio']:.2f}x",
            f"{row['tuned_ratio']:.2f}x",
        )
    console = Console()
    console.print(table)
    profiles = {}
    for name, options in (("baseline", baseline_options(args.threads)), ("tuned", cpu_session_options(args.threads))):
        trace = TRACES / f"{results.stem}_{name}.trace.json"
        trace.parent.mkdir(parents=True, exist_ok=True)
        profiles[name] = op_profile(path, options, feeds_by_batch[32], trace)
        top = Table(
            title=f"onnxruntime profile, {name}, batch 32: {profiles[name]['total_us']:.0f} us of kernels per "
            f"run over {profiles[name]['nodes']} nodes"
        )
        top.add_column("op type")
        top.add_column("us / run", justify="right")
        for op, us in list(profiles[name]["by_op_type_us"].items())[:8]:
            top.add_row(op, f"{us:.0f}")
        console.print(top)
        console.print("top nodes: " + "; ".join(f"{n} {us:.0f} us" for n, us in profiles[name]["top_nodes_us"].items()))
    results.parent.mkdir(exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "load_average_start": load,
                "load_average_end": os.getloadavg(),
                "rows": rows,
                "profiles": profiles,
            },
            indent=2,
        )
    )
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
