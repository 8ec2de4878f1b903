"""Concurrent StreamEpisode episodes at control rate through a real gateway: per-step latency and missed slots.

N robot controllers each stream one episode at a control rate (configs N@HZ, default 1, 4 and 16 streams at 30 Hz,
8 at 15 Hz, plus 4 at 5 Hz: the same concurrency well under the model's capacity on one thread): at every tick a
controller sends one new frame (a distinct random image at the model's size, so the frame cache never hits) and
waits for its score; a step whose score arrives after its slot ends (tick + 1/HZ) missed its slot, and a controller
whose previous step is still out sends at once when it returns, so an overloaded gateway shows up as a growing
backlog of missed slots, not as dropped work. Controllers start staggered over one period (robots are not
synchronised; `--aligned` starts them together).

The gateway runs as its own process (`sarm serve`, local ONNX Runtime backend, default model); in the same run,
before every stream round, the reference is timed in this process: one-frame encode + one-window heads through
the gateway's own LocalBackend. Targets: p99 at 4 streams <= reference + 5 ms; issue #13's on 2 cores: 4 @ 30 Hz
p99 <= 33 ms and no missed slot, 8 @ 15 Hz no missed slot. With `--py-spy OUT` the gateway is profiled and the
profile is sorted into the parts of a stream step (bench/stream_profile.py): active ms per step served. Usage:
    PYTHONPATH=.:service .venv/bin/python bench/gateway_streams.py [--configs 1@30 4@30 8@15 16@30 4@5]
        [--steps 60] [--repeats 3] [--threads 1] [--set SARM_INFERENCE_WORKERS=2] [--py-spy OUT]
Writes bench/results/gateway_streams.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from _gateway import (
    INSTRUCTION,
    Direct,
    DistinctFrames,
    GatewayProcess,
    channel,
    gateway_env,
    gateway_env_args,
    latency_ms,
    medians,
    print_table,
    raw_frame,
    write_results,
)
from stream_profile import per_step

from sarm_gateway.v1 import sarm_pb2 as pb
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

BUDGET_MS = 5.0  # the target: gateway p99 at 4 streams within 5 ms of the bare model calls
TARGET = (4, 30.0)  # streams, Hz
WARM_UP_STEPS = 10
SLOT_TARGETS = [("4@30", 33.0), ("8@15", None)]  # (config, p99 limit ms or None): no missed slot in either


def parse_config(text: str) -> tuple[int, float]:
    streams, sep, hz = text.partition("@")
    try:
        return int(streams), float(hz) if sep else 30.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STREAMS@HZ, e.g. 4@30; got {text!r}") from None


def label(config: tuple[int, float]) -> str:
    return f"{config[0]}@{config[1]:g}"


@dataclass
class StreamLog:
    latencies: list[float] = field(default_factory=list)  # seconds, send → score
    missed: int = 0  # steps whose score arrived after their slot ended


async def controller(stub: pb_grpc.RewardServiceStub, frames: np.ndarray, hz: float, start: float) -> StreamLog:
    """One episode: open, then one frame per tick from `start` (perf_counter time)."""
    period = 1.0 / hz
    steps = [pb.StreamEpisodeRequest(step=pb.FrameStep(frames=[raw_frame(image)])) for image in frames]
    call = stub.StreamEpisode(timeout=len(frames) * period + 600)
    await call.write(pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=hz)))
    log = StreamLog()
    for k, request in enumerate(steps):
        tick = start + k * period
        if (wait := tick - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sent = time.perf_counter()
        await call.write(request)
        response = await call.read()
        done = time.perf_counter()
        assert isinstance(response, pb.StreamEpisodeResponse), f"stream ended early: {await call.code()}"
        assert [s.frame_index for s in response.scores] == [k], "one score per step, for the step's frame"
        log.latencies.append(done - sent)
        log.missed += done > tick + period
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK
    return log


async def streams_round(
    stub: pb_grpc.RewardServiceStub, frames: DistinctFrames, n: int, steps: int, hz: float, aligned: bool
) -> dict[str, float]:
    episodes = [frames.take(steps) for _ in range(n)]
    start = time.perf_counter() + 0.5  # every stream opened before the first tick
    offsets = [0.0 if aligned else i / (n * hz) for i in range(n)]
    began = time.perf_counter()
    logs = await asyncio.gather(*(controller(stub, e, hz, start + o) for e, o in zip(episodes, offsets, strict=True)))
    wall = time.perf_counter() - began - 0.5
    latencies = [x for log in logs for x in log.latencies]
    missed = sum(log.missed for log in logs)
    return {
        **latency_ms(latencies),
        "missed": missed,
        "steps": len(latencies),
        "missed_fraction": missed / len(latencies),
        "frames_per_s": len(latencies) / wall,
    }


async def reference_round(direct: Direct, frames: DistinctFrames, samples: int) -> dict[str, list[float]]:
    """One-frame encode, then one-window heads, called back to back `samples` times (distinct frames)."""
    out: dict[str, list[float]] = {"encode1": [], "heads1": [], "encode1+heads1": []}
    for image in frames.take(samples):
        start = time.perf_counter()
        embedding = await direct.encode(image[None])
        encoded = time.perf_counter()
        window = np.repeat(embedding[:, None, :], direct.window_frames + direct.max_rewind, axis=1)
        await direct.heads(window, np.array([direct.window_frames]))
        end = time.perf_counter()
        out["encode1"].append(encoded - start)
        out["heads1"].append(end - encoded)
        out["encode1+heads1"].append(end - start)
    return out


async def measure(
    args: argparse.Namespace, address: str, direct: Direct
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    height, width = direct.manifest.image_size
    frames = DistinctFrames(height, width, args.seed)
    rounds: list[dict[str, Any]] = []
    reference: dict[str, list[float]] = {}
    async with channel(address) as ch:
        stub = pb_grpc.RewardServiceStub(ch)
        await streams_round(stub, frames, 1, WARM_UP_STEPS, 30.0, args.aligned)  # instruction, sessions, channel
        await reference_round(direct, frames, 5)
        for repeat in range(args.repeats):
            for n, hz in args.configs:
                for key, samples in (await reference_round(direct, frames, args.reference_samples)).items():
                    reference.setdefault(key, []).extend(samples)  # beside every round: the same machine noise
                result = await streams_round(stub, frames, n, args.steps, hz, args.aligned)
                rounds.append({"repeat": repeat, "config": label((n, hz)), **result})
                print(
                    f"repeat {repeat} {label((n, hz)):>7}: p50 {result['p50_ms']:.1f} ms, "
                    f"p99 {result['p99_ms']:.1f} ms, missed {result['missed']}/{result['steps']}"
                )
    return rounds, {key: latency_ms(samples) for key, samples in reference.items()}


def slot_targets(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #13's targets on a 2-core machine: 4 @ 30 Hz p99 <= 33 ms with no missed slot; 8 @ 15 Hz no missed slot."""
    rows = {s["config"]: s for s in summary}
    return [
        {
            "config": config,
            "p99_limit_ms": limit,
            "p99_ms": row["p99_ms"],
            "missed": row["missed"],
            "met": row["missed"] == 0 and (limit is None or row["p99_ms"] <= limit),
        }
        for config, limit in SLOT_TARGETS
        if (row := rows.get(config)) is not None
    ]


