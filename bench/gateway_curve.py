"""A per-frame progress curve through the gateway vs the naive loop that re-encodes every window.

The episode: `--seconds` (30) at `--fps` (30) = 900 distinct random frames at the model's image size, a fresh
episode every round so the gateway's frame cache never hits. The gateway (its own process, `sarm serve`, local
ONNX Runtime backend, default model) gets the whole episode in one ScoreFrames call as raw pixels (~44 MB, so
SARM_MAX_MESSAGE_BYTES is raised) and encodes each frame once. The naive loop is what LeRobot's RA-BC script does:
for each frame t, build t's window, encode all 9 of its frames, run the heads on that one window; it calls the
same ONNX encoder and heads directly (the gateway's LocalBackend, in this process, same thread count). Its cost
per frame does not depend on t, so by default it scores `--naive-frames` (90) frames spread evenly over the
episode, half of them before the gateway's call and half after, and its frames/s is compared with the gateway's;
its scores are checked against the gateway's curve. The table reports medians over rounds.
Target: the gateway >= 7x the naive loop's frames/s. Usage:
    PYTHONPATH=.:service .venv/bin/python bench/gateway_curve.py [--rounds 3] [--naive-frames 90] [--seconds 30]
Writes bench/results/gateway_curve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np
from _gateway import (
    CURVE_MESSAGE_BYTES,
    Direct,
    DistinctFrames,
    GatewayProcess,
    channel,
    gateway_env,
    gateway_env_args,
    medians,
    print_table,
    raw_frame,
    timed_curve,
    write_results,
)

from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

TARGET_SPEEDUP = 7.0
PARITY_TOLERANCE = 1e-3  # progress; batch composition changes float sums in the last bits only


async def naive_curve(direct: Direct, images: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
    """Progress at each frame in `frames`, re-encoding all the window's frames every time (no reuse)."""
    out = []
    for t in frames:
        indices, valid = direct.window(int(t), fps)
        embeddings = await direct.encode(images[indices[:valid]])  # all 9, duplicates included
        first = {int(index): position for position, index in reversed(list(enumerate(indices[:valid])))}
        window = embeddings[[first[int(index)] for index in indices]]  # padding repeats frame t, already encoded
        out.append((await direct.heads(window[None], np.array([valid])))[0])
    return np.array(out, dtype=np.float32)


async def measure(args: argparse.Namespace, address: str, direct: Direct) -> list[dict[str, Any]]:
    height, width = direct.manifest.image_size
    source = DistinctFrames(height, width, args.seed)
    length = round(args.seconds * args.fps)
    naive_frames = np.unique(np.linspace(0, length - 1, min(args.naive_frames, length)).round().astype(int))
    rounds = []
    async with channel(address) as ch:
        stub = pb_grpc.RewardServiceStub(ch)
        warm = source.take(2 * direct.window_frames)  # instruction embedding, sessions, channel
        await timed_curve(stub, [raw_frame(image) for image in warm], args.fps)
        await naive_curve(direct, warm, np.arange(2), args.fps)
        for index in range(args.rounds):
            images = source.take(length)
            frames = [raw_frame(image) for image in images]
            # The naive loop's frames split around the gateway call, so drifting machine load hits both alike.
            before, after = np.array_split(naive_frames, 2)
            start = time.perf_counter()
            naive_before = await naive_curve(direct, images, before, args.fps)
            naive_s = time.perf_counter() - start
            gateway_s, curve = await timed_curve(stub, frames, args.fps)
            start = time.perf_counter()
            naive = np.concatenate([naive_before, await naive_curve(direct, images, after, args.fps)])
            naive_s += time.perf_counter() - start
            row = {
                "round": index,
                "gateway_s": gateway_s,
                "gateway_frames_per_s": length / gateway_s,
                "naive_s": naive_s,
                "naive_frames": len(naive_frames),
                "naive_frames_per_s": len(naive_frames) / naive_s,
                "max_abs_progress_diff": float(np.abs(curve[naive_frames] - naive).max()),
            }
            row["speedup"] = row["gateway_frames_per_s"] / row["naive_frames_per_s"]
            rounds.append(row)
            print(
                f"round {index}: gateway {row['gateway_frames_per_s']:.1f} frames/s, naive "
                f"{row['naive_frames_per_s']:.2f} frames/s, {row['speedup']:.2f}x, parity "
                f"{row['max_abs_progress_diff']:.1e}"
            )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gateway_env_args(parser)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive-frames", type=int, default=90, help="frames the naive loop scores per round")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    direct = Direct(args.model_repo, args.threads)
    env = gateway_env(args, SARM_MAX_MESSAGE_BYTES=str(CURVE_MESSAGE_BYTES))
    with GatewayProcess(args.model_repo, env, args.py_spy) as gateway:
        rounds = asyncio.run(measure(args, gateway.address, direct))

    summary = medians(rounds, ("gateway_s", "gateway_frames_per_s", "naive_s", "naive_frames_per_s", "speedup"))
    summary["max_abs_progress_diff"] = max(r["max_abs_progress_diff"] for r in rounds)
    target = {"speedup": TARGET_SPEEDUP, "met": summary["speedup"] >= TARGET_SPEEDUP}
    length = round(args.seconds * args.fps)
    print_table(
        f"Per-frame curve of a {args.seconds:g} s, {args.fps:g} fps episode ({length} distinct frames), median of "
        f"{args.rounds} rounds, {args.threads} ORT thread(s)",
        ("path", "frames scored", "seconds", "frames/s", "speedup"),
        [
            (
                "gateway ScoreFrames (each frame encoded once)",
                str(length),
                f"{summary['gateway_s']:.2f}",
                f"{summary['gateway_frames_per_s']:.1f}",
                f"{summary['speedup']:.2f}x",
            ),
            (
                "naive: 9 encodes + heads per frame",
                str(rounds[0]["naive_frames"]),
                f"{summary['naive_s']:.2f}",
                f"{summary['naive_frames_per_s']:.2f}",
                "1.00x",
            ),
        ],
    )
    print(f"naive scores vs the gateway's curve: max |Δprogress| {summary['max_abs_progress_diff']:.1e}")
    print(
        f"target: gateway >= {TARGET_SPEEDUP:g}x naive: {summary['speedup']:.2f}x, "
        f"{'MET' if target['met'] else 'NOT MET'}"
    )
    write_results("gateway_curve", args, {"summary": summary, "target": target, "rounds": rounds})
    if summary["max_abs_progress_diff"] > PARITY_TOLERANCE:
        raise SystemExit(f"the naive loop and the gateway disagree by {summary['max_abs_progress_diff']:.1e}")


if __name__ == "__main__":
    main()
