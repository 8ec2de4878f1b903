"""An uploaded video → its per-frame curve, by the path ScoreFrames takes: each frame encoded once (through the
frame cache), the model's windows (causal at the stride of the video's fps, or centred), the joint state of a model
that reads it, optional smoothing (sarm.scoring.curve)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarm.scoring.curve import FrameResult, ScoringOptions, score_curve
from sarm.scoring.engine import Encoded, Engine, Instruction
from sarm.scoring.images import FrameData
from sarm_gateway.episode import window_stride
from sarm_gateway.errors import InvalidInput
from sarm_gateway.http.schemas import ScoreForm
from sarm_gateway.http.video import VideoLimits, VideoReader
from sarm_gateway.settings import Settings

CHUNK_FRAMES = 64  # decoded and encoded at a time: memory holds two chunks of pixels, not the whole video


@dataclass(frozen=True)
class VideoCurve:
    instruction: str
    matched: Instruction  # its embedding and the known task it matched
    fps: float
    stride: int
    num_frames: int
    options: ScoringOptions
    results: list[FrameResult]
    window_mode: str
    dense: bool  # the model has a dense head: every result carries its answer


def video_limits(settings: Settings) -> VideoLimits:
    return VideoLimits(settings.max_video_seconds, settings.max_video_frames, settings.max_video_pixels)


def _read_ahead(engine: Engine, reader: VideoReader) -> asyncio.Future[np.ndarray]:
    reading = asyncio.ensure_future(engine.offload(reader.read, CHUNK_FRAMES))
    reading.add_done_callback(lambda f: f.cancelled() or f.exception())  # an abandoned read's error is not logged
    return reading


async def _embed(engine: Engine, reader: VideoReader) -> Encoded:
    """The video's time steps, (T, 1, D) embeddings and (T, 1) keys; the next chunk decodes on a worker thread while
    this one is encoded."""
    parts = []
    reading = _read_ahead(engine, reader)
    try:
        while len(frames := await reading):
            first = reader.decoded - len(frames)
            reading = _read_ahead(engine, reader)
            parts.append(await engine.encode([FrameData(f.tobytes(), f.shape) for f in frames], first_index=first))
    finally:
        reading.cancel()  # its thread finishes the chunk anyway; reader.close() waits for it
    return Encoded.join(parts).steps(1)


async def score_video(engine: Engine, video: Path, form: ScoreForm, limits: VideoLimits) -> VideoCurve:
    if engine.num_cameras != 1:
        raise InvalidInput(
            f"this model takes {engine.num_cameras} cameras per time step; a video upload is one "
            "camera: use the gRPC ScoreFrames call with every camera's frames"
        )
    manifest = engine.manifest
    if manifest.state_dim and form.state is None:
        raise InvalidInput(
            f"this model reads joint state ({manifest.state_dim} values per frame): send the `state` field, a JSON "
            "array with one row per video frame; a bare video cannot be scored"
        )
    options = form.options()
    instruction = await engine.embed_instruction(form.instruction)  # a bad instruction is refused before decoding
    # A CLIP model crops frames of any size itself (as CLIPProcessor does): decode them at the video's own size.
    height, width = engine.image_size if manifest.image_resize == "exact" else (None, None)
    reader = await engine.offload(VideoReader, video, height, width, limits, form.fps)
    try:
        stride = window_stride(reader.fps, manifest.window)
        encoded = await _embed(engine, reader)
    finally:
        await engine.offload(reader.close)
    if form.state is not None:
        encoded = encoded.with_state(engine.state(_state_rows(form.state, reader.decoded), reader.decoded, "`state`"))
    results = await score_curve(engine, encoded, reader.decoded, reader.fps, stride, instruction, options)
    return VideoCurve(
        form.instruction,
        instruction,
        reader.fps,
        stride,
        reader.decoded,
        options,
        results,
        manifest.window.mode,
        "dense" in manifest.heads,
    )


def _state_rows(text: str, frames: int) -> np.ndarray:
    """The `state` field's JSON rows as a (frames, S) array, or InvalidInput saying what is wrong."""
    try:
        rows = np.asarray(json.loads(text), dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"`state` is not a JSON array of numeric rows ({error})") from error
    if rows.ndim != 2 or len(rows) != frames:
        raise InvalidInput(f"`state` has shape {list(rows.shape)}; send one row per video frame ({frames} rows)")
    return rows
