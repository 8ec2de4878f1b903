"""`sarm export`: the model repository layout, its manifest, parity of its ONNX files, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.encoders.registry import load_frame_encoder
from sarm.export.model_repo import ENCODER_MODEL, HEADS_MODEL, export_model_repository, read_manifest
from sarm.training.checkpoint import CheckpointError

runner = CliRunner()


def test_cpu_repository_layout_and_manifest(cpu_model_repo: Path) -> None:
    repo = cpu_model_repo
    manifest = read_manifest(repo).to_dict()
    assert manifest == json.loads((repo / "sarm_manifest.json").read_text())  # parsing loses nothing
    assert manifest["stage_names"] == ["reach", "grasp", "lift"] and manifest["image"] == {
        "height": 48,
        "width": 64,
        "resize": "exact",
    }
    assert manifest["tasks"] == [
        {"instruction": "", "stage_names": ["reach", "grasp", "lift"], "proportions": [0.5, 0.2, 0.3]}
    ]
    assert manifest["window"] == {
        "mode": "causal",
        "frames": 9,
        "max_rewind": 4,
        "stride_seconds": 1.0,
        "sequence_length": 13,
    }
    assert manifest["heads"] == ["sparse"] and manifest["state_dim"] == 0 and manifest["max_batch"] == 64
    assert manifest["frame_encoder"]["id"] == "efficientnet-lite0" and manifest["checkpoint"]["labels"] == "stage"
    for name in (ENCODER_MODEL, HEADS_MODEL):
        config = (repo / name / "config.pbtxt").read_text()
        assert 'backend: "python"' in config and "max_batch_size: 64" in config
        batching = "dynamic_batching { preferred_batch_size: [ 8, 16, 32, 64 ] max_queue_delay_microseconds: 500 }"
        assert batching in config
        assert "kind: KIND_CPU" in config
        assert (repo / name / "1" / "model.onnx").is_file() and (repo / name / "1" / "model.py").is_file()
    encoder_config = (repo / ENCODER_MODEL / "config.pbtxt").read_text()
    assert 'name: "images" data_type: TYPE_UINT8 dims: [ 48, 64, 3 ]' in encoder_config
    heads_config = (repo / HEADS_MODEL / "config.pbtxt").read_text()
    assert 'name: "frames" data_type: TYPE_FP32 dims: [ 13, 1, 1280 ]' in heads_config


def test_exported_encoder_matches_the_torch_encoder(cpu_model_repo: Path) -> None:
    repo = cpu_model_repo
    images = np.random.default_rng(1).integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(repo / ENCODER_MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = load_frame_encoder().encode_frames(images)
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=2e-4)


def test_gpu_repository_uses_tensorrt_plans(sarm_checkpoint: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    export_model_repository(sarm_checkpoint, repo, "gpu", image_size=(96, 128))
    config = (repo / HEADS_MODEL / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "kind: KIND_GPU" in config
    script = (repo / "build_engines.sh").read_text()
    assert "--onnx=sarm_frame_encoder/model.onnx --saveEngine=sarm_frame_encoder/1/model.plan --fp16" in script
    assert "--minShapes=images:1x96x128x3 --optShapes=images:16x96x128x3 --maxShapes=images:64x96x128x3" in script
    assert "lengths:64x1" in script


def test_tensorrt_engines_build_on_a_gpu(sarm_checkpoint: Path, tmp_path: Path) -> None:
    if shutil.which("trtexec") is None:
        pytest.skip("TensorRT (trtexec) cannot be installed on CPU machines; this runs where a GPU is lent")
    repo = tmp_path / "repo"
    export_model_repository(sarm_checkpoint, repo, "gpu")
    import subprocess

    subprocess.run([str(repo / "build_engines.sh")], check=True)
    assert (repo / ENCODER_MODEL / "1" / "model.plan").stat().st_size > 0


def test_export_refuses_an_encoder_mismatch_and_a_used_directory(sarm_checkpoint: Path, tmp_path: Path) -> None:
    stale = Path(shutil.copytree(sarm_checkpoint, tmp_path / "stale"))
    config = json.loads((stale / "config.json").read_text())
    config["frame_encoder"]["version"] = "0.0.1+000000000000.224squash"
    (stale / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="embeddings this encoder no longer gives"):
        export_model_repository(stale, tmp_path / "repo", "cpu")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    result = runner.invoke(app, ["export", str(sarm_checkpoint), "--out", str(tmp_path / "used")])
    assert result.exit_code == 2 and "is not empty" in result.output
    result = runner.invoke(app, ["export", str(sarm_checkpoint), "--out", str(tmp_path / "x"), "--image-size", "big"])
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.output


def test_a_replaced_onnx_file_is_refused(cpu_model_repo: Path, tmp_path: Path) -> None:
    from sarm.export.model_repo import onnx_path
    from sarm.scoring.backends import LocalBackend

    repo = Path(shutil.copytree(cpu_model_repo, tmp_path / "repo"))
    manifest = read_manifest(repo)
    assert onnx_path(repo, manifest, "heads") == repo / "sarm_heads" / "1" / "model.onnx"
    # Another model's heads (here: the encoder graph) dropped in place of this one's.
    shutil.copyfile(repo / "sarm_frame_encoder/1/model.onnx", repo / "sarm_heads/1/model.onnx")
    with pytest.raises(ValueError, match=r"does not match .*sarm_manifest\.json \(sha256 differs\): re-export"):
        LocalBackend(repo, manifest)
    result = runner.invoke(app, ["serve", "--model-repo", str(repo), "--grpc-port", "0"])
    assert result.exit_code == 2 and "sha256 differs" in result.output


def test_the_export_cache_follows_the_config_not_only_the_weights(sarm_checkpoint: Path, tmp_path: Path) -> None:
    """Editing config.json (here a task's instruction) with the same weights gives a fresh export, not the cached one
    that describes the old config."""
    from sarm.scoring.repository import repository_for

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(sarm_checkpoint, checkpoint)
    first = repository_for(checkpoint, tmp_path / "cache")
    assert repository_for(checkpoint, tmp_path / "cache") == first  # a cache hit
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["tasks"][0]["instruction"] = "lift the block"
    (checkpoint / "config.json").write_text(json.dumps(config))
    second = repository_for(checkpoint, tmp_path / "cache")
    assert second != first
    assert [t.instruction for t in read_manifest(second).tasks] == ["lift the block"]
    assert [t.instruction for t in read_manifest(first).tasks] == [""]
