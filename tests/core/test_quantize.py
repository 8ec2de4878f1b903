"""`sarm export --quantize int8 --calibration DATASET`: the INT8 frame encoder, its manifest record, its accuracy,
and that the real tritonserver and the real gateway load the repository and answer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from sarm.cli import app
from sarm.encoders.base import TextEncoder
from sarm.export.model_repo import ENCODER_MODEL, HEADS_MODEL, onnx_path, read_manifest
from sarm.export.quantize import MODE, calibration_frames
from sarm.triton import TritonServer
from sarm.triton.client import infer_inputs
from tests.conftest import CAMERA, synthetic_episode, write_dataset
from tests.gateway_harness import RunningGateway, raw, window_request

runner = CliRunner()


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset at the test checkpoint's 48x64: the synthetic episodes padded by 8 px on every side."""
    episodes = []
    for seed, length in enumerate((30, 21, 44)):
        ep = synthetic_episode(length, seed)
        frames = np.pad(ep.frames[CAMERA], ((0, 0), (8, 8), (8, 8), (0, 0)), mode="edge")
        episodes.append(dataclasses.replace(ep, frames={CAMERA: frames}))
    return write_dataset(tmp_path_factory.mktemp("calib") / "calib", episodes).root


@pytest.fixture(scope="module")
def int8_repo(sarm_checkpoint: Path, calibration: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("int8") / "repo"
    result = runner.invoke(
        app,
        [
            "export",
            str(sarm_checkpoint),
            "--out",
            str(repo),
            "--target",
            "cpu",
            "--quantize",
            "int8",
            "--calibration",
            str(calibration),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "frame encoder INT8, calibrated on 95 frames of 3 episodes" in result.output
    return repo


def test_manifest_records_the_quantization(int8_repo: Path, calibration: Path) -> None:
    raw_manifest = json.loads((int8_repo / "sarm_manifest.json").read_text())
    record = raw_manifest["frame_encoder"]["quantization"]
    assert record["mode"] == MODE == "int8-qdq-per-channel"
    assert record["calibration"]["datasets"] == [str(calibration)] and record["calibration"]["frames"] == 95
    assert read_manifest(int8_repo).to_dict() == raw_manifest  # the typed manifest keeps the record
    graph = onnx.load(str(int8_repo / ENCODER_MODEL / "1" / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") > 40 and ops.count("DequantizeLinear") > 90
    # Per-channel: the weight scales of a Conv are vectors, not scalars.
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_scale")}
    assert any(s.ndim == 1 and s.size > 1 for s in scales.values())
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_int8_embeddings_stay_close_to_float(int8_repo: Path, cpu_model_repo: Path) -> None:
    frames = np.pad(synthetic_episode(40, 7).frames[CAMERA], ((0, 0), (8, 8), (8, 8), (0, 0)), mode="edge")
    want = session(cpu_model_repo / ENCODER_MODEL / "1" / "model.onnx").run(None, {"images": frames})[0]
    got = session(int8_repo / ENCODER_MODEL / "1" / "model.onnx").run(None, {"images": frames})[0]
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    # These flat synthetic frames are a hard case (0.93-0.97); on Meta-World frames the mean is 0.995
    # (bench/int8_accuracy.py, which measures what matters: progress against the float model).
    assert cosine.min() > 0.9, cosine.min()
    assert not np.allclose(got, want, atol=1e-3), "the INT8 graph should not compute the float numbers"


def test_refusals_name_the_fix(sarm_checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    export = ["export", str(sarm_checkpoint), "--out"]
    result = runner.invoke(app, [*export, str(tmp_path / "a"), "--quantize", "int8"])
    assert result.exit_code == 2 and "go together" in result.output
    result = runner.invoke(app, [*export, str(tmp_path / "b"), "--quantize", "int4", "--calibration", str(dataset)])
    assert result.exit_code == 2 and "--quantize must be int8" in result.output
    # The conftest dataset is 32x48; the checkpoint's encoder takes 48x64.
    result = runner.invoke(app, [*export, str(tmp_path / "c"), "--quantize", "int8", "--calibration", str(dataset)])
    assert result.exit_code == 2 and "32x48 frames but the encoder takes 48x64" in result.output
    gpu = [*export, str(tmp_path / "d"), "--target", "gpu", "--quantize", "int8", "--calibration", str(dataset)]
    result = runner.invoke(app, gpu)
    assert result.exit_code == 2 and "is for --target cpu" in result.output
    result = runner.invoke(
        app, [*export, str(tmp_path / "e"), "--quantize", "int8", "--calibration", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 2 and "is not a LeRobot dataset" in result.output


def test_calibration_frames_spread_over_episodes(calibration: Path) -> None:
    picked = calibration_frames([calibration], 12, image_size=(48, 64))
    assert picked.frames.shape == (12, 48, 64, 3) and picked.episodes == 3
    assert picked.describe()["frames_sha256"] == calibration_frames([calibration], 12).describe()["frames_sha256"]


@pytest.fixture(scope="module")
def triton(int8_repo: Path) -> Iterator[TritonServer]:
    with TritonServer(int8_repo) as server:
        yield server


def test_tritonserver_serves_the_int8_repository(triton: TritonServer, int8_repo: Path) -> None:
    client = grpcclient.InferenceServerClient(triton.endpoints.grpc)
    assert client.is_model_ready(ENCODER_MODEL) and client.is_model_ready(HEADS_MODEL)
    images = np.random.default_rng(3).integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)
    served = client.infer(ENCODER_MODEL, infer_inputs({"images": images}), client_timeout=30).as_numpy("embeddings")
    manifest = read_manifest(int8_repo)
    local = session(onnx_path(int8_repo, manifest, "encoder")).run(None, {"images": images})[0]
    np.testing.assert_allclose(served, local, atol=1e-5)


def test_the_gateway_loads_the_int8_repository_and_scores(int8_repo: Path, text_encoder: TextEncoder) -> None:
    gateway = RunningGateway(int8_repo, text_encoder)
    try:
        from sarm_gateway.v1 import sarm_pb2 as pb

        info = gateway.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert info.frame_encoder.id == "efficientnet-lite0"
        frames = np.random.default_rng(4).integers(0, 256, size=(9, 48, 64, 3), dtype=np.uint8)
        reply = gateway.stub.ScoreWindow(window_request([raw(f) for f in frames]), timeout=30)
        assert 0.0 <= reply.score.progress <= 1.0
    finally:
        gateway.close()
