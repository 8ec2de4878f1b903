"""sarm-client against the real gateway (tests/gateway_harness.py, local ONNX Runtime backend): the client returns
what the wire returns, streams in a control loop, scores videos, and maps deadlines, bad input and overload to
its exceptions."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sarm_client import (
    NO_RETRY,
    AsyncSarmClient,
    DeadlineExceeded,
    FrameScore,
    InvalidArgument,
    Overloaded,
    Retry,
    SarmClient,
    SarmError,
    ScoringOptions,
    ServingStatus,
    Timeout,
    Unavailable,
)
from sarm_client.video import decode
from tests.client_harness import target, write_video
from tests.gateway_harness import INSTRUCTION, TIMEOUT, H, RunningGateway, W, episode_frames, raw, window_request

CLIENT_TIMEOUT = Timeout(call=TIMEOUT, step=TIMEOUT, episode=TIMEOUT)


@pytest.fixture
def client(served: RunningGateway) -> Iterator[SarmClient]:
    with SarmClient(target(served), timeout=CLIENT_TIMEOUT) as made:
        yield made


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def progress(scores: list[FrameScore]) -> list[float]:
    return [s.score.progress for s in scores]


def test_score_window_returns_the_gateways_answer_for_raw_and_encoded_frames(
    served: RunningGateway, client: SarmClient
) -> None:
    frames = episode_frames(9, seed=60)
    wire = served.stub.ScoreWindow(window_request([raw(f) for f in frames]), timeout=TIMEOUT).score
    for sent in (frames, list(frames), [png(f) for f in frames]):
        score = client.score_window(INSTRUCTION, sent)
        assert (score.stage_index, score.stage_name, score.model_version) == (
            wire.stage_index,
            wire.stage_name,
            wire.model_version,
        )
        np.testing.assert_allclose(
            [score.tau, score.progress, score.confidence, *score.stage_probs],
            [wire.tau, wire.progress, wire.confidence, *wire.stage_probs],
            atol=1e-6,
        )


def test_a_control_loop_streams_frame_by_frame_like_score_frames(served: RunningGateway, client: SarmClient) -> None:
    frames, fps = episode_frames(20, seed=61), 4.0
    before = served.backend.encoded
    curve: list[FrameScore] = []
    with client.stream(INSTRUCTION, fps=fps, episode_id="ep-7") as episode:
        for t, frame in enumerate(frames):  # one camera frame per control tick
            scores = episode.step(frame, state=[0.1 * t, -0.2])
            assert [s.frame_index for s in scores] == [t]
            curve += scores
    assert served.backend.encoded - before == len(frames)  # each frame sent and encoded once
    whole = client.score_frames(INSTRUCTION, frames, fps)
    assert [s.frame_index for s in whole] == list(range(20))
    np.testing.assert_allclose(progress(curve), progress(whole), atol=1e-5)
    assert [s.score.stage_name for s in curve] == [s.score.stage_name for s in whole]


def test_scoring_options_reach_the_server(client: SarmClient) -> None:
    frames, options = (
        episode_frames(10, seed=62),
        ScoringOptions(score_every=3, smoothing=True, smoothing_min_confidence=0.01),
    )
    with client.stream(INSTRUCTION, fps=5, options=options) as episode:
        streamed = [s for pair in (frames[i : i + 2] for i in range(0, 10, 2)) for s in episode.step(pair)]
    whole = client.score_frames(INSTRUCTION, frames, 5, options=options)
    assert [s.frame_index for s in streamed] == [s.frame_index for s in whole] == [0, 3, 6, 9]
    assert all(s.smoothed_progress is not None for s in streamed)
    np.testing.assert_allclose(
        np.array([s.smoothed_progress for s in streamed], float),
        np.array([s.smoothed_progress for s in whole], float),
        atol=1e-5,
    )


@pytest.fixture(scope="module")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Twice the model's size: the client decodes at the model's size (the gateway never resizes).
    frames = np.repeat(np.repeat(episode_frames(14, seed=63), 2, axis=1), 2, axis=2)
    return write_video(tmp_path_factory.mktemp("video") / "episode.mp4", frames, fps=5)


def test_score_video_in_pieces_equals_score_frames_on_the_decoded_frames(client: SarmClient, video_file: Path) -> None:
    seen: list[tuple[int, int]] = []
    piece = 4 * H * W * 3  # 4 frames per message: several messages
    curve = client.score_video(video_file, INSTRUCTION, step_bytes=piece, on_progress=lambda *a: seen.append(a))
    assert seen == [(4, 14), (8, 14), (12, 14), (14, 14)]
    frames = decode(video_file, client.info())
    assert frames.shape == (14, H, W, 3)
    whole = client.score_frames(INSTRUCTION, frames, fps=5)  # the file's frame rate was used
    assert [s.frame_index for s in curve] == list(range(14))
    np.testing.assert_allclose(progress(curve), progress(whole), atol=1e-5)
    slower = client.score_frames(INSTRUCTION, frames, fps=1)
    assert not np.allclose(progress(slower), progress(whole), atol=1e-5)  # fps matters, so the check above does
    np.testing.assert_allclose(
        progress(client.score_video(video_file, INSTRUCTION, fps=1)), progress(slower), atol=1e-5
    )


def test_score_video_refuses_what_it_cannot_read(client: SarmClient, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        client.score_video(tmp_path / "missing.mp4", INSTRUCTION)
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(InvalidArgument, match=r"junk\.mp4: cannot read"):
        client.score_video(tmp_path / "junk.mp4", INSTRUCTION)


def test_info_and_health(client: SarmClient) -> None:
    info = client.info()
    assert info.stage_names == ("reach", "grasp", "lift") and info.backend == "local"
    assert (info.image_size, info.num_cameras, info.window.frames, info.window.max_rewind) == ((H, W), 1, 9, 4)
    assert info.tasks[0].proportions == pytest.approx((0.5, 0.2, 0.3))
    assert info.text_encoder.dim == 384 and info.frame_encoder.id
    assert client.health() is ServingStatus.SERVING
    assert client.health("sarm.v1.RewardService") is ServingStatus.SERVING
    with pytest.raises(SarmError) as caught:  # grpc's health service: NOT_FOUND, no details
        client.health("no.such.Service")
    assert type(caught.value) is SarmError and str(caught.value) == "NOT_FOUND"


def test_the_asyncio_client_gives_the_same_answers(served: RunningGateway, client: SarmClient) -> None:
    frames = episode_frames(12, seed=64)

    async def run() -> tuple[object, ...]:
        async with AsyncSarmClient(target(served), timeout=CLIENT_TIMEOUT) as aclient:
            window = await aclient.score_window(INSTRUCTION, frames[:9])
            streamed: list[FrameScore] = []
            async with aclient.stream(INSTRUCTION, fps=4) as episode:
                for frame in frames:
                    streamed += await episode.step(frame)
            return (
                window,
                streamed,
                await aclient.score_frames(INSTRUCTION, frames, 4),
                await aclient.info(),
                await aclient.health(),
            )

    window, streamed, whole, info, health = asyncio.run(run())
    assert window == client.score_window(INSTRUCTION, frames[:9])
    assert isinstance(streamed, list) and isinstance(whole, list)
    np.testing.assert_allclose(progress(streamed), progress(client.score_frames(INSTRUCTION, frames, 4)), atol=1e-5)
    np.testing.assert_allclose(progress(whole), progress(streamed), atol=1e-5)
    assert info == client.info() and health is ServingStatus.SERVING


GOOD = episode_frames(9, seed=65)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (GOOD[:8], "the window has 8 time steps; the model takes exactly 9"),
        (np.zeros((9, 32, 32, 3), np.uint8), "raw image is 32x32x3, expected 48x64"),
        ([*GOOD[:8], b"\xff\xd8garbage"], "frame 8: cannot decode"),
    ],
)
def test_bad_input_is_invalid_argument_with_the_servers_message(
    client: SarmClient, frames: np.ndarray, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.score_window(INSTRUCTION, frames)
    assert message in str(caught.value)


def test_a_bad_step_ends_the_stream_with_invalid_argument(client: SarmClient) -> None:
    with client.stream(INSTRUCTION, fps=10) as episode:
        episode.step(GOOD[0])
        with pytest.raises(InvalidArgument, match="state has NaN"):
            episode.step(GOOD[1], state=[float("nan")])
        with pytest.raises(InvalidArgument, match="state has NaN"):
            episode.step(GOOD[2])


def test_deadline_expiry_is_deadline_exceeded(gated: RunningGateway) -> None:
    with SarmClient(target(gated)) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.score_window(INSTRUCTION, GOOD, timeout=0.3)
        assert time.monotonic() - started < 3.0
        gated.wait_in_flight(0)
        # The whole episode's deadline, enforced by the server; then one step's, by the client.
        with (
            client.stream(INSTRUCTION, fps=10, timeout=0.3, step_timeout=TIMEOUT) as episode,
            pytest.raises(DeadlineExceeded),
        ):
            episode.step(GOOD[0])
        with (
            client.stream(INSTRUCTION, fps=10, step_timeout=0.3) as episode,
            pytest.raises(DeadlineExceeded, match="no reply to step 0"),
        ):
            episode.step(GOOD[1])
    wait_streams_closed(gated)

    async def asyncio_step() -> None:
        async with (
            AsyncSarmClient(target(gated)) as aclient,
            aclient.stream(INSTRUCTION, fps=10, step_timeout=0.3) as episode,
        ):
            with pytest.raises(DeadlineExceeded, match="no reply to step 0"):
                await episode.step(GOOD[2])
            with pytest.raises(DeadlineExceeded):  # the stream is over
                await episode.step(GOOD[3])

    asyncio.run(asyncio_step())
    wait_streams_closed(gated)


def wait_streams_closed(running: RunningGateway) -> None:
    """The client cancelled its timed-out stream: the server lets it go."""
    deadline = time.monotonic() + TIMEOUT
    while running.gateway.service.streams.in_flight:
        assert time.monotonic() < deadline, "a timed-out stream is still open on the server"
        time.sleep(0.01)


def hold_two_calls(gated: RunningGateway) -> list[Any]:
    held = [
        gated.stub.ScoreWindow.future(window_request([raw(f) for f in episode_frames(9, seed=s)]), timeout=TIMEOUT)
        for s in (66, 67)
    ]
    gated.wait_in_flight(2)
    return held


def test_overload_is_overloaded_with_the_servers_retry_after(gated: RunningGateway) -> None:
    held = hold_two_calls(gated)
    with SarmClient(target(gated), retry=NO_RETRY) as client:
        started = time.monotonic()
        with pytest.raises(Overloaded, match="retry after 100 ms") as caught:
            client.score_window(INSTRUCTION, GOOD)
        assert caught.value.retry_after == pytest.approx(0.1) and time.monotonic() - started < 1.0
    gated.open_gate()
    assert all(f.result(TIMEOUT).score.model_version for f in held)


def test_the_client_retries_through_an_overload(gated: RunningGateway) -> None:
    hold_two_calls(gated)
    threading.Timer(0.5, gated.open_gate).start()
    retry = Retry(attempts=100, backoff=0.01, max_backoff=0.05)
    with SarmClient(target(gated), retry=retry, timeout=CLIENT_TIMEOUT) as client:
        started = time.monotonic()
        assert client.score_window(INSTRUCTION, GOOD).model_version  # refused until the gate opened
        assert time.monotonic() - started >= 0.5


def test_no_server_is_unavailable() -> None:
    from sarm.triton.server import free_ports

    [port] = free_ports(1)
    with SarmClient(f"127.0.0.1:{port}", retry=Retry(backoff=0.01)) as client, pytest.raises(Unavailable):
        client.info(timeout=5)
