"""Frames as received (encoded JPEG/PNG bytes, or raw RGB pixels with a shape): content keys and decoding.

A model with `image.resize` "exact" takes frames at its image size only (the gateway does not resize): Pillow
reads the header first, so an image of the wrong size (or a decompression bomb) is refused before its pixels are
decoded. A CLIP model ("clip") takes any size and crops as CLIPProcessor does, on the host, as LeRobot feeds it.
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


CROP = 224  # CLIP ViT-B/32's input


def resize_shape(height: int, width: int, shortest_edge: int = CROP) -> tuple[int, int]:
    """CLIPProcessor's output size for `shortest_edge`: the short side becomes it, the long one is truncated."""
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def clip_crop(image: np.ndarray, size: int = CROP) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8: CLIPProcessor's shortest side to `size` with PIL bicubic, then
    its centre crop (the pixels its normalisation then reads)."""
    rh, rw = resize_shape(image.shape[0], image.shape[1], size)
    top, left = (rh - size) // 2, (rw - size) // 2
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), resample=Image.Resampling.BICUBIC))
    return resized[top : top + size, left : left + size]


def decode(frame: FrameData, height: int, width: int, where: str, resize: str = "exact") -> np.ndarray:
    """(height, width, 3) uint8 RGB, or InvalidInput naming the frame (`where`) and what is wrong. With `resize`
    "clip" a frame of any size is cropped to (height, width) as CLIPProcessor does (height == width)."""
    if resize == "clip":
        return clip_crop(_decode(frame, where, None), height)
    return _decode(frame, where, (height, width))


def _decode(frame: FrameData, where: str, size: tuple[int, int] | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, refused before its pixels are decoded unless (H, W) is `size` (when given)."""
    expected = f"{size[0]}x{size[1]} RGB (the model's image size; the gateway does not resize)" if size else "RGB"
    if frame.shape is not None:
        h, w, c = frame.shape
        if c != 3 or h < 1 or w < 1 or (size is not None and (h, w) != size):
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
            if size is not None and image.size != (size[1], size[0]):
                raise InvalidInput(f"{where}: image is {image.size[1]}x{image.size[0]}, expected {expected}")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except InvalidInput:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidInput(f"{where}: cannot decode the image ({error}); send JPEG, PNG or raw pixels") from error
