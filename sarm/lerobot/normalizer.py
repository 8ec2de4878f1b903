"""The state input as LeRobot's preprocessor builds it: MEAN_STD with the training dataset's statistics
(stored beside the checkpoint by the normaliser step), then zero-padded (or cut) to max_state_dim."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from sarm.lerobot.config import LeRobotConfigError, LeRobotSARMConfig

PREPROCESSOR_FILE = "policy_preprocessor.json"
NORMALIZER_REGISTRY_NAME = "normalizer_processor"
DEFAULT_EPS = 1e-8


@dataclass(frozen=True)
class StateNormalizer:
    """x → (x − mean) / (std + eps) in float32 (or x unchanged when mean is None), then padded to `dim`."""

    dim: int
    mean: np.ndarray | None  # (state_dim,) float32
    std: np.ndarray | None
    eps: float = DEFAULT_EPS

    def __call__(self, state: np.ndarray) -> np.ndarray:
        """(..., state_dim) → (..., dim) float32."""
        x = torch.as_tensor(np.asarray(state, dtype=np.float32))
        if self.mean is not None and self.std is not None:
            if x.shape[-1] != self.mean.shape[0]:
                raise ValueError(
                    f"state has {x.shape[-1]} values per frame but the model's statistics cover {self.mean.shape[0]}"
                )
            x = (x - torch.from_numpy(self.mean)) / (torch.from_numpy(self.std) + self.eps)
        if x.shape[-1] >= self.dim:
            return x[..., : self.dim].numpy()
        pad = torch.zeros((*x.shape[:-1], self.dim - x.shape[-1]), dtype=torch.float32)
        return torch.cat([x, pad], dim=-1).numpy()


def read_normalizer(folder: Path, cfg: LeRobotSARMConfig) -> StateNormalizer:
    """The state normaliser of a LeRobot SARM folder (its policy_preprocessor.json and normaliser state file)."""
    if cfg.state_normalization == "IDENTITY":
        return StateNormalizer(cfg.max_state_dim, None, None)
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        raise LeRobotConfigError(
            f"{folder} has no {PREPROCESSOR_FILE}: the state statistics (normalization_mapping.STATE = MEAN_STD) "
            "are missing; copy lerobot-train's whole pretrained_model folder"
        )
    pipeline = json.loads(path.read_text())
    steps = [s for s in pipeline.get("steps", []) if s.get("registry_name") == NORMALIZER_REGISTRY_NAME]
    if len(steps) != 1:
        raise LeRobotConfigError(f"{path}: expected one {NORMALIZER_REGISTRY_NAME} step, found {len(steps)}")
    step = steps[0]
    config = step.get("config", {})
    eps = float(config.get("eps", DEFAULT_EPS))
    state_mode = config.get("norm_map", {}).get("STATE", "MEAN_STD")
    if state_mode != "MEAN_STD":
        raise LeRobotConfigError(f"{path}: field 'norm_map.STATE' is {state_mode!r}; only MEAN_STD is supported")
    state_file = step.get("state_file")
    if not state_file or not (folder / state_file).is_file():
        raise LeRobotConfigError(f"{path}: the normaliser's state_file {state_file!r} is missing from {folder}")
    stats = load_file(str(folder / state_file))
    key = cfg.state_key
    if f"{key}.mean" not in stats or f"{key}.std" not in stats:
        raise LeRobotConfigError(f"{folder / state_file} holds no mean/std for {key!r} (field 'state_key')")
    mean = stats[f"{key}.mean"].to(torch.float32).reshape(-1).numpy()
    std = stats[f"{key}.std"].to(torch.float32).reshape(-1).numpy()
    if mean.shape != std.shape:
        raise LeRobotConfigError(f"{folder / state_file}: {key} mean and std differ in shape")
    return StateNormalizer(cfg.max_state_dim, mean, std, eps)
