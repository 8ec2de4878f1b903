from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("data", "height", "width", "channels")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    channels: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("stage_index", "stage_name", "stage_probs", "tau", "progress", "confidence", "model_version", "matched_task", "task_similarity", "dense")
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    STAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    STAGE_PROBS_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MATCHED_TASK_FIELD_NUMBER: _ClassVar[int]
    TASK_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    stage_index: int
    stage_name: str
    stage_probs: _containers.RepeatedScalarFieldContainer[float]
    tau: float
    progress: float
    confidence: float
    model_version: str
    matched_task: str
    task_similarity: float
    dense: DenseScore
    def __init__(self, stage_index: _Optional[int] = ..., stage_name: _Optional[str] = ..., stage_probs: _Optional[_Iterable[float]] = ..., tau: _Optional[float] = ..., progress: _Optional[float] = ..., confidence: _Optional[float] = ..., model_version: _Optional[str] = ..., matched_task: _Optional[str] = ..., task_similarity: _Optional[float] = ..., dense: _Optional[_Union[DenseScore, _Mapping]] = ...) -> None: ...

class DenseScore(_message.Message):
    __slots__ = ("stage_index", "stage_name", "stage_probs", "tau", "progress")
    STAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    STAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    STAGE_PROBS_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    stage_index: int
    stage_name: str
    stage_probs: _containers.RepeatedScalarFieldContainer[float]
    tau: float
    progress: float
    def __init__(self, stage_index: _Optional[int] = ..., stage_name: _Optional[str] = ..., stage_probs: _Optional[_Iterable[float]] = ..., tau: _Optional[float] = ..., progress: _Optional[float] = ...) -> None: ...

class ScoreWindowRequest(_message.Message):
    __slots__ = ("instruction", "frames", "state")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    state: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, instruction: _Optional[str] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., state: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreWindowResponse(_message.Message):
    __slots__ = ("score",)
    SCORE_FIELD_NUMBER: _ClassVar[int]
    score: Score
    def __init__(self, score: _Optional[_Union[Score, _Mapping]] = ...) -> None: ...

class ScoringOptions(_message.Message):
    __slots__ = ("score_every", "smoothing", "smoothing_history", "smoothing_min_confidence", "smoothing_filter", "smoothing_cutoff_hz", "smoothing_beta")
    SCORE_EVERY_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_HISTORY_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_FILTER_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_CUTOFF_HZ_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_BETA_FIELD_NUMBER: _ClassVar[int]
    score_every: int
    smoothing: bool
    smoothing_history: int
    smoothing_min_confidence: float
    smoothing_filter: str
    smoothing_cutoff_hz: float
    smoothing_beta: float
    def __init__(self, score_every: _Optional[int] = ..., smoothing: _Optional[bool] = ..., smoothing_history: _Optional[int] = ..., smoothing_min_confidence: _Optional[float] = ..., smoothing_filter: _Optional[str] = ..., smoothing_cutoff_hz: _Optional[float] = ..., smoothing_beta: _Optional[float] = ...) -> None: ...

class EpisodeOpen(_message.Message):
    __slots__ = ("instruction", "fps", "cameras", "options", "episode_id")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    fps: float
    cameras: _containers.RepeatedScalarFieldContainer[str]
    options: ScoringOptions
    episode_id: str
    def __init__(self, instruction: _Optional[str] = ..., fps: _Optional[float] = ..., cameras: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[ScoringOptions, _Mapping]] = ..., episode_id: _Optional[str] = ...) -> None: ...

class FrameStep(_message.Message):
    __slots__ = ("frames", "state")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    state: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., state: _Optional[_Iterable[float]] = ...) -> None: ...

class StreamEpisodeRequest(_message.Message):
    __slots__ = ("open", "step")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    open: EpisodeOpen
    step: FrameStep
    def __init__(self, open: _Optional[_Union[EpisodeOpen, _Mapping]] = ..., step: _Optional[_Union[FrameStep, _Mapping]] = ...) -> None: ...

class FrameScore(_message.Message):
    __slots__ = ("frame_index", "score", "smoothed_progress")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SMOOTHED_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    score: Score
    smoothed_progress: float
    def __init__(self, frame_index: _Optional[int] = ..., score: _Optional[_Union[Score, _Mapping]] = ..., smoothed_progress: _Optional[float] = ...) -> None: ...

class StreamEpisodeResponse(_message.Message):
    __slots__ = ("episode_id", "scores")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    episode_id: str
    scores: _containers.RepeatedCompositeFieldContainer[FrameScore]
    def __init__(self, episode_id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[FrameScore, _Mapping]]] = ...) -> None: ...

class ScoreFramesRequest(_message.Message):
    __slots__ = ("instruction", "frames", "fps", "options", "state")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    fps: float
    options: ScoringOptions
    state: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, instruction: _Optional[str] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., fps: _Optional[float] = ..., options: _Optional[_Union[ScoringOptions, _Mapping]] = ..., state: _Optional[_Iterable[float]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Encoder(_message.Message):
    __slots__ = ("id", "version", "dim")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    dim: int
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., dim: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("instruction", "stage_names", "proportions")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    STAGE_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROPORTIONS_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    stage_names: _containers.RepeatedScalarFieldContainer[str]
    proportions: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, instruction: _Optional[str] = ..., stage_names: _Optional[_Iterable[str]] = ..., proportions: _Optional[_Iterable[float]] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("frames", "stride_seconds", "max_rewind", "sequence_length", "mode", "stride_frames")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    STRIDE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_REWIND_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    stride_seconds: float
    max_rewind: int
    sequence_length: int
    mode: str
    stride_frames: int
    def __init__(self, frames: _Optional[int] = ..., stride_seconds: _Optional[float] = ..., max_rewind: _Optional[int] = ..., sequence_length: _Optional[int] = ..., mode: _Optional[str] = ..., stride_frames: _Optional[int] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("height", "width", "resize")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    resize: str
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., resize: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_version", "stage_names", "tasks", "window", "num_cameras", "image", "frame_encoder", "text_encoder", "backend", "task_match_min", "heads", "dense_stage_names", "state_dim", "architecture")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_NAMES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    NUM_CAMERAS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FRAME_ENCODER_FIELD_NUMBER: _ClassVar[int]
    TEXT_ENCODER_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TASK_MATCH_MIN_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    DENSE_STAGE_NAMES_FIELD_NUMBER: _ClassVar[int]
    STATE_DIM_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    stage_names: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    window: Window
    num_cameras: int
    image: ImageSize
    frame_encoder: Encoder
    text_encoder: Encoder
    backend: str
    task_match_min: float
    heads: _containers.RepeatedScalarFieldContainer[str]
    dense_stage_names: _containers.RepeatedScalarFieldContainer[str]
    state_dim: int
    architecture: str
    def __init__(self, model_version: _Optional[str] = ..., stage_names: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., num_cameras: _Optional[int] = ..., image: _Optional[_Union[ImageSize, _Mapping]] = ..., frame_encoder: _Optional[_Union[Encoder, _Mapping]] = ..., text_encoder: _Optional[_Union[Encoder, _Mapping]] = ..., backend: _Optional[str] = ..., task_match_min: _Optional[float] = ..., heads: _Optional[_Iterable[str]] = ..., dense_stage_names: _Optional[_Iterable[str]] = ..., state_dim: _Optional[int] = ..., architecture: _Optional[str] = ...) -> None: ...
