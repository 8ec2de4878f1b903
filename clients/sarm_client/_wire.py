"""Client values ↔ wire messages (sarm.v1), shared by the sync and asyncio clients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sarm_client.errors import InvalidArgument
from sarm_client.models import (
    DenseScore,
    Encoder,
    FrameScore,
    Image,
    Images,
    ModelInfo,
    Score,
    ScoringOptions,
    State,
    Task,
    Window,
)
from sarm_client.v1 import sarm_pb2 as pb


def _frame(image: Image, index: int) -> pb.Frame:
    if isinstance(image, bytes | bytearray | memoryview):
        if not image:
            raise InvalidArgument(f"frame {index}: empty bytes; send a JPEG/PNG file's bytes or an (H, W, 3) array")
        return pb.Frame(encoded=bytes(image))
    if not isinstance(image, np.ndarray):
        raise InvalidArgument(f"frame {index}: {type(image).__name__}; send an (H, W, 3) uint8 array or JPEG/PNG bytes")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidArgument(
            f"frame {index}: {image.dtype} array of shape {image.shape}; send RGB pixels as an (H, W, 3) uint8 array"
        )
    height, width, channels = image.shape
    return pb.Frame(raw=pb.RawImage(data=image.tobytes(), height=height, width=width, channels=channels))


def images(frames: Image | Images) -> list[Image]:
    """One image, an (N, H, W, 3) array or a sequence of images → a list of images."""
    if isinstance(frames, bytes | bytearray | memoryview):
        return [bytes(frames)]
    if isinstance(frames, np.ndarray):
        return [frames] if frames.ndim == 3 else list(frames)
    return list(frames)


def frames_to_proto(frames: Image | Images) -> list[pb.Frame]:
    return [_frame(image, i) for i, image in enumerate(images(frames))]


def options_to_proto(options: ScoringOptions) -> pb.ScoringOptions:
    return pb.ScoringOptions(
        score_every=options.score_every,
        smoothing=options.smoothing,
        smoothing_filter=options.smoothing_filter,
        smoothing_history=options.smoothing_history,
        smoothing_min_confidence=options.smoothing_min_confidence,
        smoothing_cutoff_hz=options.smoothing_cutoff_hz,
        smoothing_beta=options.smoothing_beta,
    )


def checked_fps(fps: float | None) -> float:
    if fps is None or not fps > 0:
        raise InvalidArgument(f"fps must be the camera's frame rate (> 0), not {fps!r}: it sets the window stride")
    return float(fps)


def state_values(state: State | None) -> list[float]:
    """Joint state as the flat, time-major list the wire carries: rows (one per time step) or already flat."""
    if state is None:
        return []
    return [float(x) for x in np.asarray(state, dtype=np.float64).ravel()]


def window_request(instruction: str, frames: Images, state: State | None = None) -> pb.ScoreWindowRequest:
    return pb.ScoreWindowRequest(instruction=instruction, frames=frames_to_proto(frames), state=state_values(state))


def frames_request(
    instruction: str, frames: Images, fps: float, options: ScoringOptions | None, state: State | None = None
) -> pb.ScoreFramesRequest:
    return pb.ScoreFramesRequest(
        instruction=instruction,
        frames=frames_to_proto(frames),
        fps=checked_fps(fps),
        options=options_to_proto(options or ScoringOptions()),
        state=state_values(state),
    )


def open_request(
    instruction: str, fps: float, options: ScoringOptions | None, episode_id: str, cameras: Sequence[str]
) -> pb.StreamEpisodeRequest:
    return pb.StreamEpisodeRequest(
        open=pb.EpisodeOpen(
            instruction=instruction,
            fps=checked_fps(fps),
            cameras=list(cameras),
            options=options_to_proto(options or ScoringOptions()),
            episode_id=episode_id,
        )
    )


def step_request(frames: Image | Images, state: State | None) -> pb.StreamEpisodeRequest:
    return pb.StreamEpisodeRequest(step=pb.FrameStep(frames=frames_to_proto(frames), state=state_values(state)))


def score(message: pb.Score) -> Score:
    return Score(
        stage_index=message.stage_index,
        stage_name=message.stage_name,
        stage_probs=tuple(message.stage_probs),
        tau=message.tau,
        progress=message.progress,
        confidence=message.confidence,
        model_version=message.model_version,
        matched_task=message.matched_task,
        task_similarity=message.task_similarity,
        dense=_dense(message.dense) if message.HasField("dense") else None,
    )


def _dense(message: pb.DenseScore) -> DenseScore:
    return DenseScore(
        stage_index=message.stage_index,
        stage_name=message.stage_name,
        stage_probs=tuple(message.stage_probs),
        tau=message.tau,
        progress=message.progress,
    )


def frame_score(message: pb.FrameScore) -> FrameScore:
    smoothed = message.smoothed_progress if message.HasField("smoothed_progress") else None
    return FrameScore(frame_index=message.frame_index, score=score(message.score), smoothed_progress=smoothed)


def _encoder(message: pb.Encoder) -> Encoder:
    return Encoder(id=message.id, version=message.version, dim=message.dim)


def model_info(message: pb.ModelInfo) -> ModelInfo:
    w = message.window
    return ModelInfo(
        model_version=message.model_version,
        stage_names=tuple(message.stage_names),
        tasks=tuple(Task(t.instruction, tuple(t.stage_names), tuple(t.proportions)) for t in message.tasks),
        window=Window(
            frames=w.frames,
            stride_seconds=w.stride_seconds,
            max_rewind=w.max_rewind,
            sequence_length=w.sequence_length,
            mode=w.mode or "causal",
            stride_frames=w.stride_frames,
        ),
        num_cameras=message.num_cameras,
        image_size=(message.image.height, message.image.width),
        frame_encoder=_encoder(message.frame_encoder),
        text_encoder=_encoder(message.text_encoder),
        backend=message.backend,
        task_match_min=message.task_match_min,
        heads=tuple(message.heads) or ("sparse",),
        dense_stage_names=tuple(message.dense_stage_names),
        state_dim=message.state_dim,
        architecture=message.architecture or "sarm",
        image_resize=message.image.resize or "exact",
    )
