"""The exported SARM repository served by the real tritonserver: readiness, parity with in-process ONNX
Runtime over gRPC and HTTP, dynamic batching, metrics, and the example client as a smoke test."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient

from sarm.export.model_repo import ENCODER_MODEL, HEADS_MODEL, read_manifest
from sarm.triton import TritonServer
from sarm.triton.client import infer_inputs

EXAMPLE_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "examples" / "triton_score_window.py"
RNG = np.random.default_rng(7)
HEADS_OUTPUTS = ["stage_probs", "tau", "progress", "confidence"]


@pytest.fixture(scope="module")
def triton(cpu_model_repo: Path) -> Iterator[TritonServer]:
    with TritonServer(cpu_model_repo) as server:
        yield server


def heads_inputs(batch: int) -> dict[str, np.ndarray]:
    return {
        "frames": RNG.normal(size=(batch, 13, 1, 1280)).astype(np.float32),
        "text": RNG.normal(size=(batch, 384)).astype(np.float32),
        "lengths": RNG.integers(9, 14, size=(batch, 1)).astype(np.int64),
    }


def local(repo: Path, model: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def grpc_infer(url: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    result = grpcclient.InferenceServerClient(url).infer(model, infer_inputs(inputs), client_timeout=30)
    return [result.as_numpy(name) for name in outputs]


def http_infer(url: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    client = httpclient.InferenceServerClient(url, network_timeout=30)
    try:
        result = client.infer(model, infer_inputs(inputs, httpclient.InferInput))
        return [result.as_numpy(name) for name in outputs]
    finally:
        client.close()


def test_both_models_load_and_report_ready(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.endpoints.grpc)
    assert client.is_server_ready()
    for model in (ENCODER_MODEL, HEADS_MODEL):
        assert client.is_model_ready(model), model
    config = client.get_model_config(HEADS_MODEL, as_json=True)["config"]
    assert int(config["max_batch_size"]) == 64 and "dynamic_batching" in config


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_triton_matches_in_process_onnxruntime(triton: TritonServer, cpu_model_repo: Path, transport: str) -> None:
    infer = grpc_infer if transport == "grpc" else http_infer
    url = triton.endpoints.grpc if transport == "grpc" else triton.endpoints.http
    manifest = read_manifest(cpu_model_repo)
    images = RNG.integers(0, 256, size=(3, *manifest.image_size, 3), dtype=np.uint8)
    served = infer(url, ENCODER_MODEL, {"images": images}, ["embeddings"])[0]
    np.testing.assert_allclose(served, local(cpu_model_repo, ENCODER_MODEL, {"images": images})[0], atol=1e-5)
    inputs = heads_inputs(5)
    for got, want in zip(
        infer(url, HEADS_MODEL, inputs, HEADS_OUTPUTS), local(cpu_model_repo, HEADS_MODEL, inputs), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_concurrent_requests_are_batched(triton: TritonServer) -> None:
    def counts() -> tuple[int, int]:
        stats = grpcclient.InferenceServerClient(triton.endpoints.grpc).get_inference_statistics(
            HEADS_MODEL, as_json=True
        )["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    async def burst(n: int) -> None:
        client = grpcaio.InferenceServerClient(triton.endpoints.grpc)
        try:
            calls = [client.infer(HEADS_MODEL, infer_inputs(heads_inputs(1)), client_timeout=30) for _ in range(n)]
            results = await asyncio.gather(*calls)
            assert all(r.as_numpy("progress").shape == (1, 1) for r in results)
        finally:
            await client.close()

    before = counts()
    asyncio.run(burst(32))
    inferences, executions = (after - prior for after, prior in zip(counts(), before, strict=True))
    assert inferences == 32
    assert executions < inferences, f"{executions} executions for {inferences} requests: no batching happened"


def test_metrics_endpoint_answers(triton: TritonServer) -> None:
    with urllib.request.urlopen(f"http://{triton.endpoints.metrics}/metrics", timeout=10) as response:
        body = response.read().decode()
    assert "nv_inference_request_success" in body and HEADS_MODEL in body


def test_example_client_scores_a_window(triton: TritonServer, cpu_model_repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE_CLIENT), "--url", triton.endpoints.grpc, "--repo", str(cpu_model_repo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stage ") and "progress" in result.stdout
