"""One live episode of a stream: the embeddings its causal windows still need, and its progress filter.

Frame t's window holds the episode's first frame and frames no older than t − 7g (evenly spaced frames
since the start while t < 8g), so older embeddings are dropped as the episode advances: memory stays bounded
by one window span however long the episode runs, and each frame is encoded once, when it arrives.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from sarm.manifest import Window
from sarm.model.windows import sequence_indices
from sarm.scoring.curve import FrameResult, ScoringOptions, frame_results, scored_live
from sarm.scoring.engine import Encoded, Engine, Instruction
from sarm.scoring.images import FrameData
from sarm_gateway.errors import InvalidInput

MAX_FPS = 1000.0


def window_stride(fps: float, window: Window) -> int:
    if not math.isfinite(fps) or not 0.0 < fps <= MAX_FPS:
        raise InvalidInput(f"fps must be a frame rate in (0, {MAX_FPS:g}], got {fps}: set the camera's fps")
    return window.stride(fps)


class Episode:
    """The engine's FrameSource for the episode's windows: the kept time steps."""

    def __init__(self, engine: Engine, instruction: Instruction, fps: float, options: ScoringOptions) -> None:
        self.engine = engine
        self.instruction = instruction
        self.stride = window_stride(fps, engine.manifest.window)
        self.options = options
        self._smoother = options.smoother(fps)
        self._history: dict[int, Encoded] = {}  # frame index -> its cameras' embeddings (C, D) and keys (C,)
        self._oldest_kept = 1  # frames in [1, _oldest_kept) are dropped; frame 0 is kept for good
        self.frames_seen = 0

    def _gather(self, indices: np.ndarray, part: Callable[[Encoded], np.ndarray]) -> np.ndarray:
        return np.stack([np.stack([part(self._history[int(i)]) for i in row]) for row in indices])

    def keys_at(self, indices: np.ndarray) -> np.ndarray:
        return self._gather(indices, lambda step: step.keys)

    def embeddings_at(self, indices: np.ndarray) -> np.ndarray:
        return self._gather(indices, lambda step: step.embeddings)

    def state_at(self, indices: np.ndarray) -> np.ndarray | None:
        if not self.engine.manifest.state_dim:
            return None
        return self._gather(indices, lambda step: np.asarray(step.state))

    async def step(self, frames: list[FrameData], state: list[float]) -> list[FrameResult]:
        if not all(math.isfinite(x) for x in state):
            raise InvalidInput("state has NaN or infinite values: send finite joint readings (or none)")
        steps = self.engine.time_steps(len(frames), "this step")
        rows = self.engine.state(state, steps, "this step")  # (steps, S) for a model that reads state, else None
        start = self.frames_seen
        encoded = (await self.engine.encode(frames, first_index=start * self.engine.num_cameras)).steps(
            self.engine.num_cameras
        )
        encoded = encoded.with_state(rows)
        for i in range(steps):
            self._history[start + i] = Encoded(
                encoded.embeddings[i], encoded.keys[i], None if rows is None else rows[i]
            )
        self.frames_seen += steps
        scored = scored_live(start, self.frames_seen, self.options.score_every)
        scores = await self.engine.score_at(self, scored, self.stride, self.instruction)
        self._forget()
        return frame_results(scored, scores, self._smoother)

    def _forget(self) -> None:
        """Drop the embeddings no later window can use: windows only move forward, so the next frame's oldest
        middle frame bounds every later window's."""
        window = sequence_indices(
            self.frames_seen, self.stride, 0, 0, self.engine.window_frames, self.engine.max_rewind
        ).indices[0]
        oldest_needed = int(window[1])
        for index in range(self._oldest_kept, oldest_needed):
            self._history.pop(index, None)
        self._oldest_kept = max(self._oldest_kept, oldest_needed)
