"""`sarm import lerobot`: a LeRobot SARM folder becomes a checkpoint of ours, and loads back as a scorer.

The imported checkpoint (CKPT/):
    model.safetensors   LeRobot's tensors unchanged (stage_model.*, subtask_model.*) plus the state
                        normaliser's float32 statistics (state_normalizer.mean / .std; absent for IDENTITY)
    config.json         {"format": "sarm-checkpoint/1", "architecture": "lerobot-sarm",
                         "model": window (centred, gap in frames), heads (stage names, proportions,
                                  breakpoints), state (key, dim, normalisation, eps), sizes, image_key,
                         "frame_encoder" / "text_encoder": clip-vit-b32 with the CLIP folder and its digest,
                         "labels": "stage", "training": provenance (source folder, its config, digests),
                         "lerobot_config": LeRobot's config.json verbatim}
CLIP is not copied: the checkpoint names the folder it was imported with and the weights digest, and a
load may point at another copy of the same weights (the digest must match).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sarm.encoders.weights import EncoderWeightsMissing, resolve_local
from sarm.lerobot.clip import LeRobotCLIP
from sarm.lerobot.config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    LeRobotConfigError,
    LeRobotSARMConfig,
    parse_config,
)
from sarm.lerobot.modeling import ImportedLeRobotSARM, LeRobotSARM, load_lerobot_model, load_lerobot_state
from sarm.lerobot.normalizer import StateNormalizer, read_normalizer
from sarm.lerobot.scoring import LeRobotScorer
from sarm.lerobot.text import ENCODER_ID, FEATURES, features_version
from sarm.training.checkpoint import FORMAT
from sarm.training.checkpoint import LEROBOT_ARCHITECTURE as ARCHITECTURE

MEAN_KEY, STD_KEY = "state_normalizer.mean", "state_normalizer.std"


class LeRobotImportError(ValueError):
    """The import cannot proceed; the message says why and what to do."""


def resolve_clip(clip: str) -> Path:
    """A local CLIP folder, or a Hub id resolved from the local Hugging Face cache only (never downloaded)."""
    try:
        return resolve_local(clip)
    except EncoderWeightsMissing as error:
        raise LeRobotImportError(f"--clip {error}") from error


def _encoder_entry(clip: LeRobotCLIP, clip_dir: Path, source: str, side: str) -> dict[str, Any]:
    return {
        "id": ENCODER_ID,
        "version": features_version(clip),
        "dim": clip.dim,
        "model_path": str(clip_dir),
        "source": source,
        "digest": clip.digest,
        "features": FEATURES,
        "side": side,
    }


def _model_section(cfg: LeRobotSARMConfig, normalizer: StateNormalizer) -> dict[str, Any]:
    return {
        "window": {
            "mode": "centered",
            "gap_frames": cfg.frame_gap,
            "n_obs_steps": cfg.n_obs_steps,
            "frames": cfg.window_frames,
            "center": cfg.center,
        },
        "heads": {
            h.name: {
                "stage_names": list(h.stage_names),
                "proportions": list(h.proportions),
                "breakpoints": list(h.breakpoints()),
            }
            for h in cfg.heads
        },
        "state": {
            "key": cfg.state_key,
            "dim": None if normalizer.mean is None else int(normalizer.mean.shape[0]),
            "max_state_dim": cfg.max_state_dim,
            "normalization": cfg.state_normalization,
            "eps": normalizer.eps,
        },
        "image_key": cfg.image_key,
        "sizes": {
            "image_dim": cfg.image_dim,
            "text_dim": cfg.text_dim,
            "hidden_dim": cfg.hidden_dim,
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
        },
        "annotation_mode": cfg.annotation_mode,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_lerobot(source: Path, clip: str, out: Path) -> dict[str, Any]:
    """Check that `source` (a LeRobot SARM folder) is reproducible with the CLIP `clip`, and write CKPT `out`.
    Returns the written config."""
    if (out / CONFIG_FILE).exists() or (out.exists() and any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: choose a new --out folder")
    model = load_lerobot_model(source)  # config refusals and strict weights check
    cfg = model.cfg
    normalizer = read_normalizer(source, cfg)
    clip_dir = resolve_clip(clip)
    encoder = LeRobotCLIP(clip_dir)
    if encoder.dim != cfg.image_dim or encoder.dim != cfg.text_dim:
        raise LeRobotConfigError(
            f"config fields 'image_dim' ({cfg.image_dim}) and 'text_dim' ({cfg.text_dim}) do not match the "
            f"{encoder.dim}-d CLIP at {clip_dir}: give the CLIP this model was trained with"
        )
    lerobot_config = json.loads((source / CONFIG_FILE).read_text())
    info = {
        "format": FORMAT,
        "architecture": ARCHITECTURE,
        "model": _model_section(cfg, normalizer),
        "frame_encoder": _encoder_entry(encoder, clip_dir, clip, "image"),
        "text_encoder": _encoder_entry(encoder, clip_dir, clip, "text"),
        "labels": "stage",
        "training": {
            "source": "lerobot",
            "lerobot_folder": str(source.resolve()),
            "lerobot_weights_sha256": _sha256(source / WEIGHTS_FILE),
            "lerobot_compat": "0.6.1",
        },
        "lerobot_config": lerobot_config,
    }
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("breakpoints_")}
    if normalizer.mean is not None and normalizer.std is not None:
        tensors[MEAN_KEY] = torch.from_numpy(normalizer.mean.copy())
        tensors[STD_KEY] = torch.from_numpy(normalizer.std.copy())
    tmp = out.with_name(f".{out.name}.importing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "architecture": ARCHITECTURE})
    (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2))
    if out.exists():
        out.rmdir()  # empty, checked above
    tmp.rename(out)
    return info


@dataclass
class ImportedInfo:
    """What an imported checkpoint's config.json says (see the module docstring)."""

    path: Path
    config: LeRobotSARMConfig
    data: dict[str, Any]

    @property
    def clip_path(self) -> Path:
        return Path(self.data["frame_encoder"]["model_path"])

    @property
    def clip_digest(self) -> str:
        return str(self.data["frame_encoder"]["digest"])


