"""PyTorch eager vs ONNX Runtime for the frame encoder (images/s) and the SARM heads (windows/s).

Both engines run in one process, in interleaved rounds, so machine noise hits both alike; the table
reports the median of the rounds and the ratio. Usage:
    .venv/bin/python bench/export_speed.py [--rounds 5] [--threads 2] [--image 128] [--preset small]
Writes bench/results/export_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from sarm.encoders.onnx_export import export_frame_encoder
from sarm.encoders.registry import load_frame_encoder
from sarm.export.onnx_heads import export_heads
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM

BATCHES = (1, 8, 32)
RESULTS = Path(__file__).with_name("results") / "export_speed.json"


def rate(fn: Callable[[], object], items: int, min_seconds: float = 0.5) -> float:
    """Items per second of `fn` (one warm-up call, then as many calls as fit in `min_seconds`)."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or calls < 3:
        fn()
        calls += 1
    return calls * items / elapsed


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", type=int, default=128, help="camera image side in pixels")
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp())

    encoder = load_frame_encoder()
    encoder_session = session(export_frame_encoder(encoder, tmp / "encoder.onnx", height=args.image, width=args.image),
                              args.threads)
    config = SARMConfig.from_preset(args.preset, ["a", "b", "c", "d"], [0.25] * 4, frame_dim=encoder.dim, text_dim=384)
    heads = SARM(config).eval()
    heads_session = session(export_heads(heads, tmp / "heads.onnx"), args.threads)

    cases: dict[tuple[str, int], dict[str, Callable[[], object]]] = {}
    for batch in BATCHES:
        images = rng.integers(0, 256, size=(batch, args.image, args.image, 3), dtype=np.uint8)
        frames = rng.normal(size=(batch, config.sequence_length, 1, encoder.dim)).astype(np.float32)
        text = rng.normal(size=(batch, 384)).astype(np.float32)
        lengths = np.full((batch, 1), config.window_frames, np.int64)
        torch_images, torch_frames, torch_text = (torch.from_numpy(a) for a in (images, frames, text))
        torch_lengths = torch.from_numpy(lengths[:, 0])

        def encoder_torch(x: torch.Tensor = torch_images) -> object:
            with torch.inference_mode():
                return encoder(x)

        def heads_torch(f: torch.Tensor = torch_frames, t: torch.Tensor = torch_text,
                        n: torch.Tensor = torch_lengths) -> object:
            with torch.inference_mode():
                return heads.predict(f, t, n)

        cases[("encoder", batch)] = {
            "torch": encoder_torch,
            "onnxruntime": lambda x=images: encoder_session.run(None, {"images": x}),
        }
        cases[("heads", batch)] = {
            "torch": heads_torch,
            "onnxruntime": lambda f=frames, t=text, n=lengths: heads_session.run(
                None, {"frames": f, "text": t, "lengths": n}),
        }

    samples: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for (model, batch), engines in cases.items():
            for engine, fn in engines.items():
                samples.setdefault((model, batch, engine), []).append(rate(fn, batch))

    rows = []
    for model, batch in cases:
        torch_rate = statistics.median(samples[(model, batch, "torch")])
        ort_rate = statistics.median(samples[(model, batch, "onnxruntime")])
        spread = [min(samples[(model, batch, "onnxruntime")]), max(samples[(model, batch, "onnxruntime")])]
        rows.append({"model": model, "batch": batch, "torch_per_s": torch_rate, "onnxruntime_per_s": ort_rate,
                     "ratio": ort_rate / torch_rate, "onnxruntime_range": spread})
    table = Table(title=f"PyTorch eager vs ONNX Runtime ({args.threads} threads, {args.image}px, {args.preset} heads, "
                        f"median of {args.rounds} rounds)")
    for column in ("model", "batch", "unit", "torch", "onnxruntime", "ratio"):
        table.add_column(column, justify="right")
    for row in rows:
        unit = "images/s" if row["model"] == "encoder" else "windows/s"
        table.add_row(row["model"], str(row["batch"]), unit, f"{row['torch_per_s']:.1f}",
                      f"{row['onnxruntime_per_s']:.1f}", f"{row['ratio']:.2f}x")
    Console().print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
