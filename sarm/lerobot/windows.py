"""LeRobot's centred window: which frames the model sees when scoring frame t."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def centered_windows(t: npt.ArrayLike, gap: int, n_obs_steps: int, length: int) -> npt.NDArray[np.int64]:
    """(N, n_obs_steps + 1) episode-relative indices t + k·gap for k = −n/2 … n/2, clamped to [0, length).

    `t` is episode-relative (a scalar or 1-D array); out-of-episode slots repeat the boundary frame, as
    LeRobot's delta timestamps do. Frame t sits at column n_obs_steps // 2, where its score is read.
    """
    if gap < 1 or n_obs_steps < 2 or n_obs_steps % 2:
        raise ValueError(f"need gap >= 1 and an even n_obs_steps >= 2, got gap={gap}, n_obs_steps={n_obs_steps}")
    t_arr = np.atleast_1d(np.asarray(t, dtype=np.int64))
    if t_arr.ndim != 1:
        raise ValueError(f"t must be a scalar or a 1-D array, got shape {t_arr.shape}")
    if length < 1 or np.any((t_arr < 0) | (t_arr >= length)):
        raise ValueError(f"every t must lie in the episode [0, {length})")
    half = n_obs_steps // 2
    offsets = gap * np.arange(-half, half + 1, dtype=np.int64)
    return np.clip(t_arr[:, None] + offsets[None, :], 0, length - 1)
