"""The SARM heads: a stage estimator and a subtask (τ) estimator over frozen frame/instruction embeddings.

Both networks share one design (SARM.md "Model"). Each time step of the window contributes one token per
stream: one per camera (frames of several cameras stay separate tokens, as in the official code, so
attention can relate views and the fusion layer knows which view is which), one for the instruction
(repeated at every step), one for the z-scored joint state when configured, and — subtask net only —
one for the stage: its one-hot zero-padded to width d. Tokens are laid out time-major, so the per-time
fusion is a plain reshape of (B, L·S, d) back to (B, L, S·d) with no stream/time mix-up (the official
subtask net's bug). A learned `first_pos` marks the episode-start frame; there is no other positional
encoding, so the model cannot read absolute time off the window.

Attention is causal over time steps: a token sees every stream at its own and earlier steps. The
prediction at position i therefore depends only on frames 0..i, which (a) makes the frame-t output
identical whether or not rewound frames follow it, so rewind training matches inference, and (b) makes
trailing padding invisible to every valid position, so no key padding mask is needed and `lengths` only
selects the position to read and the positions that count in the loss.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sarm.model.configuration_sarm import SARMConfig
from sarm.model.labels import task_progress_map


class SARMOutput(NamedTuple):
    stage_logits: Tensor  # (B, L, K)
    tau: Tensor  # (B, L) in (0, 1)


class SARMPrediction(NamedTuple):
    stage_probs: Tensor  # (B, K) at the last valid position
    tau: Tensor  # (B,)
    progress: Tensor  # (B,) normalised task progress in [0, 1]
    confidence: Tensor  # (B,) probability of the predicted stage


class SARMLoss(NamedTuple):
    total: Tensor
    stage: Tensor  # cross-entropy
    tau: Tensor  # mean squared error


class SARMNetwork(nn.Module):
    """One SARM network: stream projections → time-causal transformer → per-time fusion → head."""

    def __init__(self, config: SARMConfig, out_dim: int, stage_stream: bool) -> None:
        super().__init__()
        d = config.d_model
        self.num_stages = config.num_stages if stage_stream else 0
        self.frame_proj = nn.Linear(config.frame_dim, d)
        self.text_proj = nn.Linear(config.text_dim, d)
        self.state_proj = nn.Linear(config.state_dim, d) if config.state_dim else None
        self.first_pos = nn.Parameter(torch.zeros(d))
        layer = nn.TransformerEncoderLayer(d, config.n_heads, config.ffn_dim, config.dropout, batch_first=True)
        # Nested tensors only speed up key-padding masks, which the time-causal mask makes unnecessary.
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        streams = config.num_cameras + 1 + int(config.state_dim > 0) + int(stage_stream)
        self.fusion = nn.Sequential(nn.LayerNorm(streams * d), nn.Linear(streams * d, d), nn.ReLU())
        self.head = nn.Linear(d, out_dim)

    def forward(self, frames: Tensor, text: Tensor, state: Tensor | None, stage: Tensor | None) -> Tensor:
        """frames (B, L, C, F), text (B, T), state (B, L, S) z-scored, stage (B, L) classes → (B, L, out_dim)."""
        batch, length = frames.shape[:2]
        cams = self.frame_proj(frames)
        cams = torch.cat([cams[:, :1] + self.first_pos, cams[:, 1:]], dim=1)
        tokens = [cams, self.text_proj(text)[:, None, None, :].expand(batch, length, 1, -1)]
        if self.state_proj is not None and state is not None:
            tokens.append(self.state_proj(state)[:, :, None])
        if stage is not None:
            one_hot = (stage[..., None] == torch.arange(self.num_stages, device=stage.device)).to(cams.dtype)
            tokens.append(F.pad(one_hot, (0, cams.shape[-1] - self.num_stages))[:, :, None])
        x = torch.cat(tokens, dim=2)  # (B, L, S, d)
        streams = x.shape[2]
        step = torch.arange(length, device=x.device).repeat_interleave(streams)
        # is_causal=False: block-causal, not token-causal; also skips torch's mask sniffing, which export rejects.
        hidden = self.encoder(x.flatten(1, 2), mask=step[None, :] > step[:, None], is_causal=False)
        return self.head(self.fusion(hidden.reshape(batch, length, -1)))


class SARM(nn.Module):
    """Stage estimator + subtask estimator, with each task's stage proportions to map them to progress.

    A model may cover several tasks (`config.tasks`) whose stages share one set of classes. The task of a
    window is the one whose instruction embedding is most cosine-similar to the window's instruction, so
    the task is chosen inside the graph from the same inputs as a single-task model's.
    """

    progress_low: Tensor  # (num tasks, K) task progress where each stage class starts
    progress_width: Tensor  # (num tasks, K) its ᾱ; 0 for classes that are not stages of the task
    task_text: Tensor  # (num tasks, D_text) the tasks' instruction embeddings, L2-normalised
    state_mean: Tensor
    state_std: Tensor

    def __init__(self, config: SARMConfig) -> None:
        super().__init__()
        self.config = config
        self.stage_net = SARMNetwork(config, out_dim=config.num_stages, stage_stream=False)
        self.subtask_net = SARMNetwork(config, out_dim=1, stage_stream=True)
        maps = [task_progress_map(t["stage_names"], t["proportions"], config.stage_names) for t in config.tasks]
        low = torch.tensor(np.stack([lo for lo, _ in maps]), dtype=torch.float32)
        high = torch.tensor(np.stack([hi for _, hi in maps]), dtype=torch.float32)
        # Derived from the config, so not saved: the checkpoint's config.json is their one source.
        self.register_buffer("progress_low", low, persistent=False)
        self.register_buffer("progress_width", high - low, persistent=False)
        # Zeros until set_task_embeddings: every window then maps through task 0, all a one-task model needs.
        self.register_buffer("task_text", torch.zeros(config.num_tasks, config.text_dim))
        # Joint-state z-score statistics travel with the weights so exported graphs take raw state.
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        self.register_load_state_dict_pre_hook(_upgrade_single_task_state)

    def set_task_embeddings(self, text: Tensor) -> None:
        """The instruction embeddings of `config.tasks` (same order), from the checkpoint's text encoder."""
        expected = (self.config.num_tasks, self.config.text_dim)
        if tuple(text.shape) != expected:
            raise ValueError(f"task embeddings must have shape {expected} (tasks, text_dim), got {tuple(text.shape)}")
        self.task_text.copy_(F.normalize(text.float(), dim=-1))

    def select_task(self, text: Tensor) -> Tensor:
        """(B,) the task whose instruction is most cosine-similar to each row of `text` (B, D_text).

        Scaling a row of `text` never changes its argmax, so only the stored side is normalised.
        """
        return (text @ self.task_text.T).argmax(dim=-1)

    def task_progress(self, task: Tensor, stage: Tensor, tau: Tensor) -> Tensor:
        """Normalised task progress low + ᾱ·τ of stage class `stage` at `tau` under task `task`."""
        return self.progress_low[task, stage] + self.progress_width[task, stage] * tau

    def set_state_stats(self, mean: Tensor, std: Tensor) -> None:
        """Dataset statistics of the joint state; a (near-)constant joint is only centred, never divided by ~0."""
        self.state_mean.copy_(mean)
        self.state_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def _normalised_state(self, state: Tensor | None) -> Tensor | None:
        if (state is None) != (self.config.state_dim == 0):
            raise ValueError(f"state must be given exactly when state_dim > 0 (state_dim={self.config.state_dim})")
        return None if state is None else (state - self.state_mean) / self.state_std

    def forward(
        self, frames: Tensor, text: Tensor, state: Tensor | None = None, true_stage: Tensor | None = None
    ) -> SARMOutput:
        """Per-position outputs for training.

        In training mode, each window's subtask net gets `true_stage` with probability
        `config.teacher_forcing`, else the stage net's argmax; argmax passes no gradient, so the τ loss
        never trains the stage net. In eval mode the argmax is always used, as at inference, so a
        validation loss measures the deployed path.
        """
        z_state = self._normalised_state(state)
        stage_logits = self.stage_net(frames, text, z_state, None)
        stage_in = stage_logits.argmax(dim=-1)
        if self.training and true_stage is not None:
            use_true = torch.rand(stage_in.shape[0], 1, device=stage_in.device) < self.config.teacher_forcing
            stage_in = torch.where(use_true, true_stage, stage_in)
        tau = torch.sigmoid(self.subtask_net(frames, text, z_state, stage_in)).squeeze(-1)
        return SARMOutput(stage_logits, tau)

    def predict(self, frames: Tensor, text: Tensor, lengths: Tensor, state: Tensor | None = None) -> SARMPrediction:
        """Scores at each window's last valid position (call in eval mode).

        No Python branch on tensor values, so it exports to ONNX with a symbolic batch dimension.
        """
        logits, tau = self.forward(frames, text, state)
        rows = torch.arange(frames.shape[0], device=frames.device)
        last = lengths.long() - 1
        stage_probs = torch.softmax(logits[rows, last], dim=-1)
        confidence, stage = stage_probs.max(dim=-1)
        tau_last = tau[rows, last]
        progress = self.task_progress(self.select_task(text), stage, tau_last)
        return SARMPrediction(stage_probs, tau_last, progress, confidence)


