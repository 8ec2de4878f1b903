"""The gateway's triton backend against the real tritonserver: the same scores as the local backend, and a
clear UNAVAILABLE when Triton is gone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sarm.encoders.base import TextEncoder
from sarm.triton import TritonServer
from sarm.triton.server import free_ports
from sarm_client import FrameScore, SarmClient, Timeout
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.client_harness import target
from tests.gateway_harness import INSTRUCTION, TIMEOUT, RunningGateway, episode_frames, raw, window_request

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def triton(cpu_model_repo: Path) -> Iterator[TritonServer]:
    with TritonServer(cpu_model_repo) as server:
        yield server


def test_triton_backend_scores_like_the_local_backend(
    triton: TritonServer, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    frames = episode_frames(20, seed=11)
    curves = []
    for backend, extra in (("local", {}), ("triton", {"triton_url": triton.endpoints.grpc})):
        running = RunningGateway(cpu_model_repo, text_encoder, backend=backend, **extra)
        try:
            window = running.stub.ScoreWindow(window_request([raw(f) for f in frames[:9]]), timeout=TIMEOUT).score
            curve = list(
                running.stub.ScoreFrames(
                    pb.ScoreFramesRequest(instruction=INSTRUCTION, frames=[raw(f) for f in frames], fps=4),
                    timeout=TIMEOUT,
                )
            )
            info = running.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT)
        finally:
            running.close()
        assert info.backend == backend
        curves.append(([window.progress, window.tau, *window.stage_probs], [s.score.progress for s in curve]))
    (local_window, local_curve), (triton_window, triton_curve) = curves
    np.testing.assert_allclose(triton_window, local_window, atol=1e-5)
    np.testing.assert_allclose(triton_curve, local_curve, atol=1e-5)


def test_triton_gone_is_unavailable_and_not_serving_and_service_resumes_when_it_returns(
    cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    grpc_port, http_port, metrics_port = free_ports(3)
    ports = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port}
    url = f"127.0.0.1:{grpc_port}"
    running = RunningGateway(cpu_model_repo, text_encoder, backend="triton", triton_url=url, health_interval_s=0.2)
    health = health_pb2_grpc.HealthStub(running.channel).Check
    try:
        assert health(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:  # no Triton yet
            running.stub.ScoreWindow(window_request([raw(f) for f in episode_frames(9, seed=12)]), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"Triton at {url}" in caught.value.details()
        with TritonServer(cpu_model_repo, **ports):
            deadline = time.monotonic() + TIMEOUT
            while True:  # the client reconnects with backoff: the first calls may still fail
                try:
                    request = window_request([raw(f) for f in episode_frames(9, seed=12)])
                    assert running.stub.ScoreWindow(request, timeout=TIMEOUT).score.model_version
                    break
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                    time.sleep(0.2)
            while health(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status != SERVING:
                assert time.monotonic() < deadline, "health never turned SERVING"
                time.sleep(0.1)
        deadline = time.monotonic() + TIMEOUT
        while health(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status != NOT_SERVING:  # Triton stopped
            assert time.monotonic() < deadline, "health still SERVING without Triton"
            time.sleep(0.1)
    finally:
        running.close()


def test_sarm_client_streams_through_the_triton_backend_like_the_local_one(
    triton: TritonServer, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    frames = episode_frames(12, seed=13)
    curves = []
    backends: list[tuple[str, dict[str, Any]]] = [("local", {}), ("triton", {"triton_url": triton.endpoints.grpc})]
    for backend, extra in backends:
        running = RunningGateway(cpu_model_repo, text_encoder, backend=backend, **extra)
        try:
            with SarmClient(target(running), timeout=Timeout(call=TIMEOUT, step=TIMEOUT)) as client:
                assert client.info().backend == backend
                streamed: list[FrameScore] = []
                with client.stream(INSTRUCTION, fps=4) as episode:
                    for frame in frames:
                        streamed += episode.step(frame)
        finally:
            running.close()
        assert [s.frame_index for s in streamed] == list(range(12))
        curves.append([s.score.progress for s in streamed])
    np.testing.assert_allclose(curves[1], curves[0], atol=1e-5)
