"""LeRobot's SARM networks, rebuilt with LeRobot's parameter names so its model.safetensors loads as is.

Each of the two networks (stage, subtask) projects CLIP image, CLIP text and state (and, for the subtask
net, a one-hot stage padded to d_model) to d_model, lays them out stream-major as tokens
[vis_0 … vis_T−1, lang_0 …, state_0 …, (stage_0 …)], adds `first_pos` to the first visual token, runs a
post-norm torch TransformerEncoder (ReLU FFN of 4·d_model) under a causal mask over that flat order,
regroups the streams per time step and fuses them (LayerNorm, Linear, ReLU) before a per-scheme head.

Inference (LeRobot's calculate_rewards): stage probabilities = softmax of the stage head; the stage is
their argmax at every position; τ = sigmoid of the subtask head conditioned on that one-hot stage;
progress = breakpoint[stage] + τ · proportion[stage] (cumulative proportions, see config.HeadSpec).
LeRobot appends zeroed rewind slots that its padding mask hides from every valid token; we leave them out,
which changes no valid output.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sarm.lerobot.config import LeRobotSARMConfig


class HeadOutput(NamedTuple):
    stage_probs: torch.Tensor  # (B, T, num_stages)
    tau: torch.Tensor  # (B, T) within-stage progress of the argmax stage
    progress: torch.Tensor  # (B, T) in [0, 1]


class StreamTransformer(nn.Module):
    """One of LeRobot's two networks; `extra_streams` is 2 (lang, state) or 3 (lang, state, stage)."""

    def __init__(self, cfg: LeRobotSARMConfig, extra_streams: int, head_widths: dict[str, int]) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.d_model = d
        self.streams = 1 + extra_streams  # one camera
        self.lang_proj = nn.Linear(cfg.text_dim, d)
        self.visual_proj = nn.Linear(cfg.image_dim, d)
        self.state_proj = nn.Linear(cfg.max_state_dim, d)
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, 4 * d, 0.0, batch_first=True)
        # No nested tensors: inputs are never padded here.
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.first_pos = nn.Parameter(torch.zeros(1, d))
        fused = d * self.streams
        self.fusion_backbone = nn.Sequential(nn.LayerNorm(fused), nn.Linear(fused, d), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(d, width) for name, width in head_widths.items()})

    def fused(
        self,
        frames: torch.Tensor,  # (B, T, image_dim)
        text: torch.Tensor,  # (B, text_dim)
        state: torch.Tensor,  # (B, T, max_state_dim)
        stage_onehot: torch.Tensor | None = None,  # (B, T or upto + 1, C), subtask net only
        upto: int | None = None,
    ) -> torch.Tensor:
        """Fused features (B, P, D) of positions 0 … P − 1 (P = T, or upto + 1).

        With `upto`, the last stream's tokens after position `upto` are left out. They come last in the causal
        order, so no kept token attends to them: the outputs at positions ≤ upto are the same, for less work.
        """
        b, t, _ = frames.shape
        d = self.d_model
        p = t if upto is None else upto + 1
        vis = self.visual_proj(frames)
        vis = torch.cat([vis[:, :1] + self.first_pos, vis[:, 1:]], dim=1)  # the bias marks the first frame
        streams = [vis, self.lang_proj(text).unsqueeze(1).expand(b, t, d), self.state_proj(state)]
        if stage_onehot is not None:
            c = stage_onehot.shape[-1]
            streams.append(F.pad(stage_onehot, (0, d - c)) if c < d else stage_onehot[..., :d])
        streams[-1] = streams[-1][:, :p]
        tokens = torch.cat(streams, dim=1)  # stream-major token order
        n = tokens.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=tokens.device), diagonal=1)
        h = self.transformer(tokens, mask=causal, is_causal=True)
        per_step = torch.stack([h[:, k * t : k * t + p] for k in range(self.streams)], dim=2)  # (B, P, S, D)
        out: torch.Tensor = self.fusion_backbone(per_step.reshape(b, p, self.streams * d))
        return out


