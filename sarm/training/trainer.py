"""`sarm train`: SARM (or the frame-index baseline) on stored embeddings, with SARM.md's recipe.

AdamW (betas 0.9/0.95, weight decay 5e-3), linear warm-up then cosine, grad clip 1.0, stage teacher
forcing, rewind (p = 0.8) and wrong-instruction (p = 0.2) augmentation, validation split by episode,
checkpoints at every validation (so a stopped run resumes with --resume).

`device` (sarm.device: auto, cpu or cuda) holds the model, the optimiser state and each batch; the windows are
sampled on the CPU and moved per step. The checkpoint is written from CPU copies and records the device it trained on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarm.data.validate import require_valid
from sarm.device import resolve_device
from sarm.embeddings import DatasetEmbeddings, load_embeddings
from sarm.encoders.base import EncoderMismatchError
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM, sarm_loss
from sarm.training.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    load_trainer_state,
    save_checkpoint,
    save_trainer_state,
)
from sarm.training.data_identity import dataset_identity
from sarm.training.negatives import training_distractors
from sarm.training.samples import (
    STATE_KEY,
    Batch,
    EpisodeArrays,
    LabelMode,
    WindowSampler,
    episode_arrays,
    label_vocabulary,
    split_episodes,
    state_statistics,
    state_width,
)

# Learning rates by preset: the paper's 5e-5 for its 119 M-parameter nets; the small CPU preset trains
# in a few thousand steps and wants a larger step (measured: 5e-5 barely moves it in 2k steps).
DEFAULT_LR = {"paper": 5e-5, "small": 5e-4}
VALIDATION_WINDOWS = 512


@dataclass
class TrainConfig:
    datasets: list[Path]
    out: Path
    preset: str = "small"
    steps: int = 3000
    labels: LabelMode = "stage"
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 5e-3
    grad_clip: float = 1.0
    warmup_steps: int | None = None  # default: min(1000, steps // 10)
    val_fraction: float = 0.15
    eval_every: int = 250
    seed: int = 0
    resume: bool = False
    rewind_p: float = 0.8
    wrong_instruction_p: float = 0.2
    # Window stride g in seconds (LeRobot's frame_gap, in frames there): the window spans 8 g, and episodes
    # shorter than that use the evenly spaced layout (sarm.model.windows). Stored in the model config.
    stride_seconds: float = 1.0
    # Wrong instructions: generated phrases (training.negatives) on top of the stored 16, and in a
    # multi-task run the other tasks' instructions for this share of the wrong-instruction windows.
    distractor_pool: int = 512
    cross_task_p: float = 0.5
    # Intra-op threads. The small preset's matrices are too small to split: measured on 2 busy cores,
    # 1 thread ran 4.4 steps/s and 2 threads 0.9 (OpenMP spin-waits). Raise it for the paper preset.
    threads: int = 1
    # auto, cpu or cuda (sarm.device). The paper preset is meant for a GPU; the small one trains fine on a CPU.
    device: str = "cpu"
    # Condition on the datasets' observation.state (one more token per time step, z-scored with the training
    # split's statistics, which the checkpoint stores); off by default, so state-free checkpoints stay as they were.
    use_state: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.threads < 1:
            raise ValueError("steps, batch_size, eval_every and threads must be positive")
        if self.labels not in ("stage", "frame-index"):
            raise ValueError(f"labels must be 'stage' or 'frame-index', got {self.labels!r}")
        if not (math.isfinite(self.stride_seconds) and self.stride_seconds > 0):
            raise ValueError(f"stride_seconds must be a positive number of seconds, got {self.stride_seconds}")
        if self.distractor_pool < 0 or not 0 <= self.cross_task_p <= 1:
            raise ValueError("distractor_pool must be >= 0 and cross_task_p a probability")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    train_loss: float
    val: dict[str, float]
    steps_per_s: float
    samples_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"  # where it trained (`auto` resolved)


def _same_encoders(all_embeddings: list[DatasetEmbeddings]) -> None:
    first = all_embeddings[0]
    for other in all_embeddings[1:]:
        if (other.frame_encoder, other.text_encoder) != (first.frame_encoder, first.text_encoder):
            raise EncoderMismatchError(
                f"{other.root} and {first.root} were embedded with different encoders: re-embed one of them"
            )


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        frames=batch.frames.to(device),
        text=batch.text.to(device),
        stage=batch.stage.to(device),
        tau=batch.tau.to(device),
        lengths=batch.lengths.to(device),
        state=None if batch.state is None else batch.state.to(device),
    )


def validation_batch(sampler: WindowSampler, rng: np.random.Generator) -> Batch:
    """Fixed windows over held-out episodes, no augmentation: the deployed scoring path."""
    lengths = np.array([e.length for e in sampler.episodes])
    picks = rng.choice(len(lengths), size=VALIDATION_WINDOWS, p=lengths / lengths.sum())
    t = (rng.random(VALIDATION_WINDOWS) * lengths[picks]).astype(np.int64)
    zeros = np.zeros(VALIDATION_WINDOWS, np.int64)
    return sampler.batch(picks, t, zeros, zeros - 1)


@torch.no_grad()
def evaluate_batch(model: SARM, batch: Batch) -> dict[str, float]:
    model.eval()
    loss = sarm_loss(model(batch.frames, batch.text, batch.state), batch.stage, batch.tau, batch.lengths)
    prediction = model.predict(batch.frames, batch.text, batch.lengths, batch.state)
    rows = torch.arange(len(batch.lengths), device=batch.lengths.device)
    last = batch.lengths - 1
    true_stage, true_tau = batch.stage[rows, last], batch.tau[rows, last]
    # Validation windows carry their own instruction, whose stored embedding selects their own task.
    true_progress = model.task_progress(model.select_task(batch.text), true_stage, true_tau)
    model.train()
    return {
        "val_loss": float(loss.total),
        "val_stage_accuracy": float((prediction.stage_probs.argmax(-1) == true_stage).float().mean()),
        "val_progress_mse": float(((prediction.progress - true_progress) ** 2).mean()),
    }


def train(config: TrainConfig, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train and write the checkpoint to `config.out`; `on_step(step, losses)` reports progress."""
    device = resolve_device(config.device)  # first: a missing GPU is one line before any loading
    torch.set_num_threads(config.threads)
    datasets = [require_valid(path) for path in config.datasets]
    # Checked across datasets before anything is loaded: a missing column or a width mismatch is one line.
    state_key = STATE_KEY if config.use_state else None
    state_dim = state_width(datasets, STATE_KEY) if config.use_state else 0
    embeddings = [load_embeddings(ds) for ds in datasets]
    _same_encoders(embeddings)
    stage_names, tasks = label_vocabulary(datasets, config.labels)
    episodes: list[EpisodeArrays] = []
    for ds, emb in zip(datasets, embeddings, strict=True):
        episodes += episode_arrays(ds, emb, stage_names, config.labels, config.stride_seconds, state_key)
    train_eps, val_eps = split_episodes(episodes, config.val_fraction, config.seed)
    # Recorded so that `sarm eval` can refuse (or mark) evaluation data that overlaps the training data.
    data_identity = [dataset_identity(ds).to_dict() for ds in datasets]
    distractors = embeddings[0].distractors
    if config.distractor_pool:
        text_encoder = embeddings[0].text_encoder
        generated = training_distractors(
            text_encoder["id"],
            text_encoder["version"],
            tuple(t["instruction"] for t in tasks),
            config.distractor_pool,
            config.seed,
        )
        distractors = np.concatenate([distractors, generated])
    # Camera resolutions travel with the checkpoint: the exported encoder takes images of exactly this size.
    cameras = {key: datasets[0].info["features"][key]["shape"][:2] for key in datasets[0].camera_keys}
    sampler = WindowSampler(
        train_eps, distractors, config.rewind_p, config.wrong_instruction_p, cross_task_p=config.cross_task_p
    )
    val_batch = validation_batch(WindowSampler(val_eps or train_eps, distractors), np.random.default_rng(config.seed))
    val_batch = to_device(val_batch, device)

    sample = episodes[0].frames
    model_config = SARMConfig.from_preset(
        config.preset,
        stage_names,
        tasks=tasks,
        frame_dim=sample.shape[-1],
        text_dim=len(episodes[0].text),
        num_cameras=sample.shape[1],
        stride_seconds=config.stride_seconds,
        state_dim=state_dim,
    )
    torch.manual_seed(config.seed)
    model = SARM(model_config)
    if state_dim:
        # Training split only, so validation episodes do not leak into the normalisation.
        mean, std = state_statistics(train_eps)
        model.set_state_stats(torch.from_numpy(mean), torch.from_numpy(std))
    instruction_text = {task: text for emb in embeddings for task, text in emb.text.items()}
    model.set_task_embeddings(torch.from_numpy(np.stack([instruction_text[t["instruction"]] for t in tasks])))
    model.to(device)  # before the optimiser is made over its parameters
    lr = config.lr or DEFAULT_LR.get(config.preset, 5e-5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    warmup = config.warmup_steps if config.warmup_steps is not None else min(1000, max(1, config.steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, config.steps))
    rng = np.random.default_rng(config.seed)
    step, history = 0, list[dict[str, float]]()
    if config.resume:
        step, history = _resume(config.out, model, optimizer, scheduler, rng, model_config, device)

    info = CheckpointInfo(
        model=model_config,
        frame_encoder=embeddings[0].frame_encoder,
        text_encoder=embeddings[0].text_encoder,
        labels=config.labels,
    )
    model.train()
    started, start_step = time.perf_counter(), step
    running = 0.0
    while step < config.steps:
        batch = to_device(sampler.sample(config.batch_size, rng), device)
        output = model(batch.frames, batch.text, batch.state, true_stage=batch.stage)
        loss = sarm_loss(output, batch.stage, batch.tau, batch.lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        report = {
            name: float(value.detach())
            for name, value in (("loss", loss.total), ("stage_loss", loss.stage), ("tau_loss", loss.tau))
        }
        running = report["loss"] if step == start_step + 1 else 0.98 * running + 0.02 * report["loss"]
        if step % config.eval_every == 0 or step == config.steps:
            report |= evaluate_batch(model, val_batch)
            history.append({"step": step, "train_loss": running, **report})
            elapsed = time.perf_counter() - started
            info.training = _provenance(config, lr, warmup, step, history, len(train_eps), len(val_eps))
            info.training["steps_per_s"] = (step - start_step) / elapsed
            info.training["device"] = str(device)  # `auto` as resolved: steps_per_s means little without it
            info.training["cameras"] = cameras
            info.training["data_identity"] = data_identity
            if state_key:
                # The dataset feature the state stream reads: export and serving name it from here.
                info.training["state_key"] = state_key
                info.training["state_dim"] = state_dim
            save_checkpoint(config.out, model, info)
            save_trainer_state(
                config.out,
                {
                    "step": step,
                    "history": history,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    # Teacher forcing draws on the model's device: a CUDA run keeps that generator too.
                    **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                },
            )
        if on_step is not None:
            on_step(step, report)
    elapsed = time.perf_counter() - started
    steps_per_s = (step - start_step) / elapsed if elapsed > 0 else 0.0
    final = history[-1] if history else {}
    return TrainResult(
        checkpoint=config.out,
        steps=step,
        train_loss=running,
        val={k: v for k, v in final.items() if k.startswith("val_")},
        steps_per_s=steps_per_s,
        samples_per_s=steps_per_s * config.batch_size,
        history=history,
        device=str(device),
    )


def _provenance(
    config: TrainConfig, lr: float, warmup: int, step: int, history: list[dict[str, float]], n_train: int, n_val: int
) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "datasets"}
    return {
        **settings,
        "datasets": [str(p) for p in config.datasets],
        "lr": lr,
        "warmup_steps": warmup,
        "steps_done": step,
        "train_episodes": n_train,
        "val_episodes": n_val,
        "history": history,
    }


def _resume(
    out: Path,
    model: SARM,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    rng: np.random.Generator,
    model_config: SARMConfig,
    device: torch.device,
) -> tuple[int, list[dict[str, float]]]:
    state = load_trainer_state(out)
    if state is None:
        raise CheckpointError(f"--resume: {out} holds no trainer state to resume from")
    saved, _ = load_checkpoint(out)
    if saved.config.to_dict() != model_config.to_dict():
        raise CheckpointError(f"--resume: {out} was trained with another model config or other data")
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["step"]), list(state["history"])
