"""Training, checkpoints, scoring and evaluation on a small embedded dataset (real encoders, real video)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.annotations import AnnotationError
from sarm.data.lerobot import LeRobotDataset
from sarm.embeddings import embed_dataset, load_embeddings, store_path
from sarm.encoders.base import EncoderMismatchError
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.evaluation import evaluate, success_auroc, value_order_correlation
from sarm.scoring import score_embeddings
from sarm.training.checkpoint import CheckpointError, load_checkpoint
from sarm.training.samples import WindowSampler, episode_arrays, label_vocabulary
from sarm.training.trainer import TrainConfig, evaluate_batch, train, validation_batch
from tests.conftest import synthetic_episode, write_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embedded") / "dataset"
    ds = write_dataset(root, [synthetic_episode(24 + 3 * seed, seed) for seed in range(6)])
    embed_dataset(ds, load_frame_encoder(), load_text_encoder())
    return root


@pytest.fixture
def embedded(embedded_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded_template, tmp_path / "embedded"))


def small_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    settings: dict = {"steps": 60, "batch_size": 16, "eval_every": 30, "val_fraction": 0.34, "seed": 3} | kw
    return TrainConfig(datasets=[data], out=out, **settings)


def test_training_lowers_the_validation_loss(embedded: Path, tmp_path: Path) -> None:
    result = train(small_config(embedded, tmp_path / "ckpt", steps=120, eval_every=40))
    model, info = load_checkpoint(tmp_path / "ckpt")
    ds = LeRobotDataset(embedded)
    emb = load_embeddings(ds)
    vocabulary, _ = label_vocabulary([ds], "stage")
    sampler = WindowSampler(episode_arrays(ds, emb, vocabulary, "stage"), emb.distractors)
    batch = validation_batch(sampler, np.random.default_rng(0))
    torch.manual_seed(3)
    untrained = evaluate_batch(type(model)(info.model), batch)
    trained = evaluate_batch(model, batch)
    assert trained["val_loss"] < 0.5 * untrained["val_loss"]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert info.model.stage_names == ["reach", "grasp", "lift"] and info.labels == "stage"
    assert info.frame_encoder["id"] == "efficientnet-lite0" and info.training["steps_done"] == 120
    assert result.steps_per_s > 0 and result.samples_per_s == pytest.approx(result.steps_per_s * 16)


def test_checkpoint_round_trip_gives_identical_outputs(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "ckpt"))
    first, _ = load_checkpoint(tmp_path / "ckpt")
    second, _ = load_checkpoint(tmp_path / "ckpt")
    emb = load_embeddings(LeRobotDataset(embedded))
    a = score_embeddings(first, emb.frames[0], emb.text["pick up the cube"], stride=10)
    b = score_embeddings(second, emb.frames[0], emb.text["pick up the cube"], stride=10)
    np.testing.assert_array_equal(a.progress, b.progress)
    np.testing.assert_array_equal(a.stage_probs, b.stage_probs)
    assert a.progress.shape == (24,) and np.all((a.progress >= 0) & (a.progress <= 1))


def test_resume_continues_where_the_run_stopped(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "ckpt", steps=30))
    resumed = train(small_config(embedded, tmp_path / "ckpt", steps=60, resume=True))
    assert [h["step"] for h in resumed.history] == [30, 60]
    with pytest.raises(CheckpointError, match="no trainer state"):
        train(small_config(embedded, tmp_path / "empty", resume=True))


def test_training_refuses_unembedded_data_and_undeclared_stages(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sarm embed"):
        train(small_config(dataset, tmp_path / "a"))
    (dataset / "meta/temporal_proportions_sparse.json").write_text(json.dumps({"reach": 0.5, "grasp": 0.5}))
    with pytest.raises(AnnotationError, match=r"stage 'lift' is not in the vocabulary \['reach', 'grasp'\]"):
        label_vocabulary([LeRobotDataset(dataset)], "stage")


def test_eval_refuses_a_checkpoint_of_another_encoder(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "ckpt", steps=30))
    config = json.loads((tmp_path / "ckpt/config.json").read_text())
    config["frame_encoder"]["version"] = "9.9.9+000000000000"
    (tmp_path / "ckpt/config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderMismatchError, match="re-embed the dataset with the checkpoint's encoder"):
        evaluate([tmp_path / "ckpt"], embedded, tmp_path / "report")


def test_eval_cli_writes_metrics_for_each_checkpoint(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "sarm"))
    train(small_config(embedded, tmp_path / "baseline", labels="frame-index"))
    result = runner.invoke(
        app, ["eval", str(tmp_path / "sarm"), str(tmp_path / "baseline"), "--data", str(embedded),
              "--out", str(tmp_path / "report")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())["checkpoints"]
    assert set(metrics) == {"sarm", "baseline"}
    for m in metrics.values():
        assert {"voc_mean", "demo_mse", "stage_accuracy", "success_auroc"} <= set(m)
        assert m["voc_episodes"] == 3 and m["demo_mse_episodes"] == 6
    assert metrics["baseline"]["stage_accuracy"] is None and 0 <= metrics["sarm"]["stage_accuracy"] <= 1
    assert (tmp_path / "report/report.md").read_text().count("| sarm |") == 2
    assert list((tmp_path / "report").glob("episode_*_clean.png"))


def test_train_cli_reports_bad_input_without_a_traceback(dataset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(dataset), "--out", str(tmp_path / "c"), "--steps", "5"])
    assert result.exit_code == 2 and "sarm embed" in result.output
    result = runner.invoke(app, ["train", str(dataset), "--out", str(tmp_path / "c"), "--labels", "time"])
    assert result.exit_code == 2 and "stage or frame-index" in result.output
    assert not store_path(dataset, "efficientnet-lite0").exists()


def test_success_auroc_and_voc_hand_cases() -> None:
    success = np.array([True, True, False, False])
    assert success_auroc(np.array([0.9, 0.8, 0.2, 0.1]), success) == 1.0
    assert success_auroc(np.array([0.1, 0.8, 0.2, 0.9]), success) == 0.25
    assert success_auroc(np.array([0.5, 0.5, 0.5, 0.5]), success) == 0.5
    assert success_auroc(np.array([0.5, 0.6]), np.array([True, True])) is None
    assert value_order_correlation(np.linspace(0, 1, 10)) == pytest.approx(1.0)
    assert value_order_correlation(np.linspace(1, 0, 10)) == pytest.approx(-1.0)
    assert value_order_correlation(np.full(10, 0.3)) == 0.0
