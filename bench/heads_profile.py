"""The SARM heads in PyTorch vs ONNX Runtime, before and after the export's row layout, and why (issue #13).

One process, interleaved rounds, the default model's heads (model_repo/default/checkpoint, `small` preset): PyTorch
eager, ONNX Runtime on torch's own layer layout ("ort before": export_heads(rows=False)) and on the exported graph
("ort after": RowsEncoderLayer, sarm/export/onnx_heads.py), both sessions from cpu_session_options, at batch
1/8/32/64 with 1 and 2 threads. Each round calls the three engines in turn for --seconds each per batch and thread
count; the table gives the median over rounds of each round's p50 and p99 call latency, and the speed-up from
process CPU time per call (robust to other processes taking the cores, which the shared machine has).
PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless set: with libgomp's default spin-waiting, 2 threads on 2 busy
cores took 171 ms per batch-1 call instead of 6 (the no-spinning that cpu_session_options gives onnxruntime).
Then the profiles at batch 32, 1 thread: onnxruntime's (JSON trace, time per op type) for both graphs and
PyTorch's (torch.profiler, self time per aten op). Usage:
    .venv/bin/python bench/heads_profile.py [--rounds 5] [--seconds 0.3] [--checkpoint DIR]
Writes bench/results/heads_profile.json; the raw onnxruntime traces (chrome://tracing) go to .cache/heads_profile/.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (see above)

import argparse
import collections
import json
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
from rich.progress import track
from rich.table import Table

from sarm.export.onnx_heads import INPUTS, OUTPUTS, export_heads
from sarm.export.session import cpu_session_options
from sarm.model.modeling_sarm import SARM
from sarm.training.checkpoint import load_checkpoint

BATCHES = (1, 8, 32, 64)
THREADS = (1, 2)
ENGINES = ("pytorch", "ort before", "ort after")
PROFILE_BATCH = 32
RESULTS = Path(__file__).with_name("results") / "heads_profile.json"
TRACES = Path(__file__).resolve().parents[1] / ".cache" / "heads_profile"  # raw traces (MBs): not committed


def interleaved(calls: dict[str, Callable[[], object]], seconds: float) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and process-CPU milliseconds per call of each engine, calling them in turn (one warm-up call each,
    then rounds of one call per engine for `seconds`, at least 5), so a burst of load on the shared machine
    falls on every engine alike. CPU time counts every thread of the process, busy-waiting included."""
    for call in calls.values():
        call()
    times: dict[str, tuple[list[float], list[float]]] = {engine: ([], []) for engine in calls}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or min(len(wall) for wall, _ in times.values()) < 5:
        for engine, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[engine][0].append((time.perf_counter() - wall) * 1e3)
            times[engine][1].append((time.process_time() - cpu) * 1e3)
    return times


def feeds(config: Any, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "frames": rng.normal(size=(batch, config.sequence_length, config.num_cameras, config.frame_dim)).astype(
            np.float32
        ),
        "text": rng.normal(size=(batch, config.text_dim)).astype(np.float32),
        "lengths": np.full((batch, 1), config.window_frames, np.int64),
    }


def pytorch_call(model: SARM, feed: dict[str, np.ndarray]) -> Callable[[], object]:
    frames, text, lengths = (torch.from_numpy(feed[k]) for k in INPUTS)

    def run() -> object:
        with torch.inference_mode():
            return model.predict(frames, text, lengths[:, 0])

    return run


def ort_profile(path: Path, feed: dict[str, np.ndarray], out: Path, runs: int = 30) -> dict[str, Any]:
    """Kernel time per op type and the ten slowest nodes under onnxruntime's profiler (us per run, 1 thread)."""
    options = cpu_session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(out.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(list(OUTPUTS), feed)
    shutil.move(Path(session.end_profiling()), out)
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
        "nodes": len(by_node),
    }


