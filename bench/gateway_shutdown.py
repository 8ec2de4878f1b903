"""SIGTERM with a burst of ScoreWindow calls in flight: the status of every call, and when it came.

A real gateway (`sarm serve`, local ONNX Runtime backend, default model) gets `--calls` concurrent ScoreWindow
calls (default 64, with SARM_MAX_IN_FLIGHT=64), each a window of distinct random frames (so no cache hit), from
one asyncio client without retries; once every call is sent, and `--after` seconds later, the gateway gets
SIGTERM. Each call's status code and its time relative to the signal are counted. Wanted: no CANCELLED (clients do
not retry it); every refused call UNAVAILABLE (draining) or RESOURCE_EXHAUSTED (over the admission bound), both
retried by clients; and every admitted call OK before the drain ends.

The issue's figures (#13, the gateway before the fix: 24 CANCELLED at 0.01 s, 14 OK over 9.6 s, 26 UNAVAILABLE
after the 10 s drain) are reported as "before"; `--label` names this run's row. Usage:
    PYTHONPATH=.:service .venv/bin/python bench/gateway_shutdown.py [--calls 64] [--drain 10] [--after 0.5]
        [--set SARM_MAX_BATCH_SIZE=16]
Writes bench/results/gateway_shutdown.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import time
from typing import Any

import grpc
from _gateway import (
    INSTRUCTION,
    DistinctFrames,
    GatewayProcess,
    channel,
    gateway_env,
    gateway_env_args,
    latency_ms,
    print_table,
    raw_frame,
    write_results,
)

from sarm.manifest import read_manifest
from sarm_gateway.v1 import sarm_pb2 as pb
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

WARM_ROUNDS, WARM_CALLS = 2, 4
# The gateway before this change, SIGTERM with 64 windows in flight and a 10 s drain: issue #13's figures, and this
# benchmark run once on commit ca109d1 on this 2-core machine (shared, load average ~13), 2026-12-03 10:03 UTC.
BEFORE = [
    {
        "label": "before (issue #13)",
        "drain_s": 10.0,
        "calls": 64,
        "last_ok_s": 9.6,
        "counts": {"OK": 14, "CANCELLED": 24, "UNAVAILABLE": 26},
        "note": "CANCELLED 0.01 s after SIGTERM; UNAVAILABLE once the 10 s drain ran out",
    },
    {
        "label": "before (ca109d1, here)",
        "drain_s": 10.0,
        "calls": 64,
        "last_ok_s": 9.14,
        "counts": {"OK": 16, "CANCELLED": 22, "UNAVAILABLE": 26},
        "note": "22 CANCELLED (details 'CANCELLED') 0.05 s after SIGTERM: calls grpc had taken but not yet handed to a "
        "handler, cancelled by server.stop(); 26 UNAVAILABLE ('Cancelling all calls') at 10.06 s",
    },
]


async def burst(
    address: str, requests: list[pb.ScoreWindowRequest], after: float, pid: int, timeout: float
) -> tuple[dict[str, Any], float]:
    """Send every request at once, SIGTERM `after` seconds later. Per status: count, how many came before the
    signal, times after the signal (s; negative: before it), latencies (s from sending), and the details; and when
    the signal was sent (perf_counter)."""

    async def call(request: pb.ScoreWindowRequest) -> tuple[str, float, float, str]:
        sent = time.perf_counter()
        try:
            await stub.ScoreWindow(request, timeout=timeout)
            code, details = "OK", ""
        except grpc.aio.AioRpcError as error:
            code, details = error.code().name, error.details() or ""
        return code, sent, time.perf_counter(), details

    async with channel(address) as ch:
        stub = pb_grpc.RewardServiceStub(ch)
        await ch.channel_ready()
        tasks = [asyncio.create_task(call(r)) for r in requests]
        await asyncio.sleep(after)
        os.kill(pid, signal.SIGTERM)
        signalled = time.perf_counter()
        results = await asyncio.gather(*tasks)
    out: dict[str, dict[str, Any]] = {}
    for code in sorted({r[0] for r in results}):
        mine = [r for r in results if r[0] == code]
        times = sorted(round(end - signalled, 3) for _, _, end, _ in mine)
        out[code] = {
            "count": len(mine),
            "before_signal": sum(t < 0 for t in times),
            "times_s": times,
            "latency": latency_ms([end - sent for _, sent, end, _ in mine]),
            "details": dict(collections.Counter(d[:120] for *_, d in mine)),
        }
    return out, signalled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gateway_env_args(parser)
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--drain", type=float, default=10.0, help="SARM_DRAIN_SECONDS")
    parser.add_argument("--after", type=float, default=0.5, help="seconds between sending the burst and SIGTERM")
    parser.add_argument("--label", default="after", help="this run's row in the table")
    args = parser.parse_args()

    manifest = read_manifest(args.model_repo)
    height, width = manifest.image_size
    frames = DistinctFrames(height, width, seed=13)
    requests = [
        pb.ScoreWindowRequest(
            instruction=INSTRUCTION, frames=[raw_frame(f) for f in frames.take(manifest.window.frames)]
        )
        for _ in range(args.calls)
    ]
    env = gateway_env(args, SARM_MAX_IN_FLIGHT=str(args.max_in_flight), SARM_DRAIN_SECONDS=str(args.drain))
    with GatewayProcess(args.model_repo, env) as gateway:
        warm = [
            pb.ScoreWindowRequest(
                instruction=INSTRUCTION, frames=[raw_frame(f) for f in frames.take(manifest.window.frames)]
            )
            for _ in range(1 + WARM_ROUNDS * WARM_CALLS)
        ]
        asyncio.run(_warm(gateway.address, warm))
        result, signalled = asyncio.run(burst(gateway.address, requests, args.after, gateway.pid, args.drain + 60))
        assert gateway.process is not None
        exit_code = gateway.process.wait(timeout=args.drain + 60)
        exited_s = time.perf_counter() - signalled
    run = {
        "label": args.label,
        "drain_s": args.drain,
        "calls": args.calls,
        "statuses": result,
        "exit_code": exit_code,
        "exited_after_signal_s": round(exited_s, 2),
    }
    rows = [_row(r["label"], r["calls"], r["drain_s"], r["counts"], r["last_ok_s"], None, None) for r in BEFORE]
    ok = result.get("OK")
    rows.append(
        _row(
            args.label,
            args.calls,
            args.drain,
            {code: r["count"] for code, r in result.items()},
            max(ok["times_s"]) if ok else None,
            ok["latency"] if ok else None,
            exited_s,
        )
    )
    print_table(
        "SIGTERM with a burst of ScoreWindow calls in flight (s: after the signal)",
        [
            "run",
            "calls",
            "drain s",
            "OK",
            "OK p50/p99 ms",
            "last OK s",
            "CANCELLED",
            "UNAVAILABLE",
            "RESOURCE_EXH.",
            "other",
            "exit s",
        ],
        rows,
    )
    for code, r in result.items():
        print(f"{code}: {r['count']} ({r['before_signal']} before the signal): {r['details']}")
    write_results("gateway_shutdown", args, {"before": BEFORE, "run": run})


def _row(
    label: str,
    calls: int,
    drain_s: float,
    counts: dict[str, int],
    last_ok_s: float | None,
    latency: dict[str, float] | None,
    exited_s: float | None,
) -> list[str]:
    known = ("OK", "CANCELLED", "UNAVAILABLE", "RESOURCE_EXHAUSTED")
    return [
        label,
        str(calls),
        f"{drain_s:g}",
        str(counts.get("OK", 0)),
        "-" if latency is None else f"{latency['p50_ms']:.0f}/{latency['p99_ms']:.0f}",
        "-" if last_ok_s is None else f"{last_ok_s:.2f}",
        *(str(counts.get(k, 0)) for k in known[1:]),
        str(sum(v for k, v in counts.items() if k not in known)),
        "-" if exited_s is None else f"{exited_s:.1f}",
    ]


async def _warm(address: str, requests: list[pb.ScoreWindowRequest]) -> None:
    """Traffic before the burst, as a gateway in service has had: one call (the instruction's embedding, the
    sessions' first run), then WARM_ROUNDS rounds of WARM_CALLS concurrent calls, from which the admission has
    measured the throughput."""
    async with channel(address) as ch:
        stub = pb_grpc.RewardServiceStub(ch)
        await stub.ScoreWindow(requests[0], timeout=120)
        for start in range(1, len(requests), WARM_CALLS):
            await asyncio.gather(*(stub.ScoreWindow(r, timeout=120) for r in requests[start : start + WARM_CALLS]))


if __name__ == "__main__":
    main()
