"""LeRobot's SARMConfig (config.json of a `save_pretrained` folder) as a typed, frozen config.

Only the fields inference depends on are kept. A value our code would not reproduce exactly is refused
with a LeRobotConfigError naming the field; training-only fields (batch sizes, rewind probability, loss
weights, dropout) are read and ignored, since inference does not depend on them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANNOTATION_MODES = ("single_stage", "dense_only", "dual")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class LeRobotConfigError(ValueError):
    """A LeRobot SARM folder we cannot reproduce exactly; the message names the field."""


@dataclass(frozen=True)
class HeadSpec:
    """One scheme ("sparse" or "dense"): its stage classes and their temporal proportions."""

    name: str
    stage_names: tuple[str, ...]
    proportions: tuple[float, ...]

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)

    def breakpoints(self) -> tuple[float, ...]:
        """Cumulative proportions [0, …, 1] as LeRobot computes them (in doubles): proportions are
        rescaled only when their sum is off 1 by more than 1e-6, and the last breakpoint is forced to 1."""
        props = list(self.proportions)
        total = sum(props)
        if total > 0 and abs(total - 1.0) > 1e-6:
            props = [p / total for p in props]
        points = [0.0]
        acc = 0.0
        for p in props:
            acc += p
            points.append(acc)
        points[-1] = 1.0
        return tuple(points)


@dataclass(frozen=True)
class LeRobotSARMConfig:
    annotation_mode: str
    n_obs_steps: int
    frame_gap: int  # in frames
    image_dim: int
    text_dim: int
    hidden_dim: int
    num_heads: int
    num_layers: int
    max_state_dim: int
    image_key: str
    state_key: str
    state_normalization: str  # "MEAN_STD" or "IDENTITY"
    sparse: HeadSpec
    dense: HeadSpec | None  # dense_only and dual modes
    num_dense_classes: int  # width of the dense stage head in the weights (present in every mode)

    @property
    def heads(self) -> tuple[HeadSpec, ...]:
        """The heads LeRobot scores with: sparse always, dense where the mode trains it."""
        return (self.sparse,) if self.dense is None else (self.sparse, self.dense)

    def head(self, name: str) -> HeadSpec:
        for spec in self.heads:
            if spec.name == name:
                return spec
        raise ValueError(f"this model has no {name!r} head; heads: {[h.name for h in self.heads]}")

    @property
    def window_frames(self) -> int:
        """Frames in the centred window: t + k·frame_gap for k = −n/2 … n/2."""
        return self.n_obs_steps + 1

    @property
    def center(self) -> int:
        return self.n_obs_steps // 2


def _int(data: dict[str, Any], name: str, minimum: int) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LeRobotConfigError(f"config field {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _head(data: dict[str, Any], scheme: str) -> HeadSpec:
    names = data.get(f"{scheme}_subtask_names")
    props = data.get(f"{scheme}_temporal_proportions")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise LeRobotConfigError(
            f"config field '{scheme}_subtask_names' must be a non-empty list of names, got {names!r}"
        )
    if len(set(names)) != len(names):
        raise LeRobotConfigError(f"config field '{scheme}_subtask_names' has duplicates: {names}")
    if (
        not isinstance(props, list)
        or len(props) != len(names)
        or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0 for p in props
        )
        or sum(props) <= 0
    ):
        raise LeRobotConfigError(
            f"config field '{scheme}_temporal_proportions' must hold {len(names)} finite non-negative numbers "
            f"with a positive sum (one per subtask), got {props!r}"
        )
    declared = data.get(f"num_{scheme}_stages")
    if declared is not None and declared != len(names):
        raise LeRobotConfigError(f"config field 'num_{scheme}_stages' is {declared} but there are {len(names)} names")
    return HeadSpec(scheme, tuple(names), tuple(float(p) for p in props))


def parse_config(data: dict[str, Any]) -> LeRobotSARMConfig:
    """The config of a LeRobot 0.6.x SARM, or LeRobotConfigError naming the first field we cannot reproduce."""
    if data.get("type") != "sarm":
        raise LeRobotConfigError(f"config field 'type' is {data.get('type')!r}: not a LeRobot SARM reward model")
    mode = data.get("annotation_mode", "single_stage")
    if mode not in ANNOTATION_MODES:
        raise LeRobotConfigError(f"config field 'annotation_mode' must be one of {ANNOTATION_MODES}, got {mode!r}")
    n_obs = _int(data, "n_obs_steps", 2)
    if n_obs % 2:
        # LeRobot's window then has n frames but marks n + 1 valid, so a zeroed rewind slot (a black image)
        # takes part in attention: a quirk we do not reproduce.
        raise LeRobotConfigError(f"config field 'n_obs_steps' is {n_obs}: only even values are supported")
    hidden, heads = _int(data, "hidden_dim", 1), _int(data, "num_heads", 1)
    if hidden % heads:
        raise LeRobotConfigError(f"config field 'hidden_dim' ({hidden}) is not divisible by 'num_heads' ({heads})")
    image_key, state_key = data.get("image_key"), data.get("state_key")
    if not isinstance(image_key, str) or not image_key:
        raise LeRobotConfigError(f"config field 'image_key' must name a camera, got {image_key!r}")
    if not isinstance(state_key, str) or not state_key:
        raise LeRobotConfigError(f"config field 'state_key' must name a state feature, got {state_key!r}")
    norm = data.get("normalization_mapping") or {}
    if not isinstance(norm, dict):
        raise LeRobotConfigError(f"config field 'normalization_mapping' must be a mapping, got {norm!r}")
    if norm.get("VISUAL", "IDENTITY") != "IDENTITY":
        raise LeRobotConfigError(
            f"config field 'normalization_mapping.VISUAL' is {norm['VISUAL']!r}: only IDENTITY is supported"
        )
    state_norm = norm.get("STATE", "MEAN_STD")
    if state_norm not in ("MEAN_STD", "IDENTITY"):
        raise LeRobotConfigError(
            f"config field 'normalization_mapping.STATE' is {state_norm!r}: only MEAN_STD and IDENTITY are supported"
        )
    # LeRobot's __post_init__ fixes these in the single-head modes, whatever the file says.
    single_sparse = mode in ("single_stage", "dense_only")
    sparse = HeadSpec("sparse", ("task",), (1.0,)) if single_sparse else _head(data, "sparse")
    dense = _head(data, "dense") if mode in ("dense_only", "dual") else None
    return LeRobotSARMConfig(
        annotation_mode=mode,
        n_obs_steps=n_obs,
        frame_gap=_int(data, "frame_gap", 1),
        image_dim=_int(data, "image_dim", 1),
        text_dim=_int(data, "text_dim", 1),
        hidden_dim=hidden,
        num_heads=heads,
        num_layers=_int(data, "num_layers", 1),
        max_state_dim=_int(data, "max_state_dim", 1),
        image_key=image_key,
        state_key=state_key,
        state_normalization=state_norm,
        sparse=sparse,
        dense=dense,
        # LeRobot builds the dense stage head with num_dense_stages or, when unset, num_sparse_stages classes.
        num_dense_classes=dense.num_stages if dense is not None else sparse.num_stages,
    )


def read_config(folder: Path) -> LeRobotSARMConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise LeRobotConfigError(f"{folder} is not a LeRobot SARM folder: {CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LeRobotConfigError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise LeRobotConfigError(f"{path} must hold a JSON object")
    return parse_config(data)
