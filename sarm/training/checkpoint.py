"""SARM checkpoints: a directory with safetensors weights and one JSON that holds everything inference needs.

CKPT/model.safetensors     the SARM heads (stage and subtask networks, task instruction embeddings, state stats)
CKPT/config.json           model config (stage names, tasks and their ᾱ, sizes, window), encoder ids and versions,
                           label mode, training provenance and figures
CKPT/trainer_state.pt      optimiser, scheduler, step and RNG (for --resume; not needed to score)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from sarm.model.configuration_sarm import SARMConfig
from sarm.model.modeling_sarm import SARM
from sarm.training.samples import STATE_KEY

if TYPE_CHECKING:
    from sarm.lerobot.checkpoint import ImportedInfo
    from sarm.lerobot.modeling import ImportedLeRobotSARM

FORMAT = "sarm-checkpoint/1"
WEIGHTS = "model.safetensors"


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint's weights file: its identity in model repositories and output provenance."""
    return hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()


CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"
# Absent in our own checkpoints; "lerobot-sarm" in those `sarm import lerobot` writes (see sarm.lerobot.checkpoint).
ARCHITECTURE_KEY = "architecture"
SARM_ARCHITECTURE = "sarm"
LEROBOT_ARCHITECTURE = "lerobot-sarm"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or written by an incompatible version."""


@dataclass
class CheckpointInfo:
    model: SARMConfig
    frame_encoder: dict[str, Any]  # {"id", "version", "dim"}
    text_encoder: dict[str, Any]
    labels: str  # "stage" or "frame-index"
    training: dict[str, Any] = field(default_factory=dict)  # provenance: data, preset, steps, seed, figures

    @property
    def state_key(self) -> str | None:
        """The dataset feature the model's state stream reads (`training["state_key"]`, written by `sarm train
        --state`); None for a model without state. Checkpoints from before it was recorded read observation.state."""
        if not self.model.state_dim:
            return None
        return str(self.training.get("state_key", STATE_KEY))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model.to_dict(),
            "frame_encoder": self.frame_encoder,
            "text_encoder": self.text_encoder,
            "labels": self.labels,
            "training": self.training,
        }


def save_checkpoint(path: Path, model: SARM, info: CheckpointInfo) -> None:
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # CPU copies of a CUDA model
    save_file(state, str(path / WEIGHTS), metadata={"format": FORMAT})
    (path / CONFIG).write_text(json.dumps(info.to_dict(), indent=2))


def load_info(path: Path) -> CheckpointInfo:
    config_path = path / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a SARM checkpoint: {CONFIG} is missing")
    data = json.loads(config_path.read_text())
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} has format {data.get('format')!r}; this version reads {FORMAT!r}")
    if data.get(ARCHITECTURE_KEY, SARM_ARCHITECTURE) != SARM_ARCHITECTURE:
        raise CheckpointError(
            f"{path} holds an imported {data[ARCHITECTURE_KEY]!r} model, not a trained SARM: load it with load_model()"
        )
    return CheckpointInfo(
        model=SARMConfig.from_dict(data["model"]),
        frame_encoder=data["frame_encoder"],
        text_encoder=data["text_encoder"],
        labels=data["labels"],
        training=data.get("training", {}),
    )


def load_checkpoint(path: Path) -> tuple[SARM, CheckpointInfo]:
    """The model in eval mode and its info; refuses weights that do not fit the config."""
    info = load_info(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path} has a config but no {WEIGHTS}")
    model = SARM(info.model)
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as error:
        raise CheckpointError(f"{weights} does not match {path / CONFIG}: {error}") from error
    model.eval()
    return model, info


def checkpoint_architecture(path: Path) -> str:
    """The checkpoint's architecture: "sarm" for ours (no `architecture` field), "lerobot-sarm" if imported."""
    config_path = path / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a SARM checkpoint: {CONFIG} is missing")
    return str(json.loads(config_path.read_text()).get(ARCHITECTURE_KEY, SARM_ARCHITECTURE))


def load_model(path: Path) -> tuple[SARM, CheckpointInfo] | tuple[ImportedLeRobotSARM, ImportedInfo]:
    """Any checkpoint's model in eval mode and its info: ours (load_checkpoint) or an imported LeRobot SARM
    (sarm.lerobot.checkpoint.load_imported_network; its info's `config` is the LeRobot config)."""
    if checkpoint_architecture(path) == LEROBOT_ARCHITECTURE:
        from sarm.lerobot.checkpoint import load_imported_network

        return load_imported_network(path)
    return load_checkpoint(path)


def save_trainer_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path / TRAINER_STATE)


def load_trainer_state(path: Path) -> dict[str, Any] | None:
    file = path / TRAINER_STATE
    # Our own file (optimiser tensors and python RNG state), so a full unpickle is expected here.
    # map_location: a state saved by a CUDA run resumes anywhere (the optimiser moves it to its parameters' device).
    return torch.load(file, weights_only=False, map_location="cpu") if file.is_file() else None
