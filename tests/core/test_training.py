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
from sarm.data.annotations import AnnotationError, EpisodeAnnotation, Subtask
from sarm.data.episode import EpisodeData
from sarm.data.lerobot import LeRobotDataset
from sarm.embeddings import embed_dataset, load_embeddings, store_path
from sarm.encoders.base import EncoderMismatchError
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.evaluation import InSampleError, evaluate, success_auroc, value_order_correlation
from sarm.scoring.pytorch import score_embeddings
from sarm.training.checkpoint import CheckpointError, load_checkpoint
from sarm.training.samples import WindowSampler, episode_arrays, label_vocabulary
from sarm.training.trainer import TrainConfig, evaluate_batch, train, validation_batch
from tests.conftest import CAMERA, synthetic_episode, write_dataset, write_embedded

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embedded") / "dataset"
    write_embedded(root, [synthetic_episode(24 + 3 * seed, seed) for seed in range(6)])
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
        evaluate([tmp_path / "ckpt"], embedded, tmp_path / "report", allow_in_sample=True)


def staged_episode(length: int, reach_share: float, seed: int) -> EpisodeData:
    """An episode whose frames show the stage (one colour each) and the progress within it (a bar), with
    a reach stage of `reach_share` of the episode: durations vary, so t / T is not the true progress."""
    ends = [round(length * reach_share), round(length * (reach_share + (1 - reach_share) / 2)), length]
    starts = [0, *ends[:-1]]
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    frames = np.full((length, 32, 48, 3), 30, np.uint8)
    for k, (s, e) in enumerate(zip(starts, ends, strict=True)):
        for t in range(s, e):
            frames[t, :12] = colours[k]
            column = int((t - s) / max(e - s - 1, 1) * 40)
            frames[t, 16:28, column : column + 8] = 230
    ep = synthetic_episode(length, seed)
    ep.frames = {CAMERA: frames}
    subtasks = tuple(Subtask(n, s, e) for n, s, e in zip(("reach", "grasp", "lift"), starts, ends, strict=True))
    ep.annotations = {"sparse": EpisodeAnnotation(subtasks)}
    return ep


@pytest.fixture(scope="module")
def staged_splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Training and held-out demos (different episodes) whose stage durations vary widely."""
    root = tmp_path_factory.mktemp("staged")
    shares = (0.15, 0.7, 0.3, 0.55, 0.2, 0.65, 0.4, 0.1)
    train_ds = write_dataset(root / "train", [staged_episode(30 + 2 * i, s, i) for i, s in enumerate(shares)])
    held = write_dataset(
        root / "heldout", [staged_episode(33 + 3 * i, s, 50 + i) for i, s in enumerate((0.12, 0.6, 0.35, 0.68))]
    )
    frame, text = load_frame_encoder(), load_text_encoder()
    for ds in (train_ds, held):
        embed_dataset(ds, frame, text)
    return train_ds.root, held.root


def test_eval_on_held_out_demos_sarm_beats_the_frame_index_baseline(
    staged_splits: tuple[Path, Path], tmp_path: Path
) -> None:
    data, heldout = staged_splits
    for name, labels in (("sarm", "stage"), ("baseline", "frame-index")):
        train(small_config(data, tmp_path / name, labels=labels, steps=200, eval_every=100, val_fraction=0.0))
    result = runner.invoke(
        app,
        [
            "eval",
            str(tmp_path / "sarm"),
            str(tmp_path / "baseline"),
            "--data",
            str(heldout),
            "--out",
            str(tmp_path / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())["checkpoints"]
    assert set(metrics) == {"sarm", "baseline"}
    for m in metrics.values():
        assert {"voc_mean", "demo_mse", "stage_accuracy", "success_auroc"} <= set(m)
        assert m["voc_episodes"] == 2 and m["demo_mse_episodes"] == 4
        assert m["in_sample"] is False and m["held_out_check"]["checked"] == "identity"
    assert metrics["baseline"]["stage_accuracy"] is None and metrics["sarm"]["stage_accuracy"] > 0.8
    # The annotation's own VOC (the ceiling of voc_mean) depends on the data only; clean demos are counted apart.
    rows = LeRobotDataset(heldout).episodes_table.to_pylist()
    clean = sum(r["quality"] == "clean" and r["success"] for r in rows)
    assert metrics["sarm"]["voc_annotation"] == metrics["baseline"]["voc_annotation"] <= 1.0
    assert metrics["sarm"]["voc_clean_episodes"] == clean
    # Stage durations vary, so t / T is wrong where SARM reads the stage from the frames.
    assert metrics["sarm"]["demo_mse"] < 0.5 * metrics["baseline"]["demo_mse"]
    report = (tmp_path / "report/report.md").read_text()
    # The served (smoothed) curve's figures, in the metrics and a table of their own.
    served = metrics["sarm"]["served"]
    assert served["smoothing"] == {"filter": "one-euro", "cutoff_hz": 1.0, "beta": 0.5}
    assert served["voc_episodes"] == 2 and served["voc_mean"] != metrics["sarm"]["voc_mean"]
    assert report.count("| sarm |") == 3 and "In-sample" not in report and "| held out |" in report
    assert "serves smoothed by default (filter one-euro, cutoff_hz 1.0, beta 0.5" in report
    assert list((tmp_path / "report").glob("episode_*_clean.png"))


def test_eval_refuses_the_training_data_unless_marked_in_sample(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "sarm", steps=10, eval_every=10))
    args = ["eval", str(tmp_path / "sarm"), "--data", str(embedded), "--out", str(tmp_path / "report")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "overlaps the training data" in refused.output
    assert "--allow-in-sample" in refused.output and not (tmp_path / "report").exists()
    with pytest.raises(InSampleError, match="it is training dataset"):
        evaluate([tmp_path / "sarm"], embedded, tmp_path / "report")

    allowed = runner.invoke(app, [*args, "--allow-in-sample"])
    assert allowed.exit_code == 0, allowed.output
    assert "in-sample" in allowed.output
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())["checkpoints"]["sarm"]
    assert metrics["in_sample"] is True
    assert "**In-sample**" in (tmp_path / "report/report.md").read_text()


def test_a_copy_or_a_subset_of_the_training_data_is_not_held_out(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "sarm", steps=10, eval_every=10))
    copy = Path(shutil.copytree(embedded, tmp_path / "copy"))
    with pytest.raises(InSampleError, match="it is training dataset"):
        evaluate([tmp_path / "sarm"], copy, tmp_path / "r1")
    # Two of the training episodes re-packed with a new one into another dataset: caught by fingerprints.
    mixed = write_embedded(
        tmp_path / "mixed", [synthetic_episode(24, 0), synthetic_episode(27, 1), synthetic_episode(40, 99)]
    )
    with pytest.raises(InSampleError, match="2 of its 3 episodes are training episodes"):
        evaluate([tmp_path / "sarm"], mixed.root, tmp_path / "r2")


def test_checkpoints_without_recorded_data_fall_back_to_paths(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "sarm", steps=10, eval_every=10))
    config_path = tmp_path / "sarm/config.json"
    config = json.loads(config_path.read_text())
    del config["training"]["data_identity"]  # as written before identities were recorded
    config_path.write_text(json.dumps(config))
    with pytest.raises(InSampleError, match="it is training dataset"):
        evaluate([tmp_path / "sarm"], embedded, tmp_path / "r1")
    config["training"] = {}
    config_path.write_text(json.dumps(config))
    report = evaluate([tmp_path / "sarm"], embedded, tmp_path / "r2")
    assert report["checkpoints"]["sarm"]["in_sample"] is None  # nothing recorded: unknown, not refused


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
