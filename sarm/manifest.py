"""The model contract: what a model repository's `sarm_manifest.json` promises, parsed and validated once.

Every reader (the gateway, its backends, `sarm rabc`, jobs, benchmarks, the Triton tools) takes a `Manifest`,
never the raw JSON, so a field is spelled, defaulted and checked in one place. Torch-free: the gateway and the
Triton tools import it without the training stack.

Window modes:
- `causal` (ours): frame t's window ends at t, with a stride of `stride_seconds` of video (computed from the
  dataset's or camera's fps); it can be scored live.
- `centered` (LeRobot's): frames t + k·gap for k = −n/2 … n/2, gap `stride_frames` in frames, clamped to the
  episode; it needs future frames, so it scores whole episodes only (see `live` below).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

MANIFEST = "sarm_manifest.json"
MANIFEST_FORMAT = "sarm-model-repo/1"
WindowMode = Literal["causal", "centered"]
WINDOW_MODES: tuple[WindowMode, ...] = ("causal", "centered")
HEAD_NAMES = ("sparse", "dense")
DEFAULT_MAX_BATCH = 64
# What the heads graph is: ours (causal windows over several cameras, a valid length, the rewind slots) or an
# imported LeRobot SARM (one camera, centred windows, joint state, an output set per head). Each fixes its graph's
# tensor names (heads_inputs / heads_outputs) and how the engine feeds it.
ARCHITECTURES = ("sarm", "lerobot-sarm")
# How a frame reaches the encoder's H×W input: `exact` (it must already be that size; the gateway never resizes)
# or `clip` (any size; CLIPProcessor's shortest side to H bicubic and centre crop, on the host, as LeRobot does).
IMAGE_RESIZES = ("exact", "clip")
SARM_HEADS_INPUTS = ("frames", "text", "lengths")  # and "state" (B, L, S) for a model that reads joint state
SARM_HEADS_OUTPUTS = ("stage_probs", "tau", "progress", "confidence")
LEROBOT_HEADS_INPUTS = ("frames", "text", "state")
LEROBOT_HEAD_OUTPUTS = ("stage_probs", "tau", "progress")  # per head, named <head>_<output>


class ManifestError(ValueError):
    """The manifest is missing, of another format, or inconsistent; the message names the field."""


@dataclass(frozen=True)
class Encoder:
    id: str
    version: str
    dim: int
    # Anything else the exporter recorded (a local weights path, a quantisation), kept as written.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """id@version (+ the quantisation, which changes the embeddings): what caches and metrics know the encoder
        by, so that a float and an INT8 replica sharing Redis never read each other's embeddings."""
        quantization = self.extra.get("quantization")
        if not quantization:
            return f"{self.id}@{self.version}"
        calibrated = quantization.get("calibration", {}).get("frames_sha256", "")
        return f"{self.id}@{self.version}+{quantization.get('mode', 'quantized')}:{calibrated}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "dim": self.dim, **self.extra}


@dataclass(frozen=True)
class Window:
    mode: WindowMode
    frames: int  # the window's frames (9)
    max_rewind: int  # rewind slots the heads' sequence has (padding at inference)
    sequence_length: int  # the heads' time axis: frames + max_rewind
    stride_seconds: float | None  # causal: the stride in seconds of video
    stride_frames: int | None  # centered: the gap in frames

    @property
    def live(self) -> bool:
        """Whether frame t can be scored when frame t arrives (no future frames needed)."""
        return self.mode == "causal"

    def stride(self, fps: float) -> int:
        """The stride in frames at `fps`."""
        if self.stride_frames is not None:
            return self.stride_frames
        assert self.stride_seconds is not None  # one of the two is set (checked on parsing)
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return max(1, round(fps * self.stride_seconds))


@dataclass(frozen=True)
class Task:
    instruction: str
    stage_names: tuple[str, ...]
    proportions: tuple[float, ...]


@dataclass(frozen=True)
class Checkpoint:
    path: str
    sha256: str
    labels: str


