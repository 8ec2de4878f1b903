"""Which frames the model sees when scoring frame t: the causal window, plus rewinds during training.

Layout of one model input sequence (fixed length `frames + max_rewind`, 9 + 4 = 13 by default):

    position  0      1 … 7                      8    9 … 8+n            8+n+1 … 12
    frame     start  t−7g … t−g (or spaced)     t    w[7], …, w[8−n]     padding (repeats the last valid frame)

`lengths` = 9 + n counts the valid positions. Every position carries its own frame's target, attention is
causal over time steps (see modeling_sarm), and the score is read at the last valid position: frame t at
inference (n = 0), the last rewound frame during rewind training. Padding repeats a real frame so that
gathering embeddings or labels by these indices is always in bounds; no valid position attends to it.

Rewinds replay the window's own middle frames backwards (w[7], w[6], …, where w is the window row): t − g,
t − 2g, … once the fixed stride applies, the evenly spaced frames before that. Why not "t − k·g clamped at
the episode start", as this module did first: every Meta-World demo is younger than the 8 g a window spans,
so 71–91 % of rewound frames were the start frame, and the model learnt "jump to the start" instead of
"undo the last steps". The official code (opensarm `FrameGapLeRobotDataset`) avoids the clamp by rewinding
only once t > start + 8g; that leaves demos shorter than 8 s with no rewinds at all, so we follow the
window's spacing instead, which is the official rule wherever the official code rewinds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

WINDOW_FRAMES = 9
MAX_REWIND = 4


class SequenceIndices(NamedTuple):
    indices: npt.NDArray[np.int64]  # (N, frames + max_rewind) frame indices, padded
    lengths: npt.NDArray[np.int64]  # (N,) valid positions per row: frames + n_rewind


def stride_frames(fps: float, stride_seconds: float = 1.0) -> int:
    """Window stride g in frames: 1 s of video by default (30 at 30 fps, 80 for Meta-World)."""
    if fps <= 0 or stride_seconds <= 0:
        raise ValueError(f"fps and stride_seconds must be positive, got {fps} and {stride_seconds}")
    return max(1, round(fps * stride_seconds))


def causal_windows(
    t: npt.ArrayLike, stride: int, start: npt.ArrayLike = 0, frames: int = WINDOW_FRAMES
) -> npt.NDArray[np.int64]:
    """(N, frames) windows [start, t−(n−1)g, …, t−g, t] with n = frames − 1, one row per t.

    While t − start < n·g the n − 1 middle frames are spread evenly over [start, t] instead (rounded half
    up), so early frames still get a full window. The two rules agree at t − start = n·g, every row is
    non-decreasing, and no index leaves [start, t]: the window never needs a future frame.
    """
    if stride < 1 or frames < 2:
        raise ValueError(f"need stride >= 1 and frames >= 2, got stride={stride}, frames={frames}")
    t_arr, start_arr = np.broadcast_arrays(np.atleast_1d(np.asarray(t, dtype=np.int64)), start)
    if t_arr.ndim != 1:
        raise ValueError(f"t must be a scalar or a 1-D array, got shape {t_arr.shape}")
    if np.any(t_arr < start_arr):
        raise ValueError("every t must be at or after its episode start")
    n = frames - 1
    span = (t_arr - start_arr)[:, None]
    k = np.arange(1, n)[None, :]
    spaced = start_arr[:, None] + (2 * span * k + n) // (2 * n)
    strided = t_arr[:, None] - stride * (n - k)
    middle = np.where(span >= n * stride, strided, spaced)
    return np.concatenate([start_arr[:, None], middle, t_arr[:, None]], axis=1).astype(np.int64)


def sequence_indices(
    t: npt.ArrayLike,
    stride: int,
    start: npt.ArrayLike = 0,
    n_rewind: npt.ArrayLike = 0,
    frames: int = WINDOW_FRAMES,
    max_rewind: int = MAX_REWIND,
) -> SequenceIndices:
    """Model-ready index rows: the causal window of each t, then `n_rewind` of the window's middle frames
    going back from t (t − g, t − 2g, … or the evenly spaced ones; see the module docstring), padded to a
    static `frames + max_rewind` columns. With n_rewind = 0 (inference) the padding repeats t.

    Rewind augmentation (ReWiND) shows the model undone work, each rewound frame with its own, lower target.
    """
    if not 0 <= max_rewind <= frames - 2:
        # Rewinds step through the middle frames only: never onto the start frame at position 0.
        raise ValueError(f"max_rewind must be in [0, frames - 2] = [0, {frames - 2}], got {max_rewind}")
    window = causal_windows(t, stride, start, frames)
    rewinds = np.broadcast_to(np.asarray(n_rewind, dtype=np.int64), window.shape[:1])
    if np.any((rewinds < 0) | (rewinds > max_rewind)):
        raise ValueError(f"n_rewind must be in [0, {max_rewind}], got {n_rewind!r}")
    steps = np.arange(1, max_rewind + 1)[None, :]
    # Past its rewinds a row repeats its last valid frame (see the module docstring); step 0 is t itself.
    steps = np.minimum(steps, rewinds[:, None])
    back = np.take_along_axis(window, frames - 1 - steps, axis=1)
    return SequenceIndices(np.concatenate([window, back], axis=1), frames + rewinds)


def rewindable(t: npt.ArrayLike, start: npt.ArrayLike = 0, frames: int = WINDOW_FRAMES) -> npt.NDArray[np.bool_]:
    """Whether the window of t has distinct middle frames, so that every rewind step really goes back.

    Under 8 frames of history the evenly spaced middle frames repeat (t = 5: 0, 1, 1, 2, 3, 3, 4, 4, 5);
    from t − start = frames − 1 on they are strictly increasing (spacing ≥ 1 frame, and the stride ≥ 1).
    """
    return np.asarray(t, dtype=np.int64) - np.asarray(start, dtype=np.int64) >= frames - 1
