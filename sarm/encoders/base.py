"""The frozen-encoder interface: frame encoders (torch modules, exportable) and text encoders.

Every encoder names itself with `encoder_id` (the family, e.g. "efficientnet-lite0") and `version`
(`"<code version>+<weights digest>[.<preprocessing>]"`, e.g. "0.1.0+3fa9c2d1e0b4.224squash"). A
checkpoint records both and refuses to run against an encoder whose embeddings would differ; the
embedding cache keys on `fingerprint(encoder)`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class EncoderMismatchError(ValueError):
    """The encoder at hand is not the one a checkpoint (or cache entry) was made with."""


class Encoder(Protocol):
    encoder_id: str
    version: str
    dim: int


def fingerprint(encoder: Encoder) -> str:
    return f"{encoder.encoder_id}@{encoder.version}"


def check_encoder(encoder: Encoder, encoder_id: str, version: str) -> None:
    """Raise EncoderMismatchError unless `encoder` is exactly the recorded encoder_id and version."""
    if (encoder.encoder_id, encoder.version) != (encoder_id, version):
        raise EncoderMismatchError(f"expected encoder {encoder_id}@{version}, got {fingerprint(encoder)}")


def weights_digest(module: nn.Module, length: int = 12) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): identifies the weights actually loaded,
    whether they came from a wheel, a local directory or a hub cache."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:length]


def freeze(module: nn.Module) -> None:
    module.requires_grad_(False)
    module.eval()


class FrameEncoder(nn.Module, ABC):
    """uint8 RGB images (B, H, W, 3), any H and W -> (B, dim) float32 embeddings.

    Resizing and normalisation happen inside `forward`, so the ONNX export takes plain camera images.
    Resize: optional centre crop to a square, then (when shrinking by 2x or more) an integer-factor
    box filter, then bilinear (half-pixel, no antialias) to `input_size`. TensorRT rejects ONNX Resize
    with antialias=1; the box filter is a plain AveragePool that recovers most of it (600x512 photo to
    224: EfficientNet embedding cosine to the antialiased resize 0.993, against 0.965 without it).
    """

    encoder_id: str
    version: str
    dim: int
    mean: torch.Tensor
    std: torch.Tensor
    # How frames reach `forward` (the manifest's image.resize): "exact", as they are (resized inside), or "clip",
    # cropped on the host first as CLIPProcessor does (PIL bicubic has no exact ONNX equivalent), see `prepare`.
    image_resize = "exact"

    def __init__(
        self,
        *,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        center_crop: bool,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.center_crop = center_crop
        # Not persistent: preprocessing is part of `version`, not of the weights digest.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def preprocessing_tag(self) -> str:
        return f"{self.input_size}{'crop' if self.center_crop else 'squash'}"

    @abstractmethod
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixels (B, 3, input_size, input_size) -> (B, dim)."""

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8 images, got {tuple(images.shape)} {images.dtype}")
        x = images.permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if self.center_crop and h != w:
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[..., top : top + side, left : left + side]
            h = w = side
        size = self.input_size
        kh, kw = max(h // size, 1), max(w // size, 1)
        if kh > 1 or kw > 1:
            x = F.avg_pool2d(x, (kh, kw))
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.preprocess(images)).float()

    def prepare(self, frames: np.ndarray) -> np.ndarray:
        """What `forward` takes for decoded frames (N, H, W, 3): the frames, or ("clip") their CLIPProcessor crops
        (N, input_size, input_size, 3)."""
        if self.image_resize != "clip":
            return frames
        from sarm.scoring.images import clip_crop

        return np.stack([clip_crop(frame, self.input_size) for frame in frames]) if len(frames) else frames

    def train(self, mode: bool = True) -> FrameEncoder:
        # Frozen: a parent module's .train() must not switch BatchNorm/dropout back on.
        return super().train(False)

    def encode_frames(self, frames: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, dim) float32, in batches of `batch_size`. The default 8: on 2 CPU cores
        EfficientNet-Lite0 runs ~30% fewer images/s at batch 32 than at 8."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        device = self.mean.device  # where `.to()` put the encoder (sarm embed --device)
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                # torch.tensor copies: frames decoded by PyAV or memory-mapped may be read-only.
                chunk = torch.tensor(self.prepare(frames[start : start + batch_size]), device=device)
                out[start : start + len(chunk)] = self(chunk).cpu().numpy()
        return out


class TextEncoder(ABC):
    """Instructions -> (N, dim) float32 embeddings, L2-normalised, deterministic for the same input."""

    encoder_id: str
    version: str
    dim: int

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...
