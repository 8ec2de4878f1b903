"""The caches on a repeated per-frame curve: cold vs warm, embeddings only vs window scores too, in-process LRU vs
the Redis tier.

Three gateways run side by side as their own processes (`sarm serve`, local ONNX Runtime backend, default model):
`embeddings` with the in-process frame cache but no score cache (SARM_SCORE_CACHE_ENTRIES=0: every repeat runs the
heads), `memory` with the default in-process frame and score caches, and `redis` with SARM_REDIS_URL pointing at a
throwaway `redis-server` (free loopback port, temp dir, no persistence) and both in-process caches off, so that its
repeats can only be served from Redis. Each round takes a fresh episode (`--seconds` x `--fps` distinct random
frames, one ScoreFrames call as raw pixels) and sends it to each gateway once cold, then `--warm` more times;
Redis's own hit counter confirms that the redis gateway's repeats were Redis hits (each frame's embedding and each
window's score), and every warm curve must equal the cold one. Beside them, the heads alone on the episode's
windows, run directly in this process: the floor of a warm repeat without the score cache. Target: warm (memory,
redis) >= 20x faster than cold. Usage:
    PYTHONPATH=.:service .venv/bin/python bench/gateway_cache.py [--rounds 2] [--warm 3] [--seconds 30]
Writes bench/results/gateway_cache.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import AsyncExitStack, ExitStack
from typing import Any

import numpy as np
from _gateway import (
    CURVE_MESSAGE_BYTES,
    Direct,
    DistinctFrames,
    GatewayProcess,
    RedisProcess,
    channel,
    gateway_env,
    gateway_env_args,
    medians,
    print_table,
    raw_frame,
    timed_curve,
    write_results,
)

from sarm_gateway.settings import Settings
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

TARGET_SPEEDUP = 20.0
TIERS = ("embeddings", "memory", "redis")
TARGETED = ("memory", "redis")  # the embeddings gateway is the reference: what the score cache adds


async def heads_floor(direct: Direct, length: int, fps: float) -> float:
    """Seconds for the heads alone on an episode's `length` windows, in the gateway's batch size."""
    embeddings = np.random.default_rng(0).normal(size=(length, direct.manifest.frame_encoder.dim))
    batch = int(Settings.model_fields["max_batch_size"].default)
    start = time.perf_counter()
    for first in range(0, length, batch):
        windows = [direct.window(t, fps) for t in range(first, min(first + batch, length))]
        await direct.heads(embeddings[np.stack([w for w, _ in windows])], np.array([v for _, v in windows]))
    return time.perf_counter() - start


async def measure(
    args: argparse.Namespace, addresses: dict[str, str], redis: RedisProcess, direct: Direct
) -> list[dict[str, Any]]:
    height, width = direct.manifest.image_size
    source = DistinctFrames(height, width, args.seed)
    length = round(args.seconds * args.fps)
    rounds = []
    async with AsyncExitStack() as stack:
        stubs = {
            tier: pb_grpc.RewardServiceStub(await stack.enter_async_context(channel(address)))
            for tier, address in addresses.items()
        }
        warm_up = [raw_frame(image) for image in source.take(2 * direct.window_frames)]
        for stub in stubs.values():  # instruction embedding, sessions, channel, Redis connections
            await timed_curve(stub, warm_up, args.fps)
        for index in range(args.rounds):
            frames = [raw_frame(image) for image in source.take(length)]
            row: dict[str, Any] = {"round": index}
            for tier, stub in stubs.items():
                row[f"{tier}_cold_s"], cold = await timed_curve(stub, frames, args.fps)
                before = redis.info()
                warm_s = []
                for _ in range(args.warm):
                    seconds, curve = await timed_curve(stub, frames, args.fps)
                    assert np.array_equal(curve, cold), f"{tier}: a warm curve differs from the cold one"
                    warm_s.append(seconds)
                after = redis.info()
                row[f"{tier}_warm_s"] = float(np.median(warm_s))
                row[f"{tier}_speedup"] = row[f"{tier}_cold_s"] / row[f"{tier}_warm_s"]
                row[f"{tier}_redis_hits_per_warm"] = (after["keyspace_hits"] - before["keyspace_hits"]) / args.warm
            if row["redis_redis_hits_per_warm"] < 2 * length:  # every frame's embedding and every window's score
                print("warning: the redis gateway's warm repeats were not all Redis hits (timeouts read as misses)")
            row["heads_floor_s"] = await heads_floor(direct, length, args.fps)
            rounds.append(row)
            print(
                f"round {index}: "
                + ", ".join(
                    f"{t} cold {row[f'{t}_cold_s']:.2f} s warm {row[f'{t}_warm_s']:.3f} s ({row[f'{t}_speedup']:.1f}x)"
                    for t in TIERS
                )
                + f", heads alone {row['heads_floor_s']:.2f} s"
            )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gateway_env_args(parser)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warm", type=int, default=3, help="warm repeats per cold request")
    parser.add_argument(
        "--redis-frame-cache",
        type=int,
        default=0,
        help="SARM_FRAME_CACHE_ENTRIES of the redis gateway (0: every repeat goes to Redis)",
    )
    parser.add_argument(
        "--redis-score-cache",
        type=int,
        default=0,
        help="SARM_SCORE_CACHE_ENTRIES of the redis gateway (0: every repeat goes to Redis)",
    )
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()

    direct = Direct(args.model_repo, args.threads)
    with ExitStack() as stack:
        redis = stack.enter_context(RedisProcess())
        common = {"SARM_MAX_MESSAGE_BYTES": str(CURVE_MESSAGE_BYTES)}
        envs = {
            "embeddings": gateway_env(args, **common, SARM_SCORE_CACHE_ENTRIES="0"),
            "memory": gateway_env(args, **common),
            "redis": gateway_env(
                args,
                **common,
                SARM_REDIS_URL=redis.url,
                SARM_FRAME_CACHE_ENTRIES=str(args.redis_frame_cache),
                SARM_SCORE_CACHE_ENTRIES=str(args.redis_score_cache),
            ),
        }
        profiles = {"embeddings": None, "memory": args.py_spy, "redis": None}  # --py-spy profiles the memory gateway
        addresses = {
            tier: stack.enter_context(GatewayProcess(args.model_repo, env, profiles[tier])).address
            for tier, env in envs.items()
        }
        rounds = asyncio.run(measure(args, addresses, redis, direct))
        redis_info = redis.info()

    keys = [f"{t}_{what}" for t in TIERS for what in ("cold_s", "warm_s", "speedup", "redis_hits_per_warm")]
    summary = medians(rounds, [*keys, "heads_floor_s"])
    target = {"speedup": TARGET_SPEEDUP, **{f"{t}_met": summary[f"{t}_speedup"] >= TARGET_SPEEDUP for t in TARGETED}}
    length = round(args.seconds * args.fps)
    rows = []
    for tier, cold_what, warm_what in (
        ("embeddings", "cold, embeddings gateway (no score cache)", "warm, frame LRU only (heads run)"),
        ("memory", "cold, memory gateway", "warm, frame + score LRU"),
        ("redis", "cold, redis gateway (+ Redis writes)", "warm, Redis tier: frames + scores (LRUs off)"),
    ):
        cold, warm = summary[f"{tier}_cold_s"], summary[f"{tier}_warm_s"]
        rows.append((cold_what, f"{cold:.2f}", f"{length / cold:.0f}", "1.0x", "-"))
        rows.append(
            (
                warm_what,
                f"{warm:.3f}",
                f"{length / warm:.0f}",
                f"{summary[f'{tier}_speedup']:.1f}x",
                f"{summary[f'{tier}_redis_hits_per_warm']:.0f}",
            )
        )
    floor = summary["heads_floor_s"]
    rows.append(
        (
            "heads alone, direct (floor of a warm repeat without the score cache)",
            f"{floor:.3f}",
            f"{length / floor:.0f}",
            f"{summary['embeddings_cold_s'] / floor:.1f}x (embeddings cold)",
            "-",
        )
    )
    print_table(
        f"Repeated curve of a {args.seconds:g} s, {args.fps:g} fps episode ({length} distinct frames, one ScoreFrames "
        f"call), median of {args.rounds} rounds x {args.warm} warm repeats, {args.threads} ORT thread(s)",
        ("request", "seconds", "frames/s", "speedup vs its cold", "Redis hits"),
        rows,
    )
    for tier in TARGETED:
        print(
            f"target: warm ({tier}) >= {TARGET_SPEEDUP:g}x faster than cold: {summary[f'{tier}_speedup']:.1f}x, "
            f"{'MET' if target[f'{tier}_met'] else 'NOT MET'}"
        )
    write_results("gateway_cache", args, {"summary": summary, "target": target, "rounds": rounds, "redis": redis_info})


if __name__ == "__main__":
    main()
