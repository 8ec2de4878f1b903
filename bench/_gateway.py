"""Shared by the gateway benchmarks: a real `sarm serve` process, Redis, distinct frames, the direct ONNX path,
statistics and output.

The gateway always runs in its own process (`sarm serve`, local ONNX Runtime backend), so the benchmark's client
and the server share neither an event loop nor a GIL; clients talk to it over gRPC on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from sarm.manifest import SARM_HEADS_OUTPUTS, read_manifest
from sarm.model.windows import sequence_indices
from sarm.scoring.backends import LocalBackend
from sarm_gateway.settings import DEFAULT_MODEL_REPO
from sarm_gateway.v1 import sarm_pb2 as pb
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
INSTRUCTION = "Pick up the puck and place it at the goal."  # one of the default model's tasks
START_TIMEOUT_S = 180.0  # loading the text encoder (torch) on a busy machine
CALL_TIMEOUT_S = 900.0
CURVE_MESSAGE_BYTES = 128 * 1024 * 1024  # SARM_MAX_MESSAGE_BYTES for a whole raw 900-frame episode (~44 MB)


# ---- the gateway and Redis as processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`sarm serve --backend local` on a free loopback port, configured by `SARM_*` variables in `env`."""

    def __init__(
        self, repo: Path, env: dict[str, str] | None = None, profile: Path | None = None, py_spy: str = "py-spy"
    ) -> None:
        self.repo = repo
        # Metrics on any free port: gateways side by side must not all want the default one.
        self.env = {
            "SARM_GRPC_HOST": "127.0.0.1",
            "SARM_HTTP_HOST": "127.0.0.1",
            "SARM_METRICS_PORT": "0",
            "SARM_DRAIN_SECONDS": "2",
            **(env or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.profile = profile  # where py-spy writes the server's collapsed stacks (--format raw), if anywhere
        self._py_spy = py_spy
        self._profiler: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: deque[str] = deque(maxlen=50)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> GatewayProcess:
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "service")])}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sarm.cli import app; app()",
                "serve",
                "--model-repo",
                str(self.repo),
                "--backend",
                "local",
                "--grpc-port",
                "0",
            ],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (match := re.search(r"on gRPC 127\.0\.0\.1:(\d+)", "".join(self._log))):
            line = self.process.stderr.readline()
            if not line or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"sarm serve did not start ({self.process.poll()}): {''.join(self._log)}")
            self._log.append(line)
        self.port = int(match.group(1))
        # Keep draining stderr so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        if self.profile is not None:
            self._profiler = subprocess.Popen(
                [
                    self._py_spy,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--output",
                    str(self.profile),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--threads",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._log.append(line)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._profiler is not None:  # py-spy writes its file on SIGINT
            self._profiler.send_signal(signal.SIGINT)
            self._profiler.wait(timeout=60)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RedisProcess:
    """A throwaway `redis-server` on a free loopback port: temp dir, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="sarm-bench-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisProcess:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, socket_timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.1)

    def info(self) -> dict[str, int]:
        """Server counters: keyspace hits/misses, keys, memory."""
        stats = self.client.info()
        keys = stats.get("db0", {}).get("keys", 0)
        wanted = ("keyspace_hits", "keyspace_misses", "used_memory", "total_commands_processed")
        return {"keys": int(keys), **{key: int(stats[key]) for key in wanted}}

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._dir.cleanup()


# ---- frames and messages --------------------------------------------------------------------------------------------


class DistinctFrames:
    """Uniform-noise RGB frames at the model's image size; every call draws from a new seed, so no frame repeats
    within or across calls and the gateway's content-addressed cache can never hit by accident."""

    def __init__(self, height: int, width: int, seed: int = 0) -> None:
        self.shape = (height, width, 3)
        self._seeds = iter(range(seed * 1_000_000, (seed + 1) * 1_000_000))

    def take(self, n: int) -> np.ndarray:
        return np.random.default_rng(next(self._seeds)).integers(0, 256, size=(n, *self.shape), dtype=np.uint8)


def raw_frame(image: np.ndarray) -> pb.Frame:
    height, width, channels = image.shape
    return pb.Frame(raw=pb.RawImage(data=image.tobytes(), height=height, width=width, channels=channels))


def channel(address: str) -> grpc.aio.Channel:
    limit = CURVE_MESSAGE_BYTES * 2
    return grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    )


async def score_curve(stub: pb_grpc.RewardServiceStub, frames: Sequence[pb.Frame], fps: float) -> np.ndarray:
    """The per-frame progress curve of an episode from one ScoreFrames call."""
    request = pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=frames, fps=fps)
    scores = [score async for score in stub.ScoreFrames(request, timeout=CALL_TIMEOUT_S)]
    assert [s.frame_index for s in scores] == list(range(len(frames))), "ScoreFrames skipped or reordered frames"
    return np.array([s.score.progress for s in scores], dtype=np.float32)


