"""Frozen frame and instruction encoders, by name, with ids and versions that checkpoints record."""

from sarm.encoders.base import (
    Encoder,
    EncoderMismatchError,
    FrameEncoder,
    TextEncoder,
    check_encoder,
    fingerprint,
)
from sarm.encoders.onnx_export import export_frame_encoder
from sarm.encoders.registry import (
    DEFAULT_FRAME_ENCODER,
    DEFAULT_TEXT_ENCODER,
    FRAME_ENCODERS,
    TEXT_ENCODERS,
    load_frame_encoder,
    load_text_encoder,
)

__all__ = [
    "DEFAULT_FRAME_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "FRAME_ENCODERS",
    "TEXT_ENCODERS",
    "Encoder",
    "EncoderMismatchError",
    "FrameEncoder",
    "TextEncoder",
    "check_encoder",
    "export_frame_encoder",
    "fingerprint",
    "load_frame_encoder",
    "load_text_encoder",
]
