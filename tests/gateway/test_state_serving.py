"""Our own SARM with joint state, served end to end: the exported heads take raw state (z-scored inside by the
checkpoint's statistics) and match PyTorch; ScoreFrames, a live stream and `sarm rabc` all read the state and agree;
a state model asked to score frames alone answers INVALID_ARGUMENT, not zeros."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.lerobot import LeRobotDataset
from sarm.encoders.base import TextEncoder
from sarm.export.model_repo import export_model_repository
from sarm.manifest import read_manifest
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import load_checkpoint
from sarm.training.scaffold import untrained_checkpoint
from sarm_gateway.v1 import sarm_pb2 as pb
from tests.conftest import CAMERA
from tests.gateway_harness import TIMEOUT, RunningGateway, raw

STATE_DIM = 5  # synthetic_episode's state width
FPS = 10.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state-ckpt") / "ckpt"
    return untrained_checkpoint(path, ["reach", "grasp", "lift"], [0.5, 0.2, 0.3], (32, 48), state_dim=STATE_DIM)


@pytest.fixture(scope="module")
def repo(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("state-repo") / "repo"
    export_model_repository(checkpoint, out, "cpu")
    return out


@pytest.fixture(scope="module")
def served(repo: Path, text_encoder: TextEncoder) -> Iterator[RunningGateway]:
    running = RunningGateway(repo, text_encoder)
    yield running
    running.close()


def test_the_manifest_and_heads_graph_take_state(repo: Path, checkpoint: Path) -> None:
    manifest = read_manifest(repo)
    assert manifest.state_dim == STATE_DIM and manifest.state_key == "observation.state"
    assert manifest.heads_inputs == ("frames", "text", "lengths", "state")
    session = ort.InferenceSession(str(repo / manifest.onnx["heads"]), providers=["CPUExecutionProvider"])
    model, _ = load_checkpoint(checkpoint)
    config, rng = model.config, np.random.default_rng(0)
    frames = rng.normal(size=(3, config.sequence_length, 1, config.frame_dim)).astype(np.float32)
    text = rng.normal(size=(3, config.text_dim)).astype(np.float32)
    lengths = np.array([[9], [10], [13]], np.int64)
    state = rng.normal(size=(3, config.sequence_length, STATE_DIM)).astype(np.float32) * 3
    onnx = session.run(None, {"frames": frames, "text": text, "lengths": lengths, "state": state})
    with torch.no_grad():
        p = model.eval().predict(*(torch.from_numpy(a) for a in (frames, text, lengths[:, 0], state)))
    np.testing.assert_allclose(onnx[2][:, 0], p.progress.numpy(), atol=1e-5)
    np.testing.assert_allclose(onnx[0], p.stage_probs.numpy(), atol=1e-5)


def scores_of(messages: list[pb.FrameScore]) -> np.ndarray:
    return np.array([m.score.progress for m in messages])


def test_score_frames_and_a_stream_read_the_state(
    served: RunningGateway, dataset: Path, checkpoint: Path, repo: Path
) -> None:
    ds = LeRobotDataset(dataset)
    frames, state = ds.frames(0, CAMERA), np.asarray(ds.column(0, "observation.state"), np.float32)
    task = ds.tasks[0]

    def score_frames(rows: np.ndarray | None) -> list[pb.FrameScore]:
        request = pb.ScoreFramesRequest(
            instruction=task, frames=[raw(f) for f in frames], fps=FPS, state=[] if rows is None else rows.ravel()
        )
        return list(served.stub.ScoreFrames(request, timeout=TIMEOUT))

    curve = scores_of(score_frames(state))
    # The reference: PyTorch on the served encoder's embeddings, the same causal windows and the raw state.
    manifest = read_manifest(repo)
    encoder = ort.InferenceSession(str(repo / manifest.onnx["encoder"]), providers=["CPUExecutionProvider"])
    embeddings = encoder.run(None, {"images": frames})[0]
    model, _ = load_checkpoint(checkpoint)
    text = np.asarray(served.gateway.engine.text_encoder.encode([task])[0], np.float32)
    stride = manifest.window.stride(FPS)
    reference = score_embeddings(model, embeddings, text, stride, state=state).progress
    np.testing.assert_allclose(curve, reference, atol=1e-4)
    assert np.abs(scores_of(score_frames(state[::-1].copy())) - curve).max() > 1e-3  # the state matters

    def stream() -> Iterator[pb.StreamEpisodeRequest]:
        yield pb.StreamEpisodeRequest(open=pb.EpisodeOpen(instruction=task, fps=FPS))
        for t in range(0, len(frames), 4):  # several time steps per message, their state time-major
            yield pb.StreamEpisodeRequest(
                step=pb.FrameStep(frames=[raw(f) for f in frames[t : t + 4]], state=state[t : t + 4].ravel())
            )

    live = [s for response in served.stub.StreamEpisode(stream(), timeout=TIMEOUT) for s in response.scores]
    np.testing.assert_allclose(scores_of(live), curve, atol=1e-6)

    with pytest.raises(grpc.RpcError) as error:
        score_frames(None)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "joint state" in (error.value.details() or "")


def test_rabc_labels_a_dataset_with_its_state(
    dataset: Path, checkpoint: Path, text_encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SARM_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        app, ["rabc", str(dataset), "--checkpoint", str(checkpoint), "--chunk-size", "5", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "o" / "sarm_progress.parquet")
    ds = LeRobotDataset(dataset)
    episode = table.filter(pc.equal(table.column("episode_index"), 0)).column("progress_sparse").to_numpy()
    repo = sorted((tmp_path / "cache" / "repos").iterdir())[0]
    manifest = read_manifest(repo)
    encoder = ort.InferenceSession(str(repo / manifest.onnx["encoder"]), providers=["CPUExecutionProvider"])
    embeddings = encoder.run(None, {"images": ds.frames(0, CAMERA)})[0]
    model, _ = load_checkpoint(checkpoint)
    text = np.asarray(text_encoder.encode([ds.tasks[0]])[0], np.float32)
    state = np.asarray(ds.column(0, "observation.state"), np.float32)
    reference = score_embeddings(model, embeddings, text, manifest.window.stride(ds.fps), state=state).progress
    np.testing.assert_allclose(episode, reference, atol=1e-4)
