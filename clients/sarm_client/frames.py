"""An environment's rendered frame → the (H, W, 3) uint8 RGB image the model takes (the gateway never resizes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sarm_client.errors import InvalidArgument


def fit(frame: Any, size: tuple[int, int], *, resize: bool = True) -> np.ndarray:
    """`frame` as an (H, W, 3) uint8 array of `size` (height, width).

    A frame of another size is resampled by nearest neighbour when `resize` (cheap, numpy only; render at the
    model's size where the environment allows it: that is what the model saw in training), else refused.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        described = f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray) else repr(frame)
        raise InvalidArgument(
            f"the environment rendered {described[:80]}: make it with render_mode='rgb_array' "
            "(an (H, W, 3) uint8 RGB frame), or pass frame= to pick the camera image"
        )
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    if not resize:
        raise InvalidArgument(
            f"the frame is {frame.shape[0]}x{frame.shape[1]} and the model takes {height}x{width}: "
            "render at the model's size, or allow resizing"
        )
    rows = ((np.arange(height) + 0.5) * frame.shape[0] / height).astype(np.intp)
    columns = ((np.arange(width) + 0.5) * frame.shape[1] / width).astype(np.intp)
    return np.ascontiguousarray(frame[rows[:, None], columns[None, :]])
