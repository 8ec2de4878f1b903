"""The HTTP API's request form and response bodies (they are its OpenAPI schema too)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import SkipJsonSchema

from sarm.scoring.curve import ScoringOptions, SmoothingFilter, implied_filter
from sarm_gateway.episode import MAX_FPS
from sarm_gateway.http.upload import FILE_FIELD

OutputFormat = Literal["json", "png", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "png": "image/png",
    "parquet": "application/vnd.apache.parquet",
}


class ScoreForm(BaseModel):
    """The text fields of POST /v1/videos:score (the video itself is the file field `video`)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(description="The task in words, e.g. 'pick up the cube'.")
    fps: float | SkipJsonSchema[None] = Field(
        None, gt=0, le=MAX_FPS, description="Frame rate to assume instead of the video's own; sets the window stride."
    )
    score_every: int = Field(1, ge=1, description="Score every N-th frame (frame 0 always).")
    smoothing: bool = Field(True, description="Add smoothed progress (a causal filter) beside the raw progress.")
    smoothing_filter: SmoothingFilter = Field(
        "one-euro",
        description="one-euro: the one-euro filter, its gain scaled by the stage confidence squared; history: the "
        "official code's confidence-weighted mean of the last smoothing_history confident scores. Unset: one-euro, or "
        "history where smoothing_history or smoothing_min_confidence is given.",
    )
    smoothing_history: int = Field(10, ge=1, description="history: scores the smoothing remembers.")
    smoothing_min_confidence: float = Field(
        0.9, gt=0, le=1, description="history: scores below this confidence are ignored."
    )
    smoothing_cutoff_hz: float = Field(1.0, gt=0, allow_inf_nan=False, description="one-euro: cut-off at rest.")
    smoothing_beta: float = Field(
        0.5, ge=0, allow_inf_nan=False, description="one-euro: how fast the cut-off rises with progress's speed."
    )
    format: OutputFormat | SkipJsonSchema[None] = Field(
        None, description="json (default), png or parquet; the `format` query parameter does the same."
    )
    state: str | SkipJsonSchema[None] = Field(
        None,
        description="Joint state for a model that reads it (ModelInfo.state_dim > 0): a JSON array with one row of "
        "state_dim numbers per video frame.",
    )

    @classmethod
    def parse(cls, fields: dict[str, str]) -> ScoreForm:
        try:
            return cls.model_validate(fields)
        except ValidationError as error:  # FastAPI's usual 422 body, located in the form
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from error

    def options(self) -> ScoringOptions:
        return ScoringOptions(
            self.score_every,
            self.smoothing,
            self.smoothing_filter
            if "smoothing_filter" in self.model_fields_set
            else implied_filter(bool({"smoothing_history", "smoothing_min_confidence"} & self.model_fields_set)),
            self.smoothing_history,
            self.smoothing_min_confidence,
            self.smoothing_cutoff_hz,
            self.smoothing_beta,
        )

    @classmethod
    def request_body(cls) -> dict[str, Any]:
        """The OpenAPI requestBody: these fields plus the video file."""
        schema = cls.model_json_schema()
        schema["properties"] = {
            FILE_FIELD: {
                "type": "string",
                "format": "binary",
                "description": "The video: mp4/mov, mkv/webm, avi, MPEG-TS, IVF or GIF.",
            },
            **schema["properties"],
        }
        schema["required"] = [FILE_FIELD, *schema.get("required", [])]
        return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


class DenseScore(BaseModel):
    """A dense (fine-grained subtask) head's answer for the same frame."""

    stage_index: int
    stage_name: str
    tau: float
    progress: float


class FrameScore(BaseModel):
    frame_index: int
    timestamp: float = Field(description="Seconds from the first frame: frame_index / fps.")
    stage_index: int
    stage_name: str
    tau: float = Field(description="Progress within the stage, [0, 1].")
    progress: float = Field(description="Normalised task progress, [0, 1].")
    confidence: float = Field(description="Probability of the predicted stage.")
    smoothed_progress: float | None = Field(description="Set unless smoothing is off.")
    dense: DenseScore | None = Field(None, description="The dense head's answer, for a model that has one.")


class VideoScores(BaseModel):
    model_version: str
    instruction: str
    matched_task: str = Field(
        description="The known task the instruction matched (its instruction as the model "
        "knows it; empty for a model whose one task names none)."
    )
    task_similarity: float = Field(
        description="Cosine similarity of the instruction to that task's; below "
        "ModelInfo.task_match_min the upload is refused with 422."
    )
    fps: float
    stride_frames: int = Field(description="The window stride g in frames (1 s of frames).")
    num_frames: int = Field(description="Frames decoded from the video.")
    frames: list[FrameScore] = Field(description="One per scored frame, in order.")


class Encoder(BaseModel):
    id: str
    version: str
    dim: int


class Task(BaseModel):
    instruction: str
    stage_names: list[str]
    proportions: list[float]


class Window(BaseModel):
    frames: int
    stride_seconds: float
    max_rewind: int
    sequence_length: int
    mode: str = Field(description="causal (frame t's window ends at t) or centered (LeRobot's, needs later frames)")
    stride_frames: int = Field(description="A centred window's gap in frames; 0 for a causal one.")


class ImageSize(BaseModel):
    height: int
    width: int
    resize: str = Field(description="exact: frames must be this size; clip: any size, cropped as CLIPProcessor does")


class ModelInfo(BaseModel):
    """Same as the gRPC GetModelInfo."""

    model_version: str
    stage_names: list[str]
    tasks: list[Task]
    window: Window
    num_cameras: int
    image: ImageSize
    frame_encoder: Encoder
    text_encoder: Encoder
    backend: str
    task_match_min: float = Field(description="Instructions less similar than this to every task are refused.")
    heads: list[str] = Field(description="The progress heads: sparse, and dense where the model has one.")
    dense_stage_names: list[str]
    state_dim: int = Field(description="Joint-state values per time step the model reads (0: none).")
    architecture: str = Field(description="sarm (ours) or lerobot-sarm (an imported LeRobot SARM).")


class Status(BaseModel):
    status: str


class Problem(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="What is wrong and what to change; for a malformed field, FastAPI's list of field errors."
    )


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, each answered with a Problem body."""
    return {code: {"model": Problem} for code in codes}
