"""The `torch` backend: a checkpoint's PyTorch heads (and, when given, a PyTorch frame encoder) behind the engine's
backend interface, for training-time evaluation (`sarm eval`) without an export. Serving and labelling run the
exported graphs (backends.LocalBackend, triton_backend.TritonBackend) instead."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sarm.encoders.base import FrameEncoder
from sarm.manifest import Manifest
from sarm.model.modeling_sarm import SARM
from sarm.scoring.errors import BackendUnavailable
from sarm.training.checkpoint import CheckpointInfo


class TorchBackend:
    name = "torch"
    batches_itself = False

    def __init__(
        self, model: SARM, frame_encoder: FrameEncoder | None = None, device: str | torch.device = "cpu"
    ) -> None:
        # `device` (sarm eval --device) holds the model and the frame encoder; inputs move there, outputs come back.
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.frame_encoder = frame_encoder.to(self.device) if frame_encoder is not None else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sarm-torch")  # torch runs off the event loop

    async def encode(self, images: np.ndarray) -> np.ndarray:
        encoder = self.frame_encoder
        if encoder is None:
            raise BackendUnavailable("this torch backend has no frame encoder: score stored embeddings")
        embeddings = await asyncio.get_running_loop().run_in_executor(self._pool, encoder.encode_frames, images)
        return np.asarray(embeddings, np.float32)

    async def heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        # SARM_HEADS_INPUTS (+ state): a torch backend runs our own checkpoints only.
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._heads, *inputs)

    @torch.inference_mode()
    def _heads(self, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """Our heads' outputs in SARM_HEADS_OUTPUTS order, from frames, text, lengths (B, 1) and the state if any."""
        frames, text, lengths, *state = (torch.from_numpy(a).to(self.device) for a in inputs)
        p = self.model.predict(frames, text, lengths[:, 0], *state)
        return tuple(
            t.cpu().numpy() for t in (p.stage_probs, p.tau[:, None], p.progress[:, None], p.confidence[:, None])
        )

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def checkpoint_manifest(checkpoint: Path, model: SARM, info: CheckpointInfo) -> Manifest:
    """The model contract of a checkpoint scored in PyTorch (no graphs, target "torch")."""
    from sarm.export.model_repo import manifest_dict

    cameras = info.training.get("cameras", {})
    height, width = next(iter(cameras.values()), (1, 1))
    return Manifest.from_dict(
        manifest_dict(
            checkpoint, info, model.config, "torch", (height, width), dict(info.frame_encoder), onnx={}, onnx_sha256={}
        )
    )