def _upgrade_single_task_state(module: SARM, state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    """Load checkpoints written before multi-task models: they saved `breakpoints` (now derived from the
    config) and no task embeddings, which a one-task model never needs (its only task always wins)."""
    state_dict.pop(prefix + "breakpoints", None)
    if module.config.num_tasks == 1:
        state_dict.setdefault(prefix + "task_text", module.task_text)


def sarm_loss(output: SARMOutput, stage_target: Tensor, tau_target: Tensor, lengths: Tensor) -> SARMLoss:
    """CE(stage) + MSE(τ), 1:1, averaged over every valid position (window frames and rewinds alike).

    Each position has its own frame's target and, under time-causal attention, is a legitimate causal
    prediction, so all of them supervise — as in the official code, whose targets cover the whole sequence.
    """
    valid = torch.arange(stage_target.shape[1], device=lengths.device)[None, :] < lengths[:, None]
    weight = valid.to(output.tau.dtype)
    count = weight.sum().clamp(min=1.0)
    ce = F.cross_entropy(output.stage_logits.transpose(1, 2), stage_target, reduction="none")
    stage_loss = (ce * weight).sum() / count
    tau_loss = ((output.tau - tau_target) ** 2 * weight).sum() / count
    return SARMLoss(stage_loss + tau_loss, stage_loss, tau_loss)
