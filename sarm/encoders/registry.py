"""Encoders by name. Imports are deferred so that loading one encoder does not import every library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sarm.encoders.base import FrameEncoder, TextEncoder
from sarm.encoders.weights import local_weights
from sarm.manifest import Encoder as ManifestEncoder

DEFAULT_FRAME_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "minilm-l6"


def _efficientnet_lite0(**kw: Any) -> FrameEncoder:
    from sarm.encoders.efficientnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(**kw)


def _clip_frames(**kw: Any) -> FrameEncoder:
    from sarm.encoders.clip import CLIPFrameEncoder

    return CLIPFrameEncoder(**kw)


def _minilm_l6(**kw: Any) -> TextEncoder:
    from sarm.encoders.minilm import MiniLMTextEncoder

    return MiniLMTextEncoder(**kw)


def _clip_text(**kw: Any) -> TextEncoder:
    from sarm.encoders.clip import CLIPTextEncoder

    return CLIPTextEncoder(**kw)


FRAME_ENCODERS: dict[str, Callable[..., FrameEncoder]] = {
    "efficientnet-lite0": _efficientnet_lite0,
    "clip-vit-b32": _clip_frames,
}
TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm-l6": _minilm_l6,
    "clip-vit-b32": _clip_text,
}


def load_frame_encoder(name: str = DEFAULT_FRAME_ENCODER, **kw: Any) -> FrameEncoder:
    """A frozen frame encoder; `kw` go to its constructor (e.g. model_path=, input_size=, center_crop=)."""
    if name not in FRAME_ENCODERS:
        raise ValueError(f"unknown frame encoder {name!r}; known: {sorted(FRAME_ENCODERS)}")
    return FRAME_ENCODERS[name](**kw)


def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER, **kw: Any) -> TextEncoder:
    """A frozen text encoder; `kw` go to its constructor (e.g. model_path=, batch_size=)."""
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; known: {sorted(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[name](**kw)


def text_encoder_for(encoder: ManifestEncoder) -> TextEncoder:
    """The instruction encoder a model repository names; one that needs local weights (CLIP) finds them as
    sarm.encoders.weights says (SARM_ENCODER_PATH, else the folder the manifest records)."""
    if encoder.extra.get("features") == "clip-processor-projected":  # an imported LeRobot SARM's
        from sarm.lerobot.text import LeRobotTextEncoder

        return LeRobotTextEncoder(encoder.extra["model_path"])
    return load_text_encoder(encoder.id, **local_weights(encoder.id, encoder.extra.get("model_path")))