async def timed_curve(
    stub: pb_grpc.RewardServiceStub, frames: Sequence[pb.Frame], fps: float
) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    curve = await score_curve(stub, frames, fps)
    return time.perf_counter() - start, curve


# ---- the direct path: the gateway's own local backend, in this process ---------------------------------------------


class Direct:
    """The repository's encoder and heads through `sarm.scoring.backends.LocalBackend`, called directly (no gRPC,
    no cache, no micro-batching), with the instruction embedded by the encoder the gateway uses."""

    def __init__(self, repo: Path, threads: int) -> None:
        self.manifest = read_manifest(repo)
        self.backend = LocalBackend(repo, self.manifest, intra_op_threads=threads, workers=1)
        self.window_frames = self.manifest.window.frames
        self.max_rewind = self.manifest.window.max_rewind
        from sarm.encoders.registry import load_text_encoder  # torch: once per run, outside any timing

        text_encoder = load_text_encoder(self.manifest.text_encoder.id)
        self.text = np.asarray(text_encoder.encode([INSTRUCTION]), dtype=np.float32)

    async def encode(self, images: np.ndarray) -> np.ndarray:
        return await self.backend.encode(images)

    async def heads(self, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Progress of windows (B, L, D) with `lengths` (B,) valid positions (one camera)."""
        text = np.ascontiguousarray(np.broadcast_to(self.text, (len(windows), self.text.shape[1])))
        out = await self.backend.heads(
            windows[:, :, None, :].astype(np.float32), text, lengths.astype(np.int64).reshape(-1, 1)
        )
        return np.asarray(out[SARM_HEADS_OUTPUTS.index("progress")][:, 0])

    def window(self, t: int, fps: float) -> tuple[np.ndarray, int]:
        """Frame indices (L,) of frame t's causal window (padded) and its number of valid positions."""
        seq = sequence_indices(t, self.manifest.window.stride(fps), 0, 0, self.window_frames, self.max_rewind)
        return seq.indices[0], int(seq.lengths[0])


# ---- statistics and output ------------------------------------------------------------------------------------------


def latency_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "n": len(ms),
    }


def medians(rounds: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The median over rounds of each of `keys`."""
    return {key: float(statistics.median(float(r[key]) for r in rounds)) for key in keys}


def gateway_env_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repo", type=Path, default=DEFAULT_MODEL_REPO)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime intra-op threads, in the gateway (SARM_INTRA_OP_THREADS) and the direct path",
    )
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        type=Path,
        help="profile the gateway with py-spy (on PATH) into OUT (collapsed stacks)",
    )
    parser.add_argument("--out", help="results file name under bench/results/ (default: the benchmark's name)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SARM_X=VALUE",
        help="extra gateway setting (repeatable), e.g. --set SARM_MAX_BATCH_SIZE=16",
    )


def gateway_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    env = {"SARM_INTRA_OP_THREADS": str(args.threads), **extra}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("SARM_"):
            raise SystemExit(f"--set wants SARM_NAME=VALUE, got {item!r}")
        env[key] = value
    return env


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def write_results(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    path = RESULTS / f"{args.out or name}.json"
    path.parent.mkdir(exist_ok=True)
    machine = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    path.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, **payload}, indent=2)
    )
    print(f"wrote {path}")
    return path