def load_imported_info(path: Path) -> ImportedInfo:
    config = path / CONFIG_FILE
    if not config.is_file():
        raise LeRobotConfigError(f"{path} is not a checkpoint: {CONFIG_FILE} is missing")
    data = json.loads(config.read_text())
    if data.get("format") != FORMAT or data.get("architecture") != ARCHITECTURE:
        raise LeRobotConfigError(f"{config} is not an imported LeRobot SARM ({FORMAT}, architecture {ARCHITECTURE})")
    return ImportedInfo(path, parse_config(data["lerobot_config"]), data)


def load_imported_model(path: Path) -> tuple[LeRobotSARM, StateNormalizer, ImportedInfo]:
    """The network (eval mode), state normaliser and info of an imported checkpoint; no CLIP is loaded."""
    info = load_imported_info(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise LeRobotConfigError(f"{path} has a config but no {WEIGHTS_FILE}")
    tensors = load_file(str(weights))
    mean, std = tensors.pop(MEAN_KEY, None), tensors.pop(STD_KEY, None)
    state = info.data["model"]["state"]
    if state["normalization"] == "MEAN_STD" and (mean is None or std is None):
        raise LeRobotConfigError(f"{weights} lacks the state statistics its config.json declares (MEAN_STD)")
    normalizer = StateNormalizer(
        info.config.max_state_dim,
        None if mean is None else np.asarray(mean.numpy(), dtype=np.float32),
        None if std is None else np.asarray(std.numpy(), dtype=np.float32),
        float(state["eps"]),
    )
    model = LeRobotSARM(info.config)
    load_lerobot_state(model, tensors, str(weights))
    return model.eval(), normalizer, info


def load_imported(
    path: Path, clip_path: Path | None = None, batch_size: int = 64, device: str | torch.device = "cpu"
) -> tuple[LeRobotScorer, ImportedInfo]:
    """A ready scorer (network, CLIP, normaliser) for an imported checkpoint, running on `device`. `clip_path`
    overrides the CLIP folder recorded at import; its weights must have the recorded digest."""
    model, normalizer, info = load_imported_model(path)
    clip = load_imported_clip(info, clip_path, device)
    return LeRobotScorer(model, clip, normalizer, batch_size, device), info


def load_imported_clip(
    info: ImportedInfo, clip_path: Path | None = None, device: str | torch.device = "cpu"
) -> LeRobotCLIP:
    """The CLIP an imported checkpoint was imported with (`clip_path` overrides the recorded folder); its weights
    must have the recorded digest."""
    folder = clip_path or info.clip_path
    if not folder.is_dir():
        raise LeRobotConfigError(
            f"the CLIP this checkpoint was imported with ({folder}) is missing: pass the folder that holds it"
        )
    clip = LeRobotCLIP(folder, device)
    if clip.digest != info.clip_digest:
        raise LeRobotConfigError(
            f"the CLIP at {folder} has weights {clip.digest}, not the {info.clip_digest} this checkpoint was "
            "imported with"
        )
    return clip


def load_imported_network(path: Path) -> tuple[ImportedLeRobotSARM, ImportedInfo]:
    """The network with its state normaliser inside (raw state in), in eval mode; what
    sarm.training.checkpoint.load_model returns for an imported checkpoint."""
    model, normalizer, info = load_imported_model(path)
    mean = None if normalizer.mean is None else torch.from_numpy(normalizer.mean)
    std = None if normalizer.std is None else torch.from_numpy(normalizer.std)
    return ImportedLeRobotSARM(model, mean, std, normalizer.eps).eval(), info
