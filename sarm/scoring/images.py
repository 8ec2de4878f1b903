"""Frames as received (encoded JPEG/PNG bytes, or raw RGB pixels with a shape): content keys and decoding.

Decoding never resizes: a frame must already be at the model's image size. Pillow reads the header first,
so an image of the wrong size (or a decompression bomb) is refused before its pixels are decoded.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sarm.scoring.errors import InvalidInput


@dataclass(frozen=True)
class FrameData:
    data: bytes
    shape: tuple[int, int, int] | None = None  # (H, W, C) for raw pixels; None for JPEG/PNG bytes


def content_key(frame: FrameData, encoder: str) -> str:
    """sha256 over the encoder's id@version, the raw shape (if any) and the bytes: same frame, same key."""
    h = hashlib.sha256(encoder.encode())
    h.update(b"|raw" + np.asarray(frame.shape, dtype=np.int64).tobytes() if frame.shape else b"|encoded")
    h.update(frame.data)
    return h.hexdigest()


def decode(frame: FrameData, height: int, width: int, where: str) -> np.ndarray:
    """(height, width, 3) uint8 RGB, or InvalidInput naming the frame (`where`) and what is wrong."""
    expected = f"{height}x{width} RGB (the model's image size; the gateway does not resize)"
    if frame.shape is not None:
        h, w, c = frame.shape
        if (h, w, c) != (height, width, 3):
            raise InvalidInput(f"{where}: raw image is {h}x{w}x{c}, expected {expected}")
        if len(frame.data) != h * w * c:
            raise InvalidInput(f"{where}: raw image has {len(frame.data)} bytes; {h}x{w}x{c} needs {h * w * c}")
        return np.frombuffer(frame.data, dtype=np.uint8).reshape(h, w, c)
    if not frame.data:
        raise InvalidInput(f"{where}: empty image (set `encoded` to JPEG/PNG bytes or `raw` to pixels)")
    try:
        with Image.open(io.BytesIO(frame.data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise InvalidInput(f"{where}: {image.format} image; send JPEG, PNG or raw pixels")
            if image.size != (width, height):
                raise InvalidInput(f"{where}: image is {image.size[1]}x{image.size[0]}, expected {expected}")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except InvalidInput:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidInput(f"{where}: cannot decode the image ({error}); send JPEG, PNG or raw pixels") from error