class LeRobotSARM(nn.Module):
    """Both networks; `forward(frames, text, state, head)` gives every position's stage probs, τ and progress."""

    def __init__(self, cfg: LeRobotSARMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stage_model = StreamTransformer(cfg, 2, {"sparse": cfg.sparse.num_stages, "dense": cfg.num_dense_classes})
        self.subtask_model = StreamTransformer(cfg, 3, {"sparse": 1, "dense": 1})
        for spec in cfg.heads:
            self.register_buffer(f"breakpoints_{spec.name}", torch.tensor(spec.breakpoints(), dtype=torch.float64))

    def forward(
        self, frames: torch.Tensor, text: torch.Tensor, state: torch.Tensor, head: str = "sparse"
    ) -> HeadOutput:
        return self.forward_heads(frames, text, state, (head,))[head]

    def forward_heads(
        self,
        frames: torch.Tensor,
        text: torch.Tensor,
        state: torch.Tensor,
        heads: tuple[str, ...],
        upto: int | None = None,
    ) -> dict[str, HeadOutput]:
        """Outputs of several heads at positions 0 … upto (all by default). The stage network's trunk is
        shared by its heads, so it runs once; the subtask network runs per head (its stage input differs)."""
        trunk = self.stage_model.fused(frames, text, state, upto=upto)
        outputs = {}
        for head in heads:
            spec = self.cfg.head(head)
            probs = torch.softmax(self.stage_model.heads[head](trunk), dim=-1)
            stage = probs.argmax(dim=-1)
            # One-hot by comparison rather than F.one_hot: the same values, and it exports to ONNX.
            classes = torch.arange(spec.num_stages, device=stage.device)
            onehot = (stage.unsqueeze(-1) == classes).to(frames.dtype)
            sub = self.subtask_model.fused(frames, text, state, onehot, upto=upto)
            tau = torch.sigmoid(self.subtask_model.heads[head](sub)).squeeze(-1)
            outputs[head] = HeadOutput(probs, tau, self._progress(stage, tau, spec.name))
        return outputs

    def _progress(self, stage: torch.Tensor, tau: torch.Tensor, head: str) -> torch.Tensor:
        """LeRobot's normalize_stage_tau on x = stage + τ (float32): x in [i, i+1) maps to
        b_i + (x − i)(b_{i+1} − b_i); x ≥ K maps to 1."""
        points: torch.Tensor = getattr(self, f"breakpoints_{head}")
        k = points.shape[0] - 1
        x = stage.to(tau.dtype) + tau
        i = torch.clamp(torch.floor(x), 0, k - 1).long()
        # Breakpoints and widths are computed in doubles and enter the float32 arithmetic rounded, as in LeRobot.
        lo, width = points[i].to(tau.dtype), (points[i + 1] - points[i]).to(tau.dtype)
        out = lo + (x - i.to(tau.dtype)) * width
        return torch.where(x >= k, torch.ones_like(out), out).clamp(0.0, 1.0)


def load_lerobot_weights(model: LeRobotSARM, weights: Path) -> None:
    load_lerobot_state(model, load_file(str(weights)), str(weights))


def load_lerobot_state(model: LeRobotSARM, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load: every tensor LeRobot saved must have a place and a matching shape, and vice versa."""
    own = {k for k in model.state_dict() if not k.startswith("breakpoints_")}
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the LeRobot SARM architecture of its config: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    current = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(current[k].shape)}" for k, v in state.items() if v.shape != current[k].shape
    ]
    if wrong:
        raise ValueError(f"{source}: tensor shapes do not match the config: {wrong[:5]}")
    model.load_state_dict(state, strict=False)


def load_lerobot_model(folder: Path) -> LeRobotSARM:
    """The network of a LeRobot SARM `save_pretrained` folder, in eval mode."""
    from sarm.lerobot.config import WEIGHTS_FILE, LeRobotConfigError, read_config

    cfg = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise LeRobotConfigError(f"{folder} has a config.json but no {WEIGHTS_FILE}")
    model = LeRobotSARM(cfg)
    load_lerobot_weights(model, weights)
    return model.eval()


class ImportedLeRobotSARM(nn.Module):
    """An imported LeRobot SARM with its state normaliser inside: raw (B, T, state_dim) state in.

    The normalisation ((x − mean) / (std + eps) in float32, then zero-padding or cutting to max_state_dim) is
    LeRobot's preprocessor step; here it is part of the graph, so an ONNX export takes the robot's state as is.
    """

    state_mean: torch.Tensor
    state_std: torch.Tensor

    def __init__(self, net: LeRobotSARM, mean: torch.Tensor | None, std: torch.Tensor | None, eps: float) -> None:
        super().__init__()
        self.net = net
        self.cfg = net.cfg
        self.normalize = mean is not None and std is not None
        self.state_dim = int(mean.shape[0]) if mean is not None else None
        self.register_buffer("state_mean", mean if mean is not None else torch.zeros(0), persistent=False)
        self.register_buffer("state_std", std if std is not None else torch.zeros(0), persistent=False)
        self.eps = eps

    def prepare_state(self, state: torch.Tensor) -> torch.Tensor:
        x = (state - self.state_mean) / (self.state_std + self.eps) if self.normalize else state
        dim = self.cfg.max_state_dim
        return x[..., :dim] if x.shape[-1] >= dim else F.pad(x, (0, dim - x.shape[-1]))

    def forward(
        self, frames: torch.Tensor, text: torch.Tensor, state: torch.Tensor, head: str = "sparse"
    ) -> HeadOutput:
        out: HeadOutput = self.net(frames, text, self.prepare_state(state), head)
        return out

    def forward_heads(
        self, frames: torch.Tensor, text: torch.Tensor, state: torch.Tensor, heads: tuple[str, ...], upto: int | None
    ) -> dict[str, HeadOutput]:
        return self.net.forward_heads(frames, text, self.prepare_state(state), heads, upto)
