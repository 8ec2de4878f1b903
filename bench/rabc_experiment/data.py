"""The experiment's data stages: generate demos, embed them, train a SARM on them, score per-frame progress.

Each stage skips work whose output already exists (a finished SARM run is one whose checkpoint records all
its steps), so a rerun of the experiment resumes where it stopped and can reuse datasets made earlier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarm.cli.progress import progress_bar
from sarm.data.lerobot import LeRobotDataset, LeRobotWriter
from sarm.embeddings import embed_dataset, load_embeddings, require_same_encoders
from sarm.encoders.registry import DEFAULT_FRAME_ENCODER, DEFAULT_TEXT_ENCODER, load_frame_encoder, load_text_encoder
from sarm.model.windows import stride_frames
from sarm.scoring.pytorch import score_embeddings
from sarm.sim.metaworld_demos import METAWORLD_FPS, QualityMix, generate_episodes
from sarm.training.checkpoint import CONFIG, load_checkpoint
from sarm.training.trainer import TrainConfig, train


@dataclass
class Demos:
    """One task's demonstrations as the BC policy reads them, in dataset episode order."""

    task: str
    episodes: list[int]
    quality: list[str]
    perturbations: list[str]  # the generator's flaw plan per demo, e.g. 'noise=0.12;pause@stage1+4:30'
    success: list[bool]
    state: list[np.ndarray]  # per episode (T, D_state)
    action: list[np.ndarray]  # per episode (T, D_action)


def generate(task: str, episodes: int, out: Path, *, seed: int, mix: QualityMix, image_size: int) -> Path:
    if generated(out):
        return out
    with progress_bar() as bar, LeRobotWriter(out, fps=METAWORLD_FPS, robot_type="sawyer") as writer:
        job = bar.add_task(f"generate {task}", total=episodes, status="")
        for ep in generate_episodes(task, episodes, image_size=image_size, seed=seed, mix=mix):
            writer.add_episode(ep)
            bar.update(job, advance=1)
    return out


def generated(root: Path) -> bool:
    return (root / "meta" / "info.json").exists()


def embed(root: Path, encoder_input_size: int) -> int:
    """Encode every frame once; a smaller encoder input than the paper's 224 keeps this CPU-affordable.
    Returns the frames encoded now (0 when every episode was already stored)."""
    ds = LeRobotDataset(root)
    frames = load_frame_encoder(DEFAULT_FRAME_ENCODER, input_size=encoder_input_size)
    texts = load_text_encoder(DEFAULT_TEXT_ENCODER)
    encoded = [0]

    def advance(_episode: int, frames_encoded: int) -> None:
        encoded[0] += frames_encoded
        bar.update(job, advance=1)

    with progress_bar() as bar:
        job = bar.add_task(f"embed {root.name}", total=len(ds.episodes), status="")
        embed_dataset(ds, frames, texts, batch_size=64, on_episode=advance)
    return encoded[0]


def sarm_steps_done(out: Path) -> int:
    config_file = out / CONFIG
    return int(json.loads(config_file.read_text())["training"].get("steps_done", 0)) if config_file.exists() else 0


def train_sarm(roots: list[Path], out: Path, *, steps: int, seed: int) -> Path:
    """One multi-task SARM (small preset) on the experiment's own demos; resumes an unfinished run."""
    done = sarm_steps_done(out)
    if done >= steps:
        return out
    config = TrainConfig(datasets=roots, out=out, steps=steps, seed=seed, resume=done > 0, threads=1)
    with progress_bar() as bar:
        job = bar.add_task("train SARM", total=steps, completed=done, status="")
        train(config, on_step=lambda step, r: bar.update(job, completed=step, status=f"loss {r['loss']:.3f}"))
    return out


def episode_progress(checkpoint: Path, root: Path) -> list[np.ndarray]:
    """SARM's normalised progress for every frame of every episode (causal windows), in episode order."""
    model, info = load_checkpoint(checkpoint)
    ds = LeRobotDataset(root)
    embeddings = load_embeddings(ds, info.frame_encoder["id"])
    require_same_encoders(embeddings, info.frame_encoder, info.text_encoder)
    stride = stride_frames(ds.fps, model.config.stride_seconds)
    progress = []
    with progress_bar() as bar:
        job = bar.add_task(f"score {root.name}", total=len(ds.episodes), status="")
        for meta in ds.episodes:
            scores = score_embeddings(model, embeddings.frames[meta.index], embeddings.text[meta.task], stride)
            progress.append(scores.progress.astype(np.float64))
            bar.update(job, advance=1)
    return progress


def load_demos(task: str, root: Path) -> Demos:
    ds = LeRobotDataset(root)
    metas = ds.episodes
    return Demos(
        task=task,
        episodes=[m.index for m in metas],
        quality=[str(m.row["quality"]) for m in metas],
        perturbations=[str(m.row["perturbations"]) for m in metas],
        success=[bool(m.row["success"]) for m in metas],
        state=[ds.column(m.index, "observation.state").astype(np.float32) for m in metas],
        action=[ds.column(m.index, "action").astype(np.float32) for m in metas],
    )


def successful(demos: Demos) -> Demos:
    """Only the demos whose dataset success flag is true: the success-filtered BC baseline's training set."""
    keep = [i for i, ok in enumerate(demos.success) if ok]
    if not keep:
        raise ValueError(f"{demos.task}: no demo has its success flag set; the success-filtered arm has no data")
    return Demos(
        task=demos.task,
        episodes=[demos.episodes[i] for i in keep],
        quality=[demos.quality[i] for i in keep],
        perturbations=[demos.perturbations[i] for i in keep],
        success=[True] * len(keep),
        state=[demos.state[i] for i in keep],
        action=[demos.action[i] for i in keep],
    )
