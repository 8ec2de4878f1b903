"""Score a LeRobot dataset with a LeRobot SARM the way LeRobot's compute_sarm_progress does.

Frame rule (sarm.scoring.curve, the one rule every path uses, which is LeRobot's): frames with
(i − episode start) % stride == 0 and each episode's last frame are scored, the others linearly interpolated.
Each scored frame t sees the centred window t + k·frame_gap (k = −n/2 … n/2, clamped to the episode) and its
progress is the model output at the centre. Unlike LeRobot, which CLIP-encodes every window's images and
the instruction on every query, each needed frame is decoded and encoded once per episode and each
instruction once per dataset; the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from sarm.data.lerobot import LeRobotDataset
from sarm.lerobot.clip import LeRobotCLIP
from sarm.lerobot.modeling import LeRobotSARM
from sarm.lerobot.normalizer import StateNormalizer
from sarm.lerobot.windows import centered_windows
from sarm.scoring.curve import interpolate, scored_frames


@dataclass
class EpisodeScores:
    episode_index: int
    dataset_from_index: int
    length: int
    scored: np.ndarray  # episode-relative frames that are model outputs
    progress: dict[str, np.ndarray] = field(default_factory=dict)  # head -> (length,) float32 (NaN if not scored)

    @property
    def index(self) -> np.ndarray:
        return self.dataset_from_index + np.arange(self.length, dtype=np.int64)


class LeRobotScorer:
    """A LeRobot SARM with its CLIP and state normaliser: scores windows and whole datasets."""

    def __init__(
        self,
        model: LeRobotSARM,
        clip: LeRobotCLIP,
        normalizer: StateNormalizer,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ):
        if clip.dim != model.cfg.image_dim or clip.dim != model.cfg.text_dim:
            raise ValueError(
                f"the CLIP gives {clip.dim}-d features but the model takes image_dim {model.cfg.image_dim} and "
                f"text_dim {model.cfg.text_dim}: point --clip at the CLIP this model was trained with"
            )
        # The network runs on `device` (sarm rabc --device; the CLIP is put there by its own constructor): windows
        # are assembled on the CPU and moved per batch, outputs come back.
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.clip = clip
        self.normalizer = normalizer
        self.batch_size = batch_size
        self._texts: dict[str, np.ndarray] = {}

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.model.cfg.heads)

    def text_features(self, task: str) -> np.ndarray:
        if task not in self._texts:
            self._texts[task] = self.clip.encode_texts([task])[0]
        return self._texts[task]

    @torch.inference_mode()
    def score_windows(
        self, frame_features: np.ndarray, text: np.ndarray, state: np.ndarray, heads: tuple[str, ...]
    ) -> dict[str, dict[str, np.ndarray]]:
        """Centre outputs of (N, T, image_dim) frame features, one (text_dim,) instruction and (N, T, max_state_dim)
        normalised, padded state, per head: stage_probs (N, K), tau (N,), progress (N,)."""
        c = self.model.cfg.center
        parts: dict[str, dict[str, list[np.ndarray]]] = {
            h: {"stage_probs": [], "tau": [], "progress": []} for h in heads
        }
        for start in range(0, len(frame_features), self.batch_size):
            frames = torch.from_numpy(np.ascontiguousarray(frame_features[start : start + self.batch_size]))
            b = frames.shape[0]
            texts = torch.from_numpy(np.ascontiguousarray(text)).unsqueeze(0).expand(b, -1)
            states = torch.from_numpy(np.ascontiguousarray(state[start : start + self.batch_size]))
            frames, texts, states = (t.to(self.device) for t in (frames, texts, states))
            # Only positions up to the centre are computed: the centre's outputs do not depend on later ones.
            for head, out in self.model.forward_heads(frames, texts, states, heads, upto=c).items():
                parts[head]["stage_probs"].append(out.stage_probs[:, c].cpu().numpy())
                parts[head]["tau"].append(out.tau[:, c].cpu().numpy())
                parts[head]["progress"].append(out.progress[:, c].cpu().numpy())
        return {h: {k: np.concatenate(v) for k, v in p.items()} for h, p in parts.items()}

    def score_episode(
        self, ds: LeRobotDataset, episode: int, stride: int = 1, heads: tuple[str, ...] | None = None
    ) -> EpisodeScores:
        cfg = self.model.cfg
        meta = ds.episode(episode)
        if cfg.state_key not in ds.info.get("features", {}):
            raise ValueError(f"{ds.root} has no {cfg.state_key!r} column, which this model takes (state_key)")
        if cfg.image_key not in ds.camera_keys:
            raise ValueError(f"{ds.root} has no camera {cfg.image_key!r} (image_key); cameras: {ds.camera_keys}")
        scored = scored_frames(meta.length, stride)
        windows = centered_windows(scored, cfg.frame_gap, cfg.n_obs_steps, meta.length)
        needed = np.unique(windows)
        features = self.clip.encode_frames(ds.frames(episode, cfg.image_key, indices=needed))
        rows = np.searchsorted(needed, windows)
        state = self.normalizer(ds.column(episode, cfg.state_key))
        task_index = int(ds.frame_rows(episode).column("task_index")[0].as_py())
        text = self.text_features(ds.tasks[task_index])
        result = EpisodeScores(meta.index, meta.dataset_from_index, meta.length, scored)
        centre = self.score_windows(features[rows], text, state[windows], heads or self.heads)
        for head, outputs in centre.items():
            result.progress[head] = interpolate(scored, outputs["progress"], meta.length)
        return result

    def score_dataset(
        self,
        ds: LeRobotDataset,
        stride: int = 1,
        heads: tuple[str, ...] | None = None,
        on_episode: Callable[[EpisodeScores], None] | None = None,
    ) -> list[EpisodeScores]:
        """Every episode of `ds`, in episode order; `on_episode` reports each one as it finishes."""
        results = []
        for meta in ds.episodes:
            scores = self.score_episode(ds, meta.index, stride, heads)
            results.append(scores)
            if on_episode is not None:
                on_episode(scores)
        return results


def progress_table(results: list[EpisodeScores], heads: tuple[str, ...], model_path: str) -> pa.Table:
    """LeRobot's sarm_progress.parquet: index, episode_index, frame_index (int64), progress_<head> (float32),
    and the model path in the schema metadata (`reward_model_path`, as compute_sarm_progress writes it)."""
    if not results:
        raise ValueError("no episode to write")
    columns: dict[str, np.ndarray] = {
        "index": np.concatenate([r.index for r in results]),
        "episode_index": np.concatenate([np.full(r.length, r.episode_index, np.int64) for r in results]),
        "frame_index": np.concatenate([np.arange(r.length, dtype=np.int64) for r in results]),
    }
    for head in heads:
        columns[f"progress_{head}"] = np.concatenate([r.progress[head] for r in results]).astype(np.float32)
    table = pa.table(columns)
    return table.replace_schema_metadata({"reward_model_path": model_path})
