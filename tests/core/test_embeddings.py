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
