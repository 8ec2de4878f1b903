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
from sarm.scoring.backends import HeadsOutput
from sarm.scoring.errors import BackendUnavailable
from sarm.training.checkpoint import CheckpointInfo


class TorchBackend:
    name = "torch"
    batches_itself = False

    def __init__(self, model: SARM, frame_encoder: FrameEncoder | None = None) -> None:
        self.model = model.eval()
        self.frame_encoder = frame_encoder
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sarm-torch")  # torch runs off the event loop

    async def encode(self, images: np.ndarray) -> np.ndarray:
        encoder = self.frame_encoder
        if encoder is None:
            raise BackendUnavailable("this torch backend has no frame encoder: score stored embeddings")
        embeddings = await asyncio.get_running_loop().run_in_executor(self._pool, encoder.encode_frames, images)
        return np.asarray(embeddings, np.float32)

    async def heads(self, frames: np.ndarray, text: np.ndarray, lengths: np.ndarray) -> HeadsOutput:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._heads, frames, text, lengths)

    @torch.inference_mode()
    def _heads(self, frames: np.ndarray, text: np.ndarray, lengths: np.ndarray) -> HeadsOutput:
        p = self.model.predict(torch.from_numpy(frames), torch.from_numpy(text), torch.from_numpy(lengths[:, 0]))
        return HeadsOutput(
            p.stage_probs.numpy(), p.tau[:, None].numpy(), p.progress[:, None].numpy(), p.confidence[:, None].numpy()
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
