"""Training recipe settings end to end: the window stride, give-up regress labels, wrong-instruction pool."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from sarm.data.lerobot import LeRobotDataset
from sarm.embeddings import load_embeddings
from sarm.model.labels import REGRESS_COLUMN, stage_tau_labels
from sarm.training.checkpoint import load_checkpoint
from sarm.training.samples import episode_arrays, label_vocabulary
from sarm.training.trainer import TrainConfig, train
from tests.conftest import synthetic_episode, write_embedded

LENGTHS = (40, 46, 52, 58)
GIVE_UP = (-1, 30, -1, 40)


@pytest.fixture(scope="module")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    episodes = []
    for seed, (length, give_up) in enumerate(zip(LENGTHS, GIVE_UP, strict=True)):
        ep = synthetic_episode(length, seed)
        ep.episode_columns[REGRESS_COLUMN] = give_up
        episodes.append(ep)
    return write_embedded(tmp_path_factory.mktemp("recipe") / "dataset", episodes).root


@pytest.fixture
def embedded(embedded_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedded_template, tmp_path / "embedded"))


def test_training_labels_fall_back_from_the_regress_column(embedded: Path) -> None:
    ds = LeRobotDataset(embedded)
    vocabulary, _ = label_vocabulary([ds], "stage")
    episodes = episode_arrays(ds, load_embeddings(ds), vocabulary, "stage")
    for ep, give_up in zip(episodes, GIVE_UP, strict=True):
        plain = stage_tau_labels(ds.require_annotation(ep.episode), ep.length, vocabulary).target
        y = ep.labels.target
        if give_up < 0:
            np.testing.assert_array_equal(y, plain)
            continue
        np.testing.assert_array_equal(y[:give_up], plain[:give_up])
        assert np.all(np.diff(y[give_up:]) < 0) and y[-1] < plain[give_up - 1] < plain[-1]
    # The frame-index baseline stays t / T: it is the naive comparison.
    baseline = episode_arrays(ds, load_embeddings(ds), ["task"], "frame-index")
    assert np.all(np.diff(baseline[1].labels.target) > 0)


def test_stride_seconds_sets_the_window_stride_and_travels_with_the_checkpoint(embedded: Path, tmp_path: Path) -> None:
    ds = LeRobotDataset(embedded)  # 10 fps
    vocabulary, _ = label_vocabulary([ds], "stage")
    assert {e.stride for e in episode_arrays(ds, load_embeddings(ds), vocabulary, "stage", 0.5)} == {5}
    config = TrainConfig(
        datasets=[embedded],
        out=tmp_path / "ckpt",
        steps=4,
        batch_size=8,
        eval_every=4,
        val_fraction=0.25,
        stride_seconds=0.5,
        distractor_pool=64,
    )
    train(config)
    model, info = load_checkpoint(tmp_path / "ckpt")
    assert model.config.stride_seconds == 0.5
    assert info.training["stride_seconds"] == 0.5
    assert info.training["distractor_pool"] == 64 and info.training["cross_task_p"] == 0.5


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_bad_stride_seconds_are_refused(value: float, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stride_seconds"):
        TrainConfig(datasets=[tmp_path], out=tmp_path / "ckpt", stride_seconds=value)


def test_bad_negative_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distractor_pool"):
        TrainConfig(datasets=[tmp_path], out=tmp_path / "ckpt", distractor_pool=-1)
    with pytest.raises(ValueError, match="cross_task_p"):
        TrainConfig(datasets=[tmp_path], out=tmp_path / "ckpt", cross_task_p=1.5)
