"""Gateway engine parts without a server: micro-batcher, TTL cache, frame decoding, episode memory."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sarm.encoders.base import EncoderMismatchError
from sarm.export.model_repo import read_manifest
from sarm.manifest import Window
from sarm.model.windows import sequence_indices
from sarm.scoring.batcher import MicroBatcher
from sarm.scoring.cache import TTLCache
from sarm.scoring.curve import ScoringOptions
from sarm.scoring.engine import Encoded, Engine, EngineCaches, Instruction
from sarm.scoring.images import FrameData, content_key, decode
from sarm.scoring.metrics import EngineMetrics
from sarm.scoring.options import EngineOptions
from sarm_gateway.episode import Episode
from sarm_gateway.errors import InvalidInput


def test_batcher_coalesces_concurrent_calls_and_returns_each_its_rows() -> None:
    calls: list[int] = []

    async def double(x: np.ndarray) -> tuple[np.ndarray]:
        calls.append(len(x))
        await asyncio.sleep(0)
        return (x * 2,)

    async def main() -> list[tuple[np.ndarray, ...]]:
        batcher = MicroBatcher(double, max_batch=8, max_delay_s=0.05)
        try:
            return await asyncio.gather(*(batcher(np.full((n, 2), n)) for n in (1, 2, 3, 10)))
        finally:
            await batcher.close()

    results = asyncio.run(main())
    for n, (out,) in zip((1, 2, 3, 10), results, strict=True):
        np.testing.assert_array_equal(out, np.full((n, 2), 2 * n))
    assert max(calls) <= 8 and sum(calls) == 16 and len(calls) <= 3  # 10 rows split; the small ones share


def test_batcher_passes_backend_errors_to_every_caller() -> None:
    async def fail(x: np.ndarray) -> tuple[np.ndarray]:
        raise RuntimeError("backend down")

    async def main() -> list[object]:
        batcher = MicroBatcher(fail, max_batch=4, max_delay_s=0.01)
        try:
            return await asyncio.gather(batcher(np.zeros((1, 1))), batcher(np.zeros((2, 1))), return_exceptions=True)
        finally:
            await batcher.close()

    assert [str(r) for r in asyncio.run(main())] == ["backend down", "backend down"]


def test_ttl_cache_expires_and_evicts_least_recently_used() -> None:
    now = [0.0]
    cache: TTLCache[int] = TTLCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == 1
    now[0] = 11
    assert cache.get("a") is None and len(cache) == 1


def test_content_key_depends_on_bytes_shape_and_encoder() -> None:
    raw = FrameData(bytes(12), (2, 2, 3))
    keys = {
        content_key(raw, "enc@1"),
        content_key(raw, "enc@2"),
        content_key(FrameData(bytes(12), (1, 4, 3)), "enc@1"),
        content_key(FrameData(bytes(12)), "enc@1"),
    }
    assert len(keys) == 4 and content_key(raw, "enc@1") == content_key(FrameData(bytes(12), (2, 2, 3)), "enc@1")


def test_decode_png_and_refusals() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    np.testing.assert_array_equal(decode(FrameData(png.getvalue()), 6, 8, "frame 0"), pixels)
    with pytest.raises(InvalidInput, match="frame 3: image is 6x8, expected 4x8"):
        decode(FrameData(png.getvalue()), 4, 8, "frame 3")
    with pytest.raises(InvalidInput, match="cannot decode"):
        decode(FrameData(b"not an image"), 6, 8, "frame 0")
    with pytest.raises(InvalidInput, match="raw image has 5 bytes"):
        decode(FrameData(bytes(5), (6, 8, 3)), 6, 8, "frame 0")


@pytest.mark.parametrize("stride", [1, 3, 7])
def test_episode_keeps_every_frame_a_later_window_needs(stride: int) -> None:
    """What Episode._forget relies on: the next frame's oldest middle frame bounds every later window."""
    for t in range(1, 12 * stride):
        oldest_needed = sequence_indices(t, stride).indices[0, 1]
        later = sequence_indices(np.arange(t, t + 10 * stride), stride).indices[:, 1:]
        assert later.min() >= oldest_needed


