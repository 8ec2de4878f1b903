"""Unknown tasks are refused: the shipped default model (three named tasks) behind a real gateway. A paraphrase of a
known task is scored and every answer says which task it matched and how similar the instruction was; an instruction
for a task the model never learnt is INVALID_ARGUMENT (HTTP 422, the client's InvalidArgument) naming the known
instructions, and counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from sarm.data.video import VideoWriter
from sarm.encoders.base import TextEncoder
from sarm_client import InvalidArgument, SarmClient
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.gateway_harness import TIMEOUT, RunningGateway, raw, window_request

DEFAULT_REPO = Path(__file__).resolve().parents[2] / ".cache" / "model_repo" / "default"  # built by `make setup`
PICK_PLACE = "Pick up the puck and place it at the goal."
PARAPHRASE = "pick up the puck and put it on the goal"  # 0.97 (bench/task_matching.py)
UNKNOWN = "fold the t-shirt"  # 0.27


@pytest.fixture(scope="module")
def default_gateway(text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(DEFAULT_REPO, text_encoder, http_port=0)
    yield running
    running.close()


def frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 128, 128, 3), dtype=np.uint8)


def test_a_paraphrase_is_scored_and_names_its_task(default_gateway: RunningGateway) -> None:
    window = [raw(f) for f in frames(9, 1)]
    score = default_gateway.stub.ScoreWindow(window_request(window, PARAPHRASE), timeout=TIMEOUT).score
    assert score.matched_task == PICK_PLACE and 0.9 < score.task_similarity < 1.0
    exact = default_gateway.stub.ScoreWindow(window_request(window, PICK_PLACE), timeout=TIMEOUT).score
    assert exact.matched_task == PICK_PLACE and exact.task_similarity == pytest.approx(1.0, abs=1e-5)
    curve = list(
        default_gateway.stub.ScoreFrames(
            pb.ScoreFramesRequest(instruction=PARAPHRASE, frames=window, fps=80), timeout=TIMEOUT
        )
    )
    assert {s.score.matched_task for s in curve} == {PICK_PLACE}
    info = default_gateway.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT)
    assert info.task_match_min == pytest.approx(0.63) and info.window.mode == "causal"


def test_an_unknown_task_is_refused_naming_the_known_instructions(default_gateway: RunningGateway) -> None:
    window = [raw(f) for f in frames(9, 2)]
    before = default_gateway.gateway.deps.metrics.task_refusals._value.get()
    with pytest.raises(grpc.RpcError) as refused:
        default_gateway.stub.ScoreWindow(window_request(window, UNKNOWN), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = refused.value.details()
    assert UNKNOWN in message and PICK_PLACE in message and "Pick up the nut and put it onto the peg." in message
    assert "SARM_TASK_MATCH_MIN" in message
    opening = pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction="open the drawer", fps=10))
    with pytest.raises(grpc.RpcError) as stream_refused:
        list(default_gateway.stub.StreamEpisode(iter([opening]), timeout=TIMEOUT))
    assert stream_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert default_gateway.gateway.deps.metrics.task_refusals._value.get() == before + 2
    exposition = default_gateway.gateway.deps.metrics.exposition().decode()
    assert f"sarm_task_refusals_total {before + 2:.1f}" in exposition


def test_the_client_raises_invalid_argument_and_reports_the_match(default_gateway: RunningGateway) -> None:
    with SarmClient(f"127.0.0.1:{default_gateway.gateway.port}") as client:
        with pytest.raises(InvalidArgument, match="matches no task"):
            client.score_window(UNKNOWN, frames(9, 3))
        score = client.score_window(PARAPHRASE, frames(9, 3))
        assert score.matched_task == PICK_PLACE and score.task_similarity > 0.9
        assert client.info().task_match_min == pytest.approx(0.63)


def test_http_upload_gets_422_or_the_matched_task(default_gateway: RunningGateway, tmp_path: Path) -> None:
    video = tmp_path / "rollout.mp4"
    with VideoWriter(video, 10, 128, 128) as writer:
        writer.append(frames(12, 4))
    with httpx.Client(base_url=default_gateway.http_url, timeout=TIMEOUT) as http:

        def upload(instruction: str) -> httpx.Response:
            return http.post(
                "/v1/videos:score",
                data={"instruction": instruction},
                files={"video": ("rollout.mp4", video.read_bytes(), "video/mp4")},
            )

        refused = upload(UNKNOWN)
        assert refused.status_code == 422 and PICK_PLACE in refused.json()["detail"]
        accepted = upload(PARAPHRASE)
        assert accepted.status_code == 200, accepted.text
        body = accepted.json()
        assert body["matched_task"] == PICK_PLACE and body["task_similarity"] > 0.9
