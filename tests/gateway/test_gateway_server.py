"""The gRPC gateway end to end: a real grpc.aio server on a free loopback port, real grpc clients.

Scores are checked against the in-process scorer (PyTorch checkpoint, `sarm.scoring.score_embeddings`);
the server runs on its own event loop in a thread so that tests can use blocking clients with deadlines.
"""

from __future__ import annotations

import asyncio
import math
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sarm.encoders.base import TextEncoder
from sarm.export.model_repo import read_manifest
from sarm.model.progress import ConfidenceSmoother, OneEuroFilter
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import load_checkpoint
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.gateway_harness import (
    INSTRUCTION,
    TIMEOUT,
    H,
    RunningGateway,
    W,
    encoded,
    episode_frames,
    raw,
    window_request,
)


def reference_scores(
    repo: Path, checkpoint: Path, text_encoder: TextEncoder, frames: np.ndarray, stride: int, frame_index: list[int]
) -> Any:
    """The in-process scorer: embeddings from the repository's encoder, heads from the PyTorch checkpoint."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(
        str(repo / read_manifest(repo).onnx["encoder"]), options, providers=["CPUExecutionProvider"]
    )
    embeddings = encoder.run(None, {"images": frames})[0]
    model, _ = load_checkpoint(checkpoint)
    text = text_encoder.encode([INSTRUCTION])[0]
    return score_embeddings(model, embeddings, text, stride, np.asarray(frame_index))


def test_score_window_matches_the_in_process_scorer(
    served: RunningGateway, cpu_model_repo: Path, sarm_checkpoint: Path, text_encoder: TextEncoder
) -> None:
    frames = episode_frames(9, seed=1)
    # The same window as PNG and as raw pixels: same pixels, same score.
    for make in (raw, encoded):
        reply = served.stub.ScoreWindow(window_request([make(f) for f in frames]), timeout=TIMEOUT)
        expected = reference_scores(cpu_model_repo, sarm_checkpoint, text_encoder, frames, 1, [8])
        score = reply.score
        assert score.stage_index == expected.stage[0]
        assert score.stage_name == ["reach", "grasp", "lift"][score.stage_index]
        np.testing.assert_allclose(score.stage_probs, expected.stage_probs[0], atol=1e-4)
        np.testing.assert_allclose(
            [score.tau, score.progress, score.confidence],
            [expected.tau[0], expected.progress[0], expected.confidence[0]],
            atol=1e-4,
        )
        assert score.model_version == read_manifest(cpu_model_repo).checkpoint.sha256[:12]


def stream_requests(
    frames: np.ndarray, fps: float, options: pb.ScoringOptions, per_step: int = 1
) -> Iterator[pb.StreamEpisodeRequest]:
    yield pb.StreamEpisodeRequest(
        open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=fps, options=options, episode_id="ep-1")
    )
    for start in range(0, len(frames), per_step):
        yield pb.StreamEpisodeRequest(step=pb.FrameStep(frames=[raw(f) for f in frames[start : start + per_step]]))


def test_stream_scores_like_score_frames_and_offline_and_encodes_each_frame_once(
    served: RunningGateway, cpu_model_repo: Path, sarm_checkpoint: Path, text_encoder: TextEncoder
) -> None:
    # fps 4 → stride 4: 40 frames cover the spaced early windows (t < 32) and the strided ones after.
    frames, fps, stride = episode_frames(40, seed=2), 4.0, 4
    before = served.backend.encoded
    replies = list(served.stub.StreamEpisode(stream_requests(frames, fps, pb.ScoringOptions()), timeout=TIMEOUT))
    assert served.backend.encoded - before == len(frames)  # every frame encoded once, when it arrived
    assert len(replies) == len(frames) and all(r.episode_id == "ep-1" and len(r.scores) == 1 for r in replies)
    streamed = [r.scores[0] for r in replies]
    assert [s.frame_index for s in streamed] == list(range(len(frames)))

    curve = list(
        served.stub.ScoreFrames(
            pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=[raw(f) for f in frames], fps=fps), timeout=TIMEOUT
        )
    )
    assert served.backend.encoded - before == len(frames)  # the repeat came from the frame cache
    np.testing.assert_allclose([s.score.progress for s in streamed], [s.score.progress for s in curve], atol=1e-5)
    expected = reference_scores(cpu_model_repo, sarm_checkpoint, text_encoder, frames, stride, list(range(40)))
    np.testing.assert_allclose([s.score.progress for s in streamed], expected.progress, atol=1e-4)
    np.testing.assert_allclose([s.score.tau for s in streamed], expected.tau, atol=1e-4)
    assert [s.score.stage_index for s in streamed] == expected.stage.tolist()


SMOOTHING = {
    "default": (pb.ScoringOptions(score_every=3), lambda fps: OneEuroFilter(fps)),
    "one-euro tuned": (
        pb.ScoringOptions(score_every=3, smoothing_cutoff_hz=0.5, smoothing_beta=0.0),
        lambda fps: OneEuroFilter(fps, 0.5, 0.0),
    ),
    "history": (
        pb.ScoringOptions(score_every=3, smoothing_filter="history", smoothing_min_confidence=0.01),
        lambda fps: ConfidenceSmoother(10, 0.01),
    ),
    "history, as clients asked before the filter could be chosen": (
        pb.ScoringOptions(score_every=3, smoothing=True, smoothing_min_confidence=0.01),
        lambda fps: ConfidenceSmoother(10, 0.01),
    ),
    "off": (pb.ScoringOptions(score_every=3, smoothing=False), lambda fps: None),
}


@pytest.mark.parametrize("smoothing", SMOOTHING)
def test_stream_scoring_interval_and_smoothing_match_score_frames(served: RunningGateway, smoothing: str) -> None:
    """Smoothing is on unless turned off, the same in a stream and a whole episode, and it is the named filter run
    over the raw scores at the episode's frame rate."""
    frames, fps = episode_frames(12, seed=3), 5.0
    options, make_filter = SMOOTHING[smoothing]
    replies = list(served.stub.StreamEpisode(stream_requests(frames, fps, options, per_step=2), timeout=TIMEOUT))
    streamed = [s for r in replies for s in r.scores]
    curve = list(
        served.stub.ScoreFrames(
            pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=[raw(f) for f in frames], fps=fps, options=options),
            timeout=TIMEOUT,
        )
    )
    # A whole episode also scores its last frame (sarm.scoring.curve); a stream cannot know which frame is last.
    assert [s.frame_index for s in streamed] == [0, 3, 6, 9]
    assert [s.frame_index for s in curve] == [0, 3, 6, 9, 11]
    progress_filter = make_filter(fps)
    if progress_filter is None:
        assert not any(s.HasField("smoothed_progress") for s in [*streamed, *curve])
        return
    expected = [progress_filter.update(s.frame_index, s.score.progress, s.score.confidence) for s in curve]
    assert all(s.HasField("smoothed_progress") for s in [*streamed, *curve])
    np.testing.assert_allclose([s.smoothed_progress for s in curve], expected, atol=1e-6)
    np.testing.assert_allclose([s.smoothed_progress for s in streamed], expected[:4], atol=1e-5)
    assert not np.allclose(expected, [s.score.progress for s in curve], atol=1e-6)  # it did smooth something


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (pb.ScoringOptions(smoothing_filter="kalman"), "smoothing_filter 'kalman' is not one of one-euro, history"),
        (pb.ScoringOptions(smoothing_beta=-1.0), "smoothing_beta must be >= 0"),
        (pb.ScoringOptions(smoothing_cutoff_hz=0.0), "smoothing_cutoff_hz must be a frequency > 0"),
    ],
)
def test_bad_smoothing_options_are_refused(served: RunningGateway, options: pb.ScoringOptions, message: str) -> None:
    frame = raw(episode_frames(1, seed=0)[0])
    request = pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=[frame], fps=5.0, options=options)
    with pytest.raises(grpc.RpcError) as refused:
        list(served.stub.ScoreFrames(request, timeout=TIMEOUT))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (refused.value.details() or "")


