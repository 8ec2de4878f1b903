"""RA-BC weights in a PyTorch training loop. torch is the trainer's own: it is imported when these functions are
called, never by sarm-client itself.

Weigh the per-sample losses of uniformly drawn batches (paper eq. 9, L = Σ w·ℓ / (Σ w + ε)):

    from sarm_client import RabcJobs
    from sarm_client.training import weighted_loss

    weights = RabcJobs("http://sarm:8000", token=token).weights("pick-place", chunk_size=policy.chunk_size)
    for batch in loader:  # LeRobot batches carry each frame's global "index"
        losses = policy.per_sample_loss(batch)  # shape (B,): reduction="none", reduced over all but the batch
        loss = weighted_loss(losses, weights.for_indices(batch["index"]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

or draw samples in proportion to their weight and keep the plain mean loss — one or the other: both would weigh
each sample by w²:

    sampler = weighted_sampler(weights.for_indices(dataset.hf_dataset["index"]))  # one weight per position
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch.utils.data import WeightedRandomSampler


def weighted_loss(
    losses: torch.Tensor, weights: torch.Tensor | np.ndarray | Sequence[float], eps: float = 1e-6
) -> torch.Tensor:
    """Σ w·ℓ / (Σ w + ε) over a batch's per-sample `losses` (one value per sample, as `weights`). The weights are
    data, not parameters: no gradient flows into them. A batch whose weights are all 0 gives 0, not NaN."""
    import torch

    if not eps > 0:
        raise ValueError(f"eps must be > 0 (it keeps a batch whose weights are all 0 at 0, not NaN), not {eps!r}")
    w = torch.as_tensor(weights, dtype=losses.dtype, device=losses.device).detach()
    if w.shape != losses.shape:
        raise ValueError(
            f"losses {tuple(losses.shape)} and weights {tuple(w.shape)} must be one value per sample "
            "each: compute the loss with reduction='none' and reduce it over all but the batch dimension"
        )
    return (w * losses).sum() / (w.sum() + eps)


def weighted_sampler(
    weights: torch.Tensor | np.ndarray | Sequence[float],
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A sampler of dataset positions drawn with probability ∝ `weights` (one per position, in the dataset's
    order), with replacement, `num_samples` per epoch (default: as many as positions). A position of weight 0 is
    never drawn."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if w.ndim != 1 or not len(w):
        raise ValueError(f"weights must be one per dataset position (1-D, not empty), got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    if not (w > 0).any():
        raise ValueError("every weight is 0: no sample to draw (no frame of the dataset gained progress)")
    # torch.multinomial, with replacement, never draws a category of probability 0.
    return WeightedRandomSampler(w.tolist(), len(w) if num_samples is None else num_samples, generator=generator)
