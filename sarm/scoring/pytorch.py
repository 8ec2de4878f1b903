"""The PyTorch heads over one episode's embeddings, for training-time evaluation (`sarm eval`): causal windows are
assembled from the embeddings by index and scored in batches. Serving and labelling run the exported graphs through
the engine (sarm.scoring.engine) instead."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sarm.model.modeling_sarm import SARM
from sarm.model.windows import sequence_indices


@dataclass
class EpisodeScores:
    frame_index: np.ndarray  # (N,) which frames were scored
    stage: np.ndarray  # (N,) predicted stage class
    stage_probs: np.ndarray  # (N, K)
    tau: np.ndarray  # (N,)
    progress: np.ndarray  # (N,) normalised task progress in [0, 1]
    confidence: np.ndarray  # (N,) probability of the predicted stage


@torch.inference_mode()
def score_embeddings(
    model: SARM,
    frames: np.ndarray,
    text: np.ndarray,
    stride: int,
    frame_index: np.ndarray | None = None,
    batch_size: int = 256,
    state: np.ndarray | None = None,
) -> EpisodeScores:
    """Score causal windows ending at `frame_index` (default: every frame) of one episode's embeddings.

    frames: (T, C, D_frame) or (T, D_frame) for one camera; text: (D_text,); state: (T, S) raw joint state, for a
    model that reads it.
    """
    if frames.ndim == 2:
        frames = frames[:, None]
    t = np.arange(len(frames)) if frame_index is None else np.asarray(frame_index, dtype=np.int64)
    model.eval()
    text_row = torch.from_numpy(np.asarray(text, dtype=np.float32))[None]
    parts = []
    for start in range(0, len(t), batch_size):
        seq = sequence_indices(
            t[start : start + batch_size], stride, 0, 0, model.config.window_frames, model.config.max_rewind
        )
        window = torch.from_numpy(frames[seq.indices]).float()
        rows = None if state is None else torch.from_numpy(np.asarray(state, np.float32)[seq.indices])
        parts.append(model.predict(window, text_row.expand(len(window), -1), torch.from_numpy(seq.lengths), rows))
    probs = torch.cat([p.stage_probs for p in parts]).numpy()
    return EpisodeScores(
        frame_index=t,
        stage=probs.argmax(-1),
        stage_probs=probs,
        tau=torch.cat([p.tau for p in parts]).numpy(),
        progress=torch.cat([p.progress for p in parts]).numpy(),
        confidence=torch.cat([p.confidence for p in parts]).numpy(),
    )
