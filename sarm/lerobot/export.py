"""An imported LeRobot SARM as a model repository's two graphs, so that the gateway, `sarm rabc` and Triton serve it
like our own models:

    encoder  uint8 CLIP crops (B, 224, 224, 3) -> CLIP image features (B, 512). The crop (CLIPProcessor's shortest
             side to 224 with PIL bicubic, centre crop) happens on the host, where any frame size is taken
             (manifest image.resize "clip"); the graph normalises each byte by the processor's own float arithmetic
             (a lookup table, so bit-identical) and runs the vision tower and its projection.
    heads    centred windows of features, the instruction's features and the raw joint state -> every head's
             centre outputs (sarm.lerobot.onnx).

The manifest says what the engine needs: architecture "lerobot-sarm", the centred window with its gap in frames,
state_dim, the sparse and dense heads' stage names, and both encoders with the CLIP folder they load from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sarm.encoders.clip import ProcessorPixels
from sarm.encoders.onnx_export import export_frame_encoder
from sarm.lerobot.checkpoint import load_imported_clip, load_imported_network
from sarm.lerobot.onnx import export_lerobot_heads, state_width
from sarm.manifest import DEFAULT_MAX_BATCH, MANIFEST_FORMAT
from sarm.scoring.images import CROP
from sarm.training.checkpoint import checkpoint_digest


class CLIPImageGraph(nn.Module):
    """uint8 crops (B, 224, 224, 3) -> projected CLIP image features, as LeRobotCLIP.encode_frames computes them."""

    def __init__(self, vision: nn.Module) -> None:
        super().__init__()
        self.vision = vision.eval()
        self.pixels = ProcessorPixels()

    def forward(self, images: Tensor) -> Tensor:
        features: Tensor = self.vision(pixel_values=self.pixels(images)).image_embeds
        return features


def export_lerobot_graphs(checkpoint: Path, out: Path, target: str, sources: dict[str, Path]) -> dict[str, Any]:
    """Write the encoder and heads graphs to `sources` (role -> path under `out`) and return the manifest's fields
    (all but `models`)."""
    from sarm.export.model_repo import sha256_of  # the repository writer imports this module lazily

    network, info = load_imported_network(checkpoint)
    clip = load_imported_clip(info)  # the CLIP it names, with the recorded weights digest
    cfg = network.cfg
    sources["encoder"].parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        export_frame_encoder(CLIPImageGraph(clip.vision), sources["encoder"], height=CROP, width=CROP)
        export_lerobot_heads(network, sources["heads"])
    sparse = cfg.sparse
    return {
        "format": MANIFEST_FORMAT,
        "target": target,
        "architecture": "lerobot-sarm",
        "checkpoint": {"path": str(checkpoint), "sha256": checkpoint_digest(checkpoint), "labels": "stage"},
        "frame_encoder": info.data["frame_encoder"],
        "text_encoder": info.data["text_encoder"],
        "stage_names": list(sparse.stage_names),
        "proportions": list(sparse.proportions),
        # LeRobot's SARM is conditioned on whatever instruction the dataset gives; it names no task of its own.
        "tasks": [
            {"instruction": "", "stage_names": list(sparse.stage_names), "proportions": list(sparse.proportions)}
        ],
        "window": {
            "mode": "centered",
            "frames": cfg.window_frames,
            "max_rewind": 0,
            "stride_frames": cfg.frame_gap,
            "sequence_length": cfg.window_frames,
        },
        "heads": [h.name for h in cfg.heads],
        "dense_stage_names": [] if cfg.dense is None else list(cfg.dense.stage_names),
        "state_dim": state_width(network),
        "camera_keys": [cfg.image_key],
        "state_key": cfg.state_key,
        "num_cameras": 1,
        "image": {"height": CROP, "width": CROP, "resize": "clip"},
        "max_batch": DEFAULT_MAX_BATCH,
        "onnx": {role: str(path.relative_to(out)) for role, path in sources.items()},
        "onnx_sha256": {role: sha256_of(path) for role, path in sources.items()},
    }
