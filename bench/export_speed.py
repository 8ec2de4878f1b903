"""PyTorch eager vs ONNX Runtime for the frame encoder (images/s) and the SARM heads (windows/s).

Both engines run in one process, in interleaved rounds, so machine noise hits both alike; the table
reports the median throughput of the rounds, the ratio, and p50 / p99 milliseconds per call over every timed call.
ONNX Runtime sessions use the backends' options (sarm.export.session.cpu_session_options); PyTorch runs with
OMP_WAIT_POLICY=PASSIVE unless set (libgomp's spin-waiting slows it many times over on busy cores, see
bench/heads_profile.py, which breaks the heads down further). Usage:
    .venv/bin/python bench/export_speed.py [--rounds 5] [--threads 2] [--image 128] [--preset small]
        [--models encoder heads]
Writes bench/results/export_speed.json; `--models heads` re-measures the heads only and keeps the encoder's rows
of the JSON (each row records when and under what load it was measured).

`--embed DATASET` instead times `sarm embed`'s work (decode + encode every frame, sarm.embeddings.embed_dataset)
on copies of DATASET with the PyTorch encoder, the float ONNX Runtime one and the INT8 one (graphs exported and
calibrated beforehand, not timed), one after another, and writes bench/results/embed_speed.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (see above)

import argparse
import datetime
import json
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

from sarm.encoders.onnx_export import export_frame_encoder
from sarm.encoders.registry import load_frame_encoder
from sarm.export.onnx_heads import export_heads
from sarm.export.session import cpu_session_options
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM

BATCHES = (1, 8, 32)
MODELS = ("encoder", "heads")
RESULTS = Path(__file__).with_name("results") / "export_speed.json"


def timed_calls(fn: Callable[[], object], min_seconds: float = 0.5) -> list[float]:
    """Seconds per call of `fn`: one warm-up call, then as many calls as fit in `min_seconds` (at least 3)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 3:
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return times