@dataclass(frozen=True)
class Manifest:
    target: str  # cpu | gpu (a repository's graphs), or torch (a checkpoint's PyTorch model: no graphs)
    checkpoint: Checkpoint
    frame_encoder: Encoder
    text_encoder: Encoder
    stage_names: tuple[str, ...]
    proportions: tuple[float, ...]
    tasks: tuple[Task, ...]
    window: Window
    num_cameras: int
    image_height: int
    image_width: int
    models: Mapping[str, str]  # role (encoder, heads) -> Triton model name
    onnx: Mapping[str, str]  # role -> ONNX path relative to the repository
    onnx_sha256: Mapping[str, str]
    heads: tuple[str, ...] = ("sparse",)  # progress heads, in output order
    state_dim: int = 0  # joint-state width the heads read; 0 = none
    max_batch: int = DEFAULT_MAX_BATCH
    architecture: str = "sarm"
    image_resize: str = "exact"
    dense_stage_names: tuple[str, ...] = ()  # the dense head's stages (when "dense" is in heads)
    # The dataset features the model reads when it labels a LeRobot dataset: its cameras (() = the dataset's own, in
    # order) and its joint state (when state_dim > 0).
    camera_keys: tuple[str, ...] = ()
    state_key: str = ""

    @property
    def heads_inputs(self) -> tuple[str, ...]:
        if self.architecture == "lerobot-sarm":
            return LEROBOT_HEADS_INPUTS
        return SARM_HEADS_INPUTS + (("state",) if self.state_dim else ())

    @property
    def heads_outputs(self) -> tuple[str, ...]:
        if self.architecture == "lerobot-sarm":
            return lerobot_output_names(self.heads)
        return SARM_HEADS_OUTPUTS

    @property
    def version(self) -> str:
        """The trained weights' identity: the checkpoint digest (encoder identities are reported beside it)."""
        return self.checkpoint.sha256[:12]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.image_height, self.image_width

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = MANIFEST) -> Manifest:
        """Parse and validate; every problem is a ManifestError naming the field."""
        if raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where} has format {raw.get('format')!r}; this version reads {MANIFEST_FORMAT!r}")
        try:
            manifest = cls._parse(raw)
        except (KeyError, TypeError) as error:
            raise ManifestError(f"{where} is missing or has a malformed field {error}: re-export it") from error
        problems = manifest._problems()
        if problems:
            raise ManifestError(f"{where} is inconsistent: " + "; ".join(problems))
        return manifest

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> Manifest:
        w = raw["window"]
        mode = w.get("mode", "causal")
        return cls(
            target=str(raw["target"]),
            checkpoint=Checkpoint(
                str(raw["checkpoint"]["path"]),
                str(raw["checkpoint"]["sha256"]),
                str(raw["checkpoint"].get("labels", "stage")),
            ),
            frame_encoder=_encoder(raw["frame_encoder"]),
            text_encoder=_encoder(raw["text_encoder"]),
            stage_names=tuple(str(n) for n in raw["stage_names"]),
            proportions=tuple(float(p) for p in raw["proportions"]),
            tasks=tuple(
                Task(str(t["instruction"]), tuple(map(str, t["stage_names"])), tuple(map(float, t["proportions"])))
                for t in raw["tasks"]
            ),
            window=Window(
                mode=mode,
                frames=int(w["frames"]),
                max_rewind=int(w["max_rewind"]),
                sequence_length=int(w["sequence_length"]),
                stride_seconds=None if w.get("stride_seconds") is None else float(w["stride_seconds"]),
                stride_frames=None if w.get("stride_frames") is None else int(w["stride_frames"]),
            ),
            num_cameras=int(raw["num_cameras"]),
            image_height=int(raw["image"]["height"]),
            image_width=int(raw["image"]["width"]),
            models=dict(raw["models"]),
            onnx=dict(raw["onnx"]),
            onnx_sha256=dict(raw["onnx_sha256"]),
            heads=tuple(raw.get("heads", ("sparse",))),
            state_dim=int(raw.get("state_dim", 0)),
            max_batch=int(raw.get("max_batch", DEFAULT_MAX_BATCH)),
            architecture=str(raw.get("architecture", "sarm")),
            image_resize=str(raw["image"].get("resize", "exact")),
            dense_stage_names=tuple(str(n) for n in raw.get("dense_stage_names", ())),
            camera_keys=tuple(str(k) for k in raw.get("camera_keys", ())),
            state_key=str(raw.get("state_key", "")),
        )

    def _problems(self) -> list[str]:
        problems = []
        w = self.window
        if w.mode not in WINDOW_MODES:
            problems.append(f"window.mode is {w.mode!r}; use one of {WINDOW_MODES}")
        if w.mode == "causal" and (w.stride_seconds is None or w.stride_seconds <= 0):
            problems.append("a causal window needs window.stride_seconds > 0")
        if w.mode == "centered" and (w.stride_frames is None or w.stride_frames < 1):
            problems.append("a centered window needs window.stride_frames >= 1")
        if w.frames < 2 or w.sequence_length < w.frames:
            problems.append(f"window.frames {w.frames} and sequence_length {w.sequence_length} do not fit")
        if not self.heads or any(h not in HEAD_NAMES for h in self.heads) or len(set(self.heads)) != len(self.heads):
            problems.append(f"heads is {list(self.heads)}; use distinct names of {HEAD_NAMES}")
        if not self.tasks:
            problems.append("tasks is empty")
        for i, task in enumerate(self.tasks):
            unknown = [n for n in task.stage_names if n not in self.stage_names]
            if unknown or len(task.stage_names) != len(task.proportions):
                problems.append(
                    f"tasks[{i}] has stages {unknown or list(task.stage_names)} that do not match "
                    "stage_names or its proportions"
                )
        for name, value in (
            ("num_cameras", self.num_cameras),
            ("image.height", self.image_height),
            ("image.width", self.image_width),
            ("max_batch", self.max_batch),
        ):
            if value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.state_dim < 0:
            problems.append(f"state_dim must be >= 0, got {self.state_dim}")
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture is {self.architecture!r}; use one of {ARCHITECTURES}")
        if self.image_resize not in IMAGE_RESIZES:
            problems.append(f"image.resize is {self.image_resize!r}; use one of {IMAGE_RESIZES}")
        if self.state_dim and not self.state_key:
            problems.append("a model that reads state (state_dim > 0) names its dataset feature in state_key")
        if self.camera_keys and len(self.camera_keys) != self.num_cameras:
            problems.append(f"camera_keys names {len(self.camera_keys)} cameras; num_cameras is {self.num_cameras}")
        if ("dense" in self.heads) != bool(self.dense_stage_names):
            problems.append("dense_stage_names must be given exactly when heads include 'dense'")
        if self.architecture == "sarm" and (self.heads != ("sparse",) or w.mode != "causal"):
            problems.append("architecture 'sarm' has one sparse head and a causal window")
        if self.architecture == "lerobot-sarm" and (w.mode != "centered" or self.num_cameras != 1 or w.max_rewind):
            problems.append("architecture 'lerobot-sarm' has a centred window, one camera and no rewind slots")
        for role in ("encoder", "heads") if self.target != "torch" else ():
            if role not in self.models or role not in self.onnx or role not in self.onnx_sha256:
                problems.append(f"models, onnx and onnx_sha256 must each name the {role!r} model")
        return problems

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the inverse of from_dict)."""
        window: dict[str, Any] = {k: v for k, v in asdict(self.window).items() if v is not None}
        return {
            "format": MANIFEST_FORMAT,
            "target": self.target,
            "checkpoint": asdict(self.checkpoint),
            "frame_encoder": self.frame_encoder.to_dict(),
            "text_encoder": self.text_encoder.to_dict(),
            "stage_names": list(self.stage_names),
            "proportions": list(self.proportions),
            "tasks": [
                {"instruction": t.instruction, "stage_names": list(t.stage_names), "proportions": list(t.proportions)}
                for t in self.tasks
            ],
            "window": window,
            "heads": list(self.heads),
            "state_dim": self.state_dim,
            "num_cameras": self.num_cameras,
            "image": {"height": self.image_height, "width": self.image_width, "resize": self.image_resize},
            "max_batch": self.max_batch,
            "architecture": self.architecture,
            "dense_stage_names": list(self.dense_stage_names),
            "camera_keys": list(self.camera_keys),
            "state_key": self.state_key,
            "models": dict(self.models),
            "onnx": dict(self.onnx),
            "onnx_sha256": dict(self.onnx_sha256),
        }

    def write(self, repo: Path) -> None:
        (repo / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2))


def lerobot_output_names(heads: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{head}_{name}" for head in heads for name in LEROBOT_HEAD_OUTPUTS)


def _encoder(raw: Mapping[str, Any]) -> Encoder:
    known = ("id", "version", "dim")
    return Encoder(
        str(raw["id"]), str(raw["version"]), int(raw["dim"]), {k: v for k, v in raw.items() if k not in known}
    )


def read_manifest(repo: Path) -> Manifest:
    path = repo / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{repo} is not a SARM model repository: {MANIFEST} is missing (run `sarm export`)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path} is not JSON ({error}): re-export the repository") from error
    return Manifest.from_dict(raw, str(path))
