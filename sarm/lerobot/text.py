"""An imported LeRobot SARM's instruction encoder for the engine: CLIP text features as LeRobot's processor computes
them (one instruction at a time, projected, not L2-normalised), from the CLIP folder the model was imported with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import transformers

from sarm.encoders.base import TextEncoder
from sarm.lerobot.clip import LeRobotCLIP

ENCODER_ID = "clip-vit-b32"
# The features LeRobot feeds SARM: CLIPProcessor (PIL bicubic, crop 224), projected, not L2-normalised.
FEATURES = "clip-processor-projected"


def features_version(clip: LeRobotCLIP) -> str:
    """The encoders' version in an imported checkpoint and its repository: code, both towers' weights, features."""
    return f"{transformers.__version__}+{clip.digest}.{FEATURES}"


class LeRobotTextEncoder(TextEncoder):
    encoder_id = ENCODER_ID

    def __init__(self, model_path: str | Path) -> None:
        if not Path(model_path).is_dir():
            raise FileNotFoundError(
                f"the CLIP folder this model names ({model_path}) is missing: put the CLIP it was imported with there"
            )
        self.clip = LeRobotCLIP(model_path)
        self.dim = self.clip.dim
        self.version = features_version(self.clip)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.clip.encode_texts(texts)
