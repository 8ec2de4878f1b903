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


class CLIPFrameEncoder(FrameEncoder):
    """CLIPProcessor resizes the short side with bicubic and centre-crops; here the whole frame is kept
    by default (squash, bilinear), and `center_crop=True` gives CLIP's framing. Expect embeddings close to,
    not bit-equal with, CLIPProcessor's."""

    encoder_id = ENCODER_ID

    def __init__(self, model_path: str = DEFAULT_MODEL_PATH, center_crop: bool = False) -> None:
        model = _load_tower(_VisionTower, model_path, "vision")
        size = model.config.image_size
        if not isinstance(size, int):
            raise ValueError(f"{model_path}: expected a square CLIP input size, got {size!r}")
        super().__init__(
            input_size=size,
            mean=[255.0 * m for m in OPENAI_CLIP_MEAN],
            std=[255.0 * s for s in OPENAI_CLIP_STD],
            center_crop=center_crop,
        )
        self.model = model
        freeze(self)
        self.dim = model.visual_projection.out_features
        self.version = f"{transformers.__version__}+{weights_digest(model)}.{self.preprocessing_tag}"

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
