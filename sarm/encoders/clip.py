"""CLIP frame and text encoders (the paper's ViT-B/32, 512-d) via transformers.

Weights come from `model_path`: a local directory saved with `save_pretrained` (weights, config and
tokenizer files) or a hub id the user can reach; set HF_HUB_OFFLINE=1 to use only the local hub cache.
Each side loads only its own tower and projection. Both return L2-normalised projected embeddings, the
space in which CLIP compares images with text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, CLIPConfig, CLIPTextModelWithProjection, CLIPVisionModelWithProjection
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from sarm.encoders.base import FrameEncoder, TextEncoder, freeze, weights_digest

ENCODER_ID = "clip-vit-b32"
DEFAULT_MODEL_PATH = "openai/clip-vit-base-patch32"

_Tower = TypeVar("_Tower", "_VisionTower", "_TextTower")


class _VisionTower(CLIPVisionModelWithProjection):
    # A full CLIP checkpoint also holds the other tower: expected, so not worth a warning. (Not a
    # ClassVar: transformers declares this attribute as an instance variable.)
    _keys_to_ignore_on_load_unexpected = [r"^text_", r"^logit_scale$"]  # noqa: RUF012


class _TextTower(CLIPTextModelWithProjection):
    _keys_to_ignore_on_load_unexpected = [r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$"]  # noqa: RUF012


def _load_tower(cls: type[_Tower], model_path: str, tower: str) -> _Tower:
    config = CLIPConfig.from_pretrained(model_path)
    sub = getattr(config, f"{tower}_config")
    # A tower's own sub-config may lack projection_dim (then 512); the top-level one is authoritative.
    sub.projection_dim = config.projection_dim
    loaded = cls.from_pretrained(model_path, config=sub, output_loading_info=True)
    model, info = cast(tuple[_Tower, dict[str, Any]], loaded)
    # transformers only warns when weights are missing and leaves them randomly initialised.
    if info["missing_keys"]:
        raise ValueError(f"{model_path}: checkpoint lacks {tower} weights {sorted(info['missing_keys'])[:5]}")
    return model


def _pixel_lut() -> np.ndarray:
    """(3 · 256,) float32: per channel and byte, CLIPProcessor's rescale by 1/255 (in doubles, then float32) and
    (x − mean) / std (in float32), as its PIL image processor computes each pixel."""
    x = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(OPENAI_CLIP_MEAN, dtype=np.float32), np.asarray(OPENAI_CLIP_STD, dtype=np.float32)
    return np.concatenate([(x - mean[c]) / std[c] for c in range(3)]).astype(np.float32)


PIXEL_LUT = _pixel_lut()


class ProcessorPixels(nn.Module):
    """uint8 crops (B, H, W, 3) → CLIPProcessor's pixel_values (B, 3, H, W), bit for bit: a per-byte lookup of its
    float arithmetic (one Gather in an exported graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.lut: torch.Tensor
        self.offsets: torch.Tensor
        self.register_buffer("lut", torch.from_numpy(PIXEL_LUT.copy()), persistent=False)
        self.register_buffer("offsets", (torch.arange(3) * 256).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.lut[crops.permute(0, 3, 1, 2).to(torch.int64) + self.offsets]


PREPROCESSING = ("processor", "squash", "crop")


class CLIPFrameEncoder(FrameEncoder):
    """`preprocessing` "processor" (default): exactly CLIPProcessor's, the pixels the CLIP was trained on: the
    shortest side to input_size with PIL bicubic and a centre crop, on the host (`prepare`; image_resize "clip"),
    then its rescale and normalisation bit for bit inside `forward`. "squash" (the whole frame, bilinear) and "crop"
    (centre square, bilinear) resize inside the graph instead, for frames of one fixed size; their embeddings are
    close to, not equal to, CLIPProcessor's. Embeddings are L2-normalised projections."""

    encoder_id = ENCODER_ID

    def __init__(
        self, model_path: str = DEFAULT_MODEL_PATH, center_crop: bool = False, preprocessing: str | None = None
    ) -> None:
        preprocessing = preprocessing or ("crop" if center_crop else "processor")
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
        model = _load_tower(_VisionTower, model_path, "vision")
        size = model.config.image_size
        if not isinstance(size, int):
            raise ValueError(f"{model_path}: expected a square CLIP input size, got {size!r}")
        super().__init__(
            input_size=size,
            mean=[255.0 * m for m in OPENAI_CLIP_MEAN],
            std=[255.0 * s for s in OPENAI_CLIP_STD],
            center_crop=preprocessing == "crop",
        )
        self.processor = ProcessorPixels() if preprocessing == "processor" else None
        self.image_resize = "clip" if self.processor is not None else "exact"
        self.model = model
        freeze(self)
        self.dim = model.visual_projection.out_features
        self.version = f"{transformers.__version__}+{weights_digest(model)}.{self.preprocessing_tag}"

    @property
    def preprocessing_tag(self) -> str:
        return f"{self.input_size}processor" if self.processor is not None else super().preprocessing_tag

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if self.processor is None:
            return super().preprocess(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (*[self.input_size] * 2, 3):
            raise ValueError(
                f"expected ({self.input_size}, {self.input_size}) uint8 crops (CLIPFrameEncoder.prepare), got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        return self.processor(images)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        embeds: torch.Tensor = self.model(pixel_values=pixels).image_embeds
        return embeds / embeds.norm(dim=-1, keepdim=True)


class CLIPTextEncoder(TextEncoder):
    """Instructions beyond CLIP's 77-token context are truncated."""

    encoder_id = ENCODER_ID

    def __init__(self, model_path: str = DEFAULT_MODEL_PATH, device: str | torch.device = "cpu") -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = _load_tower(_TextTower, model_path, "text")
        freeze(self.model)
        self.dim = self.model.text_projection.out_features
        self.max_length: int | None = self.model.config.max_position_embeddings
        self.version = f"{transformers.__version__}+{weights_digest(self.model)}"
        self.device = torch.device(device)
        nn.Module.to(self.model, self.device)  # transformers' own `to` wrapper defeats mypy

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            embeds = self.model(input_ids=ids, attention_mask=mask).text_embeds
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return embeds.float().cpu().numpy()
