"""The shipped default model: it loads, fits the installed encoders, and scores fresh demos sensibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from sarm.encoders.base import check_encoder
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.scoring import score_frames
from sarm.sim.metaworld_demos import METAWORLD_FPS, QualityMix, generate_episodes
from sarm.sim.stages import TASK_INSTRUCTIONS
from sarm.training.checkpoint import load_checkpoint

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "model_repo" / "default" / "checkpoint"
DEVELOPMENT_TASKS = ("pick-place-v3", "assembly-v3", "peg-insert-side-v3")


def test_default_checkpoint_matches_the_code_and_the_installed_encoders() -> None:
    model, info = load_checkpoint(DEFAULT_CHECKPOINT)
    assert info.labels == "stage" and model.config.num_tasks == 3
    assert {t["instruction"] for t in model.config.tasks} == {TASK_INSTRUCTIONS[t] for t in DEVELOPMENT_TASKS}
    check_encoder(load_frame_encoder(), info.frame_encoder["id"], info.frame_encoder["version"])
    check_encoder(load_text_encoder(), info.text_encoder["id"], info.text_encoder["version"])
    assert info.training["cameras"] == {"observation.images.corner4": [128, 128]}


@pytest.mark.parametrize("task", DEVELOPMENT_TASKS)
def test_progress_rises_through_a_fresh_successful_demo(task: str) -> None:
    model, info = load_checkpoint(DEFAULT_CHECKPOINT)
    # A seed far from the ones the model was trained and evaluated on.
    episode = next(generate_episodes(task, 1, image_size=128, seed=987_654, mix=QualityMix(1.0, 0.0, 0.0)))
    assert episode.episode_columns["success"]
    frames = next(iter(episode.frames.values()))
    scores = score_frames(model, info, load_frame_encoder(), load_text_encoder(), frames, episode.task,
                          METAWORLD_FPS)
    progress = scores.progress
    assert spearmanr(progress, np.arange(len(progress))).statistic > 0.8
    assert progress[-1] - progress[0] > 0.5, f"progress only went from {progress[0]:.2f} to {progress[-1]:.2f}"
