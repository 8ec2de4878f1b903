"""Encoders that need local weights (CLIP) are pointed at them, never downloaded: a model trained on CLIP embeddings
labels a dataset without stored embeddings once `--encoder-path` (or SARM_ENCODER_PATH) says where CLIP is, and says
so in one line when it does not know."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.encoders.weights import ENCODER_PATH_ENV, EncoderWeightsMissing, local_weights
from sarm.training.scaffold import untrained_checkpoint
from tests.conftest import save_tiny_clip

runner = CliRunner()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENCODER_PATH_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty local cache: no CLIP there
    monkeypatch.setenv("SARM_CACHE", str(tmp_path / "sarm-cache"))


def test_encoders_with_wheels_need_no_path(clean_env: None) -> None:
    assert local_weights("minilm-l6") == {} and local_weights("efficientnet-lite0", "/nowhere") == {}


def test_a_clip_path_comes_from_the_environment_before_the_record(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tiny_clip(tmp_path / "clip")
    assert local_weights("clip-vit-b32", str(tmp_path / "clip")) == {"model_path": str((tmp_path / "clip").resolve())}
    monkeypatch.setenv(ENCODER_PATH_ENV, str(tmp_path / "moved"))
    with pytest.raises(EncoderWeightsMissing, match=ENCODER_PATH_ENV):
        local_weights("clip-vit-b32", str(tmp_path / "clip"))  # the override wins, and it is wrong


def test_a_missing_clip_is_one_line(clean_env: None) -> None:
    with pytest.raises(EncoderWeightsMissing) as error:
        local_weights("clip-vit-b32")  # the Hub id, which is not in the (empty) local cache
    message = str(error.value)
    assert "openai/clip-vit-base-patch32" in message and ENCODER_PATH_ENV in message and "\n" not in message


def test_rabc_with_a_clip_model_is_told_where_clip_is(clean_env: None, dataset: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    save_tiny_clip(clip)
    encoders = (
        load_frame_encoder("clip-vit-b32", model_path=str(clip)),
        load_text_encoder("clip-vit-b32", model_path=str(clip)),
    )
    checkpoint = untrained_checkpoint(
        tmp_path / "ckpt", ["reach", "grasp", "lift"], [0.5, 0.2, 0.3], (32, 48), encoders=encoders
    )
    command = [
        "rabc",
        str(dataset),
        "--checkpoint",
        str(checkpoint),
        "--chunk-size",
        "5",
        "--out",
        str(tmp_path / "out"),
    ]
    lost = runner.invoke(app, command)
    assert lost.exit_code == 2 and "Traceback" not in lost.output, lost.output
    assert ENCODER_PATH_ENV in lost.output and "--encoder-path" in lost.output
    told = runner.invoke(app, [*command, "--encoder-path", str(clip)])
    assert told.exit_code == 0, told.output
    progress = pq.read_table(tmp_path / "out" / "sarm_progress.parquet")
    assert progress.num_rows > 0 and progress.column("progress_sparse").null_count == 0
