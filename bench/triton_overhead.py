"""Serving overhead: a Triton gRPC round trip vs in-process ONNX Runtime for the same model and batch.

Exports a model repository from a checkpoint (default: an untrained small SARM for the default encoders
and 128x128 images), starts the real tritonserver on free loopback ports, and times sequential requests
through both paths, interleaved so machine noise hits both alike. Usage:
    .venv/bin/python bench/triton_overhead.py [--checkpoint CKPT] [--requests 200] [--threads 1]
Writes bench/results/triton_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import tritonclient.grpc as grpcclient
from rich.console import Console
from rich.table import Table

from sarm.export.model_repo import ENCODER_MODEL, HEADS_MODEL, export_model_repository, read_manifest
from sarm.training.scaffold import untrained_checkpoint
from sarm.triton import TritonServer
from sarm.triton.client import infer_inputs

RESULTS = Path(__file__).with_name("results") / "triton_overhead.json"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads, in-process and in Triton")
    parser.add_argument("--image", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    checkpoint = args.checkpoint or untrained_checkpoint(
        tmp / "ckpt", ["a", "b", "c"], [0.3, 0.3, 0.4], (args.image, args.image)
    )
    repo = tmp / "repo"
    export_model_repository(checkpoint, repo, "cpu")
    manifest = read_manifest(repo)
    rng = np.random.default_rng(0)
    h, w = manifest.image_size
    length, dim = manifest.window.sequence_length, manifest.frame_encoder.dim
    cases = {
        (ENCODER_MODEL, 1): {"images": rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)},
        (ENCODER_MODEL, 8): {"images": rng.integers(0, 256, (8, h, w, 3), dtype=np.uint8)},
        (HEADS_MODEL, 1): {
            "frames": rng.normal(size=(1, length, 1, dim)).astype(np.float32),
            "text": rng.normal(size=(1, manifest.text_encoder.dim)).astype(np.float32),
            "lengths": np.full((1, 1), 9, np.int64),
        },
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {
        name: ort.InferenceSession(str(repo / name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])
        for name in (ENCODER_MODEL, HEADS_MODEL)
    }
    rows = []
    with TritonServer(repo) as server:
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        for (model, batch), inputs in cases.items():
            requests = infer_inputs(inputs)
            paths: dict[str, Callable[[], object]] = {
                "in-process": lambda m=model, i=inputs: sessions[m].run(None, i),
                "triton": lambda m=model, r=requests: client.infer(m, r, client_timeout=30),
            }
            timings: dict[str, list[float]] = {k: [] for k in paths}
            for fn in paths.values():
                fn()  # warm-up
            for _ in range(args.requests):
                for name, fn in paths.items():
                    start = time.perf_counter()
                    fn()
                    timings[name].append(time.perf_counter() - start)
            local, served = percentiles(timings["in-process"]), percentiles(timings["triton"])
            rows.append(
                {
                    "model": model,
                    "batch": batch,
                    "in_process": local,
                    "triton": served,
                    "overhead_p50_ms": served["p50_ms"] - local["p50_ms"],
                }
            )
    table = Table(title=f"Triton gRPC round trip vs in-process ONNX Runtime ({args.requests} sequential requests)")
    for column in ("model", "batch", "in-process p50/p99 ms", "triton p50/p99 ms", "overhead p50 ms"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["model"],
            str(row["batch"]),
            f"{row['in_process']['p50_ms']:.2f} / {row['in_process']['p99_ms']:.2f}",
            f"{row['triton']['p50_ms']:.2f} / {row['triton']['p99_ms']:.2f}",
            f"{row['overhead_p50_ms']:.2f}",
        )
    Console().print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