def test_model_info_health_and_reflection(served: RunningGateway, cpu_model_repo: Path) -> None:
    info = served.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT)
    manifest = read_manifest(cpu_model_repo)
    assert list(info.stage_names) == ["reach", "grasp", "lift"] and info.backend == "local"
    assert (info.image.height, info.image.width, info.num_cameras) == (H, W, 1)
    assert (info.window.frames, info.window.max_rewind, info.window.sequence_length) == (9, 4, 13)
    np.testing.assert_allclose(info.tasks[0].proportions, [0.5, 0.2, 0.3], rtol=1e-6)
    assert info.frame_encoder.id == manifest.frame_encoder.id and info.text_encoder.dim == 384
    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "sarm.v1.RewardService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    [reply] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
    )
    names = {s.name for s in reply.list_services_response.service}
    assert {"sarm.v1.RewardService", "grpc.health.v1.Health"} <= names


GOOD = episode_frames(9, seed=4)
BAD_WINDOWS = {
    "wrong raw size": (
        window_request([raw(np.zeros((32, 32, 3), np.uint8))] * 9),
        "raw image is 32x32x3, expected 48x64",
    ),
    "wrong png size": (
        window_request([encoded(np.zeros((40, 64, 3), np.uint8))] * 9),
        "image is 40x64, expected 48x64",
    ),
    "undecodable": (
        window_request([raw(f) for f in GOOD[:8]] + [pb.Frame(encoded=b"\xff\xd8garbage")]),
        "frame 8: cannot decode",
    ),
    "empty window": (window_request([]), "the window has 0 images"),
    "short window": (
        window_request([raw(f) for f in GOOD[:8]]),
        "the window has 8 time steps; the model takes exactly 9",
    ),
    "no image set": (window_request([pb.Frame()] * 9), "frame 0: empty image"),
    "empty instruction": (window_request([raw(f) for f in GOOD], instruction=" "), "instruction is empty"),
    "oversized": (window_request([raw(f) for f in episode_frames(60, seed=5)]), "the limit is 524288"),
}


