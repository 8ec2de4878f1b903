"""Export the SARM heads to ONNX: window embeddings + instruction embedding + lengths → scores.

Inputs  (batch symbolic):  frames  (B, L, C, D_frame) float32   window embeddings, L = window + max rewind
                           text    (B, D_text)        float32   instruction embedding
                           lengths (B, 1)             int64     valid positions; the score is read at the last
                           state   (B, L, S)          float32   raw joint state (models with state_dim > 0 only;
                                                                z-scored inside by the checkpoint's statistics)
Outputs:                   stage_probs (B, K), tau (B, 1), progress (B, 1), confidence (B, 1)   float32

Per-window scalars are (B, 1), not (B,): Triton describes every tensor by its per-item dims, which cannot
be empty, so (B, 1) is what a Triton model of any backend (python, TensorRT) hands over as it is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sarm.manifest import SARM_HEADS_INPUTS as INPUTS
from sarm.manifest import SARM_HEADS_OUTPUTS as OUTPUTS
from sarm.model.modeling_sarm import SARM


class HeadsGraph(nn.Module):
    """SARM.predict as a plain tuple-returning module (what torch.onnx.export traces)."""

    def __init__(self, model: SARM) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(
        self, frames: Tensor, text: Tensor, lengths: Tensor, state: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        p = self.model.predict(frames, text, lengths[:, 0], state)
        return p.stage_probs, p.tau[:, None], p.progress[:, None], p.confidence[:, None]


def export_heads(model: SARM, path: Path) -> Path:
    """A single self-contained .onnx with a symbolic batch (exported from a batch of 2: a batch of 1 would
    be specialised to a constant)."""
    config = model.config
    frames = torch.zeros(2, config.sequence_length, config.num_cameras, config.frame_dim)
    text = torch.zeros(2, config.text_dim)
    lengths = torch.full((2, 1), config.window_frames, dtype=torch.int64)
    inputs: tuple[Tensor, ...] = (frames, text, lengths)
    if config.state_dim:
        inputs += (torch.zeros(2, config.sequence_length, config.state_dim),)
    batch = torch.export.Dim("batch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        HeadsGraph(model).eval(),  # the wrapper too: torch warns about any module left in training mode
        inputs,
        str(path),
        input_names=[*INPUTS, *(["state"] if config.state_dim else [])],
        output_names=list(OUTPUTS),
        dynamic_shapes=tuple({0: batch} for _ in inputs),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return path
