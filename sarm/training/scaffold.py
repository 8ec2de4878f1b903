"""An untrained but complete checkpoint for the default encoders: for smoke tests and serving benchmarks,
where the pipeline matters and the weights do not."""

from __future__ import annotations

from pathlib import Path

import torch

from sarm.encoders.base import FrameEncoder, TextEncoder
from sarm.encoders.registry import load_frame_encoder, load_text_encoder
from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM
from sarm.training.checkpoint import CheckpointInfo, save_checkpoint


def untrained_checkpoint(
    path: Path,
    stage_names: list[str],
    proportions: list[float],
    image_size: tuple[int, int],
    preset: str = "small",
    seed: int = 0,
    num_cameras: int = 1,
    encoders: tuple[FrameEncoder, TextEncoder] | None = None,
    state_dim: int = 0,
) -> Path:
    """`encoders`: the frame and text encoders the checkpoint says it was trained with (default: ours). `state_dim`
    > 0: a model that reads `observation.state` of that width, with random (fixed by `seed`) z-score statistics."""
    frame, text = encoders or (load_frame_encoder(), load_text_encoder())
    config = SARMConfig.from_preset(
        preset,
        stage_names,
        proportions,
        frame_dim=frame.dim,
        text_dim=text.dim,
        num_cameras=num_cameras,
        state_dim=state_dim,
    )
    cameras = (
        ["observation.images.camera"]
        if num_cameras == 1
        else [f"observation.images.camera{i}" for i in range(num_cameras)]
    )
    torch.manual_seed(seed)
    info = CheckpointInfo(
        model=config,
        frame_encoder={"id": frame.encoder_id, "version": frame.version, "dim": frame.dim},
        text_encoder={"id": text.encoder_id, "version": text.version, "dim": text.dim},
        labels="stage",
        training={
            "cameras": {name: list(image_size) for name in cameras},
            **({"state_key": "observation.state", "state_dim": state_dim} if state_dim else {}),
        },
    )
    model = SARM(config)
    if state_dim:
        model.set_state_stats(torch.randn(state_dim), torch.rand(state_dim) + 0.5)
    save_checkpoint(path, model, info)
    return path
