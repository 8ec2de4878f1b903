"""Where a stream step's time goes in the gateway: py-spy's raw collapsed stacks (`--py-spy OUT` of the gateway
benchmarks, sampled at `SAMPLE_HZ`) sorted into parts of the stream path, as milliseconds of active time per step.

py-spy samples a thread only while it is not idle, so a part's samples / SAMPLE_HZ are the seconds that thread was
running (or runnable, waiting for a core or the GIL) in that part; divided by the steps served, its cost per step.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLE_HZ = 100  # GatewayProcess runs py-spy record --rate 100

# (thread name prefix, a frame the stack contains, the part); the first match wins, in this order.
PARTS: list[tuple[str, str, str]] = [
    ("sarm-onnx", "Session.run", "ONNX Runtime inference (encoder and heads)"),
    ("sarm-onnx", "call_soon_threadsafe", "inference thread waking the event loop"),
    ("sarm-onnx", "", "inference thread, other"),
    ("sarm-text", "", "instruction encoder (MiniLM, once per stream open)"),
    ("MainThread", "EpollSelector.select", "event loop: polling for I/O"),
    ("MainThread", "Engine.score_at", "stream step: windows, caches, heads batching (engine)"),
    ("MainThread", "Engine.encode", "stream step: frame hashing, cache, encode batching (engine)"),
    ("MainThread", "Episode.", "stream step: episode state (gather, forget)"),
    ("MainThread", "MicroBatcher", "micro-batcher"),
    ("MainThread", "StreamEpisode", "gRPC handler: protobuf, auth, metrics, deadlines"),
    ("MainThread", "", "event loop and grpc.aio, other"),
    ("", "", "other threads"),
]
_FRAME = re.compile(r" \([^()]*:\d+\)")  # " (file.py:123)" after each function name


def parts(collapsed: Path) -> Counter[str]:
    """Samples per part of PARTS."""
    counts: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        name = re.sub(r"^thread \(\d+\): ?", "", thread).strip()
        functions = _FRAME.sub("", frames)
        part = next(p for prefix, frame, p in PARTS if name.startswith(prefix) and frame in functions)
        counts[part] += int(samples)
    return counts


def per_step(collapsed: Path, steps: int) -> list[dict[str, Any]]:
    """Each part's samples, share of all samples, and active milliseconds per step served (PARTS order)."""
    counts = parts(collapsed)
    total = sum(counts.values()) or 1
    return [
        {
            "part": part,
            "samples": counts[part],
            "share": counts[part] / total,
            "ms_per_step": 1000 * counts[part] / SAMPLE_HZ / max(steps, 1),
        }
        for _, _, part in PARTS
        if counts[part]
    ]
