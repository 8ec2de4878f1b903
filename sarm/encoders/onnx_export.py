"""Export a frame encoder to ONNX: uint8 images (batch, H, W, 3) in, float32 embeddings (batch, dim) out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sarm.encoders.base import FrameEncoder

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


def export_frame_encoder(encoder: FrameEncoder | nn.Module, path: str | Path, *, height: int, width: int) -> Path:
    """Write a self-contained .onnx with a symbolic batch dimension; H and W are fixed to the camera's. `encoder`
    takes uint8 images (B, H, W, 3): a FrameEncoder, or another module of that contract (an imported CLIP's graph).

    The example batch has 2 images because torch.export specialises a dimension of size 1 to a constant.
    """
    path = Path(path)
    example = torch.zeros((2, height, width, 3), dtype=torch.uint8)
    torch.onnx.export(
        encoder.eval(),
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        external_data=False,  # one file: weights inline, no .onnx.data to lose beside it
        verbose=False,
    )
    return path
