"""The Redis tier of the caches (embeddings, window scores), against a real redis-server on a free loopback port.

Replicas share embeddings and scores through it; when Redis is down, unreachable or silent, every request still
succeeds, with the same scores, within its deadline, and the failures are counted.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sarm.encoders.base import TextEncoder
from sarm.export.model_repo import read_manifest
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.gateway_harness import RunningGateway, episode_frames, free_port, raw, window_request
from tests.redis_server import RedisServer

DEADLINE = 5.0  # per call: a Redis failure costs tens of ms, so anything near this is a hang


@pytest.fixture
def gateways(cpu_model_repo: Path, text_encoder: TextEncoder) -> Iterator[list[RunningGateway]]:
    """Started gateways, closed at teardown whatever the test did."""
    started: list[RunningGateway] = []
    yield started
    for gateway in started:
        gateway.close()


def score(gateway: RunningGateway, frames: np.ndarray) -> pb.WindowScore:
    reply = gateway.stub.ScoreWindow(window_request([raw(f) for f in frames]), timeout=DEADLINE)
    return reply.score


def assert_same(a: pb.WindowScore, b: pb.WindowScore) -> None:
    assert a.stage_index == b.stage_index
    np.testing.assert_allclose([a.tau, a.progress, a.confidence], [b.tau, b.progress, b.confidence], atol=1e-5)
    np.testing.assert_allclose(a.stage_probs, b.stage_probs, atol=1e-5)


def test_replicas_share_embeddings_and_scores_through_redis_with_a_ttl_and_the_encoder_or_model_in_each_key(
    redis_server: RedisServer, gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    first = RunningGateway(cpu_model_repo, text_encoder, redis_url=redis_server.url, redis_ttl_s=120)
    gateways.append(first)
    second = RunningGateway(cpu_model_repo, text_encoder, redis_url=redis_server.url, redis_ttl_s=120)
    gateways.append(second)
    frames = episode_frames(9, seed=11)

    expected = score(first, frames)
    assert (first.backend.encoded, first.backend.heads_rows) == (9, 1)
    got = score(second, frames)
    assert second.backend.encoded == 0  # all nine from Redis, none encoded again
    assert second.backend.heads_rows == 0  # and the window's score too
    assert got == expected  # bit for bit: float32 in Redis, as the heads returned it
    engine = second.gateway.engine
    scores = engine.caches.scores.redis
    assert engine.caches.frames.redis is not None and engine.caches.instructions.redis is not None
    assert scores is not None
    assert (engine.caches.frames.redis.hits, engine.caches.frames.redis.errors) == (9, 0)
    assert (engine.caches.instructions.redis.hits, engine.caches.instructions.redis.errors) == (1, 0)
    assert (scores.hits, scores.errors) == (1, 0)
    # Redis hits fill the in-process tiers: a repeat does not ask Redis
    assert len(engine.caches.frames.memory) == 9 and len(engine.caches.scores.memory) == 1
    score(second, frames)
    assert engine.caches.frames.redis.hits == 9 and scores.hits == 1 and second.backend.encoded == 0
    exposition = engine.metrics.exposition().decode()  # the tier's counts, as Prometheus sees them
    assert 'sarm_cache_hits_total{kind="frame",tier="redis"} 9.0' in exposition
    assert 'sarm_cache_errors_total{kind="frame",tier="redis"} 0.0' in exposition
    assert 'sarm_cache_hits_total{kind="score",tier="redis"} 1.0' in exposition
    assert 'sarm_cache_hits_total{kind="score",tier="memory"} 1.0' in exposition

    manifest = read_manifest(cpu_model_repo)
    frame_encoder = f"{manifest.frame_encoder.id}@{manifest.frame_encoder.version}"
    text_encoder_id = f"{manifest.text_encoder.id}@{manifest.text_encoder.version}"
    keys = [key.decode() for key in redis_server.client.keys("*")]
    frame_keys = [key for key in keys if key.startswith(f"sarm:frame:{frame_encoder}:")]
    instruction_keys = [key for key in keys if key.startswith(f"sarm:instruction:{text_encoder_id}:")]
    score_keys = [key for key in keys if key.startswith(f"sarm:score:{engine.version}:")]
    assert len(frame_keys) == 9 and len(instruction_keys) == 1 and len(score_keys) == 1 and len(keys) == 11
    for key in keys:
        assert 0 < redis_server.client.ttl(key) <= 120
    assert len(redis_server.client.get(frame_keys[0]) or b"") == 4 * manifest.frame_encoder.dim
    assert len(redis_server.client.get(score_keys[0]) or b"") == 4 * (len(manifest.stage_names) + 3)


def test_redis_killed_during_a_run_fails_no_request(
    redis_server: RedisServer, gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    local = RunningGateway(cpu_model_repo, text_encoder)  # the reference: no Redis at all
    gateways.append(local)
    shared = RunningGateway(cpu_model_repo, text_encoder, redis_url=redis_server.url, redis_backoff_s=0)
    gateways.append(shared)
    tier = shared.gateway.engine.caches.frames.redis
    assert tier is not None
    windows = [episode_frames(9, seed=100 + i) for i in range(8)]
    for i, frames in enumerate(windows):
        if i == 3:
            assert tier.errors == 0 and tier.misses > 0
            redis_server.kill()
        started = time.monotonic()
        got = score(shared, frames)
        assert time.monotonic() - started < 1.0  # a dead Redis costs a refused connection, not a wait
        assert_same(got, score(local, frames))
    assert tier.errors >= 5  # every request after the kill asked Redis (no backoff here) and counted the failure
    scores = shared.gateway.engine.caches.scores.redis
    assert scores is not None and scores.errors >= 5
    assert shared.backend.encoded == 9 * len(windows) and shared.backend.heads_rows == len(windows)


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_unreachable_redis_at_startup_still_serves(
    server: str, gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    """Nothing listening (connection refused), or a listener that never answers (every read times out)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if server == "silent":
            listener.listen(16)  # the kernel accepts connections; nobody ever replies
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        running = RunningGateway(cpu_model_repo, text_encoder, redis_url=url, redis_timeout_ms=50, redis_backoff_s=0)
        gateways.append(running)
        frames = episode_frames(9, seed=7)
        for _ in range(2):  # each within its deadline (score() sets it): a stalled Redis would exceed it
            score(running, frames)
        engine = running.gateway.engine
        assert engine.caches.frames.redis is not None and engine.caches.instructions.redis is not None
        # The first call looks up and fails to store (frames and instruction); the repeat is served in-process.
        assert engine.caches.frames.redis.errors == 2 and engine.caches.instructions.redis.errors == 2
        assert running.backend.encoded == 9


def test_after_a_redis_error_the_tier_stands_aside_for_the_backoff(
    gateways: list[RunningGateway], cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    """A dead Redis costs one failed attempt per backoff period, not one per request."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    running = RunningGateway(cpu_model_repo, text_encoder, redis_url=url, redis_backoff_s=60)
    gateways.append(running)
    for seed in range(3):
        score(running, episode_frames(9, seed=200 + seed))
    tier = running.gateway.engine.caches.frames.redis
    assert tier is not None
    assert tier.errors == 1 and tier.misses == 27 and tier.hits == 0  # lookups while aside count as misses
    assert running.backend.encoded == 27