def torch_profile(call: Callable[[], object], runs: int = 30) -> dict[str, Any]:
    """Self CPU time per aten op under torch.profiler (us per run, 1 thread)."""
    torch.set_num_threads(1)
    call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            call()
    by_op = {e.key: e.self_cpu_time_total / runs for e in prof.key_averages()}
    ordered = dict(sorted(by_op.items(), key=lambda item: -item[1]))
    return {"total_us": sum(ordered.values()), "by_op_type_us": ordered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="timing per case and round")
    parser.add_argument("--checkpoint", type=Path, default=Path("model_repo/default/checkpoint"))
    args = parser.parse_args()
    console = Console()
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    tmp = Path(tempfile.mkdtemp())
    graphs = {
        "ort before": export_heads(model, tmp / "before.onnx", rows=False),
        "ort after": export_heads(model, tmp / "after.onnx"),
    }
    sessions = {
        (engine, threads): ort.InferenceSession(
            str(path), cpu_session_options(threads), providers=["CPUExecutionProvider"]
        )
        for engine, path in graphs.items()
        for threads in THREADS
    }
    rng = np.random.default_rng(0)
    batch_feeds = {batch: feeds(model.config, batch, rng) for batch in BATCHES}
    cases: dict[tuple[int, int], dict[str, Callable[[], object]]] = {}
    for threads in THREADS:
        for batch, feed in batch_feeds.items():
            cases[threads, batch] = {"pytorch": pytorch_call(model, feed)}
            for engine in ENGINES[1:]:
                session = sessions[engine, threads]
                cases[threads, batch][engine] = lambda s=session, f=feed: s.run(list(OUTPUTS), f)
    load_start = os.getloadavg()
    p50s: dict[tuple[int, int, str], list[float]] = collections.defaultdict(list)
    p99s: dict[tuple[int, int, str], list[float]] = collections.defaultdict(list)
    cpu50s: dict[tuple[int, int, str], list[float]] = collections.defaultdict(list)
    for _ in track(range(args.rounds), description="rounds", console=console):
        for (threads, batch), calls in cases.items():
            torch.set_num_threads(threads)
            for engine, (wall, cpu) in interleaved(calls, args.seconds * len(calls)).items():
                p50s[threads, batch, engine].append(float(np.percentile(wall, 50)))
                p99s[threads, batch, engine].append(float(np.percentile(wall, 99)))
                cpu50s[threads, batch, engine].append(float(np.percentile(cpu, 50)))
    load_end = os.getloadavg()
    rows = []
    for threads in THREADS:
        for batch in BATCHES:
            row: dict[str, Any] = {"threads": threads, "batch": batch}
            for engine in ENGINES:
                key = (threads, batch, engine)
                row[engine] = {
                    "p50_ms": statistics.median(p50s[key]),
                    "p99_ms": statistics.median(p99s[key]),
                    "cpu_p50_ms": statistics.median(cpu50s[key]),
                    "windows_per_s": batch * 1e3 / statistics.median(p50s[key]),
                }
            for engine in ENGINES[1:]:  # > 1: ONNX Runtime faster than PyTorch
                row[f"{engine} / pytorch"] = row["pytorch"]["p50_ms"] / row[engine]["p50_ms"]
                row[f"{engine} / pytorch, cpu"] = row["pytorch"]["cpu_p50_ms"] / row[engine]["cpu_p50_ms"]
            rows.append(row)
    table = Table(
        title=f"SARM heads ({args.checkpoint}), ms per call: median over {args.rounds} rounds of p50 / p99; "
        f"load average {load_start[0]:.2f} → {load_end[0]:.2f} on {os.cpu_count()} CPUs"
    )
    columns = ("threads", "batch", *ENGINES, "before / pytorch", "after / pytorch", "after (cpu)", "after windows/s")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["threads"]),
            str(row["batch"]),
            *(f"{row[e]['p50_ms']:.2f} / {row[e]['p99_ms']:.2f}" for e in ENGINES),
            f"{row['ort before / pytorch']:.2f}x",
            f"{row['ort after / pytorch']:.2f}x",
            f"{row['ort after / pytorch, cpu']:.2f}x",
            f"{row['ort after']['windows_per_s']:.0f}",
        )
    console.print(table)

    TRACES.mkdir(parents=True, exist_ok=True)
    feed = batch_feeds[PROFILE_BATCH]
    profiles = {
        engine: ort_profile(path, feed, TRACES / f"{engine.replace(' ', '_')}.trace.json")
        for engine, path in graphs.items()
    }
    profiles["pytorch"] = torch_profile(pytorch_call(model, feed))
    for engine, profile in profiles.items():
        top = Table(title=f"{engine}, batch {PROFILE_BATCH}, 1 thread: {profile['total_us']:.0f} us of ops per run")
        top.add_column("op type")
        top.add_column("us / run", justify="right")
        for op, us in list(profile["by_op_type_us"].items())[:10]:
            top.add_row(op, f"{us:.0f}")
        console.print(top)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "cpus": os.cpu_count(),
                "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                "load_average_start": load_start,
                "load_average_end": load_end,
                "rows": rows,
                "profiles_batch32_1thread": profiles,
            },
            indent=2,
        )
    )
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
