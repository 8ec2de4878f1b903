"""CLIP features exactly as LeRobot's SARM processor computes them.

Images: LeRobot hands CLIP the decoded frame after a float round trip (uint8 → float32 / 255 → · 255 →
truncated to uint8), which gives back every byte unchanged (tests/core/test_lerobot_clip.py checks all 256),
so the decoded uint8 frame goes straight to CLIPProcessor's PIL image processor: shortest side to 224 with PIL bicubic
(long side int(224 · long / short)), centre crop 224, rescale by 1/255 in doubles then float32, and
(x − mean) / std in float32. Features are the projected embeddings (get_image_features /
get_text_features), not L2-normalised. Text: the CLIP tokenizer, one instruction at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import CLIPConfig
from transformers.activations import QuickGELUActivation
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from sarm.encoders.base import weights_digest
from sarm.encoders.clip import CLIPFrameEncoder, CLIPTextEncoder, ProcessorPixels
from sarm.scoring.images import CROP, clip_crop


def clip_pixels(images: np.ndarray, size: int = CROP) -> np.ndarray:
    """(N, H, W, 3) uint8 → (N, 3, size, size) float32, equal to CLIPProcessor(images=…).pixel_values."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    out = np.stack([clip_crop(image, size) for image in images]) if len(images) else np.empty((0, size, size, 3))
    return clip_normalize(out)


def clip_normalize(crops: np.ndarray) -> np.ndarray:
    """(N, size, size, 3) uint8 crops → (N, 3, size, size) float32: the processor's arithmetic, bit for bit
    (ProcessorPixels, the lookup the exported graphs use too)."""
    with torch.no_grad():
        return _PIXELS(torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8))).numpy()


_PIXELS = ProcessorPixels()


# CLIPProcessor settings the preprocessing above implements (openai/clip-vit-base-patch32's).
EXPECTED_PROCESSOR: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": CROP},
    "resample": 3,  # bicubic
    "do_center_crop": True,
    "crop_size": {"height": CROP, "width": CROP},
    "do_rescale": True,
    "do_normalize": True,
}


def check_processor(folder: Path) -> None:
    """Refuse a CLIP folder whose saved image-processor settings differ from what clip_pixels computes."""
    settings: dict[str, Any] | None = None
    if (folder / "processor_config.json").is_file():
        settings = json.loads((folder / "processor_config.json").read_text()).get("image_processor")
    if settings is None and (folder / "preprocessor_config.json").is_file():
        settings = json.loads((folder / "preprocessor_config.json").read_text())
    if not settings:
        return  # no saved settings: CLIPProcessor's defaults, which are these
    crop = settings.get("crop_size")
    if isinstance(crop, int):  # older files store one number
        settings = settings | {"crop_size": {"height": crop, "width": crop}}
    for key, want in EXPECTED_PROCESSOR.items():
        if key in settings and settings[key] != want:
            raise ValueError(
                f"{folder}: image processor field {key!r} is {settings[key]!r}; only {want!r} is supported"
            )
    if abs(float(settings.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
        raise ValueError(f"{folder}: image processor field 'rescale_factor' is {settings['rescale_factor']!r}")
    for key, want in (("image_mean", OPENAI_CLIP_MEAN), ("image_std", OPENAI_CLIP_STD)):
        if key in settings and not np.allclose(settings[key], want, rtol=0, atol=1e-8):
            raise ValueError(f"{folder}: image processor field {key!r} is {settings[key]!r}, not CLIP's {list(want)}")


class InPlaceQuickGELU(nn.Module):
    """x · sigmoid(1.702 · x), the same float32 operations in the same order as QuickGELUActivation (so the same
    bits), with one temporary instead of three: on CPU these large element-wise passes cost as much as their
    arithmetic, about a tenth of a ViT-B/32 forward. Used without autograd only (the product overwrites the
    sigmoid); with gradients on it computes QuickGELU as transformers does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return x * torch.sigmoid(1.702 * x)
        y = torch.mul(x, 1.702)
        torch.sigmoid_(y)
        return y.mul_(x)


def use_inplace_activations(model: nn.Module) -> int:
    """Swap every QuickGELUActivation in `model` for InPlaceQuickGELU; returns how many were swapped."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is QuickGELUActivation:
                setattr(module, name, InPlaceQuickGELU())
                swapped += 1
    return swapped


class LeRobotCLIP:
    """CLIP towers loaded from a local `save_pretrained` folder (or a Hub id already in the local cache)."""

    def __init__(self, model_path: str | Path, device: str | torch.device = "cpu") -> None:
        path = str(model_path)
        if Path(path).is_dir():
            check_processor(Path(path))
        size = getattr(CLIPConfig.from_pretrained(path).vision_config, "image_size", None)
        if size != CROP:
            raise ValueError(f"{path}: CLIP input size {size}; LeRobot's CLIPProcessor crops to {CROP}")
        vision = CLIPFrameEncoder(path)
        text = CLIPTextEncoder(path)
        self.vision = vision.model.eval()
        self.text_model = text.model.eval()
        self.tokenizer = text.tokenizer
        for tower in (self.vision, self.text_model):
            use_inplace_activations(tower)
        self.image_size = CROP
        self.dim = int(self.vision.visual_projection.out_features)
        if self.dim != int(self.text_model.text_projection.out_features):
            raise ValueError(f"{path}: image and text projections differ in width")
        self.digest = f"{weights_digest(self.vision)}.{weights_digest(self.text_model)}"
        # `sarm rabc --device`: the towers run there; pixels and tokens are made on the CPU and moved.
        self.device = torch.device(device)
        self.vision.to(self.device)
        self.text_model.to(self.device)

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 decoded frames → (N, dim) float32 image features."""
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        for start in range(0, len(frames), batch_size):
            pixels = torch.from_numpy(clip_pixels(frames[start : start + batch_size], self.image_size))
            embeds = self.vision(pixel_values=pixels.to(self.device)).image_embeds
            out[start : start + len(pixels)] = embeds.cpu().numpy()
        return out

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) text features, each instruction tokenised on its own (no padding), truncated to CLIP's context."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        limit = int(self.text_model.config.max_position_embeddings)
        for i, text in enumerate(texts):
            tokens = self.tokenizer([text], truncation=True, max_length=limit, return_tensors="pt")
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            out[i] = self.text_model(input_ids=ids, attention_mask=mask).text_embeds[0].cpu()
        return out
