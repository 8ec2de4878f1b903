"""The window-score cache end to end: a repeated window skips the heads (the backend counts the windows it scores)
and scores exactly as the heads did; anything the heads' output depends on (instruction, any frame of the window)
is part of the key; the in-process tier keeps to its size and TTL. Redis tier: tests/gateway/test_gateway_redis.py."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from sarm.encoders.base import TextEncoder
from sarm.model.windows import sequence_indices
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.gateway_harness import INSTRUCTION, TIMEOUT, RunningGateway, episode_frames, raw, window_request

FPS, STRIDE = 2.0, 2  # 20 frames: spaced windows (t < 16) and strided ones


@pytest.fixture
def gateways() -> Iterator[list[RunningGateway]]:
    """Started gateways, closed at teardown whatever the test did."""
    started: list[RunningGateway] = []
    yield started
    for gateway in started:
        gateway.close()


def start(gateways: list[RunningGateway], repo: Path, text_encoder: TextEncoder, **overrides: object) -> RunningGateway:
    gateway = RunningGateway(repo, text_encoder, **overrides)
    gateways.append(gateway)
    return gateway


def curve(gateway: RunningGateway, frames: np.ndarray, instruction: str = INSTRUCTION) -> list[pb.FrameScore]:
    request = pb.ScoreFramesRequest(instruction=instruction, frames=[raw(f) for f in frames], fps=FPS)
    return list(gateway.stub.ScoreFrames(request, timeout=TIMEOUT))


def heads_rows(gateway: RunningGateway, call: Callable[[], object]) -> int:
    """Windows the backend's heads scored during `call()`."""
    before = gateway.backend.heads_rows
    call()
    return gateway.backend.heads_rows - before


def score_hits(gateway: RunningGateway) -> float:
    exposition = gateway.gateway.engine.metrics.exposition().decode()
    match = re.search(r'sarm_cache_hits_total\{kind="score",tier="memory"\} (\S+)', exposition)
    assert match is not None, "no memory score-cache hits exported"
    return float(match.group(1))


def test_a_repeated_request_skips_the_heads_and_scores_exactly_as_uncached(
    gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    cached = start(gateways, cpu_model_repo, text_encoder)
    uncached = start(gateways, cpu_model_repo, text_encoder, score_cache_entries=0)
    frames = episode_frames(20, seed=60)
    results: dict[str, list[pb.FrameScore]] = {}
    assert heads_rows(cached, lambda: results.setdefault("cold", curve(cached, frames))) == 20
    assert heads_rows(cached, lambda: results.setdefault("warm", curve(cached, frames))) == 0
    assert heads_rows(uncached, lambda: results.setdefault("uncached", curve(uncached, frames))) == 20
    assert heads_rows(uncached, lambda: curve(uncached, frames)) == 20  # no score cache: the heads every time
    assert results["warm"] == results["cold"] == results["uncached"]  # bit for bit, messages compared field by field
    assert score_hits(cached) == 20

    window = window_request([raw(f) for f in episode_frames(9, seed=61)])
    replies = [cached.stub.ScoreWindow(window, timeout=TIMEOUT) for _ in range(2)]
    assert cached.backend.heads_rows == 20 + 1 and replies[0] == replies[1]
    assert score_hits(cached) == 21
    # The curve's windows are the windows a stream scores: a stream of the same episode needs no heads either.
    opening = pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=FPS))
    steps = [pb.StreamEpisodeRequest(step=pb.FrameStep(frames=[raw(f)])) for f in frames]
    streamed = [r.scores[0].score for r in cached.stub.StreamEpisode(iter([opening, *steps]), timeout=TIMEOUT)]
    assert cached.backend.heads_rows == 21 and streamed == [s.score for s in results["cold"]]


def test_another_instruction_or_a_changed_frame_misses_and_nothing_else_does(
    gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    running = start(gateways, cpu_model_repo, text_encoder)
    frames = episode_frames(20, seed=62)
    before = curve(running, frames)
    assert heads_rows(running, lambda: curve(running, frames, "open the drawer")) == 20

    changed = frames.copy()
    changed[5] = episode_frames(1, seed=65)[0]
    using_5 = np.any(sequence_indices(np.arange(20), STRIDE).indices == 5, axis=1)  # padding included
    after: list[pb.FrameScore] = []
    assert heads_rows(running, lambda: after.extend(curve(running, changed))) == using_5.sum() < 20
    # The others: cached scores (the smoothed progress after frame 5 moves with the changed scores before it).
    assert [a.score == b.score for a, b in zip(after, before, strict=True)] == (~using_5).tolist()


def test_identical_windows_of_one_request_go_to_the_heads_once(
    gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    running = start(gateways, cpu_model_repo, text_encoder)
    still = np.repeat(episode_frames(1, seed=63), 12, axis=0)  # a still camera: every window the same frames
    scores: list[pb.FrameScore] = []
    assert heads_rows(running, lambda: scores.extend(curve(running, still))) == 1
    assert all(s.score == scores[0].score for s in scores)


def test_the_in_process_tier_keeps_to_its_size_and_ttl(
    gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    small = start(gateways, cpu_model_repo, text_encoder, score_cache_entries=5)
    frames = episode_frames(12, seed=64)
    curve(small, frames)
    assert len(small.gateway.engine.caches.scores.memory) == 5  # the last 5 windows
    assert heads_rows(small, lambda: curve(small, frames)) == 12 - 5

    short = start(gateways, cpu_model_repo, text_encoder, cache_ttl_s=0.2)
    curve(short, frames)
    time.sleep(0.3)
    assert heads_rows(short, lambda: curve(short, frames)) == 12  # every score expired
