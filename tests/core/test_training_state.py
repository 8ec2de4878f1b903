"""`sarm train --state`: joint state gathered with the frame windows, normalised by the training split's statistics,
stored in the checkpoint; `--no-state` (the default) trains exactly as before."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sarm.cli import app
from sarm.data.lerobot import DatasetError, LeRobotDataset
from sarm.embeddings import load_embeddings
from sarm.model.labels import frame_index_labels
from sarm.model.windows import sequence_indices
from sarm.training.checkpoint import load_checkpoint, load_info
from sarm.training.samples import (
    STATE_KEY,
    EpisodeArrays,
    WindowSampler,
    episode_arrays,
    label_vocabulary,
    split_episodes,
    state_width,
)
from sarm.training.trainer import TrainConfig, evaluate_batch, train, validation_batch
from tests.conftest import synthetic_episode, write_dataset, write_embedded

runner = CliRunner()


@pytest.fixture(scope="module")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embedded_state") / "dataset"
    write_embedded(root, [synthetic_episode(20 + 3 * seed, seed) for seed in range(5)])
    return root


@pytest.fixture
def embedded(embedded_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded_template, tmp_path / "embedded"))


def small_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    settings: dict = {"steps": 10, "batch_size": 8, "eval_every": 10, "val_fraction": 0.4, "seed": 3} | kw
    return TrainConfig(datasets=[data], out=out, **settings)


def drop_state_feature(root: Path) -> None:
    """Make the dataset declare no observation.state (as a camera-only dataset would)."""
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    del info["features"][STATE_KEY]
    info_path.write_text(json.dumps(info))


def test_train_with_state_stores_the_training_split_statistics(embedded: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    args = ["train", str(embedded), "--out", str(out), "--steps", "10", "--batch-size", "8", "--eval-every", "10"]
    result = runner.invoke(app, [*args, "--seed", "3", "--device", "cpu", "--state"])
    assert result.exit_code == 0, result.output
    model, info = load_checkpoint(out)
    assert info.model.state_dim == 5 and model.stage_net.state_proj is not None
    assert info.training["state_key"] == "observation.state" and info.training["state_dim"] == 5
    assert info.state_key == "observation.state" and info.training["use_state"] is True

    # The statistics are those of the training split's frames (the CLI's default val_fraction 0.15 and seed 3).
    ds = LeRobotDataset(embedded)
    emb = load_embeddings(ds)
    vocabulary, _ = label_vocabulary([ds], "stage")
    train_eps, val_eps = split_episodes(episode_arrays(ds, emb, vocabulary, "stage"), 0.15, 3)
    assert val_eps and len(train_eps) == info.training["train_episodes"]
    rows = np.concatenate([ds.column(e.episode, STATE_KEY) for e in train_eps]).astype(np.float64)
    np.testing.assert_allclose(model.state_mean.numpy(), rows.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.state_std.numpy(), rows.std(axis=0), rtol=0, atol=1e-6)
    every = np.concatenate([ds.column(m.index, STATE_KEY) for m in ds.episodes]).astype(np.float64)
    assert not np.allclose(model.state_mean.numpy(), every.mean(axis=0), atol=1e-4)  # validation frames left out

    # The state reaches the prediction: the checkpoint scores its windows with state, and other state changes them.
    sampler = WindowSampler(episode_arrays(ds, emb, vocabulary, "stage", state_key=STATE_KEY), emb.distractors)
    batch = validation_batch(sampler, np.random.default_rng(0))
    assert batch.state is not None and batch.state.shape == (*batch.frames.shape[:2], 5)
    assert np.isfinite(evaluate_batch(model, batch)["val_loss"])
    with torch.no_grad():
        seen = model.predict(batch.frames, batch.text, batch.lengths, batch.state)
        shifted = model.predict(batch.frames, batch.text, batch.lengths, batch.state + 3.0)
    assert not torch.equal(seen.tau, shifted.tau)


def test_sampler_gathers_state_at_the_window_indices(dataset: Path) -> None:
    """Batch.state rows are the dataset's state at exactly the frames' positions: window, rewinds and padding."""
    ds = LeRobotDataset(dataset)
    episodes = []
    for number, meta in enumerate(ds.episodes):
        # Frame embeddings that spell their episode and frame index, so each batch position names what it holds.
        frames = np.stack([np.arange(meta.length), np.full(meta.length, number)], axis=1)[:, None, :]
        frames = frames.astype(np.float32)
        episodes.append(
            EpisodeArrays(
                dataset=str(ds.root),
                episode=meta.index,
                frames=frames,
                text=np.ones(4, np.float32),
                labels=frame_index_labels(meta.length),
                stride=3,
                success=None,
                quality=None,
                state=ds.column(meta.index, STATE_KEY),
            )
        )
    sampler = WindowSampler(episodes, np.eye(4, dtype=np.float32)[:2], rewind_p=0.7, wrong_instruction_p=0.3)
    batch = sampler.sample(64, np.random.default_rng(5))
    assert batch.state is not None and batch.state.dtype == torch.float32
    positions = batch.frames[:, :, 0, 0].long().numpy()  # (B, L) frame index at each position
    owner = batch.frames[:, 0, 0, 1].long().numpy()  # (B,) episode of each row
    assert (batch.lengths > 9).any() and (batch.lengths < 13).any()  # rewinds and padding both drawn
    for row in range(len(positions)):
        state = ds.column(ds.episodes[owner[row]].index, STATE_KEY)
        np.testing.assert_array_equal(batch.state[row].numpy(), state[positions[row]])

    # Explicit windows: the rows equal the state gathered with sequence_indices, rewinds and padding included.
    picks, t, rewinds = np.array([0, 1, 2, 2]), np.array([29, 20, 43, 5]), np.array([4, 2, 0, 0])
    explicit = sampler.batch(picks, t, rewinds, np.array([-1, 0, -1, 1]))
    assert explicit.state is not None
    for row, (i, ti, n) in enumerate(zip(picks, t, rewinds, strict=True)):
        index = sequence_indices(ti, 3, 0, n).indices[0]
        expected = ds.column(ds.episodes[i].index, STATE_KEY)[index]
        np.testing.assert_array_equal(explicit.state[row].numpy(), expected)
        np.testing.assert_array_equal(explicit.frames[row, :, 0, 0].numpy(), index)


def test_state_needs_every_episode_or_none() -> None:
    def arrays(state: np.ndarray | None) -> EpisodeArrays:
        return EpisodeArrays("d", 0, np.zeros((12, 1, 2), np.float32), np.ones(4, np.float32),
                             frame_index_labels(12), 1, None, None, state)  # fmt: skip

    with pytest.raises(ValueError, match="every episode carries joint state or none"):
        WindowSampler([arrays(np.zeros((12, 3), np.float32)), arrays(None)], np.eye(4, dtype=np.float32))
    assert WindowSampler([arrays(None)], np.eye(4, dtype=np.float32)).sample(4, np.random.default_rng(0)).state is None


def test_missing_state_column_is_one_line(embedded: Path, tmp_path: Path) -> None:
    drop_state_feature(embedded)
    with pytest.raises(DatasetError, match=r"has no 'observation.state' feature, which --state trains on"):
        train(small_config(embedded, tmp_path / "a", use_state=True))
    result = runner.invoke(app, ["train", str(embedded), "--out", str(tmp_path / "b"), "--steps", "5", "--state"])
    assert result.exit_code == 2 and "has no 'observation.state' feature" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "b").exists()
    # Without --state the dataset trains as it always did.
    train(small_config(embedded, tmp_path / "c", steps=2, eval_every=2))


def test_state_widths_must_agree(tmp_path: Path) -> None:
    five = write_dataset(tmp_path / "five", [synthetic_episode(12, 0)])
    narrow = synthetic_episode(12, 1)
    narrow.state = narrow.state[:, :3]
    three = write_dataset(tmp_path / "three", [narrow])
    assert state_width([five]) == 5 and state_width([three]) == 3
    with pytest.raises(DatasetError, match="widths differ") as error:
        state_width([five, three])
    assert f"{five.root} (5)" in str(error.value) and f"{three.root} (3)" in str(error.value)
    # The CLI says so before it looks for embeddings (neither dataset is embedded).
    result = runner.invoke(app, ["train", str(five.root), str(three.root), "--out", str(tmp_path / "c"), "--state"])
    assert result.exit_code == 2 and "widths differ" in result.output


def test_no_state_is_unchanged(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "default"))
    train(small_config(embedded, tmp_path / "explicit", use_state=False))
    model, info = load_checkpoint(tmp_path / "default")
    assert info.model.state_dim == 0 and model.stage_net.state_proj is None and model.state_mean.numel() == 0
    assert "state_key" not in info.training and "state_dim" not in info.training and info.state_key is None
    weights = {k: v for k, v in load_checkpoint(tmp_path / "explicit")[0].state_dict().items()}
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    # A checkpoint written before state was recorded (no use_state/state_key in training) still loads.
    config_path = tmp_path / "default/config.json"
    config = json.loads(config_path.read_text())
    del config["training"]["use_state"]
    config_path.write_text(json.dumps(config))
    assert load_info(tmp_path / "default").state_key is None
    load_checkpoint(tmp_path / "default")


def test_resume_keeps_the_state_statistics(embedded: Path, tmp_path: Path) -> None:
    train(small_config(embedded, tmp_path / "ckpt", steps=5, eval_every=5, use_state=True))
    first, _ = load_checkpoint(tmp_path / "ckpt")
    resumed = train(small_config(embedded, tmp_path / "ckpt", steps=10, eval_every=5, use_state=True, resume=True))
    assert [h["step"] for h in resumed.history] == [5, 10]
    second, _ = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(first.state_mean, second.state_mean) and torch.equal(first.state_std, second.state_std)


def test_eval_scores_a_state_checkpoint_with_the_episodes_state(embedded: Path, tmp_path: Path) -> None:
    """`sarm eval` (the engine on the PyTorch backend, stored embeddings) reads each episode's state: its progress
    is the reference computation with the state, not a refusal or zeros."""
    from sarm.scoring.pytorch import score_embeddings

    out = tmp_path / "ckpt"
    args = ["train", str(embedded), "--out", str(out), "--steps", "10", "--batch-size", "8", "--eval-every", "10"]
    assert runner.invoke(app, [*args, "--device", "cpu", "--state"]).exit_code == 0
    report = tmp_path / "report"
    result = runner.invoke(
        app, ["eval", str(out), "--data", str(embedded), "--out", str(report), "--allow-in-sample", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics["checkpoints"]) == 1
    from sarm.evaluation import _score_episodes
    from sarm.model.windows import stride_frames

    ds = LeRobotDataset(embedded)
    model, info = load_checkpoint(out)
    emb = load_embeddings(ds)
    stride = stride_frames(ds.fps, model.config.stride_seconds)
    scores = asyncio.run(_score_episodes(out, model, info, ds, emb, stride, torch.device("cpu")))
    meta = ds.episodes[0]
    state = np.asarray(ds.column(meta.index, STATE_KEY), np.float32)
    reference = score_embeddings(model, emb.frames[meta.index], emb.text[meta.task], stride, state=state)
    np.testing.assert_allclose(scores[meta.index].progress, reference.progress, atol=1e-5)
