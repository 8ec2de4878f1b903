"""Wire messages ↔ engine values."""

from __future__ import annotations

from collections.abc import Iterable

from sarm.scoring.curve import FrameResult, ScoringOptions, implied_filter
from sarm.scoring.engine import Engine, Instruction
from sarm.scoring.images import FrameData
from sarm.scoring.score_cache import WindowScore
from sarm_gateway.v1 import sarm_pb2 as pb


def frames_from_proto(frames: Iterable[pb.Frame]) -> list[FrameData]:
    out = []
    for frame in frames:
        if frame.HasField("raw"):
            raw = frame.raw
            out.append(FrameData(raw.data, (raw.height, raw.width, raw.channels)))
        else:
            out.append(FrameData(frame.encoded))
    return out


def request_bytes(request: pb.ScoreWindowRequest | pb.ScoreFramesRequest | pb.StreamEpisodeRequest) -> int:
    """The request's size, give or take a few bytes per frame: its images' bytes plus the other fields. Not
    ByteSize(), which serialises the whole message (about 0.3 s on the event loop for a 44 MB episode)."""
    if isinstance(request, pb.StreamEpisodeRequest):
        if request.WhichOneof("message") != "step":
            return int(request.ByteSize())  # an `open`: small
        frames, rest = request.step.frames, 5 * len(request.step.state)
    else:
        frames, rest = request.frames, len(request.instruction.encode())
    images = sum(len(f.raw.data) if f.HasField("raw") else len(f.encoded) for f in frames)
    return images + rest + 16 * len(frames)  # tags, lengths and raw shapes: under 16 bytes a frame


def options_from_proto(options: pb.ScoringOptions) -> ScoringOptions:
    """Unset fields take their defaults: zero ones too where proto3 cannot tell unset from 0."""
    defaults = ScoringOptions()
    return ScoringOptions(
        score_every=options.score_every or defaults.score_every,
        smoothing=options.smoothing if options.HasField("smoothing") else defaults.smoothing,
        smoothing_filter=options.smoothing_filter
        or implied_filter(bool(options.smoothing_history or options.smoothing_min_confidence)),
        smoothing_history=options.smoothing_history or defaults.smoothing_history,
        smoothing_min_confidence=options.smoothing_min_confidence or defaults.smoothing_min_confidence,
        smoothing_cutoff_hz=(
            options.smoothing_cutoff_hz if options.HasField("smoothing_cutoff_hz") else defaults.smoothing_cutoff_hz
        ),
        smoothing_beta=options.smoothing_beta if options.HasField("smoothing_beta") else defaults.smoothing_beta,
    )


def score_to_proto(score: WindowScore, version: str, instruction: Instruction) -> pb.Score:
    d = score.dense
    dense = None
    if d is not None:
        dense = pb.DenseScore(
            stage_index=d.stage_index,
            stage_name=d.stage_name,
            stage_probs=d.stage_probs.tolist(),
            tau=d.tau,
            progress=d.progress,
        )
    return pb.Score(
        stage_index=score.stage_index,
        stage_name=score.stage_name,
        stage_probs=score.stage_probs.tolist(),
        tau=score.tau,
        progress=score.progress,
        confidence=score.confidence,
        model_version=version,
        matched_task=instruction.task,
        task_similarity=instruction.similarity,
        dense=dense,
    )


def frame_score_to_proto(result: FrameResult, version: str, instruction: Instruction) -> pb.FrameScore:
    message = pb.FrameScore(frame_index=result.frame_index, score=score_to_proto(result.score, version, instruction))
    if result.smoothed_progress is not None:
        message.smoothed_progress = result.smoothed_progress
    return message


def model_info(engine: Engine) -> pb.ModelInfo:
    m = engine.manifest
    return pb.ModelInfo(
        model_version=engine.version,
        stage_names=m.stage_names,
        tasks=[
            pb.Task(instruction=t.instruction, stage_names=t.stage_names, proportions=t.proportions) for t in m.tasks
        ],
        window=pb.Window(
            frames=m.window.frames,
            stride_seconds=m.window.stride_seconds or 0.0,
            max_rewind=m.window.max_rewind,
            sequence_length=m.window.sequence_length,
            mode=m.window.mode,
            stride_frames=m.window.stride_frames or 0,
        ),
        num_cameras=m.num_cameras,
        image=pb.ImageSize(height=m.image_height, width=m.image_width, resize=m.image_resize),
        frame_encoder=pb.Encoder(id=m.frame_encoder.id, version=m.frame_encoder.version, dim=m.frame_encoder.dim),
        text_encoder=pb.Encoder(id=m.text_encoder.id, version=m.text_encoder.version, dim=m.text_encoder.dim),
        backend=engine.backend.name,
        task_match_min=engine.options.task_match_min,
        heads=m.heads,
        dense_stage_names=m.dense_stage_names,
        state_dim=m.state_dim,
        architecture=m.architecture,
    )