def test_batcher_without_delay_batches_what_arrives_while_a_batch_runs() -> None:
    calls: list[int] = []

    async def slow(x: np.ndarray) -> tuple[np.ndarray]:
        calls.append(len(x))
        await asyncio.sleep(0.02)
        return (x,)

    async def main() -> None:
        batcher = MicroBatcher(slow, max_batch=8, max_delay_s=0)
        try:
            first = asyncio.create_task(batcher(np.zeros((1, 1))))
            await asyncio.sleep(0.005)  # the first batch is running now
            await asyncio.gather(first, *(batcher(np.zeros((1, 1))) for _ in range(4)))
        finally:
            await batcher.close()

    asyncio.run(main())
    assert calls == [1, 4]  # the first call runs at once; the other four wait for it and go together


def test_engine_refuses_a_text_encoder_other_than_the_repository_s(cpu_model_repo: Path) -> None:
    manifest = read_manifest(cpu_model_repo)
    other = SimpleNamespace(encoder_id=manifest.text_encoder.id, version="0.0.0+different", dim=384)
    with pytest.raises(EncoderMismatchError, match="different"):
        Engine(
            manifest,
            SimpleNamespace(batches_itself=True),
            other,
            EngineOptions(),
            EngineCaches.build(EngineOptions(), manifest, "minilm-l6@different"),
            EngineMetrics(),
        )


def test_the_core_imports_without_the_gateway() -> None:
    code = (
        "import sys, sarm.cli, sarm.scoring.engine, sarm.scoring.curve, sarm.rabc.pipeline; "
        "assert 'sarm_gateway' not in sys.modules, 'core imports the gateway'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_episode_memory_stays_within_one_window_span() -> None:
    """A long stream keeps frame 0 and the last 7g frames between steps, and scores every frame from them."""

    async def encode(frames: list[FrameData], first_index: int = 0) -> Encoded:
        return Encoded(np.zeros((len(frames), 4), np.float32), np.array(["k"] * len(frames), dtype=object))

    async def score_at(frames: Episode, t: list[int], stride: int, instruction: Instruction) -> list[Any]:
        indices = sequence_indices(np.asarray(t), stride).indices
        frames.keys_at(indices), frames.embeddings_at(indices)  # raise KeyError if a frame was dropped
        return [SimpleNamespace(progress=0.5, confidence=1.0) for _ in t]

    window = Window("causal", frames=9, max_rewind=4, sequence_length=13, stride_seconds=1.0, stride_frames=None)
    engine = SimpleNamespace(
        manifest=SimpleNamespace(window=window),
        num_cameras=1,
        window_frames=9,
        max_rewind=4,
        encode=encode,
        score_at=score_at,
        time_steps=lambda n, what: n,
        state=lambda values, steps, what: None,  # a model without joint state
    )
    episode = Episode(engine, Instruction(np.zeros(3), "i"), fps=3, options=ScoringOptions())

    async def run() -> list[int]:
        sizes = []
        for _ in range(100):
            await episode.step([FrameData(b"x")], [])
            sizes.append(len(episode._history))
        return sizes

    sizes = asyncio.run(run())
    assert max(sizes) == sizes[-1] == 1 + 7 * 3  # frame 0 and the 7g frames the next window may use


def test_request_size_is_the_serialised_size_within_a_few_bytes_a_frame() -> None:
    from sarm_gateway.convert import request_bytes
    from sarm_gateway.v1 import sarm_pb2 as pb

    image = np.arange(48 * 64 * 3, dtype=np.uint8).tobytes()
    frames = [pb.Frame(raw=pb.RawImage(data=image, height=48, width=64, channels=3)), pb.Frame(encoded=b"\x89PNG" * 99)]
    requests = [
        pb.ScoreWindowRequest(instruction="pick up the cube", frames=frames * 9),
        pb.ScoreFramesRequest(instruction="x" * 300, frames=frames * 50, fps=30),
        pb.StreamEpisodeRequest(step=pb.FrameStep(frames=frames, state=[0.5] * 7)),
        pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction="pick up the cube", fps=10)),
    ]
    for request in requests:
        frame_count = len(request.step.frames) if isinstance(request, pb.StreamEpisodeRequest) else len(request.frames)
        assert abs(request_bytes(request) - request.ByteSize()) <= 16 * frame_count + 16