@pytest.mark.parametrize("case", list(BAD_WINDOWS))
def test_bad_window_is_invalid_argument(served: RunningGateway, case: str) -> None:
    request, message = BAD_WINDOWS[case]
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.ScoreWindow(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert message in caught.value.details()


def step(frames: np.ndarray, state: list[float] | None = None) -> pb.StreamEpisodeRequest:
    return pb.StreamEpisodeRequest(step=pb.FrameStep(frames=[raw(f) for f in frames], state=state or []))


def opening(fps: float = 10.0) -> pb.StreamEpisodeRequest:
    return pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=INSTRUCTION, fps=fps))


BAD_STREAMS = {
    "step before open": ([step(GOOD[:1])], "no episode is open"),
    "second open": ([opening(), opening()], "already has an open episode"),
    "nan fps": ([opening(math.nan)], "fps must be a frame rate"),
    "nan state": ([opening(), step(GOOD[:1], [0.1, math.nan])], "state has NaN"),
    "empty message": ([opening(), pb.StreamEpisodeRequest()], "empty message"),
    "empty step": ([opening(), step(GOOD[:0])], "this step has 0 images"),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_stream_is_invalid_argument(served: RunningGateway, case: str) -> None:
    requests, message = BAD_STREAMS[case]
    with pytest.raises(grpc.RpcError) as caught:
        list(served.stub.StreamEpisode(iter(requests), timeout=TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert message in caught.value.details()


def test_score_frames_refuses_a_missing_fps(served: RunningGateway) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(
            served.stub.ScoreFrames(
                pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=[raw(GOOD[0])]), timeout=TIMEOUT
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fps" in caught.value.details()


def test_burst_beyond_the_in_flight_bound_is_refused_fast(gated: RunningGateway) -> None:
    held = [
        gated.stub.ScoreWindow.future(window_request([raw(f) for f in episode_frames(9, seed=s)]), timeout=TIMEOUT)
        for s in (6, 7)
    ]
    gated.wait_in_flight(2)
    started = time.monotonic()
    for _ in range(10):
        with pytest.raises(grpc.RpcError) as caught:
            gated.stub.ScoreWindow(window_request([raw(f) for f in GOOD]), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry after 100 ms" in caught.value.details()
        assert ("retry-after-ms", "100") in (caught.value.trailing_metadata() or ())
    assert time.monotonic() - started < 2.0
    gated.open_gate()
    assert all(f.result(TIMEOUT).score.model_version for f in held)


def test_an_open_stream_is_not_cut_by_a_burst(gated: RunningGateway) -> None:
    held = [
        gated.stub.ScoreWindow.future(window_request([raw(f) for f in episode_frames(9, seed=s)]), timeout=TIMEOUT)
        for s in (40, 41)
    ]
    gated.wait_in_flight(2)  # unary calls now get RESOURCE_EXHAUSTED, but the stream's steps go on
    replies = gated.stub.StreamEpisode(iter([opening(), step(GOOD[:1]), step(GOOD[1:2])]), timeout=TIMEOUT)
    time.sleep(0.2)
    gated.open_gate()
    assert [len(r.scores) for r in replies] == [1, 1]
    assert all(f.result(TIMEOUT).score.model_version for f in held)


def test_deadline_expiry_is_deadline_exceeded_and_frees_the_slot(gated: RunningGateway) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        gated.stub.ScoreWindow(window_request([raw(f) for f in GOOD]), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gated.wait_in_flight(0)


def test_shutdown_reports_not_serving_and_drains_calls_in_flight(gated: RunningGateway) -> None:
    health = health_pb2_grpc.HealthStub(gated.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    call = gated.stub.ScoreWindow.future(window_request([raw(f) for f in GOOD]), timeout=TIMEOUT)
    gated.wait_in_flight(1)
    stopping = asyncio.run_coroutine_threadsafe(gated.gateway.stop(), gated.loop)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # a watcher would otherwise hold the drain open until drain_seconds
    gated.open_gate()
    assert call.result(TIMEOUT).score.stage_name  # the call in flight finished
    stopping.result(TIMEOUT)
    gated.gateway.server = None  # type: ignore[assignment]  # already stopped: the fixture must not stop it again


def test_streams_beyond_the_stream_bound_are_refused(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, max_streams=1)
    try:
        held: queue.Queue[pb.StreamEpisodeRequest | None] = queue.Queue()
        first = running.stub.StreamEpisode(iter(held.get, None), timeout=TIMEOUT)
        held.put(opening())
        held.put(step(GOOD[:1]))
        assert len(next(first).scores) == 1  # the first stream is open and served
        with pytest.raises(grpc.RpcError) as caught:
            list(running.stub.StreamEpisode(iter([opening()]), timeout=TIMEOUT))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "streams in flight" in caught.value.details()
        held.put(None)
        assert list(first) == []
    finally:
        running.close()


def test_concurrent_calls_share_encoder_batches(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, gated=True, max_batch_size=64)
    try:
        running.run(running.gateway.engine.embed_instruction(INSTRUCTION))  # calls go straight to the encoder
        calls = [
            running.stub.ScoreWindow.future(
                window_request([raw(f) for f in episode_frames(9, seed=20 + i)]), timeout=TIMEOUT
            )
            for i in range(5)
        ]
        running.wait_in_flight(5)
        time.sleep(0.2)  # decoding done: four calls wait behind the first, held at the gate
        running.open_gate()
        assert all(call.result(TIMEOUT).score.model_version for call in calls)
        assert running.backend.encoded == 45 and running.backend.encode_calls <= 2  # not one batch per call
    finally:
        running.close()


def test_two_cameras_time_major(tmp_path: Path, text_encoder: TextEncoder) -> None:
    """Frames of a two-camera model go time-major (both cameras of a step, then the next step)."""
    from sarm.export.model_repo import export_model_repository
    from sarm.training.scaffold import untrained_checkpoint

    checkpoint = untrained_checkpoint(tmp_path / "ckpt", ["reach", "lift"], [0.6, 0.4], (H, W), num_cameras=2)
    repo = tmp_path / "repo"
    export_model_repository(checkpoint, repo, "cpu")
    frames = episode_frames(2 * 12, seed=30)  # 12 time steps × 2 cameras
    running = RunningGateway(repo, text_encoder)
    try:
        window = running.stub.ScoreWindow(window_request([raw(f) for f in frames[:18]]), timeout=TIMEOUT).score
        replies = list(
            running.stub.StreamEpisode(stream_requests(frames, 4.0, pb.ScoringOptions(), per_step=2), timeout=TIMEOUT)
        )
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.ScoreWindow(window_request([raw(f) for f in frames[:17]]), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the window has 17 images; send a positive multiple of the model's 2 camera(s)" in caught.value.details()
    finally:
        running.close()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(
        str(repo / read_manifest(repo).onnx["encoder"]), options, providers=["CPUExecutionProvider"]
    )
    embeddings = encoder.run(None, {"images": frames})[0].reshape(12, 2, -1)
    model, _ = load_checkpoint(checkpoint)
    text = text_encoder.encode([INSTRUCTION])[0]
    expected_window = score_embeddings(model, embeddings[:9], text, 1, np.asarray([8]))
    np.testing.assert_allclose(window.progress, expected_window.progress[0], atol=1e-4)
    expected = score_embeddings(model, embeddings, text, 4)
    np.testing.assert_allclose([r.scores[0].score.progress for r in replies], expected.progress, atol=1e-4)


def test_concurrent_calls_with_the_same_frames_encode_them_once(
    cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, gated=True)
    try:
        running.run(running.gateway.engine.embed_instruction(INSTRUCTION))
        request = window_request([raw(f) for f in episode_frames(9, seed=50)])
        calls = [running.stub.ScoreWindow.future(request, timeout=TIMEOUT) for _ in range(3)]
        running.wait_in_flight(3)
        time.sleep(0.2)  # the first call holds the frames at the gate; the others wait for its embeddings
        running.open_gate()
        scores = [call.result(TIMEOUT).score.progress for call in calls]
        assert running.backend.encoded == 9 and len(set(scores)) == 1
    finally:
        running.close()


def test_a_call_that_gives_up_leaves_its_frames_to_the_calls_waiting_for_them(gated: RunningGateway) -> None:
    gated.run(gated.gateway.engine.embed_instruction(INSTRUCTION))
    request = window_request([raw(f) for f in episode_frames(9, seed=51)])
    with pytest.raises(grpc.RpcError) as caught:  # holds the frames, then its deadline passes
        first = gated.stub.ScoreWindow.future(request, timeout=0.5)
        second = gated.stub.ScoreWindow.future(request, timeout=TIMEOUT)  # waits for the first's frames
        first.result(TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gated.open_gate()
    assert second.result(TIMEOUT).score.model_version