def ort_call(run: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    return lambda: run.run(None, feeds)


def session(path: Path, threads: int) -> ort.InferenceSession:
    """The session options the backends use (sarm.export.session)."""
    return ort.InferenceSession(str(path), cpu_session_options(threads), providers=["CPUExecutionProvider"])


def embed_speed(dataset: Path, threads: int) -> None:
    """Frames/s of embed_dataset with each engine on a fresh copy of `dataset` (the store starts empty)."""
    import os
    import shutil

    from sarm.data.lerobot import LeRobotDataset
    from sarm.embeddings import FrameEncoding, embed_dataset
    from sarm.encoders.registry import load_text_encoder
    from sarm.export.onnx_encoder import OnnxFrameEncoder, float_graphs, int8_graphs, int8_identity

    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp())
    encoder, texts = load_frame_encoder(), load_text_encoder()
    ident = (encoder.encoder_id, encoder.version, encoder.dim)
    ds = LeRobotDataset(dataset)
    height, width = ds.frames(ds.episodes[0].index, indices=np.array([0])).shape[1:3]
    engines: dict[str, FrameEncoding] = {
        "torch": encoder,
        "onnxruntime": OnnxFrameEncoder(*ident, float_graphs(encoder, tmp / "cache"), None, threads),
        "onnxruntime int8": OnnxFrameEncoder(
            *ident, int8_graphs(encoder, ds, tmp / "cache"), int8_identity("embedded dataset"), threads
        ),
    }
    for engine in engines.values():  # export / calibrate now, outside the timing
        if isinstance(engine, OnnxFrameEncoder):
            engine.encode_frames(np.zeros((1, height, width, 3), np.uint8))
    rows: list[dict[str, Any]] = []
    for name, engine in engines.items():
        copy = Path(shutil.copytree(dataset, tmp / name.replace(" ", "_")))
        load = os.getloadavg()[0]
        start = time.perf_counter()
        embed_dataset(LeRobotDataset(copy), engine, texts, batch_size=8)
        seconds = time.perf_counter() - start
        frames = sum(m.length for m in ds.episodes) * len(ds.camera_keys)
        rows.append(
            {
                "engine": name,
                "frames": frames,
                "seconds": seconds,
                "frames_per_s": frames / seconds,
                "load_average": load,
            }
        )
    for row in rows:
        row["speedup_vs_torch"] = row["frames_per_s"] / rows[0]["frames_per_s"]
    table = Table(title=f"sarm embed on {dataset} ({threads} threads; decode + encode + store)")
    for column in ("engine", "frames", "seconds", "frames/s", "vs torch", "load avg"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["engine"],
            str(row["frames"]),
            f"{row['seconds']:.1f}",
            f"{row['frames_per_s']:.1f}",
            f"{row['speedup_vs_torch']:.2f}x",
            f"{row['load_average']:.1f}",
        )
    Console().print(table)
    out = RESULTS.with_name("embed_speed.json")
    out.write_text(json.dumps({"dataset": str(dataset), "threads": threads, "rows": rows}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embed", type=Path, help="time `sarm embed` on this dataset instead")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", type=int, default=128, help="camera image side in pixels")
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="what to measure (the others' rows are kept)"
    )
    args = parser.parse_args()
    if args.embed is not None:
        embed_speed(args.embed, args.threads)
        return
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp())

    encoder = load_frame_encoder()
    encoder_session = (
        session(export_frame_encoder(encoder, tmp / "encoder.onnx", height=args.image, width=args.image), args.threads)
        if "encoder" in args.models
        else None
    )
    config = SARMConfig.from_preset(args.preset, ["a", "b", "c", "d"], [0.25] * 4, frame_dim=encoder.dim, text_dim=384)
    heads = SARM(config).eval()
    heads_session = session(export_heads(heads, tmp / "heads.onnx"), args.threads) if "heads" in args.models else None

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

        def heads_torch(
            f: torch.Tensor = torch_frames, t: torch.Tensor = torch_text, n: torch.Tensor = torch_lengths
        ) -> object:
            with torch.inference_mode():
                return heads.predict(f, t, n)

        if encoder_session is not None:
            onnx_encoder = ort_call(encoder_session, {"images": images})
            cases[("encoder", batch)] = {"torch": encoder_torch, "onnxruntime": onnx_encoder}
        if heads_session is not None:
            onnx_heads = ort_call(heads_session, {"frames": frames, "text": text, "lengths": lengths})
            cases[("heads", batch)] = {"torch": heads_torch, "onnxruntime": onnx_heads}

    load = [os.getloadavg()[0]]
    samples: dict[tuple[str, int, str], list[list[float]]] = {}  # seconds per call, one list per round
    for _ in track(range(args.rounds), description="rounds"):
        for (model, batch), engines in cases.items():
            for engine, fn in engines.items():
                samples.setdefault((model, batch, engine), []).append(timed_calls(fn))
        load.append(os.getloadavg()[0])

    measured = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "threads": args.threads,
        "image": args.image,
        "preset": args.preset,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "load_average": [min(load), max(load)],
    }
    rows = [_row(model, batch, samples, measured) for model, batch in cases]
    kept = [row for row in _previous_rows() if row["model"] not in args.models]
    rows = sorted(kept + rows, key=lambda row: (row["batch"], MODELS.index(row["model"])))
    table = Table(
        title=f"PyTorch eager vs ONNX Runtime ({args.threads} threads, {args.image}px, {args.preset} heads, "
        f"median of {args.rounds} rounds; load average {min(load):.1f}-{max(load):.1f})"
    )
    for column in ("model", "batch", "unit", "torch", "onnxruntime", "ratio", "torch ms p50/p99", "ORT ms p50/p99"):
        table.add_column(column, justify="right")
    for row in rows:
        unit = "images/s" if row["model"] == "encoder" else "windows/s"
        latency = [
            f"{row[f'{e}_ms_p50']:.2f} / {row[f'{e}_ms_p99']:.2f}" if f"{e}_ms_p50" in row else "n/a"
            for e in ("torch", "onnxruntime")
        ]
        table.add_row(
            row["model"],
            str(row["batch"]),
            unit,
            f"{row['torch_per_s']:.1f}",
            f"{row['onnxruntime_per_s']:.1f}",
            f"{row['ratio']:.2f}x",
            *latency,
        )
    Console().print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


def _row(
    model: str, batch: int, samples: dict[tuple[str, int, str], list[list[float]]], measured: dict[str, Any]
) -> dict[str, Any]:
    """One model and batch: median throughput over rounds, the ratio, the ONNX Runtime rounds' range, and p50 / p99
    milliseconds per call over every timed call of each engine."""
    rates = {e: [len(r) * batch / sum(r) for r in samples[(model, batch, e)]] for e in ("torch", "onnxruntime")}
    torch_rate, ort_rate = statistics.median(rates["torch"]), statistics.median(rates["onnxruntime"])
    latency = {}
    for engine in ("torch", "onnxruntime"):
        calls = np.concatenate(samples[(model, batch, engine)]) * 1e3
        latency[f"{engine}_ms_p50"], latency[f"{engine}_ms_p99"] = (float(v) for v in np.percentile(calls, [50, 99]))
    return {
        "model": model,
        "batch": batch,
        "torch_per_s": torch_rate,
        "onnxruntime_per_s": ort_rate,
        "ratio": ort_rate / torch_rate,
        "onnxruntime_range": [min(rates["onnxruntime"]), max(rates["onnxruntime"])],
        **latency,
        "measured": measured,
    }


def _previous_rows() -> list[dict[str, Any]]:
    """The rows of the last run's JSON (kept for the models not measured now), each with how it was measured (that
    run's arguments for rows written before rows recorded it); none if there is no such file."""
    if not RESULTS.is_file():
        return []
    previous = json.loads(RESULTS.read_text())
    rows: list[dict[str, Any]] = previous["rows"]
    return [{**row, "measured": row.get("measured", previous["args"])} for row in rows]


if __name__ == "__main__":
    main()
