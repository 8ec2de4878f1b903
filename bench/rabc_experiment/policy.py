"""A low-dimensional-state BC policy that predicts action chunks, trained with optional per-sample weights.

Both arms of the experiment call `train_bc` with the same config: the seed fixes the initialisation and
the sequence of sampled batches, so the only difference between vanilla BC (weights None, i.e. all 1)
and RA-BC is the weight each sample's loss gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.rabc_experiment.data import Demos


@dataclass(frozen=True)
class BCConfig:
    chunk: int = 8  # actions predicted per state; also RA-BC's Δ
    execute: int = 4  # actions of each chunk executed before the policy is queried again
    hidden: int = 256
    layers: int = 3
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    eps: float = 1e-6  # ε of the weighted loss

    def __post_init__(self) -> None:
        if not 1 <= self.execute <= self.chunk:
            raise ValueError(f"execute must lie in [1, chunk={self.chunk}], got {self.execute}")
        if min(self.hidden, self.layers, self.steps, self.batch_size) < 1 or self.lr <= 0:
            raise ValueError("hidden, layers, steps, batch_size and lr must be positive")


class ChunkPolicy(nn.Module):
    """MLP: z-scored state → `chunk` future actions."""

    state_mean: torch.Tensor
    state_std: torch.Tensor

    def __init__(self, state_mean: np.ndarray, state_std: np.ndarray, action_dim: int, config: BCConfig) -> None:
        super().__init__()
        self.chunk, self.action_dim, self.execute = config.chunk, action_dim, config.execute
        self.register_buffer("state_mean", torch.as_tensor(state_mean, dtype=torch.float32))
        # Constant dimensions (obj2 in one-object tasks) would divide by zero.
        self.register_buffer("state_std", torch.as_tensor(np.maximum(state_std, 1e-3), dtype=torch.float32))
        layers: list[nn.Module] = []
        width = len(state_mean)
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.ReLU()]
            width = config.hidden
        layers.append(nn.Linear(width, config.chunk * action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((state - self.state_mean) / self.state_std)
        return out.view(-1, self.chunk, self.action_dim)

    @torch.inference_mode()
    def act(self, state: np.ndarray) -> np.ndarray:
        """The next `execute` actions (execute, action_dim) for one state, clipped to the action range."""
        chunk = self(torch.from_numpy(state[None]))[0, : self.execute]
        return np.clip(chunk.numpy(), -1.0, 1.0)


def chunk_targets(actions: Sequence[np.ndarray], chunk: int) -> np.ndarray:
    """(N, chunk, A): for each frame t the actions t..t+chunk−1, indices clamped to the episode's last
    frame (as RA-BC clamps its future index), so every frame is a training sample."""
    out = []
    for a in actions:
        future = np.minimum(np.arange(len(a))[:, None] + np.arange(chunk)[None], len(a) - 1)
        out.append(a[future])
    return np.concatenate(out)


def train_bc(
    demos: Demos,
    weights: Sequence[np.ndarray] | None,
    config: BCConfig,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> ChunkPolicy:
    """Minimise Σ w·ℓ / (Σ w + ε) over sampled batches (ℓ: per-sample MSE over the chunk); w = 1 without weights."""
    states = np.concatenate(demos.state)
    targets = torch.from_numpy(chunk_targets(demos.action, config.chunk))
    w = torch.ones(len(states)) if weights is None else torch.from_numpy(np.concatenate(weights).astype(np.float32))
    if len(w) != len(states):
        raise ValueError(f"{len(w)} weights for {len(states)} frames")
    torch.manual_seed(seed)
    policy = ChunkPolicy(states.mean(0), states.std(0), targets.shape[-1], config)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    rng = np.random.default_rng(seed)
    state_tensor = torch.from_numpy(states)
    for step in range(1, config.steps + 1):
        index = torch.from_numpy(rng.integers(0, len(states), config.batch_size))
        loss_per_sample = ((policy(state_tensor[index]) - targets[index]) ** 2).mean(dim=(1, 2))
        batch_w = w[index]
        loss = (batch_w * loss_per_sample).sum() / (batch_w.sum() + config.eps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    policy.eval()
    return policy
