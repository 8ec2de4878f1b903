"""A real gateway for tests: on its own event loop thread, on a free loopback port, with a counting backend."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from PIL import Image

from sarm.encoders.base import TextEncoder
from sarm.export.model_repo import read_manifest
from sarm.scoring.backends import Backend, make_backend
from sarm.triton import free_ports
from sarm_gateway.deps import build_deps
from sarm_gateway.server import Gateway
from sarm_gateway.settings import Settings
from sarm_gateway.v1 import sarm_pb2 as pb
from sarm_gateway.v1 import sarm_pb2_grpc as pb_grpc

T = TypeVar("T")
INSTRUCTION = "pick up the cube"
H, W = 48, 64  # the test repository's image size (conftest.sarm_checkpoint)
TIMEOUT = 30.0


class CountingBackend:
    """A backend that counts encoded images and scored windows; `gate` (when set up) holds every call until it is
    opened."""

    def __init__(self, inner: Backend, gated: bool) -> None:
        self.inner = inner
        self.name, self.batches_itself = inner.name, inner.batches_itself
        self.encoded = 0  # images
        self.encode_calls = 0  # batches
        self.heads_rows = 0  # windows
        self.gate = asyncio.Event() if gated else None

    async def encode(self, images: np.ndarray) -> np.ndarray:
        if self.gate is not None:
            await self.gate.wait()
        self.encoded += len(images)
        self.encode_calls += 1
        return await self.inner.encode(images)

    async def heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        self.heads_rows += len(inputs[0])
        return await self.inner.heads(*inputs)

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def close(self) -> None:
        await self.inner.close()


class RunningGateway:
    """A Gateway on its own event loop thread, listening on a free loopback port."""

    def __init__(self, repo: Path, text_encoder: TextEncoder, gated: bool = False, **overrides: Any) -> None:
        defaults: dict[str, Any] = {
            "grpc_host": "127.0.0.1",
            "grpc_port": 0,
            "http_host": "127.0.0.1",
            "metrics_port": 0,
            "drain_seconds": 5,
            "max_message_bytes": 512 * 1024,
        }
        self.settings = Settings(model_repo=repo, **(defaults | overrides))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway: Gateway = self.run(self._start(text_encoder, gated))
        self.http_url = f"http://127.0.0.1:{self.gateway.http_port}"  # the HTTP API, or only /metrics and probes
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.gateway.port}")
        self.stub = pb_grpc.RewardServiceStub(self.channel)

    async def _start(self, text_encoder: TextEncoder, gated: bool) -> Gateway:
        manifest = read_manifest(self.settings.model_repo)
        inner = make_backend(self.settings.engine_options(), self.settings.model_repo, manifest)
        self.backend = CountingBackend(inner, gated)
        gateway = Gateway(build_deps(self.settings, self.backend, text_encoder))
        await gateway.start()
        return gateway

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def open_gate(self) -> None:
        assert self.backend.gate is not None
        self.loop.call_soon_threadsafe(self.backend.gate.set)

    def wait_in_flight(self, n: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.gateway.deps.work.in_flight != n:
            assert time.monotonic() < deadline, f"in flight: {self.gateway.deps.work.in_flight}, expected {n}"
            time.sleep(0.01)

    def close(self) -> None:
        self.channel.close()
        if self.gateway.server is not None:
            self.run(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)


def free_port() -> int:
    [port] = free_ports(1)
    return port


def episode_frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def raw(image: np.ndarray) -> pb.Frame:
    return pb.Frame(
        raw=pb.RawImage(data=image.tobytes(), height=image.shape[0], width=image.shape[1], channels=image.shape[2])
    )


def encoded(image: np.ndarray, fmt: str = "PNG") -> pb.Frame:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return pb.Frame(encoded=buffer.getvalue())


def window_request(frames: list[pb.Frame], instruction: str = INSTRUCTION) -> pb.ScoreWindowRequest:
    return pb.ScoreWindowRequest(instruction=instruction, frames=frames)
