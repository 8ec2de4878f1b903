"""ONNX export of an imported LeRobot SARM's heads: what the model says about the centre frame of each window.

Inputs (batch symbolic):
    frames  (B, n_obs_steps + 1, image_dim) float32  CLIP image features of the centred window
    text    (B, text_dim) float32                    CLIP text features of the instruction
    state   (B, n_obs_steps + 1, state_dim) float32  raw joint state (normalised and padded inside the graph)
Outputs, per head (sparse, then dense where present):
    <head>_stage_probs (B, K), <head>_tau (B, 1), <head>_progress (B, 1)   at the window's centre
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sarm.lerobot.modeling import ImportedLeRobotSARM
from sarm.manifest import LEROBOT_HEADS_INPUTS as INPUTS
from sarm.manifest import lerobot_output_names


class CentreHeads(nn.Module):
    """Every head's centre outputs as one flat tuple (what torch.onnx.export traces)."""

    def __init__(self, model: ImportedLeRobotSARM) -> None:
        super().__init__()
        self.model = model.eval()
        self.heads = tuple(h.name for h in model.cfg.heads)
        self.center = model.cfg.center

    def forward(self, frames: Tensor, text: Tensor, state: Tensor) -> tuple[Tensor, ...]:
        c = self.center
        outputs: list[Tensor] = []
        for out in self.model.forward_heads(frames, text, state, self.heads, upto=c).values():
            outputs += [out.stage_probs[:, c], out.tau[:, c : c + 1], out.progress[:, c : c + 1]]
        return tuple(outputs)


def state_width(model: ImportedLeRobotSARM) -> int:
    """The raw state width the graph takes: the statistics' width, or max_state_dim without normalisation."""
    return model.state_dim if model.state_dim is not None else model.cfg.max_state_dim


def export_lerobot_heads(model: ImportedLeRobotSARM, path: Path) -> Path:
    """One self-contained .onnx with a symbolic batch (traced with a batch of 2, so it is not specialised to 1)."""
    cfg = model.cfg
    graph = CentreHeads(model).eval()
    frames = torch.zeros(2, cfg.window_frames, cfg.image_dim)
    text = torch.zeros(2, cfg.text_dim)
    state = torch.zeros(2, cfg.window_frames, state_width(model))
    batch = torch.export.Dim("batch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        graph,
        (frames, text, state),
        str(path),
        input_names=list(INPUTS),
        output_names=list(lerobot_output_names(graph.heads)),
        dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return path
