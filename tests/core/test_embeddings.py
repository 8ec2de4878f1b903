"""`sarm embed`: every frame encoded once, stored beside the dataset, resumable, encoder-checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.lerobot import LeRobotDataset
from sarm.embeddings import DISTRACTORS, embed_dataset, load_embeddings, require_same_encoders, store_path
from sarm.encoders.base import EncoderMismatchError, FrameEncoder, TextEncoder
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.export.onnx_encoder import OnnxFrameEncoder, float_graphs
from tests.conftest import CAMERA


@pytest.fixture(scope="module")
def frame_encoder() -> FrameEncoder:
    return load_frame_encoder()


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    return load_text_encoder()


def test_embeddings_match_direct_encoding_and_resume(
    dataset: Path, frame_encoder: FrameEncoder, text_encoder: TextEncoder
) -> None:
    ds = LeRobotDataset(dataset)
    calls: list[tuple[int, int]] = []
    store = embed_dataset(ds, frame_encoder, text_encoder, on_episode=lambda e, n: calls.append((e, n)))
    assert calls == [(0, 30), (1, 21), (2, 44)]
    loaded = load_embeddings(ds)
    assert loaded.frames[1].shape == (21, 1, frame_encoder.dim)
    np.testing.assert_allclose(loaded.frames[1][:, 0], frame_encoder.encode_frames(ds.frames(1)), atol=1e-5)
    np.testing.assert_allclose(loaded.text["pick up the cube"], text_encoder.encode(["pick up the cube"])[0], atol=1e-6)
    assert loaded.distractors.shape == (len(DISTRACTORS), text_encoder.dim)

    # Resume: only the missing episode is encoded again.
    (store / CAMERA / "episode_000001.npy").unlink()
    calls.clear()
    embed_dataset(ds, frame_encoder, text_encoder, on_episode=lambda e, n: calls.append((e, n)))
    assert calls == [(0, 0), (1, 21), (2, 0)]


def test_missing_embeddings_name_the_command(dataset: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sarm embed"):
        load_embeddings(LeRobotDataset(dataset))


def test_other_encoder_versions_are_refused(
    dataset: Path, frame_encoder: FrameEncoder, text_encoder: TextEncoder
) -> None:
    ds = LeRobotDataset(dataset)
    store = embed_dataset(ds, frame_encoder, text_encoder)
    loaded = load_embeddings(ds)
    require_same_encoders(loaded, loaded.frame_encoder, loaded.text_encoder)
    stale = dict(loaded.frame_encoder, version="0.0.0+000000000000")
    with pytest.raises(EncoderMismatchError, match="re-embed the dataset"):
        require_same_encoders(loaded, stale, loaded.text_encoder)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["frame_encoder"]["version"] = "0.0.0+000000000000"
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EncoderMismatchError, match="delete it to re-embed"):
        embed_dataset(ds, frame_encoder, text_encoder)


def test_embed_cli_refuses_an_invalid_dataset(dataset: Path) -> None:
    (dataset / "meta/temporal_proportions_sparse.json").unlink()
    result = CliRunner().invoke(app, ["embed", str(dataset)])
    assert result.exit_code == 2 and "temporal_proportions_sparse.json is missing" in result.output
    assert not store_path(dataset, "efficientnet-lite0").exists()


def test_onnx_runtime_embeddings_match_pytorch(
    dataset: Path, frame_encoder: FrameEncoder, text_encoder: TextEncoder, tmp_path: Path
) -> None:
    """`sarm embed`'s default engine: the exported graph in ONNX Runtime, within the export parity tolerance, and
    recorded exactly as the PyTorch encoder is (a float checkpoint reads either)."""
    ds = LeRobotDataset(dataset)
    onnx_encoder = OnnxFrameEncoder(
        frame_encoder.encoder_id,
        frame_encoder.version,
        frame_encoder.dim,
        float_graphs(frame_encoder, tmp_path / "cache"),
    )
    embed_dataset(ds, onnx_encoder, text_encoder)
    loaded = load_embeddings(ds)
    for episode in (0, 2):
        want = frame_encoder.encode_frames(ds.frames(episode))
        np.testing.assert_allclose(loaded.frames[episode][:, 0], want, atol=2e-4)
    assert loaded.frame_encoder == {
        "id": frame_encoder.encoder_id,
        "version": frame_encoder.version,
        "dim": frame_encoder.dim,
    }
    assert list((tmp_path / "cache").rglob("*.onnx")) == [
        tmp_path / "cache" / f"efficientnet-lite0@{frame_encoder.version}" / "32x48.onnx"
    ]


def test_int8_embeddings_are_recorded_and_a_float_checkpoint_refuses_them(dataset: Path, tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, ["embed", str(dataset), "--quantize", "int8", *cache])
    assert result.exit_code == 0, result.output
    assert "with the INT8 onnxruntime encoder" in result.output
    loaded = load_embeddings(LeRobotDataset(dataset))
    assert loaded.frame_encoder["quantization"] == {"mode": "int8-qdq-per-channel", "calibrated_on": "embedded dataset"}
    require_same_encoders(loaded, loaded.frame_encoder, loaded.text_encoder)  # an INT8-trained checkpoint reads them
    float_checkpoint = {k: loaded.frame_encoder[k] for k in ("id", "version", "dim")}
    with pytest.raises(
        EncoderMismatchError,
        match="embedded with the int8-qdq-per-channel frame encoder but the "
        "checkpoint expects the float one: re-embed the dataset",
    ):
        require_same_encoders(loaded, float_checkpoint, loaded.text_encoder)
    # Float embeddings never land beside INT8 ones in the same store.
    result = CliRunner().invoke(app, ["embed", str(dataset), *cache])
    assert result.exit_code == 2 and "delete it to re-embed" in result.output


def test_embed_with_an_exported_repository_checks_it_fits(dataset: Path, cpu_model_repo: Path) -> None:
    repo = ["--encoder-repo", str(cpu_model_repo)]
    result = CliRunner().invoke(app, ["embed", str(dataset), *repo, "--quantize", "int8"])
    assert result.exit_code == 2 and "holds a float frame encoder: drop --quantize int8" in result.output
    result = CliRunner().invoke(app, ["embed", str(dataset), *repo])
    assert result.exit_code == 2 and "takes 48x64 images, the dataset has 32x48" in result.output
    result = CliRunner().invoke(app, ["embed", str(dataset), "--engine", "torch", "--quantize", "int8"])
    assert result.exit_code == 2 and "drop --engine torch" in result.output