def check_target(summary: list[dict[str, Any]], reference: dict[str, float]) -> dict[str, Any]:
    """p99 at 4 streams, 30 Hz vs the direct encode1+heads1 p99 (like for like) + 5 ms; the p50 limit beside it."""
    target: dict[str, Any] = {
        "config": label(TARGET),
        "budget_ms": BUDGET_MS,
        "reference_p50_ms": reference["p50_ms"],
        "reference_p99_ms": reference["p99_ms"],
    }
    row = next((s for s in summary if s["config"] == label(TARGET)), None)
    if row is not None:
        target.update(
            gateway_p99_ms=row["p99_ms"],
            limit_ms=reference["p99_ms"] + BUDGET_MS,
            limit_from_p50_ms=reference["p50_ms"] + BUDGET_MS,
        )
        target.update(
            met=row["p99_ms"] <= target["limit_ms"], met_against_p50=row["p99_ms"] <= target["limit_from_p50_ms"]
        )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gateway_env_args(parser)
    parser.add_argument(
        "--configs",
        type=parse_config,
        nargs="+",
        default=[(1, 30.0), (4, 30.0), (8, 15.0), (16, 30.0), (4, 5.0)],
        metavar="STREAMS@HZ",
        help="concurrent streams at a control rate (also the episode's fps)",
    )
    parser.add_argument("--steps", type=int, default=60, help="steps per stream per round (60 = 2 s at 30 Hz)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-samples", type=int, default=20, help="direct encode+heads calls before each round")
    parser.add_argument("--aligned", action="store_true", help="start every stream on the same tick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    direct = Direct(args.model_repo, args.threads)
    load_at_start = os.getloadavg()[0]  # other jobs on the machine: their load is in every figure
    with GatewayProcess(args.model_repo, gateway_env(args), args.py_spy) as gateway:
        rounds, reference = asyncio.run(measure(args, gateway.address, direct))

    summary = [
        {
            "config": label((n, hz)),
            "streams": n,
            "hz": hz,
            "steps_per_round": n * args.steps,
            **medians(
                [r for r in rounds if r["config"] == label((n, hz))],
                ("p50_ms", "p99_ms", "max_ms", "missed", "missed_fraction", "frames_per_s"),
            ),
        }
        for n, hz in args.configs
    ]
    target = check_target(summary, reference["encode1+heads1"])
    slots = slot_targets(summary)
    print_table(
        f"StreamEpisode through the gateway ({args.steps} steps a stream, {'aligned' if args.aligned else 'staggered'} "
        f"starts, median of {args.repeats} rounds, {args.threads} ORT thread(s))",
        ("streams", "Hz", "steps/round", "p50 ms", "p99 ms", "max ms", "missed slot", "frames/s"),
        [
            (
                str(s["streams"]),
                f"{s['hz']:g}",
                str(s["steps_per_round"]),
                f"{s['p50_ms']:.1f}",
                f"{s['p99_ms']:.1f}",
                f"{s['max_ms']:.1f}",
                f"{s['missed']:.0f} ({100 * s['missed_fraction']:.0f}%)",
                f"{s['frames_per_s']:.1f}",
            )
            for s in summary
        ],
    )
    print_table(
        f"Reference: the model called directly through LocalBackend ({args.reference_samples} calls before each round)",
        ("call", "p50 ms", "p99 ms"),
        [(key, f"{v['p50_ms']:.1f}", f"{v['p99_ms']:.1f}") for key, v in reference.items()],
    )
    if "met" in target:
        print(
            f"target: p99 at {target['config']} Hz {target['gateway_p99_ms']:.1f} ms <= reference p99 "
            f"{target['reference_p99_ms']:.1f} + {BUDGET_MS:g} = {target['limit_ms']:.1f} ms: "
            f"{'MET' if target['met'] else 'NOT MET'} (against the reference p50 the limit is "
            f"{target['limit_from_p50_ms']:.1f} ms: {'met' if target['met_against_p50'] else 'not met'})"
        )
    for check in slots:
        limit = (
            "" if check["p99_limit_ms"] is None else f"p99 {check['p99_ms']:.1f} ms <= {check['p99_limit_ms']:g} ms, "
        )
        verdict = "MET" if check["met"] else "NOT MET"
        print(f"target {check['config']}: {limit}missed {check['missed']:.0f} == 0: {verdict}")
    profile = None
    if args.py_spy is not None:  # the gateway's profile: where a step's time went, over every step it served
        profile = per_step(args.py_spy, WARM_UP_STEPS + sum(int(r["steps"]) for r in rounds))
        print_table(
            "Where the gateway's active time went (py-spy, all threads), per stream step served",
            ("part", "samples", "share", "ms / step"),
            [(p["part"], str(p["samples"]), f"{100 * p['share']:.1f}%", f"{p['ms_per_step']:.2f}") for p in profile],
        )
    write_results(
        "gateway_streams",
        args,
        {
            "load_avg_1m_at_start": load_at_start,
            "summary": summary,
            "reference": reference,
            "target": target,
            "slot_targets": slots,
            "profile": profile,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
